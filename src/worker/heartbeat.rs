//! Background upkeep of a worker: the lease heartbeat and Redis readiness
//! probe ([`run`]), and the idle wait on the queues' wake-up signals
//! ([`Waiter`]).

use super::Shared;
use crate::broker::LeaseRef;
use fred::prelude::*;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most leases extended by one script call.
const CHUNK: usize = 500;

/// Extends every held lease each third of the visibility timeout, and pings
/// Redis every second for `/ready`, until `stop`.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let every = shared.cfg.visibility_timeout / 3;
    let mut beat = tokio::time::interval(every);
    let mut probe = tokio::time::interval(Duration::from_secs(1));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = beat.tick() => beat_once(&shared).await,
            _ = probe.tick() => {
                let ok = shared.broker.ping().await;
                shared.status.set_redis_ok(ok);
            }
        }
    }
}

async fn beat_once(shared: &Shared) {
    let snapshot: Vec<Vec<LeaseRef>> = {
        let held = shared.held.lock().unwrap_or_else(|p| p.into_inner());
        held.iter().map(|q| q.values().cloned().collect()).collect()
    };
    for (qi, leases) in snapshot.iter().enumerate() {
        for chunk in leases.chunks(CHUNK) {
            let refs: Vec<&LeaseRef> = chunk.iter().collect();
            match shared.broker.heartbeat(&shared.queues[qi].keys, shared.cfg.visibility_timeout, &refs).await {
                Ok(alive) => {
                    for (lease, ok) in chunk.iter().zip(alive) {
                        // A lease settled since the snapshot is not lost.
                        if !ok && shared.holds(qi, lease) {
                            tracing::warn!(id = %lease.id, queue = %shared.queues[qi].name, "lease lost; the job's result will be discarded");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed; leases may expire"),
            }
        }
    }
}

/// How long one idle wait blocks before the queues are polled again.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Waits, without polling, until a queue signals new work (or a second passes).
pub struct Waiter {
    shared: Arc<Shared>,
    client: Option<Client>,
    next: usize,
}

impl Waiter {
    pub fn new(shared: Arc<Shared>) -> Self {
        Waiter { shared, client: None, next: 0 }
    }

    pub async fn wait(&mut self) {
        if self.client.is_none() {
            match self.shared.broker.blocking_client().await {
                Ok(c) => self.client = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot open the wake-up connection");
                    tokio::time::sleep(IDLE_WAIT).await;
                    return;
                }
            }
        }
        let client = self.client.as_ref().expect("connected above");
        let queues = &self.shared.queues;
        // On a Cluster the signals live in different slots, so one BLPOP
        // cannot wait on all of them: wait on each in turn, briefly.
        let (keys, timeout): (Vec<&str>, f64) = if self.shared.broker.is_clustered() && queues.len() > 1 {
            self.next = (self.next + 1) % queues.len();
            (vec![queues[self.next].keys.signal.as_str()], 0.1)
        } else {
            (queues.iter().map(|q| q.keys.signal.as_str()).collect(), IDLE_WAIT.as_secs_f64())
        };
        if let Err(e) = client.blpop::<Option<Vec<String>>, _>(keys, timeout).await {
            tracing::debug!(error = %e, "wake-up wait failed");
            tokio::time::sleep(IDLE_WAIT).await;
        }
    }
}
