//! The reaper: recovers expired leases and promotes due scheduled jobs, in
//! every known queue. Any number may run (standalone `reap`, or inside each
//! `work`); a leader lock makes exactly one active.
//!
//! The lock is `SET NX PX` with a random token; the leader renews it (fenced
//! by the token) every third of its TTL, between queues within a cycle too
//! (a pass over thousands of queues can outlast the TTL), stops the cycle
//! at once if it lost the lock, and deletes it on shutdown. A
//! follower tries to take it every tenth of the TTL: the lock expires at most
//! one TTL after the leader's last renewal, so another takes over within
//! about one TTL (at most a tenth more) of the leader dying. The leader also samples queue depths
//! for the `dtq_queue_depth` gauge, so only one process reads them.

use crate::broker::Broker;
use crate::keys;
use crate::metrics;
use crate::status::Status;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Most jobs one recover or promote call moves.
const BATCH: usize = 1000;
/// Most calls per queue per cycle, so one huge backlog cannot starve lock renewal.
const MAX_CALLS: usize = 20;
/// How often the leader samples queue depths.
const DEPTH_EVERY: Duration = Duration::from_secs(5);

/// Reaper settings.
#[derive(Debug, Clone, Copy)]
pub struct ReaperConfig {
    /// Longest sleep between cycles (a due scheduled job wakes it sooner).
    pub interval: Duration,
    /// Lifetime of the leader lock; the leader renews it before it expires.
    pub lock_ttl: Duration,
}

impl Default for ReaperConfig {
    fn default() -> Self {
        ReaperConfig { interval: Duration::from_millis(500), lock_ttl: Duration::from_secs(10) }
    }
}

/// The leader lock as one reaper sees it.
struct Lock<'a> {
    broker: &'a Broker,
    key: String,
    token: String,
    ttl: Duration,
    last_renew: Instant,
}

impl Lock<'_> {
    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Renews the lock if a third of its TTL has passed since the last
    /// renewal; `false` once it is no longer ours.
    async fn keep(&mut self) -> Result<bool, crate::broker::BrokerError> {
        if self.last_renew.elapsed() < self.renew_every() {
            return Ok(true);
        }
        self.last_renew = Instant::now();
        self.broker.lock_renew(&self.key, &self.token, self.ttl).await
    }

    async fn take(&mut self) -> Result<bool, crate::broker::BrokerError> {
        self.last_renew = Instant::now();
        self.broker.lock_acquire(&self.key, &self.token, self.ttl).await
    }
}

/// Runs until `shutdown`, then gives up the lock if held.
pub async fn run(broker: Broker, cfg: ReaperConfig, status: Arc<Status>, shutdown: CancellationToken) {
    let mut lock = Lock {
        broker: &broker,
        key: keys::reaper_lock(broker.namespace()),
        token: crate::job::new_id(),
        ttl: cfg.lock_ttl,
        last_renew: Instant::now(),
    };
    let renew_every = lock.renew_every();
    let try_every = (cfg.lock_ttl / 10).max(Duration::from_millis(20));
    let mut leader = false;
    let mut last_depth: Option<Instant> = None;
    let mut recovered: HashMap<String, ::metrics::Counter> = HashMap::new();
    loop {
        let mut sleep = if leader { renew_every } else { try_every };
        let step = if leader { lock.keep().await } else { lock.take().await };
        match step {
            Ok(holds) => {
                status.set_redis_ok(true);
                if holds != leader {
                    leader = holds;
                    ::metrics::gauge!(metrics::REAPER_LEADER).set(if leader { 1.0 } else { 0.0 });
                    if leader {
                        tracing::info!("became the reaper leader");
                    } else {
                        tracing::warn!("lost the reaper lock");
                    }
                }
                if leader {
                    match cycle(&mut lock, &mut recovered, &mut last_depth).await {
                        Ok(Some(next_due)) => {
                            sleep = cfg.interval.min(renew_every);
                            if let Some(due) = next_due {
                                sleep = sleep.min(due.max(Duration::from_millis(5)));
                            }
                        }
                        // Lost the lock part way: the next turn says so.
                        Ok(None) => sleep = Duration::ZERO,
                        Err(e) => {
                            status.set_redis_ok(false);
                            tracing::warn!(error = %e, "reaper cycle failed");
                        }
                    }
                }
            }
            Err(e) => {
                status.set_redis_ok(false);
                tracing::warn!(error = %e, "reaper cannot reach Redis");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    if leader {
        if let Err(e) = broker.lock_release(&lock.key, &lock.token).await {
            tracing::warn!(error = %e, "could not release the reaper lock; it expires by itself");
        }
        ::metrics::gauge!(metrics::REAPER_LEADER).set(0.0);
        tracing::info!("released the reaper lock");
    }
}

/// One pass over every queue, keeping the lock renewed; returns how long
/// until the next scheduled job is due, if any is, or `None` if the lock
/// was lost on the way (the pass stops there).
async fn cycle(
    lock: &mut Lock<'_>,
    recovered_metric: &mut HashMap<String, ::metrics::Counter>,
    last_depth: &mut Option<Instant>,
) -> Result<Option<Option<Duration>>, crate::broker::BrokerError> {
    let broker = lock.broker;
    // Periodic jobs first: their ticks are the most time-sensitive. A tick
    // later than twice the lock's TTL was missed (no leader for that long);
    // a leader change alone never makes one that late.
    if !lock.keep().await? {
        return Ok(None);
    }
    let grace = (lock.ttl * 2).max(Duration::from_secs(2));
    let schedules = crate::schedule::Schedules::new(broker);
    for _ in 0..MAX_CALLS {
        if schedules.run_due(grace).await? < crate::schedule::MAX_DUE_PER_CYCLE {
            break;
        }
        if !lock.keep().await? {
            return Ok(None);
        }
    }
    let mut next_due: Option<Duration> = schedules.next_due().await?;
    let queues = broker.queues().await?;
    for q in &queues {
        if !lock.keep().await? {
            return Ok(None);
        }
        let k = broker.keys(q);
        for _ in 0..MAX_CALLS {
            let crate::broker::Recovered { recovered, dead, more, trimmed } = broker.recover(&k, BATCH).await?;
            if trimmed > 0 {
                metrics::trimmed(q, "dead").increment(trimmed);
            }
            if recovered + dead > 0 {
                tracing::warn!(queue = %q, recovered, dead_lettered = dead, "recovered jobs of expired leases");
                recovered_metric
                    .entry(q.clone())
                    .or_insert_with(|| ::metrics::counter!(metrics::RECOVERED, "queue" => q.clone()))
                    .increment(recovered);
            }
            if !more {
                break;
            }
        }
        for _ in 0..MAX_CALLS {
            let (moved, wait) = broker.promote(&k, BATCH).await?;
            if moved < BATCH as u64 {
                if let Some(ms) = wait {
                    let d = Duration::from_millis(ms);
                    next_due = Some(next_due.map_or(d, |n| n.min(d)));
                }
                break;
            }
        }
    }
    if last_depth.is_none_or(|t| t.elapsed() >= DEPTH_EVERY) {
        *last_depth = Some(Instant::now());
        for q in &queues {
            if !lock.keep().await? {
                return Ok(None);
            }
            // Retention's age limits, for queues that finish no jobs now
            // (a queue that does trims as it writes).
            let k = broker.keys(q);
            for _ in 0..MAX_CALLS {
                let (dead, completed) = broker.trim(&k, BATCH).await?;
                for (state, n) in [("dead", dead), ("completed", completed)] {
                    if n > 0 {
                        metrics::trimmed(q, state).increment(n);
                    }
                }
                if dead < BATCH as u64 && completed < BATCH as u64 {
                    break;
                }
            }
            let stats = broker.queue_stats(q).await?;
            metrics::set_queue_depth(q, &stats);
        }
    }
    Ok(Some(next_due))
}
