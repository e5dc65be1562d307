//! `dtq produce`: validates the whole input first (nothing is enqueued from
//! an input with one bad job), then enqueues in batched script calls, a few
//! in flight at once.

use super::{out, usage};
use crate::broker::{Broker, NewJob};
use crate::cli::{Global, ProduceArgs};
use crate::job::{self, JobSpec, RunAt, StoredJob};
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
    }
    let defaults = Defaults {
        queue: a.queue.clone(),
        max_retries: a.max_retries,
        delay: a.delay,
        idempotency_key: a.idempotency_key.clone(),
    };
    let batch = a.batch_size as usize;
    if let Some(path) = &a.file {
        let specs = read_specs(path)?;
        let broker = super::connect(g).await?;
        let total = specs.len();
        // Group by queue, remembering each job's input position for output.
        let mut by_queue: Vec<(String, Vec<(usize, NewJob)>)> = Vec::new();
        for (i, spec) in specs.into_iter().enumerate() {
            let queue = spec.queue.clone().unwrap_or_else(|| defaults.queue.clone());
            let job = defaults.new_job(&broker, &queue, spec);
            match by_queue.iter_mut().find(|(q, _)| *q == queue) {
                Some((_, v)) => v.push((i, job)),
                None => by_queue.push((queue, vec![(i, job)])),
            }
        }
        let mut results: Vec<Option<(String, String, bool)>> = vec![None; total];
        for (queue, jobs) in by_queue {
            let (positions, jobs): (Vec<usize>, Vec<NewJob>) = jobs.into_iter().unzip();
            let mut n = 0;
            enqueue_all(&broker, &queue, jobs.into_iter(), batch, |job, ok| {
                results[positions[n]] = Some((job.id.clone(), queue.clone(), ok));
                n += 1;
            })
            .await?;
        }
        report(a.json, results.into_iter().flatten())
    } else {
        let kind = a.kind.clone().unwrap_or_default();
        let payload = a.payload.as_deref().unwrap_or("null");
        let payload: serde_json::Value = serde_json::from_str(payload)
            .map_err(|e| super::UsageError(format!("--payload is not valid JSON ({e}): {payload}")))?;
        let spec = job::spec_from_value(serde_json::json!({ "kind": kind, "payload": payload }))
            .map_err(|e| super::UsageError(format!("--kind/--payload: {e}")))?;
        let size = spec.payload.get().len();
        if size > job::MAX_SPEC_BYTES {
            return usage(format!("--payload is {size} bytes, over the 1 MiB limit"));
        }
        let broker = super::connect(g).await?;
        let queue = defaults.queue.clone();
        let jobs = (0..a.count).map(|_| defaults.new_job(&broker, &queue, spec.clone()));
        let mut enqueued = 0u64;
        let mut duplicates = 0u64;
        let json = a.json;
        let mut write_err = None;
        enqueue_all(&broker, &queue, jobs, batch, |job, ok| {
            if ok {
                enqueued += 1
            } else {
                duplicates += 1
            }
            if json && write_err.is_none() {
                write_err = out(json_line(&job.id, &queue, ok)).err();
            }
        })
        .await?;
        if let Some(e) = write_err {
            return Err(e);
        }
        if !json {
            summary(enqueued, duplicates)?;
        }
        Ok(())
    }
}

/// Flag defaults applied to specs that do not set their own.
struct Defaults {
    queue: String,
    max_retries: u32,
    delay: Option<std::time::Duration>,
    idempotency_key: Option<String>,
}

impl Defaults {
    fn new_job(&self, broker: &Broker, queue: &str, spec: JobSpec) -> NewJob {
        let client_id = spec.id.is_some();
        let id = spec.id.unwrap_or_else(job::new_id);
        let run_at = match (spec.run_at, self.delay) {
            (RunAt::Now, Some(d)) => RunAt::After(d),
            (r, _) => r,
        };
        let (delay_ms, run_at_ms) = match run_at {
            RunAt::Now => (0, 0),
            RunAt::After(d) => (d.as_millis() as u64, 0),
            RunAt::At(t) => (0, t.max(1)),
        };
        let key = spec.idempotency_key.or_else(|| self.idempotency_key.clone());
        let body = StoredJob {
            kind: spec.kind.into(),
            payload: &spec.payload,
            max_retries: spec.max_retries.unwrap_or(self.max_retries),
            timeout_ms: spec.timeout.map(|t| t.as_millis() as u64),
            idempotency_key: key.map(Into::into),
            client_id,
            enqueued_at: job::now_ms(),
        };
        let body = serde_json::to_string(&body).expect("a job body always serializes");
        let marker = client_id.then(|| broker.keys(queue).done(&id));
        NewJob { id, body, delay_ms, run_at_ms, marker }
    }
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
    let batches = std::iter::from_fn(move || {
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
    while let Some((b, r)) = results.next().await {
        let flags = r.with_context(|| format!("queue {queue} on {}", broker.redacted_url()))?;
        for (job, ok) in b.iter().zip(flags) {
            on_result(job, ok);
        }
    }
    Ok(())
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
