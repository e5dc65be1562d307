//! One job's way through the worker: circuit breaker → rate limiter →
//! start (idempotency guard and attempt charge) → a free slot → handler →
//! settlement. Every path
//! ends in exactly one settlement, so a job is never left unaccounted for;
//! a handler that panics fails its attempt like an error.

use super::breaker::Admission;
use super::fetch::Ahead;
use super::handler::{CancelReason, Cancellation, HandlerError, JobContext};
use super::settle::{Op, Settle, Settler};
use super::Shared;
use crate::broker::{FailTo, LeaseRef, Leased, Start, StartCheck};
use crate::job::StoredJob;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Delay before a job whose idempotency key is held elsewhere is tried again.
const HELD_RETRY: Duration = Duration::from_secs(1);
/// Delay before retrying a job whose pipeline hit a Redis error.
const REDIS_RETRY: Duration = Duration::from_secs(1);
/// How long a worker takes no jobs after its handler was unavailable.
const UNAVAILABLE_PAUSE: Duration = Duration::from_secs(5);

/// Retry delay after the `attempt`-th failure: full jitter over
/// min(max, base · 2^(attempt-1)).
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(31)));
    let cap = exp.min(max);
    cap.mul_f64(fastrand::f64())
}

fn release(delay: Duration, refund: Option<u32>) -> Op {
    Op::Release { delay_ms: delay.as_millis() as u64, refund }
}

pub(super) async fn execute(
    shared: &Shared,
    qi: usize,
    job: Leased,
    cancel: Cancellation,
    ahead: Ahead,
    shutdown: &CancellationToken,
    tx: &Settler,
) {
    let slot = &shared.queues[qi];
    let lease = LeaseRef { id: job.id, token: job.token, lock: None };
    let send = |lease: LeaseRef, op: Op, kind: Option<&str>, permit: Option<OwnedSemaphorePermit>| {
        let metrics = kind.map(|k| slot.metrics.kind(k));
        tx.send(Settle { queue: qi, lease, op, metrics, permit });
    };
    if cancel.reason().is_some() {
        // Fenced before it started: its lease may be gone already.
        return send(lease, Op::Abandon, None, None);
    }
    let corrupt = |why: String| {
        tracing::error!(id = %lease.id, queue = %slot.name, error = %why, "dead-lettering a job whose body cannot be read");
        Op::Fail { to: FailTo::Dead, error: format!("corrupt job body: {why}"), attempt: job.attempt, timed_out: false }
    };
    let Some(body) = job.body else {
        let op = corrupt("missing".to_string());
        return send(lease, op, None, None);
    };
    let stored: StoredJob = match std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_str(b).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            let op = corrupt(e);
            return send(lease, op, None, None);
        }
    };
    let span =
        tracing::info_span!("job", id = %lease.id, queue = %slot.name, kind = %stored.kind, attempt = job.attempt);
    let attempt = Attempt { qi, cancel: &cancel, shutdown };
    let (lease, op, permit) = run_stages(shared, attempt, lease, &stored, ahead).instrument(span).await;
    send(lease, op, Some(&stored.kind), permit);
}

/// What an execution knows of its attempt: its queue and its stop signals.
struct Attempt<'a> {
    qi: usize,
    cancel: &'a Cancellation,
    shutdown: &'a CancellationToken,
}

async fn run_stages(
    shared: &Shared,
    a: Attempt<'_>,
    mut lease: LeaseRef,
    job: &StoredJob<'_>,
    mut ahead: Ahead,
) -> (LeaseRef, Op, Option<OwnedSemaphorePermit>) {
    let Attempt { qi, cancel, shutdown } = a;
    let slot = &shared.queues[qi];
    let cfg = &shared.cfg;

    // Stages 1–3 may run ahead of a free slot (see `fetch`), so a job gets
    // its slot with its checks done.
    // 1. Circuit breaker.
    let ticket = match shared.breakers.admit(&job.kind) {
        Admission::Run(t) => t,
        Admission::Defer(wait) => {
            tracing::debug!(wait = ?wait, "circuit open; deferring");
            return (lease, release(wait.max(Duration::from_millis(1)), None), None);
        }
    };

    // 2. Distributed rate limiter.
    if let Some(limit) = cfg.rate_limits.get(job.kind.as_ref()) {
        match shared.limiter.call((job.kind.to_string(), *limit), ()).await {
            Ok(None) => {}
            Ok(Some(wait_ms)) => {
                slot.metrics.kind(&job.kind).rate_limited.increment(1);
                tracing::debug!(wait_ms, "rate limited; deferring");
                return (lease, release(Duration::from_millis(wait_ms), None), None);
            }
            Err(e) => {
                tracing::warn!(error = %e, "rate limiter unavailable; deferring");
                return (lease, release(REDIS_RETRY, None), None);
            }
        }
    }

    // 3. Start: the idempotency guard and the attempt's charge, in one call
    // that must answer before the handler may run, so a handler that kills
    // its worker still spends its attempts. For fast jobs it runs ahead of
    // a free slot (see `fetch`), hiding its round trip. An idempotency key
    // is held only as long as the lease (the heartbeat renews both), which
    // is safe because an attempt whose lease may be lost is stopped (see
    // `heartbeat::fence`) before another can start. A client id is only
    // checked: unique in its queue, it is kept off other workers by the
    // lease itself.
    let markers: Vec<String> = job.markers(&lease.id).map(|m| slot.keys.idem(m)).collect();
    let key = job.effective_key(&lease.id).map(|k| slot.keys.idem(k));
    let take = key.is_some() && job.idempotency_key.is_some();
    let check = StartCheck { id: lease.id.clone(), token: lease.token.clone(), key: key.clone(), take, charge: true };
    let attempt = match shared.starter.call(qi, check).await {
        Ok(Start::Run(n)) => n,
        Ok(Start::LeaseLost) => {
            tracing::warn!("lease lost before the job started; not running it");
            return (lease, Op::Abandon, None);
        }
        Ok(Start::Completed) => {
            tracing::info!("duplicate: idempotency key already completed; acknowledging without running");
            return (lease, Op::Ack { markers, result: None }, None);
        }
        Ok(Start::Held) => {
            tracing::debug!("idempotency key held by another execution; deferring");
            return (lease, release(HELD_RETRY, None), None);
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot start the job (Redis unavailable or full?); deferring");
            return (lease, release(REDIS_RETRY, None), None);
        }
    };
    if take {
        lease.lock = key;
        shared.with_held(qi, &lease, |h| h.lease.lock = lease.lock.clone());
    }

    // 4. A free slot. Handed back at shutdown (the attempt given back) if
    // none frees up; stopped, unsettled, if the lease may be lost meanwhile.
    let permit = tokio::select! {
        biased;
        _ = cancel.cancelled() => return (lease, Op::Abandon, None),
        _ = shutdown.cancelled() => return (lease, release(Duration::ZERO, Some(attempt)), None),
        p = ahead.slot() => p,
    };

    let timeout = job.timeout_ms.map(Duration::from_millis).unwrap_or(cfg.job_timeout);
    let timeout = if timeout > cfg.max_job_timeout {
        tracing::warn!(timeout = %humantime::format_duration(timeout), max = %humantime::format_duration(cfg.max_job_timeout), "the job's timeout is over --max-job-timeout; clamped");
        cfg.max_job_timeout
    } else {
        timeout
    };
    // 5. The handler, until it ends, its timeout passes, its lease may be
    // lost, or the hard stop; then it gets `grace` to return by itself.
    let grace = cfg.cancel_grace();
    let ctx = JobContext {
        id: lease.id.clone(),
        queue: slot.name.clone(),
        kind: job.kind.to_string(),
        attempt,
        payload: job.payload.to_owned(),
        idempotency_key: job.effective_key(&lease.id).map(str::to_string),
        timeout,
        cancel: cancel.clone(),
        grace,
    };
    let kind_metrics = slot.metrics.kind(&job.kind);
    slot.metrics.active.increment(1.0);
    let started = Instant::now();
    // The handler's future lives in this block only: leaving it drops
    // whatever is left of the attempt (and kills an `--exec` group).
    let (stopped, finished) = {
        let run = AssertUnwindSafe(shared.handler.handle(&ctx)).catch_unwind();
        tokio::pin!(run);
        let stop = async {
            tokio::select! {
                _ = tokio::time::sleep(timeout) => cancel.cancel(CancelReason::Timeout),
                _ = shared.hard_stop.cancelled() => cancel.cancel(CancelReason::Shutdown),
                _ = cancel.cancelled() => {}
            }
        };
        let finished = tokio::select! {
            r = &mut run => Some(r),
            _ = stop => None,
        };
        match finished {
            Some(r) => (None, Some(r)),
            None => (cancel.reason(), tokio::time::timeout(grace, &mut run).await.ok()),
        }
    };
    slot.metrics.active.decrement(1.0);
    kind_metrics.duration.record(started.elapsed().as_secs_f64());
    ahead.ran_for(started.elapsed());

    // 6. Settlement.
    let timed_out = stopped == Some(CancelReason::Timeout);
    let error = match (stopped, finished) {
        (Some(CancelReason::LeaseLost), _) => {
            tracing::warn!("attempt stopped: its lease was lost or could not be renewed in time; its result is discarded and the job runs again");
            return (lease, Op::Abandon, Some(permit));
        }
        (Some(CancelReason::Timeout), _) => {
            HandlerError::retry(format!("timed out after {}", humantime::format_duration(timeout)))
        }
        (Some(_), _) => {
            tracing::info!("shutdown grace over; handing the job back");
            return (lease, release(Duration::ZERO, Some(attempt)), Some(permit));
        }
        (None, Some(Ok(Ok(result)))) => {
            shared.breakers.record(ticket, true);
            tracing::debug!(elapsed = ?started.elapsed(), "done");
            let result = result.filter(|r| {
                let fits = r.len() <= crate::retention::MAX_RESULT;
                if !fits {
                    tracing::warn!(
                        bytes = r.len(),
                        max = crate::retention::MAX_RESULT,
                        "the job's result is over the limit; not kept"
                    );
                }
                fits
            });
            return (lease, Op::Ack { markers, result }, Some(permit));
        }
        (None, Some(Ok(Err(e)))) => e,
        (None, Some(Err(panic))) => HandlerError::retry(format!("handler panicked: {}", panic_message(&panic))),
        (None, None) => unreachable!("a handler that did not finish was stopped"),
    };
    if let HandlerError::Unavailable { message } = &error {
        tracing::error!(error = %message, pause = ?UNAVAILABLE_PAUSE, "the handler cannot run (the worker's fault, not the job's): handing the job back and taking no jobs for a while");
        shared.pause_taking(UNAVAILABLE_PAUSE);
        return (lease, release(UNAVAILABLE_PAUSE, Some(attempt)), Some(permit));
    }
    // A permanent failure is the job's own fault (its handler answered and
    // rejected it): it says nothing against the kind's dependency.
    shared.breakers.record(ticket, matches!(error, HandlerError::Permanent { .. }));
    let to = match &error {
        HandlerError::Permanent { .. } => FailTo::Dead,
        _ if attempt > job.max_retries => FailTo::Dead,
        HandlerError::Retry { after: Some(after), .. } => {
            FailTo::RetryIn((*after).min(cfg.backoff_max).as_millis() as u64)
        }
        _ => FailTo::RetryIn(backoff(cfg.backoff_base, cfg.backoff_max, attempt).as_millis() as u64),
    };
    match to {
        FailTo::Dead => tracing::error!(error = error.message(), "failed; dead-lettering"),
        FailTo::RetryIn(ms) => tracing::warn!(error = error.message(), retry_in_ms = ms, "failed; will retry"),
    }
    (lease, Op::Fail { to, error: error.message().to_string(), attempt, timed_out }, Some(permit))
}

/// The message of a caught panic.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
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
