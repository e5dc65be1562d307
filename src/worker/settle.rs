//! The settler: coalesces the outcomes of executions into batched ack, fail
//! and release script calls (one call per queue and kind of outcome per
//! flush; a flush takes whatever arrived while the previous one ran), retries
//! them while Redis is away, and only then forgets the leases.

use super::Shared;
use crate::broker::{BrokerError, FailTo, LeaseRef};
use crate::metrics::KindMetrics;
use futures::future::join_all;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

/// Most settlements flushed at once.
const MAX_FLUSH: usize = 512;

/// What to do with a leased job.
#[derive(Debug)]
pub enum Op {
    /// Completed; write these completion markers.
    Ack(Vec<String>),
    /// A failed attempt.
    Fail(FailTo, String),
    /// Back without spending an attempt, visible after this many ms.
    Release(u64),
}

/// One job's outcome, on its way to Redis.
pub struct Settle {
    pub queue: usize,
    pub lease: LeaseRef,
    pub op: Op,
    pub metrics: Option<Arc<KindMetrics>>,
}

/// Runs until every sender is gone and everything received is flushed, or
/// until `abandon` (Redis unreachable at the end of shutdown).
pub async fn run(shared: Arc<Shared>, mut rx: UnboundedReceiver<Settle>, abandon: CancellationToken) {
    let mut batch = Vec::with_capacity(MAX_FLUSH);
    while rx.recv_many(&mut batch, MAX_FLUSH).await > 0 {
        flush(&shared, &batch, &abandon).await;
        batch.clear();
    }
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum Group {
    Ack,
    Fail,
    Release,
}

fn group_of(op: &Op) -> Group {
    match op {
        Op::Ack(_) => Group::Ack,
        Op::Fail(..) => Group::Fail,
        Op::Release(_) => Group::Release,
    }
}

async fn flush(shared: &Shared, batch: &[Settle], abandon: &CancellationToken) {
    let groups = crate::group::group_by(batch.iter().map(|s| ((s.queue, group_of(&s.op)), s)));
    join_all(groups.iter().map(|((q, g), items)| settle_group(shared, *q, *g, items, abandon))).await;
}

async fn settle_group(shared: &Shared, qi: usize, group: Group, items: &[&Settle], abandon: &CancellationToken) {
    let keys = &shared.queues[qi].keys;
    let broker = &shared.broker;
    let mut delay = Duration::from_millis(50);
    let results = loop {
        let r: Result<Vec<bool>, BrokerError> = match group {
            Group::Ack => {
                let jobs: Vec<(&LeaseRef, &[String])> = items
                    .iter()
                    .map(|s| match &s.op {
                        Op::Ack(m) => (&s.lease, m.as_slice()),
                        _ => unreachable!("grouped by op"),
                    })
                    .collect();
                broker.ack(keys, &jobs, shared.cfg.idempotency_window).await
            }
            Group::Fail => {
                let jobs: Vec<(&LeaseRef, FailTo, &str)> = items
                    .iter()
                    .map(|s| match &s.op {
                        Op::Fail(to, e) => (&s.lease, *to, e.as_str()),
                        _ => unreachable!("grouped by op"),
                    })
                    .collect();
                broker.fail(keys, &jobs).await
            }
            Group::Release => {
                let jobs: Vec<(&LeaseRef, u64)> = items
                    .iter()
                    .map(|s| match &s.op {
                        Op::Release(d) => (&s.lease, *d),
                        _ => unreachable!("grouped by op"),
                    })
                    .collect();
                broker.release(keys, &jobs).await
            }
        };
        match r {
            Ok(r) => {
                shared.status.set_redis_ok(true);
                break Some(r);
            }
            Err(e) => {
                shared.status.set_redis_ok(false);
                tracing::warn!(error = %e, jobs = items.len(), retry_in = ?delay, "cannot settle jobs; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = abandon.cancelled() => break None,
                }
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    };
    let queue = &shared.queues[qi].name;
    for (i, s) in items.iter().enumerate() {
        shared.unhold(qi, &s.lease);
        let Some(results) = &results else { continue };
        let fresh = results[i];
        if !fresh {
            if !matches!(s.op, Op::Release(_)) {
                tracing::warn!(id = %s.lease.id, queue = %queue, "late result discarded: the lease expired and the job was given to another worker");
            }
            continue;
        }
        if let (Op::Ack(_), Some(hook)) = (&s.op, &shared.cfg.on_ack) {
            (hook.0)(&s.lease.id);
        }
        let Some(m) = &s.metrics else { continue };
        match &s.op {
            Op::Ack(_) => m.processed.increment(1),
            Op::Fail(to, _) => {
                m.failed.increment(1);
                match to {
                    FailTo::RetryIn(_) => m.retried.increment(1),
                    FailTo::Dead => m.dead_lettered.increment(1),
                }
            }
            Op::Release(_) => {}
        }
    }
}
