//! Background upkeep of a worker: the lease heartbeat, the fence and the
//! Redis readiness probe ([`run`]), and the idle wait on the queues'
//! wake-up signals ([`Waiter`]).

use super::handler::CancelReason;
use super::Shared;
use crate::broker::LeaseRef;
use fred::prelude::*;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most leases extended by one script call.
const CHUNK: usize = 500;

/// Extends every held lease each third of the visibility timeout (and once
/// more right after a reconnect), runs the fence, and pings Redis every
/// second for `/ready`, until `stop`.
pub async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let fence_task = tokio::spawn(fence(shared.clone(), stop.clone()));
    let every = shared.cfg.visibility_timeout / 3;
    let mut beat = tokio::time::interval(every);
    let mut probe = tokio::time::interval(Duration::from_secs(1));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconnects = shared.broker.client().reconnect_rx();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = beat.tick() => beat_once(&shared).await,
            r = reconnects.recv() => match r {
                // A reconnect may follow a stall: renew at once rather than
                // up to a third of the lease later.
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    tracing::info!("reconnected to Redis; renewing leases now");
                    beat_once(&shared).await;
                }
                Err(_) => reconnects = shared.broker.client().reconnect_rx(),
            },
            _ = probe.tick() => {
                let ok = shared.broker.ping().await;
                shared.status.set_redis_ok(ok);
            }
        }
    }
    let _ = fence_task.await;
}

/// One renewal of every held lease: every chunk of every queue is sent at
/// once, each bounded by a third of the lease, so one slow queue or node
/// cannot use up the others' time. A lease is confirmed as of when its
/// renewal was sent.
async fn beat_once(shared: &Shared) {
    let snapshot: Vec<Vec<LeaseRef>> = {
        let held = shared.held.lock().unwrap_or_else(|p| p.into_inner());
        held.iter().map(|q| q.values().map(|h| h.lease.clone()).collect()).collect()
    };
    let deadline = shared.cfg.visibility_timeout / 3;
    let sent = Instant::now();
    let calls = snapshot.iter().enumerate().flat_map(|(qi, leases)| {
        leases.chunks(CHUNK).map(move |chunk| async move {
            let refs: Vec<&LeaseRef> = chunk.iter().collect();
            let call = shared.broker.heartbeat(&shared.queues[qi].keys, shared.cfg.visibility_timeout, &refs);
            (qi, chunk, tokio::time::timeout(deadline, call).await)
        })
    });
    for (qi, chunk, result) in futures::future::join_all(calls).await {
        match result {
            Ok(Ok(alive)) => {
                for (lease, ok) in chunk.iter().zip(alive) {
                    shared.with_held(qi, lease, |h| {
                        if ok {
                            h.confirmed = h.confirmed.max(sent);
                        } else if h.cancel.reason().is_none() {
                            // Settled since the snapshot is not held any more, so not here.
                            tracing::warn!(id = %lease.id, queue = %shared.queues[qi].name, "lease lost (taken over after it expired); stopping the attempt");
                            h.cancel.cancel(CancelReason::LeaseLost);
                        }
                    });
                }
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, jobs = chunk.len(), "heartbeat failed; leases may expire (their attempts are stopped first)")
            }
            Err(_) => {
                tracing::warn!(jobs = chunk.len(), deadline = ?deadline, "heartbeat timed out; leases may expire (their attempts are stopped first)")
            }
        }
    }
}

/// Self-fencing: an attempt whose lease has not been confirmed for the
/// visibility timeout minus the fence margin is stopped, so it is over
/// (including an `--exec` group's grace) before the lease can expire in
/// Redis and the job be recovered by another worker. Checked twenty times
/// per lease, on its own task so that a stuck renewal cannot delay it.
async fn fence(shared: Arc<Shared>, stop: CancellationToken) {
    let limit = shared.cfg.visibility_timeout - shared.cfg.fence_margin();
    let mut tick = tokio::time::interval((shared.cfg.visibility_timeout / 20).max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let mut fenced = 0usize;
        {
            let held = shared.held.lock().unwrap_or_else(|p| p.into_inner());
            for h in held.iter().flat_map(|q| q.values()) {
                if now.duration_since(h.confirmed) >= limit && h.cancel.reason().is_none() {
                    h.cancel.cancel(CancelReason::LeaseLost);
                    fenced += 1;
                }
            }
        }
        if fenced > 0 {
            tracing::warn!(attempts = fenced, unconfirmed_for = ?limit, "leases could not be renewed in time (Redis unreachable?); stopping their attempts before another worker may take the jobs");
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
        match client.blpop::<Option<Vec<String>>, _>(keys, timeout).await {
            Ok(_) => {}
            // The blocking connection's own command timeout can fire before
            // the BLPOP timeout on a busy machine: that is just an idle wait.
            Err(e) if *e.kind() == fred::error::ErrorKind::Timeout => {}
            Err(e) => {
                tracing::debug!(error = %e, "wake-up wait failed");
                tokio::time::sleep(IDLE_WAIT).await;
            }
        }
    }
}
