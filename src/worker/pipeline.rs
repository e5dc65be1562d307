//! One job's way through the worker: circuit breaker → rate limiter →
//! idempotency guard → handler → settlement. Every path ends in exactly one
//! settlement, so a job is never left unaccounted for.

use super::breaker::Admission;
use super::handler::{HandlerError, JobContext};
use super::settle::{Op, Settle};
use super::Shared;
use crate::broker::{FailTo, Guard, GuardCheck, LeaseRef, Leased};
use crate::job::StoredJob;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tracing::Instrument;

/// Delay before a job whose idempotency key is held elsewhere is tried again.
const HELD_RETRY: Duration = Duration::from_secs(1);
/// Delay before retrying a job whose pipeline hit a Redis error.
const REDIS_RETRY: Duration = Duration::from_secs(1);

/// Retry delay after the `attempt`-th failure: full jitter over
/// min(max, base · 2^(attempt-1)).
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(31)));
    let cap = exp.min(max);
    cap.mul_f64(fastrand::f64())
}

pub(super) async fn execute(shared: &Shared, qi: usize, job: Leased, tx: &UnboundedSender<Settle>) {
    let slot = &shared.queues[qi];
    let lease = LeaseRef { id: job.id, token: job.token, lock: None };
    let send = |lease: LeaseRef, op: Op, kind: Option<&str>| {
        let metrics = kind.map(|k| slot.metrics.kind(k));
        // The settler outlives every execution, so the send cannot fail.
        let _ = tx.send(Settle { queue: qi, lease, op, metrics });
    };
    let corrupt = |why: String| {
        tracing::error!(id = %lease.id, queue = %slot.name, error = %why, "dead-lettering a job whose body cannot be read");
        Op::Fail(FailTo::Dead, format!("corrupt job body: {why}"))
    };
    let Some(body) = job.body else {
        let op = corrupt("missing".to_string());
        return send(lease, op, None);
    };
    let stored: StoredJob = match serde_json::from_str(&body) {
        Ok(s) => s,
        Err(e) => {
            let op = corrupt(e.to_string());
            return send(lease, op, None);
        }
    };
    let span =
        tracing::info_span!("job", id = %lease.id, queue = %slot.name, kind = %stored.kind, attempt = job.attempt);
    let (lease, op) = run_stages(shared, qi, lease, &stored, job.attempt).instrument(span).await;
    send(lease, op, Some(&stored.kind));
}

async fn run_stages(
    shared: &Shared,
    qi: usize,
    mut lease: LeaseRef,
    job: &StoredJob<'_>,
    attempt: u32,
) -> (LeaseRef, Op) {
    let slot = &shared.queues[qi];
    let cfg = &shared.cfg;

    // 1. Circuit breaker.
    let ticket = match shared.breakers.admit(&job.kind) {
        Admission::Run(t) => t,
        Admission::Defer(wait) => {
            tracing::debug!(wait = ?wait, "circuit open; deferring");
            return (lease, Op::Release(wait.as_millis().max(1) as u64));
        }
    };

    // 2. Distributed rate limiter.
    if let Some(limit) = cfg.rate_limits.get(job.kind.as_ref()) {
        match shared.limiter.call((job.kind.to_string(), *limit), lease.token.clone()).await {
            Ok(None) => {}
            Ok(Some(wait_ms)) => {
                slot.metrics.kind(&job.kind).rate_limited.increment(1);
                tracing::debug!(wait_ms, "rate limited; deferring");
                return (lease, Op::Release(wait_ms));
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; deferring");
                return (lease, Op::Release(REDIS_RETRY.as_millis() as u64));
            }
        }
    }

    // 3. Idempotency guard. The lock outlives the lease: it lasts as long as
    // the handler may run, so a copy redelivered after this worker's lease
    // expired (a stall, a partition) waits instead of running in parallel.
    let timeout = job.timeout_ms.map(Duration::from_millis).unwrap_or(cfg.job_timeout);
    let markers: Vec<String> = job.markers(&lease.id).map(|m| slot.keys.done(m)).collect();
    if let Some(key) = job.effective_key(&lease.id) {
        let lock = slot.keys.lock(key);
        let ttl = timeout + cfg.visibility_timeout;
        let check = GuardCheck { done: slot.keys.done(key), lock: lock.clone(), token: lease.token.clone(), ttl };
        match shared.guard.call(qi, check).await {
            Ok(Guard::Acquired) => lease.lock = Some(lock),
            Ok(Guard::Completed) => {
                tracing::info!(key, "duplicate: idempotency key already completed; acknowledging without running");
                return (lease, Op::Ack(markers));
            }
            Ok(Guard::Held) => {
                tracing::debug!(key, "idempotency key held by another execution; deferring");
                return (lease, Op::Release(HELD_RETRY.as_millis() as u64));
            }
            Err(e) => {
                tracing::warn!(error = %e, "idempotency guard unavailable; deferring");
                return (lease, Op::Release(REDIS_RETRY.as_millis() as u64));
            }
        }
    }

    // 4. The handler, under its timeout, until the hard stop.
    let ctx = JobContext {
        id: lease.id.clone(),
        queue: slot.name.clone(),
        kind: job.kind.to_string(),
        attempt,
        payload: job.payload.to_owned(),
        idempotency_key: job.effective_key(&lease.id).map(str::to_string),
        timeout,
    };
    let kind_metrics = slot.metrics.kind(&job.kind);
    slot.metrics.active.increment(1.0);
    let started = Instant::now();
    let outcome = tokio::select! {
        r = tokio::time::timeout(timeout, shared.handler.handle(&ctx)) => Some(r),
        _ = shared.hard_stop.cancelled() => None,
    };
    slot.metrics.active.decrement(1.0);
    kind_metrics.duration.record(started.elapsed().as_secs_f64());

    // 5. Settlement.
    let error = match outcome {
        None => {
            tracing::info!("shutdown grace over; handing the job back");
            return (lease, Op::Release(0));
        }
        Some(Ok(Ok(()))) => {
            shared.breakers.record(ticket, true);
            tracing::debug!(elapsed = ?started.elapsed(), "done");
            return (lease, Op::Ack(markers));
        }
        Some(Ok(Err(e))) => e,
        Some(Err(_)) => HandlerError::retry(format!("timed out after {}", humantime::format_duration(timeout))),
    };
    // A permanent failure is the job's own fault (its handler answered and
    // rejected it): it says nothing against the kind's dependency.
    shared.breakers.record(ticket, matches!(error, HandlerError::Permanent { .. }));
    let to = match &error {
        HandlerError::Permanent { .. } => FailTo::Dead,
        HandlerError::Retry { .. } if attempt > job.max_retries => FailTo::Dead,
        HandlerError::Retry { after: Some(after), .. } => FailTo::RetryIn(after.as_millis() as u64),
        HandlerError::Retry { after: None, .. } => {
            FailTo::RetryIn(backoff(cfg.backoff_base, cfg.backoff_max, attempt).as_millis() as u64)
        }
    };
    match to {
        FailTo::Dead => tracing::error!(error = error.message(), "failed; dead-lettering"),
        FailTo::RetryIn(ms) => tracing::warn!(error = error.message(), retry_in_ms = ms, "failed; will retry"),
    }
    (lease, Op::Fail(to, error.message().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_under_the_cap() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        for attempt in 1..40 {
            let d = backoff(base, max, attempt);
            let cap = (base * 2u32.pow((attempt - 1).min(20))).min(max);
            assert!(d <= cap, "attempt {attempt}: {d:?} > {cap:?}");
        }
    }
}
