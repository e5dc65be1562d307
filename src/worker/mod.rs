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
//!   settlement sent to the settler; an execution's slot is freed only once
//!   its outcome is in Redis;
//! - the settlers ([`settle`]): one per queue, coalescing settlements into
//!   batched script calls;
//! - two batchers ([`batch`]): coalesce the start checks (idempotency guard
//!   and attempt charge) and the rate-limiter requests of concurrent
//!   executions the same way;
//! - the heartbeat ([`heartbeat`]): extends the leases of everything held,
//!   and the fence, which stops an attempt before its lease can run out
//!   unconfirmed (self-fencing: a recovered job never runs beside its
//!   previous attempt).
//!
//! Stop order on shutdown: the fetch loop stops taking jobs; executions get
//! `shutdown_grace` to finish; then the hard stop cancels the rest, which hand
//! their jobs back (released at once, attempt not counted); the settlers
//! drain every settlement and exit; the heartbeat stops last, so leases stay
//! alive until their jobs are settled.

pub(crate) mod batch;
pub mod breaker;
pub mod exec;
mod fetch;
pub mod handler;
mod heartbeat;
pub mod http;
mod pipeline;
pub mod registry;
mod settle;
mod weights;

pub use handler::{Builtin, CancelReason, Cancellation, Handler, HandlerError, HandlerFuture, JobContext};

use crate::broker::{Broker, LeaseRef, Start, StartCheck};
use crate::keys::QueueKeys;
use crate::metrics::QueueMetrics;
use crate::status::Status;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A distributed rate limit: at most `limit` starts per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Most starts per period.
    pub limit: u64,
    /// The window the limit counts over.
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
    /// Jobs run at once (1 to 100,000).
    pub concurrency: usize,
    /// How long a lease lasts without a heartbeat (at least 300 ms).
    pub visibility_timeout: Duration,
    /// A handler's time limit for jobs that set none.
    pub job_timeout: Duration,
    /// Longest timeout a job may set for itself (longer ones are clamped).
    pub max_job_timeout: Duration,
    /// How long running jobs get to finish at shutdown.
    pub shutdown_grace: Duration,
    /// Base of the retry backoff: full jitter over `base · 2^(n-1)` for retry n.
    pub backoff_base: Duration,
    /// Longest retry backoff (it also caps a handler's retry delay).
    pub backoff_max: Duration,
    /// How long a completed client id or idempotency key stays marked done.
    pub idempotency_window: Duration,
    /// Most jobs one dequeue call may lease.
    pub max_batch: usize,
    /// Jobs leased ahead of free slots, so the next batch is already here
    /// when a slot frees up (at most `concurrency + prefetch` held). `None`:
    /// adaptive, about 50 ms worth of short jobs (at least 1, at most 1000;
    /// see `fetch`).
    pub prefetch: Option<usize>,
    /// Rate limits by job kind.
    pub rate_limits: HashMap<String, RateLimit>,
    /// The per-kind circuit breaker's settings.
    pub breaker: breaker::BreakerConfig,
    /// Called with each job id once its ack is in Redis.
    pub on_ack: Option<AckHook>,
    /// How often an info line sums up what the worker did (`None`: never).
    pub summary_every: Option<Duration>,
}

impl WorkerConfig {
    /// Checks every setting; a worker refuses to start with an invalid one.
    pub fn validate(&self) -> Result<(), String> {
        if self.queues.is_empty() {
            return Err("no queues to work on".into());
        }
        for (i, (name, weight)) in self.queues.iter().enumerate() {
            crate::job::validate_queue_name(name)?;
            if !(1..=1000).contains(weight) {
                return Err(format!("queue {name:?}: weight must be 1 to 1000, got {weight}"));
            }
            if self.queues[..i].iter().any(|(n, _)| n == name) {
                return Err(format!("queue {name:?} is listed twice"));
            }
        }
        if !(1..=100_000).contains(&self.concurrency) {
            return Err(format!("concurrency must be 1 to 100000, got {}", self.concurrency));
        }
        if self.visibility_timeout < Duration::from_millis(300) {
            return Err("visibility timeout must be at least 300ms (leases are renewed every third of it)".into());
        }
        if self.job_timeout.is_zero() || self.job_timeout > self.max_job_timeout {
            return Err("job timeout must be greater than zero and at most the max job timeout".into());
        }
        if !(1..=1000).contains(&self.max_batch) {
            return Err(format!("max batch must be 1 to 1000, got {}", self.max_batch));
        }
        if self.backoff_max < self.backoff_base {
            return Err("backoff max must not be below backoff base".into());
        }
        if self.idempotency_window.is_zero() {
            return Err("idempotency window must be greater than zero".into());
        }
        for (kind, l) in &self.rate_limits {
            if l.limit == 0 || l.period.is_zero() {
                return Err(format!("rate limit of {kind:?}: N and PERIOD must be greater than zero"));
            }
        }
        self.breaker.validate()
    }

    /// How long before its lease could run out unconfirmed an attempt is
    /// stopped: a quarter of the lease, so the stop (and an `--exec`
    /// group's grace) is over before another worker can get the job.
    pub fn fence_margin(&self) -> Duration {
        self.visibility_timeout / 4
    }

    /// Time a cancelled handler gets before it is dropped (and an `--exec`
    /// process group gets SIGKILL after SIGTERM).
    pub fn cancel_grace(&self) -> Duration {
        (self.visibility_timeout / 10).min(Duration::from_secs(5))
    }

    /// Defaults of the contract for the given queues.
    pub fn new(queues: Vec<(String, u32)>) -> Self {
        WorkerConfig {
            queues,
            concurrency: 32,
            visibility_timeout: Duration::from_secs(30),
            job_timeout: Duration::from_secs(300),
            max_job_timeout: Duration::from_secs(24 * 3600),
            shutdown_grace: Duration::from_secs(30),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(3600),
            idempotency_window: Duration::from_secs(24 * 3600),
            max_batch: 256,
            prefetch: None,
            rate_limits: HashMap::new(),
            breaker: breaker::BreakerConfig::default(),
            on_ack: None,
            summary_every: Some(Duration::from_secs(60)),
        }
    }
}

/// One queue this worker takes from.
pub(crate) struct QueueSlot {
    pub name: Arc<str>,
    pub keys: QueueKeys,
    pub metrics: QueueMetrics,
}

/// A lease this worker holds.
pub(crate) struct Held {
    pub lease: LeaseRef,
    /// When the last renewal that Redis confirmed was sent (or the dequeue
    /// that took the lease): the lease lasts at least the visibility timeout
    /// from then.
    pub confirmed: Instant,
    /// Stops the attempt.
    pub cancel: Cancellation,
    /// When it was leased (Unix ms), for the worker registry.
    pub leased_at: u64,
}

/// State shared by the worker's tasks.
pub(crate) struct Shared {
    /// This worker's registry id (also recorded with each attempt it runs).
    pub id: String,
    pub broker: Broker,
    pub cfg: WorkerConfig,
    pub handler: Arc<dyn Handler>,
    pub queues: Vec<QueueSlot>,
    /// Leases held, per queue: id → lease. Kept until the job is settled, so
    /// the heartbeat covers results that are still waiting to be flushed.
    pub held: Mutex<Vec<HashMap<String, Held>>>,
    pub hard_stop: CancellationToken,
    pub breakers: breaker::Breakers,
    pub status: Arc<Status>,
    /// Start checks (guard and attempt charge), batched per queue.
    pub starter: batch::Batcher<usize, StartCheck, Start>,
    /// Rate-limiter starts, batched per kind and limit.
    pub limiter: batch::Batcher<(String, RateLimit), (), Option<u64>>,
    /// Queues whose settler cannot write outcomes right now: while any is,
    /// the worker takes no new jobs.
    pub stalled: AtomicUsize,
    /// No jobs are taken before this (the handler itself is unavailable).
    pub paused_until: Mutex<Option<Instant>>,
    /// Outcomes written, for the summary line.
    pub tally: Tally,
}

/// Outcomes this worker wrote, since it started.
#[derive(Default)]
pub(crate) struct Tally {
    pub processed: AtomicU64,
    pub failed: AtomicU64,
}

/// Says so in the log when every queue this worker takes from is paused
/// (checked at start, then every 10 s), and when one is resumed: a worker
/// that takes nothing because of a pause is not left looking idle.
async fn watch_paused(shared: Arc<Shared>, stop: CancellationToken) {
    let mut all_paused = false;
    loop {
        let mut paused = 0;
        for q in &shared.queues {
            if shared.broker.is_paused(&q.keys).await.unwrap_or(false) {
                paused += 1;
            }
        }
        let now = paused == shared.queues.len();
        if now != all_paused {
            all_paused = now;
            let names: Vec<&str> = shared.queues.iter().map(|q| &*q.name).collect();
            if now {
                tracing::warn!(queues = %names.join(","), "every queue this worker takes from is paused (dtq admin resume QUEUE)");
            } else {
                tracing::info!("a queue was resumed; taking jobs");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Logs, every `every`, what the worker did since the last line (nothing
/// when it did nothing): a worker that succeeds is not silent.
async fn summarize(shared: Arc<Shared>, every: Duration, stop: CancellationToken) {
    let (mut processed, mut failed) = (0u64, 0u64);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let (p, f) = (shared.tally.processed.load(Ordering::Relaxed), shared.tally.failed.load(Ordering::Relaxed));
        let (dp, df) = (p - processed, f - failed);
        (processed, failed) = (p, f);
        let held: usize = shared.lock_held().iter().map(HashMap::len).sum();
        if dp + df > 0 || held > 0 {
            let rate = format!("{:.1}", dp as f64 / every.as_secs_f64());
            tracing::info!(processed = dp, failed_attempts = df, jobs_per_s = %rate, holding = held, every = %humantime::format_duration(every), "summary");
        }
    }
}

impl Shared {
    pub(crate) fn lock_held(&self) -> std::sync::MutexGuard<'_, Vec<HashMap<String, Held>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a lease taken by a dequeue sent at `sent`; returns its stop signal.
    pub fn hold(&self, queue: usize, lease: LeaseRef, sent: Instant) -> Cancellation {
        let cancel = Cancellation::default();
        let leased_at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let held = Held { lease, confirmed: sent, cancel: cancel.clone(), leased_at };
        self.lock_held()[queue].insert(held.lease.id.clone(), held);
        cancel
    }

    /// Runs `f` on the held entry of `lease`, if it is still held.
    pub fn with_held<R>(&self, queue: usize, lease: &LeaseRef, f: impl FnOnce(&mut Held) -> R) -> Option<R> {
        let mut held = self.lock_held();
        held[queue].get_mut(&lease.id).filter(|h| h.lease.token == lease.token).map(f)
    }

    pub fn unhold(&self, queue: usize, lease: &LeaseRef) {
        let mut held = self.lock_held();
        if held[queue].get(&lease.id).is_some_and(|h| h.lease.token == lease.token) {
            held[queue].remove(&lease.id);
        }
    }

    /// True while the worker must not take or start jobs.
    pub fn taking_paused(&self) -> bool {
        if self.stalled.load(Ordering::Relaxed) > 0 {
            return true;
        }
        let mut until = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        match *until {
            Some(t) if Instant::now() < t => true,
            Some(_) => {
                *until = None;
                false
            }
            None => false,
        }
    }

    /// Takes no jobs for `d` (the handler is unavailable).
    pub fn pause_taking(&self, d: Duration) {
        *self.paused_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + d);
    }
}

/// Runs a worker until `shutdown` is cancelled, then stops in the documented
/// order. Returns once every job taken is settled (or handed back); an
/// invalid configuration is refused before anything starts.
pub async fn run(
    broker: Broker,
    cfg: WorkerConfig,
    handler: Arc<dyn Handler>,
    status: Arc<Status>,
    shutdown: CancellationToken,
) -> Result<(), String> {
    cfg.validate()?;
    for (q, _) in &cfg.queues {
        broker.register_queue(q).await.map_err(|e| e.to_string())?;
    }
    let queues: Vec<QueueSlot> = cfg
        .queues
        .iter()
        .map(|(name, _)| QueueSlot {
            name: name.as_str().into(),
            keys: broker.keys(name),
            metrics: QueueMetrics::new(name),
        })
        .collect();
    let id = registry::new_id();
    let (b, keys, vt, worker) =
        (broker.clone(), queues.iter().map(|q| q.keys.clone()).collect::<Vec<_>>(), cfg.visibility_timeout, id.clone());
    let starter = batch::Batcher::spawn("start", move |queue: usize, checks: Vec<StartCheck>| {
        let (b, k, worker) = (b.clone(), keys[queue].clone(), worker.clone());
        async move { b.start(&k, vt, &worker, &checks).await }
    });
    let b = broker.clone();
    let limiter = batch::Batcher::spawn("rate limit", move |(kind, limit): (String, RateLimit), starts: Vec<()>| {
        let b = b.clone();
        async move { b.rate_limit(&kind, limit.limit, limit.period, starts.len()).await }
    });
    let shared = Arc::new(Shared {
        id,
        broker: broker.clone(),
        starter,
        limiter,
        stalled: AtomicUsize::new(0),
        paused_until: Mutex::new(None),
        tally: Tally::default(),
        held: Mutex::new((0..queues.len()).map(|_| HashMap::new()).collect()),
        queues,
        breakers: breaker::Breakers::new(cfg.breaker),
        cfg,
        handler,
        hard_stop: CancellationToken::new(),
        status: status.clone(),
    });
    status.set_redis_ok(true);

    let settler_abandon = CancellationToken::new();
    let (settle_tx, settlers) = settle::Settler::spawn(&shared, &settler_abandon);
    let heartbeat_stop = CancellationToken::new();
    let heartbeat = tokio::spawn(heartbeat::run(shared.clone(), heartbeat_stop.clone()));
    tokio::spawn(watch_paused(shared.clone(), heartbeat_stop.clone()));
    let registry = tokio::spawn(registry::run(shared.clone(), heartbeat_stop.clone()));
    if let Some(every) = shared.cfg.summary_every {
        tokio::spawn(summarize(shared.clone(), every, heartbeat_stop.clone()));
    }

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
    // the settlers finish once they have flushed them all.
    drop(settle_tx);
    let mut settlers = std::pin::pin!(futures::future::join_all(settlers));
    if tokio::time::timeout(Duration::from_secs(10), &mut settlers).await.is_err() {
        tracing::error!("could not settle every job within 10s (Redis unreachable?); their leases will expire and they will run again");
        settler_abandon.cancel();
        settlers.await;
    }
    heartbeat_stop.cancel();
    let _ = heartbeat.await;
    let _ = registry.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_config_that_would_panic_or_hang_is_refused() {
        let ok = WorkerConfig::new(vec![("q".into(), 1)]);
        assert!(ok.validate().is_ok());
        type Change = fn(&mut WorkerConfig);
        let cases: Vec<(Change, &str)> = vec![
            (|c| c.visibility_timeout = Duration::ZERO, "visibility timeout"),
            (|c| c.concurrency = 0, "concurrency"),
            (|c| c.queues.clear(), "no queues"),
            (|c| c.queues.push(("q".into(), 1)), "listed twice"),
            (|c| c.max_batch = 0, "max batch"),
            (|c| c.job_timeout = Duration::ZERO, "job timeout"),
            (|c| c.backoff_max = Duration::ZERO, "backoff"),
        ];
        for (change, says) in cases {
            let mut c = ok.clone();
            change(&mut c);
            let e = c.validate().unwrap_err();
            assert!(e.contains(says), "{says}: {e}");
        }
    }
}
