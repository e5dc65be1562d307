//! `dtq produce`: validates the whole input first (nothing is enqueued from
//! an input with one bad job), then enqueues in batched script calls, a few
//! in flight at once. If Redis fails part way, the jobs acknowledged so far
//! are still reported and the error says how many were not (each batch is
//! one script call: all of it or none).

use super::{out, usage};
use crate::broker::{Broker, NewJob};
use crate::cli::{Global, ProduceArgs};
use crate::job::{self, Defaults, JobSpec};
use anyhow::{Context, Result};
use futures::stream::{self, StreamExt};
use std::io::Read;

/// Enqueue calls in flight at once.
const IN_FLIGHT: usize = 4;

pub async fn run(g: &Global, a: ProduceArgs) -> Result<()> {
    if let Some(key) = &a.idempotency_key {
        if key.is_empty() {
            return usage("--idempotency-key must not be empty");
        }
        if a.count > 1 && a.file.is_none() {
            return usage(format!(
                "--idempotency-key with --count {} would make {} jobs sharing one key, and only the first could ever run; give each job its own key (--file)",
                a.count, a.count
            ));
        }
    }
    let defaults = Defaults {
        queue: a.queue.clone(),
        max_retries: a.max_retries,
        delay: a.delay,
        idempotency_key: a.idempotency_key.clone(),
    };
    let batch = a.batch_size as usize;
    // With --wait, what is printed is each job's end (one JSON object a job
    // with --json), not its enqueue.
    let wait = a.wait.then_some(a.wait_timeout);
    let json = a.json && wait.is_none();
    if let Some(path) = &a.file {
        let specs = read_specs(path)?;
        if wait.is_some() && specs.len() > MAX_WAIT {
            return usage(format!("--wait waits for at most {MAX_WAIT} jobs; this file has {}", specs.len()));
        }
        let broker = super::connect(g).await?;
        let total = specs.len();
        // Group by queue, remembering each job's input position for output.
        let by_queue = crate::group::group_by(specs.into_iter().enumerate().map(|(i, spec)| {
            let queue = spec.queue.clone().unwrap_or_else(|| defaults.queue.clone());
            let job = defaults.new_job(&broker, &queue, spec);
            (queue, (i, job))
        }));
        let mut results: Vec<Option<(String, String, bool)>> = vec![None; total];
        let mut failed = None;
        for (queue, jobs) in by_queue {
            let (positions, jobs): (Vec<usize>, Vec<NewJob>) = jobs.into_iter().unzip();
            let mut n = 0;
            let r = enqueue_all(&broker, &queue, jobs.into_iter(), batch, |job, ok| {
                results[positions[n]] = Some((job.id.clone(), queue.clone(), ok));
                n += 1;
            })
            .await;
            if let Err(e) = r {
                failed = Some(e);
                break;
            }
        }
        let done = results.iter().flatten().count();
        let ended: Vec<(String, String, bool)> = results.into_iter().flatten().collect();
        if !(a.json && wait.is_some()) {
            report(json, ended.iter().cloned())?;
        }
        match (failed, wait) {
            (Some(e), _) => Err(partial(e, done, total as u64, json)),
            (None, Some(timeout)) => wait_for(&broker, ended, timeout, a.json).await,
            (None, None) => Ok(()),
        }
    } else {
        let kind = a.kind.clone().unwrap_or_default();
        let payload = a.payload.as_deref().unwrap_or("null");
        let payload: serde_json::Value = serde_json::from_str(payload)
            .map_err(|e| super::UsageError(format!("--payload is not valid JSON ({e}): {payload}")))?;
        if a.id.is_some() && a.count > 1 {
            return usage(format!("--id names one job, not --count {}", a.count));
        }
        let mut spec = serde_json::json!({ "kind": kind, "payload": payload });
        if let Some(id) = &a.id {
            spec["id"] = id.as_str().into();
        }
        let spec = job::spec_from_value(spec).map_err(|e| super::UsageError(format!("--kind/--payload/--id: {e}")))?;
        let size = spec.payload.get().len();
        if size > job::MAX_SPEC_BYTES {
            return usage(format!("--payload is {size} bytes, over the 1 MiB limit"));
        }
        if wait.is_some() && a.count > MAX_WAIT as u64 {
            return usage(format!("--wait waits for at most {MAX_WAIT} jobs, not --count {}", a.count));
        }
        let broker = super::connect(g).await?;
        let queue = defaults.queue.clone();
        let jobs = (0..a.count).map(|_| defaults.new_job(&broker, &queue, spec.clone()));
        let mut enqueued = 0u64;
        let mut duplicates = 0u64;
        let mut write_err = None;
        let mut last_id = String::new();
        let mut ended = Vec::new();
        let r = enqueue_all(&broker, &queue, jobs, batch, |job, ok| {
            if ok {
                enqueued += 1
            } else {
                duplicates += 1
            }
            if wait.is_some() {
                ended.push((job.id.clone(), queue.clone(), ok));
            }
            if a.count == 1 {
                last_id.clone_from(&job.id);
            }
            if json && write_err.is_none() {
                write_err = out(json_line(&job.id, &queue, ok)).err();
            }
        })
        .await;
        if let Some(e) = write_err {
            return Err(e);
        }
        if !a.json && a.count == 1 && r.is_ok() {
            // One job: its id is what the user needs next (inspect job ID).
            let what = if enqueued == 1 { "enqueued job" } else { "duplicate: job already exists or completed:" };
            out(format!("{what} {last_id} (queue {queue})"))?;
        } else if !a.json {
            summary(enqueued, duplicates)?;
        }
        r.map_err(|e| partial(e, (enqueued + duplicates) as usize, a.count, json))?;
        match wait {
            Some(timeout) => wait_for(&broker, ended, timeout, a.json).await,
            None => Ok(()),
        }
    }
}

/// Most jobs one `produce --wait` waits for.
const MAX_WAIT: usize = 10_000;

/// Waits until every job is dead or completed, or `timeout` passes,
/// printing each job's end as it comes; exit 1 (an error) if any ended dead
/// or is still running at the timeout. Polls the unfinished ones, less
/// often the longer the wait.
async fn wait_for(
    broker: &Broker,
    jobs: Vec<(String, String, bool)>,
    timeout: std::time::Duration,
    json: bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut open: Vec<(String, String, bool)> = jobs;
    let mut dead = 0usize;
    let mut poll = std::time::Duration::from_millis(20);
    loop {
        let looks = futures::future::join_all(open.iter().map(|(id, q, _)| broker.job_in(id, q))).await;
        let mut still = Vec::new();
        for ((id, q, ok), info) in open.into_iter().zip(looks) {
            let info = info?;
            match &info {
                Some(j) if !j.is_finished() => still.push((id, q, ok)),
                _ => {
                    dead += info.as_ref().is_some_and(|j| j.state == "dead") as usize;
                    print_end(&id, &q, ok, info.as_ref(), json)?;
                }
            }
        }
        open = still;
        if open.is_empty() {
            break;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            for (id, q, ok) in &open {
                let state = broker.job_in(id, q).await?.map(|j| j.state).unwrap_or_default();
                if json {
                    out(end_json(id, q, ok, &state, None, None))?;
                } else {
                    out(format!("job {id} (queue {q}) still {state} after {}", humantime::format_duration(timeout)))?;
                }
            }
            break;
        }
        tokio::time::sleep(poll.min(left)).await;
        poll = (poll * 2).min(std::time::Duration::from_secs(1));
    }
    match (dead, open.len()) {
        (0, 0) => Ok(()),
        (d, 0) => Err(anyhow::anyhow!("{d} job(s) ended dead-lettered")),
        (d, n) => Err(anyhow::anyhow!(
            "{n} job(s) not finished within --wait-timeout {}{}",
            humantime::format_duration(timeout),
            if d > 0 { format!("; {d} ended dead-lettered") } else { String::new() }
        )),
    }
}

fn end_json(
    id: &str,
    queue: &str,
    enqueued: &bool,
    state: &str,
    result: Option<&serde_json::Value>,
    error: Option<&str>,
) -> String {
    serde_json::json!({
        "id": id,
        "queue": queue,
        "status": if *enqueued { "enqueued" } else { "duplicate" },
        "state": state,
        "result": result,
        "error": error,
    })
    .to_string()
}

/// One job's end. A job no longer stored is reported `gone`: it completed
/// and its queue keeps no completed jobs, or it was deleted.
fn print_end(id: &str, queue: &str, enqueued: bool, info: Option<&crate::broker::JobInfo>, json: bool) -> Result<()> {
    let state = info.map_or("gone", |j| j.state.as_str());
    let result = info.and_then(|j| j.result.as_ref());
    let error = info.filter(|j| j.state == "dead").and_then(|j| j.error.as_deref());
    if json {
        return out(end_json(id, queue, &enqueued, state, result, error));
    }
    let detail = match (state, result, error) {
        ("dead", _, Some(e)) => format!(": {e}"),
        (_, Some(r), _) => format!(": {r}"),
        ("gone", ..) => " (no longer stored: completed and not retained, or deleted)".to_string(),
        _ => String::new(),
    };
    out(super::table::escape(&format!("job {id} (queue {queue}) {state}{detail}")))
}

/// The error of an interrupted produce, saying how far it got: every job
/// acknowledged before the error was already reported (on stdout).
fn partial(e: anyhow::Error, done: usize, total: u64, json: bool) -> anyhow::Error {
    let listed = if json { " (the lines printed)" } else { "" };
    e.context(format!(
        "enqueue interrupted: {done} of {total} job(s) acknowledged{listed}; the other {} were not (a batch \
         whose reply was lost may still have been enqueued: re-sending jobs that carry an id is safe)",
        total - done as u64
    ))
}

fn read_specs(path: &std::path::Path) -> Result<Vec<JobSpec>> {
    let name = path.display().to_string();
    let mut bytes = Vec::new();
    let read = if name == "-" {
        std::io::stdin().read_to_end(&mut bytes)
    } else {
        std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut bytes))
    };
    if let Err(e) = read {
        let what = if name == "-" { "stdin".to_string() } else { name.clone() };
        return usage(format!("cannot read {what}: {e}"));
    }
    let text = match String::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.utf8_error().valid_up_to();
            let line = e.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            return usage(format!("{name}: line {line}: invalid UTF-8 (nothing was enqueued)"));
        }
    };
    let specs = match job::parse_specs(&text) {
        Ok(s) => s,
        Err((pos, e)) => return usage(format!("{name}: {pos}: {e} (nothing was enqueued)")),
    };
    if specs.is_empty() {
        return usage(format!("{name}: no job specs found"));
    }
    Ok(specs)
}

/// Registers `queue` and enqueues `jobs` in batches, calling `on_result` for
/// each job in order with whether it was enqueued (false = duplicate).
pub async fn enqueue_all(
    broker: &Broker,
    queue: &str,
    jobs: impl Iterator<Item = NewJob>,
    batch: usize,
    mut on_result: impl FnMut(&NewJob, bool),
) -> Result<()> {
    broker.register_queue(queue).await.with_context(|| format!("queue {queue}"))?;
    let keys = broker.keys(queue);
    let mut jobs = jobs.peekable();
    // After a failed batch no new one is sent, but those already sent are
    // waited for and reported: each either made it or not, whole.
    let failed = std::cell::Cell::new(false);
    let batches = std::iter::from_fn(|| {
        if failed.get() {
            return None;
        }
        jobs.peek()?;
        Some(jobs.by_ref().take(batch).collect::<Vec<_>>())
    });
    let mut results = stream::iter(batches)
        .map(|b| {
            let keys = &keys;
            async move {
                let r = broker.enqueue(keys, &b).await;
                (b, r)
            }
        })
        .buffered(IN_FLIGHT);
    let mut first_error = None;
    while let Some((b, r)) = results.next().await {
        match r {
            Ok(flags) => b.iter().zip(flags).for_each(|(job, ok)| on_result(job, ok)),
            Err(e) => {
                failed.set(true);
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        None => Ok(()),
        Some(e) => Err(anyhow::Error::new(e).context(format!("queue {queue} on {}", broker.redacted_url()))),
    }
}

fn json_line(id: &str, queue: &str, enqueued: bool) -> String {
    serde_json::json!({
        "id": id,
        "queue": queue,
        "status": if enqueued { "enqueued" } else { "duplicate" },
    })
    .to_string()
}

fn report(json: bool, results: impl Iterator<Item = (String, String, bool)>) -> Result<()> {
    let (mut enqueued, mut duplicates) = (0u64, 0u64);
    for (id, queue, ok) in results {
        if ok {
            enqueued += 1
        } else {
            duplicates += 1
        }
        if json {
            out(json_line(&id, &queue, ok))?;
        }
    }
    if !json {
        summary(enqueued, duplicates)?;
    }
    Ok(())
}

fn summary(enqueued: u64, duplicates: u64) -> Result<()> {
    out(format!("enqueued {enqueued} job(s), {duplicates} duplicate(s)"))
}
