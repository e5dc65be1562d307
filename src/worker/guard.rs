//! The guard batcher: coalesces the idempotency-guard checks of concurrent
//! executions into one script call per queue (a flush takes whatever arrived
//! while the previous one ran), like the settler does for acks. A keyed job
//! still waits for its check before its handler runs; what is saved is the
//! Redis call per job.

use crate::broker::{Broker, BrokerError, Guard, GuardCheck};
use futures::future::join_all;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// Most checks flushed at once.
const MAX_FLUSH: usize = 256;

/// One check on its way, with where to send the outcome.
pub struct Check {
    pub queue: usize,
    pub done: String,
    pub lock: String,
    pub token: String,
    pub ttl: Duration,
    pub reply: oneshot::Sender<Result<Guard, BrokerError>>,
}

/// Runs until every sender is gone.
pub async fn run(broker: Broker, mut rx: mpsc::UnboundedReceiver<Check>) {
    let mut batch = Vec::with_capacity(MAX_FLUSH);
    while rx.recv_many(&mut batch, MAX_FLUSH).await > 0 {
        let mut groups: Vec<(usize, Vec<Check>)> = Vec::new();
        for c in batch.drain(..) {
            match groups.iter_mut().find(|(q, _)| *q == c.queue) {
                Some((_, v)) => v.push(c),
                None => groups.push((c.queue, vec![c])),
            }
        }
        join_all(groups.into_iter().map(|(_, checks)| flush(&broker, checks))).await;
    }
}

async fn flush(broker: &Broker, checks: Vec<Check>) {
    let items: Vec<GuardCheck> =
        checks.iter().map(|c| GuardCheck { done: &c.done, lock: &c.lock, token: &c.token, ttl: c.ttl }).collect();
    let result = broker.guard(&items).await;
    drop(items);
    match result {
        Ok(outcomes) => {
            for (c, g) in checks.into_iter().zip(outcomes) {
                let _ = c.reply.send(Ok(g));
            }
        }
        Err(e) => {
            for c in checks {
                let _ = c.reply.send(Err(e.clone()));
            }
        }
    }
}
