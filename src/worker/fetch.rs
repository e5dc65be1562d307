//! The fetch loop: keeps a worker supplied with jobs.
//!
//! Up to `concurrency + prefetch` jobs are leased at a time. Dequeues are
//! batched and up to two are in flight at once, so the next batch is on its
//! way while the current one runs; a job starts as soon as a slot is free.
//! Up to as many jobs as finish within [`HORIZON`] (at most `concurrency`)
//! go through their checks (breaker, rate limiter, start: idempotency guard
//! and attempt charge) ahead of a free slot, so a slot never waits for a
//! round trip to Redis. So a killed worker's jobs that were that far along
//! come back charged (at most `concurrency` of them; none for slow jobs,
//! whose checks wait for a free slot).
//! Unless fixed, the prefetch is about [`HORIZON`]'s worth of short jobs:
//! as many as finished within the horizon of their start over the last one.
//! Fast jobs get large batches (few script calls per job, the next batch
//! always on its way); slow jobs are not hoarded, so idle workers elsewhere
//! get them, and a worker killed with `kill -9` strands at most ~50 ms worth
//! of unstarted jobs.
//! Queues are picked by weight; when every queue is found empty the loop
//! blocks on their wake-up signals instead of polling. On shutdown, jobs
//! leased but not started are handed back at once.

use super::handler::Cancellation;
use super::pipeline;
use super::settle::{Op, Settle, Settler};
use super::weights::Weighted;
use super::Shared;
use crate::broker::{BrokerError, LeaseRef, Leased};
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use std::collections::VecDeque;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most dequeue calls in flight at once.
const MAX_REQUESTS: usize = 2;
/// The adaptive prefetch holds about this long's worth of short jobs.
const HORIZON: Duration = Duration::from_millis(50);
/// Bounds of the adaptive prefetch.
const AUTO_PREFETCH: (usize, usize) = (1, 1000);

/// Jobs to lease beyond the running ones: fixed, or the number of jobs that
/// finished within [`HORIZON`] of their start over the current or the
/// previous [`HORIZON`], whichever is higher. Short jobs make it grow about
/// twofold per batch; jobs that run longer than the horizon never count, so
/// a wave of slow jobs finishing together does not look like a high rate.
struct Prefetch {
    fixed: Option<usize>,
    window: Instant,
    previous: usize,
    current: usize,
}

impl Prefetch {
    fn new(fixed: Option<usize>) -> Self {
        Prefetch { fixed, window: Instant::now(), previous: 0, current: 0 }
    }

    /// The prefetch now, counting the short executions finished since the
    /// last call.
    fn get(&mut self, slots: &Slots) -> usize {
        if let Some(n) = self.fixed {
            return n;
        }
        self.current += slots.short.swap(0, Ordering::Relaxed);
        let elapsed = self.window.elapsed();
        if elapsed >= HORIZON {
            self.previous = if elapsed >= 2 * HORIZON { 0 } else { self.current };
            self.current = 0;
            self.window = Instant::now();
        }
        self.previous.max(self.current).clamp(AUTO_PREFETCH.0, AUTO_PREFETCH.1)
    }

    /// Executions to get ready ahead of free slots: as many as finish within
    /// the horizon (none for slow jobs: a slot frees up rarely, and the
    /// checks' round trip is nothing beside the job).
    fn lookahead(&self) -> usize {
        self.fixed.unwrap_or(self.previous.max(self.current))
    }
}

/// The execution slots, and the executions getting ready ahead of them.
pub(super) struct Slots {
    /// One per running handler, held until its outcome is in Redis.
    sem: Arc<Semaphore>,
    /// Executions started but not (yet) holding a slot.
    ahead: AtomicUsize,
    /// Signalled when an execution stops counting as ahead.
    moved: Notify,
    /// Short executions finished (feeds the adaptive prefetch).
    short: AtomicUsize,
}

/// An execution's place in [`Slots`]: counted as ahead until it gets a slot
/// or ends.
pub(super) struct Ahead {
    slots: Arc<Slots>,
    counted: bool,
}

impl Ahead {
    fn new(slots: &Arc<Slots>) -> Self {
        slots.ahead.fetch_add(1, Ordering::Relaxed);
        Ahead { slots: slots.clone(), counted: true }
    }

    /// Waits for a free slot (slots go in the order asked).
    pub async fn slot(&mut self) -> OwnedSemaphorePermit {
        let permit = self.slots.sem.clone().acquire_owned().await.expect("the slots are never closed");
        self.leave();
        permit
    }

    /// Records a handler's run time (short ones feed the prefetch).
    pub fn ran_for(&self, d: Duration) {
        if d < HORIZON {
            self.slots.short.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn leave(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.slots.ahead.fetch_sub(1, Ordering::Relaxed);
            self.slots.moved.notify_one();
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.leave();
    }
}

/// Body bytes of the jobs leased but waiting for a slot, at most (past it
/// the worker asks for no more, whatever the prefetch says).
const MAX_WAITING_BYTES: usize = 32 << 20;

/// Receipts of answered dequeues deleted by one dequeue call, at most.
const MAX_RECEIPTS: usize = 8;

/// What a dequeue call brings back: its queue, how many it asked for, when
/// it was sent, its token prefix and the jobs.
type Reply = (usize, usize, Instant, String, Result<Vec<Leased>, BrokerError>);
type Request = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// A leased job waiting for a slot.
type Waiting = (usize, Leased, Cancellation);

pub(super) async fn run(
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    settle_tx: &Settler,
) {
    let cfg = &shared.cfg;
    let mut prefetch = Prefetch::new(cfg.prefetch);
    let slots = Arc::new(Slots {
        sem: Arc::new(Semaphore::new(cfg.concurrency)),
        ahead: AtomicUsize::new(0),
        moved: Notify::new(),
        short: AtomicUsize::new(0),
    });
    let sem = &slots.sem;
    let weights: Vec<u32> = cfg.queues.iter().map(|(_, w)| *w).collect();
    let mut picker = Weighted::new(&weights);
    let tag = crate::job::new_id();
    let tag = tag[tag.len() - 10..].to_string();
    let mut calls: u64 = 0;
    let mut waiter = super::heartbeat::Waiter::new(shared.clone());
    let mut backoff = Duration::from_millis(100);
    let mut local: VecDeque<Waiting> = VecDeque::new();
    let mut waiting_bytes = 0usize;
    let mut requests: FuturesUnordered<Request> = FuturesUnordered::new();
    let mut requested = 0usize;
    // Per queue: receipts of dequeues whose replies arrived, deleted by the
    // queue's next dequeue (or expiring with the lease).
    let mut receipts: Vec<Vec<String>> = vec![Vec::new(); shared.queues.len()];
    let mut was_paused = false;

    loop {
        // No jobs are taken or started while outcomes cannot be written or
        // the handler is unavailable; leases held stay renewed.
        let paused = shared.taking_paused();
        if paused != was_paused {
            was_paused = paused;
            if paused {
                tracing::warn!("not taking jobs for now (see the errors above)");
            } else {
                tracing::info!("taking jobs again");
            }
        }
        // Start what we hold: one job per free slot, and the lookahead's
        // worth ahead of them.
        let capacity = cfg.concurrency + prefetch.get(&slots);
        let lookahead = prefetch.lookahead().min(cfg.concurrency);
        while !local.is_empty()
            && !paused
            && slots.ahead.load(Ordering::Relaxed) < sem.available_permits().max(lookahead)
        {
            let (qi, job, cancel) = local.pop_front().expect("checked non-empty");
            waiting_bytes -= body_len(&job);
            let (shared, tx, ahead, stop) = (shared.clone(), settle_tx.clone(), Ahead::new(&slots), shutdown.clone());
            tracker.spawn(async move {
                let (id, token) = (job.id.clone(), job.token.clone());
                let run = AssertUnwindSafe(pipeline::execute(&shared, qi, job, cancel, ahead, &stop, &tx));
                if run.catch_unwind().await.is_err() {
                    // A bug of dtq's own (handler panics are caught inside):
                    // never strand the job.
                    tracing::error!(id = %id, "internal error: the job's execution panicked; handing it back");
                    let lease = LeaseRef { id, token, lock: None };
                    let op = Op::Release { delay_ms: 1000, refund: None };
                    tx.send(Settle { queue: qi, lease, op, metrics: None, permit: None });
                }
            });
        }
        // Ask for more while there is room: in batches of at least half the
        // capacity (fewer, larger script calls), or whatever fits when the
        // worker would otherwise run dry.
        let running = cfg.concurrency - sem.available_permits() + slots.ahead.load(Ordering::Relaxed);
        let mut room = capacity.saturating_sub(running + local.len() + requested);
        if waiting_bytes >= MAX_WAITING_BYTES {
            room = 0;
        }
        let min_batch = (capacity / 2).clamp(1, cfg.max_batch);
        while !paused
            && requests.len() < MAX_REQUESTS
            && room > 0
            && (room >= min_batch || (local.is_empty() && requests.is_empty()))
        {
            let Some(qi) = picker.pick() else { break };
            let n = room.min(cfg.max_batch);
            calls += 1;
            let prefix = format!("{tag}:{calls}:");
            let s = shared.clone();
            let done = std::mem::take(&mut receipts[qi]);
            requests.push(Box::pin(async move {
                let sent = Instant::now();
                let r = s.broker.dequeue(&s.queues[qi].keys, n, s.cfg.visibility_timeout, &prefix, &done).await;
                (qi, n, sent, prefix, r)
            }));
            requested += n;
            room -= n;
            // Charged now so the next pick already sees it; corrected below
            // if fewer jobs come back.
            picker.charge(qi, n as i64);
        }
        let idle = requests.is_empty() && local.is_empty() && picker.pick().is_none();
        tokio::select! {
            Some((qi, n, sent, prefix, result)) = requests.next(), if !requests.is_empty() => {
                requested -= n;
                match result {
                    Ok(jobs) => {
                        shared.status.set_redis_ok(true);
                        backoff = Duration::from_millis(100);
                        if jobs.len() < n {
                            picker.charge(qi, jobs.len() as i64 - n as i64);
                        }
                        // Empty answers in a row back off further; a short
                        // batch (the queue just ran dry) starts over.
                        if !jobs.is_empty() {
                            picker.mark_busy(qi);
                        }
                        if jobs.len() < n {
                            picker.mark_empty(qi);
                        }
                        if !jobs.is_empty() && receipts[qi].len() < MAX_RECEIPTS {
                            receipts[qi].push(shared.queues[qi].keys.receipt(&prefix));
                        }
                        waiting_bytes += jobs.iter().map(body_len).sum::<usize>();
                        keep(shared, &mut local, qi, sent, jobs);
                    }
                    Err(e) => {
                        picker.charge(qi, -(n as i64));
                        shared.status.set_redis_ok(false);
                        if e.to_string().contains("OOM") {
                            tracing::warn!(queue = %shared.queues[qi].name, retry_in = ?backoff, "Redis is full (maxmemory): taking no new jobs until memory frees; running jobs keep their leases");
                        } else {
                            tracing::warn!(queue = %shared.queues[qi].name, error = %e, retry_in = ?backoff, "cannot take jobs; Redis unavailable?");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(backoff) => {}
                            _ = shutdown.cancelled() => break,
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            // A slot freed up: loop around to start the next job, or to ask
            // for more when everything we may hold is running.
            permit = sem.clone().acquire_owned(), if !paused && (!local.is_empty() || (room == 0 && requests.is_empty())) => drop(permit),
            // An execution got its slot (or ended): room for one more ahead.
            _ = slots.moved.notified(), if !paused => {}
            _ = waiter.wait(), if idle && !paused => picker.reset_empty(),
            _ = tokio::time::sleep(Duration::from_millis(100)), if paused => {}
            _ = shutdown.cancelled() => break,
        }
    }

    // Hand back what was leased but never started, including batches still
    // on their way: visible to other workers at once, no attempt spent.
    while let Some((qi, _, sent, _, result)) = requests.next().await {
        if let Ok(jobs) = result {
            keep(shared, &mut local, qi, sent, jobs);
        }
    }
    if !local.is_empty() {
        tracing::info!(jobs = local.len(), "handing back jobs that had not started");
    }
    for (qi, job, _) in local {
        let lease = LeaseRef { id: job.id, token: job.token, lock: None };
        let op = Op::Release { delay_ms: 0, refund: None };
        settle_tx.send(Settle { queue: qi, lease, op, metrics: None, permit: None });
    }
}

fn body_len(job: &Leased) -> usize {
    job.body.as_ref().map_or(0, |b| b.len())
}

/// Takes leased jobs in: held from now on (the heartbeat extends their
/// leases until they are settled) and queued to start.
fn keep(shared: &Shared, local: &mut VecDeque<Waiting>, qi: usize, sent: Instant, jobs: Vec<Leased>) {
    for job in jobs {
        let cancel = shared.hold(qi, LeaseRef { id: job.id.clone(), token: job.token.clone(), lock: None }, sent);
        local.push_back((qi, job, cancel));
    }
}
