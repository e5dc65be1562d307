//! The worker: takes jobs from Redis and runs each through the pipeline
//! (circuit breaker → rate limiter → idempotency guard → handler → ack or
//! retry).
//!
//! Tasks of one worker process:
//! - the fetch loop ([`fetch`]): picks a queue by weight, keeps up to
//!   `concurrency + prefetch` jobs leased (prefetch follows how fast short
//!   jobs finish) with up to two batched dequeues in flight, starts one
//!   execution per free slot, and waits on the queues' wake-up signal when
//!   all are empty;
//! - executions ([`pipeline`]): one task per job, each ending in exactly one
//!   settlement sent to the settler;
//! - the settler ([`settle`]): coalesces settlements into batched script calls;
//! - two batchers ([`batch`]): coalesce the idempotency-guard checks and
//!   the rate-limiter requests of concurrent executions the same way;
//! - the heartbeat ([`heartbeat`]): extends the leases of everything held.
//!
//! Stop order on shutdown: the fetch loop stops taking jobs; executions get
//! `shutdown_grace` to finish; then the hard stop cancels the rest, which hand
//! their jobs back (released at once, attempt not counted); the settler drains
//! every settlement and exits; the heartbeat stops last, so leases stay alive
//! until their jobs are settled.

mod batch;
pub mod breaker;
pub mod exec;
mod fetch;
pub mod handler;
mod heartbeat;
pub mod http;
mod pipeline;
mod settle;
mod weights;

pub use handler::{Builtin, Handler, HandlerError, JobContext};

use crate::broker::{Broker, Guard, GuardCheck, LeaseRef};
use crate::http::Status;
use crate::keys::QueueKeys;
use crate::metrics::QueueMetrics;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A distributed rate limit: at most `limit` starts per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u64,
    pub period: Duration,
}

/// Called with a job's id once its ack is in Redis (used by `bench`).
#[derive(Clone)]
pub struct AckHook(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for AckHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AckHook")
    }
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
    /// Jobs leased ahead of free slots, so the next batch is already here
    /// when a slot frees up (at most `concurrency + prefetch` held). `None`:
    /// adaptive, about 50 ms worth of short jobs (at least 1, at most 1000;
    /// see `fetch`).
    pub prefetch: Option<usize>,
    pub rate_limits: HashMap<String, RateLimit>,
    pub breaker: breaker::BreakerConfig,
    pub on_ack: Option<AckHook>,
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
            prefetch: None,
            rate_limits: HashMap::new(),
            breaker: breaker::BreakerConfig::default(),
            on_ack: None,
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
    /// Idempotency-guard checks, batched per queue.
    pub guard: batch::Batcher<usize, GuardCheck, Guard>,
    /// Rate-limiter starts (lease tokens), batched per kind and limit.
    pub limiter: batch::Batcher<(String, RateLimit), String, Option<u64>>,
}

impl Shared {
    pub fn hold(&self, queue: usize, lease: LeaseRef) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held[queue].insert(lease.id.clone(), lease);
    }

    /// True while `lease` is held (not yet settled).
    pub fn holds(&self, queue: usize, lease: &LeaseRef) -> bool {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held[queue].get(&lease.id).is_some_and(|l| l.token == lease.token)
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
    let b = broker.clone();
    let guard = batch::Batcher::spawn("idempotency guard", move |_queue, checks: Vec<GuardCheck>| {
        let b = b.clone();
        async move { b.guard(&checks).await }
    });
    let b = broker.clone();
    let limiter =
        batch::Batcher::spawn("rate limit", move |(kind, limit): (String, RateLimit), tokens: Vec<String>| {
            let b = b.clone();
            async move {
                let members: Vec<&str> = tokens.iter().map(String::as_str).collect();
                b.rate_limit(&kind, limit.limit, limit.period, &members).await
            }
        });
    let shared = Arc::new(Shared {
        broker: broker.clone(),
        guard,
        limiter,
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
    fetch::run(&shared, &tracker, &shutdown, &settle_tx).await;

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
