//! The settlers: one task per queue coalesces the outcomes of executions
//! into batched ack, fail and release script calls (one call per kind of
//! outcome per flush; a flush takes whatever arrived since the last one,
//! with up to [`MAX_FLUSHES`] in flight), retries them while Redis is away, and only then forgets the leases
//! and frees the executions' slots. Queues settle independently, so one
//! stuck queue holds up no other; while a queue cannot write its outcomes
//! the worker takes no new jobs (`Shared::stalled`) and `/ready` says so.

use super::handler::JobResult;
use super::Shared;
use crate::broker::{BrokerError, Completion, FailTo, Failure, LeaseRef, Settled};
use crate::metrics::KindMetrics;
use futures::future::join_all;
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Most settlements flushed at once.
const MAX_FLUSH: usize = 512;
/// Most flushes of one queue in flight at once: a settlement waits for a
/// free one, not for the previous flush to come back.
const MAX_FLUSHES: usize = 4;
/// Attempts at a call that failed for a reason retrying cannot fix (a
/// script error) before its settlements are given up: their leases expire
/// and the jobs run again.
const MAX_PERMANENT_TRIES: u32 = 3;

/// What to do with a leased job.
#[derive(Debug)]
pub enum Op {
    /// Completed: mark these idempotency keys completed; keep the result.
    Ack { markers: Vec<String>, result: JobResult },
    /// A failed attempt: where it goes, its error, its number, and whether
    /// it ran out of time.
    Fail { to: FailTo, error: String, attempt: u32, timed_out: bool },
    /// Back without spending an attempt, visible after this many ms;
    /// `refund: Some(n)` gives back attempt n, whose handler started.
    Release { delay_ms: u64, refund: Option<u32> },
    /// Nothing to write: the attempt was stopped because its lease may be
    /// gone, so whoever holds the job now settles it.
    Abandon,
}

/// One job's outcome, on its way to Redis.
pub struct Settle {
    pub queue: usize,
    pub lease: LeaseRef,
    pub op: Op,
    pub metrics: Option<Arc<KindMetrics>>,
    /// The execution's slot, freed (dropped) once the outcome is in Redis.
    #[allow(dead_code)]
    pub permit: Option<OwnedSemaphorePermit>,
}

/// Sends settlements to their queue's settler.
#[derive(Clone)]
pub struct Settler {
    queues: Vec<UnboundedSender<Settle>>,
}

impl Settler {
    /// One settler task per queue; each runs until every `Settler` clone is
    /// gone and everything received is flushed, or until `abandon` (Redis
    /// unreachable at the end of shutdown).
    pub fn spawn(shared: &Arc<Shared>, abandon: &CancellationToken) -> (Settler, Vec<JoinHandle<()>>) {
        let (queues, tasks) = (0..shared.queues.len())
            .map(|qi| {
                let (tx, rx) = unbounded_channel();
                (tx, tokio::spawn(run(shared.clone(), qi, rx, abandon.clone())))
            })
            .unzip();
        (Settler { queues }, tasks)
    }

    /// Queues a settlement. (The settlers outlive every execution, so this
    /// cannot fail while the worker runs.) The channel is bounded by what a
    /// worker holds: one settlement per leased job.
    pub fn send(&self, s: Settle) {
        let _ = self.queues[s.queue].send(s);
    }
}

async fn run(shared: Arc<Shared>, qi: usize, mut rx: UnboundedReceiver<Settle>, abandon: CancellationToken) {
    let mut flushes = FuturesUnordered::new();
    let mut open = true;
    while open || !flushes.is_empty() {
        tokio::select! {
            batch = recv_batch(&mut rx), if open && flushes.len() < MAX_FLUSHES => match batch {
                Some(batch) => flushes.push(flush(&shared, qi, batch, &abandon)),
                None => open = false,
            },
            Some(()) = flushes.next(), if !flushes.is_empty() => {}
        }
    }
}

/// Whatever has arrived (at least one settlement, at most [`MAX_FLUSH`]);
/// `None` once every sender is gone and everything was received.
async fn recv_batch(rx: &mut UnboundedReceiver<Settle>) -> Option<Vec<Settle>> {
    let mut batch = Vec::new();
    (rx.recv_many(&mut batch, MAX_FLUSH).await > 0).then_some(batch)
}

async fn flush(shared: &Shared, qi: usize, batch: Vec<Settle>, abandon: &CancellationToken) {
    let groups = crate::group::group_by(batch.iter().map(|s| (group_of(&s.op), s)));
    join_all(groups.iter().map(|(g, items)| settle_group(shared, qi, *g, items, abandon))).await;
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Group {
    Ack,
    Fail,
    Release,
    Abandon,
}

fn group_of(op: &Op) -> Group {
    match op {
        Op::Ack { .. } => Group::Ack,
        Op::Fail { .. } => Group::Fail,
        Op::Release { .. } => Group::Release,
        Op::Abandon => Group::Abandon,
    }
}

async fn write(shared: &Shared, qi: usize, group: Group, items: &[&Settle]) -> Result<Settled, BrokerError> {
    let keys = &shared.queues[qi].keys;
    let broker = &shared.broker;
    match group {
        Group::Ack => {
            let jobs: Vec<Completion> = items
                .iter()
                .map(|s| match &s.op {
                    Op::Ack { markers, result } => Completion { lease: &s.lease, markers, result: result.as_deref() },
                    _ => unreachable!("grouped by op"),
                })
                .collect();
            broker.ack(keys, &jobs, shared.cfg.idempotency_window).await
        }
        Group::Fail => {
            let jobs: Vec<Failure> = items
                .iter()
                .map(|s| match &s.op {
                    Op::Fail { to, error, attempt, timed_out } => {
                        Failure { lease: &s.lease, to: *to, error, attempt: *attempt, timed_out: *timed_out }
                    }
                    _ => unreachable!("grouped by op"),
                })
                .collect();
            broker.fail(keys, &jobs).await
        }
        Group::Release => {
            let jobs: Vec<(&LeaseRef, u64, Option<u32>)> = items
                .iter()
                .map(|s| match &s.op {
                    Op::Release { delay_ms, refund } => (&s.lease, *delay_ms, *refund),
                    _ => unreachable!("grouped by op"),
                })
                .collect();
            broker.release(keys, &jobs).await.map(|done| Settled { done, trimmed: 0 })
        }
        Group::Abandon => Ok(Settled { done: vec![false; items.len()], trimmed: 0 }),
    }
}

async fn settle_group(shared: &Shared, qi: usize, group: Group, items: &[&Settle], abandon: &CancellationToken) {
    let queue = &shared.queues[qi].name;
    let mut delay = Duration::from_millis(50);
    let mut stalled = false;
    let mut permanent_tries = 0;
    let results = loop {
        match write(shared, qi, group, items).await {
            Ok(r) => break Some(r),
            Err(e) => {
                if !e.is_transient() {
                    permanent_tries += 1;
                    if permanent_tries >= MAX_PERMANENT_TRIES {
                        tracing::error!(error = %e, queue = %queue, jobs = items.len(), "cannot settle jobs (not a connection problem; giving up): their leases will expire and they will run again");
                        break None;
                    }
                }
                if !stalled {
                    stalled = true;
                    shared.stalled.fetch_add(1, Ordering::Relaxed);
                    shared.status.set_outcomes_ok(false);
                    tracing::warn!(error = %e, queue = %queue, jobs = items.len(), "cannot write job outcomes; retrying, and taking no new jobs until they are written");
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = abandon.cancelled() => break None,
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    };
    if stalled && shared.stalled.fetch_sub(1, Ordering::Relaxed) == 1 {
        shared.status.set_outcomes_ok(true);
        tracing::info!(queue = %queue, "job outcomes written again; taking jobs");
    }
    if let Some(Settled { trimmed: n @ 1.., .. }) = &results {
        let state = if group == Group::Ack { "completed" } else { "dead" };
        shared.queues[qi].metrics.trimmed(state).increment(*n);
    }
    for (i, s) in items.iter().enumerate() {
        shared.unhold(qi, &s.lease);
        let Some(Settled { done, .. }) = &results else { continue };
        if !done[i] {
            if matches!(s.op, Op::Ack { .. } | Op::Fail { .. }) {
                tracing::warn!(id = %s.lease.id, queue = %queue, "late result discarded: the lease expired and the job was given to another worker");
            }
            continue;
        }
        if let (Op::Ack { .. }, Some(hook)) = (&s.op, &shared.cfg.on_ack) {
            (hook.0)(&s.lease.id);
        }
        match &s.op {
            Op::Ack { .. } => shared.tally.processed.fetch_add(1, Ordering::Relaxed),
            Op::Fail { .. } => shared.tally.failed.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        let Some(m) = &s.metrics else { continue };
        match &s.op {
            Op::Ack { .. } => m.processed.increment(1),
            Op::Fail { to, .. } => {
                m.failed.increment(1);
                match to {
                    FailTo::RetryIn(_) => m.retried.increment(1),
                    FailTo::Dead => m.dead_lettered.increment(1),
                }
            }
            Op::Release { .. } | Op::Abandon => {}
        }
    }
    // The slots free up only now that the outcomes are in Redis (or given up).
}
