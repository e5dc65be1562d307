//! The worker: takes jobs from Redis and runs each through the pipeline
//! (circuit breaker → rate limiter → idempotency guard → handler → ack or
//! retry).
//!
//! Tasks of one worker process:
//! - the fetch loop (this file): picks a queue by weight, leases a batch of
//!   at most the free concurrency slots, spawns one execution per job, and
//!   waits on the queues' wake-up signal when all are empty;
//! - executions ([`pipeline`]): one task per job, each ending in exactly one
//!   settlement sent to the settler;
//! - the settler ([`settle`]): coalesces settlements into batched script calls;
//! - the heartbeat ([`heartbeat`]): extends the leases of everything held.
//!
//! Stop order on shutdown: the fetch loop stops taking jobs; executions get
//! `shutdown_grace` to finish; then the hard stop cancels the rest, which hand
//! their jobs back (released at once, attempt not counted); the settler drains
//! every settlement and exits; the heartbeat stops last, so leases stay alive
//! until their jobs are settled.

pub mod breaker;
pub mod exec;
pub mod handler;
mod heartbeat;
pub mod http;
mod pipeline;
mod settle;
mod weights;

pub use handler::{Builtin, Handler, HandlerError, JobContext};

use crate::broker::{Broker, LeaseRef};
use crate::http::Status;
use crate::keys::QueueKeys;
use crate::metrics::QueueMetrics;
use settle::Settle;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weights::Weighted;

/// A distributed rate limit: at most `limit` starts per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u64,
    pub period: Duration,
}

/// Everything a worker needs to know, validated.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Queues and their weights.
    pub queues: Vec<(String, u32)>,
    pub concurrency: usize,
    pub visibility_timeout: Duration,
    pub job_timeout: Duration,
    pub shutdown_grace: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    pub idempotency_window: Duration,
    /// Most jobs one dequeue call may lease.
    pub max_batch: usize,
    pub rate_limits: HashMap<String, RateLimit>,
    pub breaker: breaker::BreakerConfig,
}

impl WorkerConfig {
    /// Defaults of the contract for the given queues.
    pub fn new(queues: Vec<(String, u32)>) -> Self {
        WorkerConfig {
            queues,
            concurrency: 32,
            visibility_timeout: Duration::from_secs(30),
            job_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            idempotency_window: Duration::from_secs(24 * 3600),
            max_batch: 256,
            rate_limits: HashMap::new(),
            breaker: breaker::BreakerConfig::default(),
        }
    }
}

/// One queue this worker takes from.
pub(crate) struct QueueSlot {
    pub name: Arc<str>,
    pub keys: QueueKeys,
    pub metrics: QueueMetrics,
}

/// State shared by the worker's tasks.
pub(crate) struct Shared {
    pub broker: Broker,
    pub cfg: WorkerConfig,
    pub handler: Arc<dyn Handler>,
    pub queues: Vec<QueueSlot>,
    /// Leases held, per queue: id → lease. Kept until the job is settled, so
    /// the heartbeat covers results that are still waiting to be flushed.
    pub held: Mutex<Vec<HashMap<String, LeaseRef>>>,
    pub hard_stop: CancellationToken,
    pub breakers: breaker::Breakers,
    pub status: Arc<Status>,
}

impl Shared {
    pub fn hold(&self, queue: usize, lease: &LeaseRef) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held[queue].insert(lease.id.clone(), lease.clone());
    }

    pub fn unhold(&self, queue: usize, lease: &LeaseRef) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if held[queue].get(&lease.id).is_some_and(|l| l.token == lease.token) {
            held[queue].remove(&lease.id);
        }
    }
}

/// Runs a worker until `shutdown` is cancelled, then stops in the documented
/// order. Returns once every job taken is settled (or handed back).
pub async fn run(
    broker: Broker,
    cfg: WorkerConfig,
    handler: Arc<dyn Handler>,
    status: Arc<Status>,
    shutdown: CancellationToken,
) {
    let (settle_tx, settle_rx) = mpsc::unbounded_channel();
    let queues: Vec<QueueSlot> = cfg
        .queues
        .iter()
        .map(|(name, _)| QueueSlot {
            name: name.as_str().into(),
            keys: broker.keys(name),
            metrics: QueueMetrics::new(name),
        })
        .collect();
    let shared = Arc::new(Shared {
        broker: broker.clone(),
        held: Mutex::new(vec![HashMap::new(); queues.len()]),
        queues,
        breakers: breaker::Breakers::new(cfg.breaker),
        cfg,
        handler,
        hard_stop: CancellationToken::new(),
        status: status.clone(),
    });
    status.set_redis_ok(true);

    let settler_abandon = CancellationToken::new();
    let settler = tokio::spawn(settle::run(shared.clone(), settle_rx, settler_abandon.clone()));
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat::run(shared.clone(), heartbeat_stop.clone()));

    let tracker = TaskTracker::new();
    fetch_loop(&shared, &tracker, &shutdown, &settle_tx).await;

    status.set_shutting_down();
    tracker.close();
    let grace = shared.cfg.shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(grace = ?grace, unfinished = tracker.len(), "shutdown grace over; handing back unfinished jobs");
        shared.hard_stop.cancel();
        tracker.wait().await;
    }
    // Every execution has sent its settlement; closing the last sender lets
    // the settler finish once it has flushed them all.
    drop(settle_tx);
    let settle_deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(settle_deadline);
    let mut settler = settler;
    tokio::select! {
        _ = &mut settler => {}
        _ = &mut settle_deadline => {
            tracing::error!("could not settle every job within 10s (Redis unreachable?); their leases will expire and they will run again");
            settler_abandon.cancel();
            let _ = settler.await;
        }
    }
    heartbeat_stop.cancel();
    let _ = heartbeat.await;
}

async fn fetch_loop(
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    settle_tx: &mpsc::UnboundedSender<Settle>,
) {
    let sem = Arc::new(Semaphore::new(shared.cfg.concurrency));
    let weights: Vec<u32> = shared.cfg.queues.iter().map(|(_, w)| *w).collect();
    let mut picker = Weighted::new(&weights);
    let worker_tag = crate::job::new_id();
    let worker_tag = &worker_tag[worker_tag.len() - 10..];
    let mut calls: u64 = 0;
    let mut waiter = heartbeat::Waiter::new(shared.clone());
    let mut backoff = Duration::from_millis(100);
    loop {
        let first = tokio::select! {
            p = sem.clone().acquire_owned() => p.expect("semaphore is never closed"),
            _ = shutdown.cancelled() => return,
        };
        let Some(qi) = picker.pick() else {
            drop(first);
            tokio::select! {
                _ = waiter.wait() => {}
                _ = shutdown.cancelled() => return,
            }
            picker.reset_empty();
            continue;
        };
        let mut permits = vec![first];
        while permits.len() < shared.cfg.max_batch {
            match sem.clone().try_acquire_owned() {
                Ok(p) => permits.push(p),
                Err(_) => break,
            }
        }
        calls += 1;
        let prefix = format!("{worker_tag}:{calls}:");
        let slot = &shared.queues[qi];
        let leased = shared.broker.dequeue(&slot.keys, permits.len(), shared.cfg.visibility_timeout, &prefix).await;
        let jobs = match leased {
            Ok(jobs) => {
                shared.status.set_redis_ok(true);
                backoff = Duration::from_millis(100);
                jobs
            }
            Err(e) => {
                shared.status.set_redis_ok(false);
                tracing::warn!(queue = %slot.name, error = %e, retry_in = ?backoff, "cannot take jobs; Redis unavailable?");
                drop(permits);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        if jobs.is_empty() {
            picker.mark_empty(qi);
            continue;
        }
        picker.charge(qi, jobs.len());
        for (job, permit) in jobs.into_iter().zip(permits) {
            let (shared, tx) = (shared.clone(), settle_tx.clone());
            tracker.spawn(async move {
                pipeline::execute(&shared, qi, job, &tx).await;
                drop(permit);
            });
        }
    }
}
