//! `dtq inspect`: tables for people, `--json` for scripts.

use super::out;
use super::table::{age, cut, digits, escape, none, Col, Table};
use crate::broker::{Broker, Filter, JobInfo, JobState, ListedJob};
use crate::cli::{FinishedArgs, Global, InspectCommand};
use anyhow::Result;

pub async fn run(g: &Global, c: InspectCommand) -> Result<()> {
    let broker = super::connect(g).await?;
    match c {
        InspectCommand::Stats { json } => {
            let queues = broker.all_queue_stats().await?;
            if json {
                return out(serde_json::json!({ "queues": queues }));
            }
            if queues.is_empty() {
                return out(none("queues yet"));
            }
            let mut t = Table::new(&[
                Col::Text("QUEUE", 32),
                Col::Num("PENDING"),
                Col::Num("INFLIGHT"),
                Col::Num("SCHEDULED"),
                Col::Num("DEAD"),
                Col::Num("COMPLETED"),
                Col::Num("PROCESSED"),
                Col::Num("FAILED ATTEMPTS"),
                Col::Num("OLDEST PENDING"),
                Col::Rest("STATE"),
            ]);
            for (q, s) in &queues {
                t.row(vec![
                    q.clone(),
                    digits(s.pending),
                    digits(s.inflight),
                    digits(s.scheduled),
                    digits(s.dead),
                    digits(s.completed),
                    digits(s.processed),
                    digits(s.failed),
                    s.oldest_pending_age_ms.map(age).unwrap_or_else(|| "-".into()),
                    if s.paused { "paused" } else { "active" }.into(),
                ]);
            }
            t.lines().into_iter().try_for_each(out)
        }
        InspectCommand::Queues => {
            let queues = broker.queues().await?;
            if queues.is_empty() {
                return out(none("queues yet"));
            }
            queues.into_iter().try_for_each(out)
        }
        InspectCommand::Workers { json } => {
            let workers = crate::worker::registry::list(&broker).await?;
            if json {
                return out(serde_json::json!({ "workers": workers }));
            }
            if workers.is_empty() {
                return out(none("workers running"));
            }
            let mut t = Table::new(&[
                Col::Text("WORKER", 40),
                Col::Text("VERSION", 12),
                Col::Num("BUSY"),
                Col::Num("CONCURRENCY"),
                Col::Text("LAST REPORT", 24),
                Col::Rest("QUEUES (WEIGHT)"),
            ]);
            for w in &workers {
                let queues: Vec<String> = w.queues.iter().map(|q| format!("{} ({})", q.name, q.weight)).collect();
                t.row(vec![
                    escape(&w.id),
                    escape(&w.version),
                    digits(w.busy_count as u64),
                    digits(w.concurrency as u64),
                    w.heartbeat_at.clone(),
                    escape(&queues.join(", ")),
                ]);
            }
            t.lines().into_iter().try_for_each(out)
        }
        InspectCommand::DeadLetter(a) => list(&broker, JobState::Dead, a).await,
        InspectCommand::Completed(a) => list(&broker, JobState::Completed, a).await,
        InspectCommand::Job { id, queue, json } => {
            // An unknown id is a runtime answer (exit 1), not a usage error.
            let Some(info) = super::admin::lookup(&broker, &id, queue.as_deref()).await? else {
                anyhow::bail!(super::admin::not_found(&id, queue.as_deref()));
            };
            if json {
                return out(serde_json::to_string(&info)?);
            }
            show_job(&info)
        }
    }
}

/// `inspect dead-letter` and `inspect completed`: each queue's newest
/// matches (filtered in Redis), merged newest first.
async fn list(broker: &Broker, set: JobState, a: FinishedArgs) -> Result<()> {
    let queues = match &a.queue {
        Some(q) => vec![q.clone()],
        None => broker.queues().await?,
    };
    let filter = Filter { kind: a.kind.clone(), search: a.search.clone(), since: a.since };
    let filtered = filter.kind.is_some() || filter.search.is_some() || filter.since.is_some();
    let limit = a.limit as usize;
    let mut jobs: Vec<ListedJob> = Vec::new();
    let mut total = 0;
    for q in &queues {
        jobs.extend(broker.finished_matching(q, set, &filter, limit).await?);
        let s = broker.queue_stats(q).await?;
        total += if set == JobState::Dead { s.dead } else { s.completed };
    }
    jobs.sort_by_key(|j| std::cmp::Reverse(j.at_ms));
    jobs.truncate(limit);
    if a.json {
        return out(serde_json::to_string(&jobs)?);
    }
    let what = if set == JobState::Dead { "dead-lettered jobs" } else { "completed jobs" };
    if jobs.is_empty() {
        return out(none(&if filtered { format!("{what} match") } else { what.to_string() }));
    }
    let last = if set == JobState::Dead { Col::Rest("ERROR") } else { Col::Rest("RESULT") };
    let mut t = Table::new(&[
        Col::Text("ID", 28),
        Col::Text("QUEUE", 16),
        Col::Text("KIND", 16),
        Col::Num("ATTEMPTS"),
        Col::Text(if set == JobState::Dead { "DIED AT" } else { "FINISHED AT" }, 24),
        last,
    ]);
    for j in &jobs {
        let detail = match set {
            JobState::Completed => j.result.as_ref().map(|r| r.to_string()).unwrap_or_default(),
            _ => j.error.clone().unwrap_or_default(),
        };
        t.row(vec![
            j.id.clone(),
            j.queue.clone(),
            if j.corrupt { "(corrupt body)".into() } else { j.kind.clone().unwrap_or_default() },
            digits(j.attempts),
            j.finished_at.clone().unwrap_or_default(),
            cut(&detail, 120),
        ]);
    }
    t.lines().into_iter().try_for_each(out)?;
    let shown = digits(jobs.len() as u64);
    if filtered {
        out(format!("showing {shown} match(es) of {} {what}", digits(total)))
    } else {
        out(format!("showing {shown} of {} {what}", digits(total)))
    }
}

/// Who and where first; each time named for what it is; then the history.
fn show_job(info: &JobInfo) -> Result<()> {
    let attempts = match info.max_retries {
        Some(m) => format!("{} started, {} allowed", info.attempts, u64::from(m) + 1),
        None => format!("{} started", info.attempts),
    };
    let kind = if info.corrupt { "(corrupt body)".to_string() } else { info.kind.clone().unwrap_or_default() };
    let finished = if info.state == "dead" { "died at" } else { "finished at" };
    let rows: Vec<(&str, Option<String>)> = vec![
        ("id", Some(escape(&info.id))),
        ("queue", Some(info.queue.clone())),
        ("state", Some(info.state.clone())),
        ("kind", Some(escape(&kind))),
        ("attempts", Some(attempts)),
        ("runs at", info.run_at.clone()),
        ("lease until", info.lease_until.clone()),
        (finished, info.finished_at.clone()),
        ("enqueued at", info.enqueued_at.clone()),
        ("idempotency key", info.idempotency_key.as_deref().map(escape)),
        ("last error", info.error.as_deref().map(escape)),
        ("payload", Some(info.payload.to_string())),
        ("result", info.result.as_ref().map(|r| escape(&r.to_string()))),
    ];
    for (label, value) in rows {
        if let Some(v) = value {
            out(format!("{label:<16} {v}"))?;
        }
    }
    if info.history.is_empty() {
        return Ok(());
    }
    out("history")?;
    let mut t = Table::new(&[
        Col::Num("ATTEMPT"),
        Col::Text("STARTED AT", 24),
        Col::Text("FINISHED AT", 24),
        Col::Text("OUTCOME", 8),
        Col::Text("WORKER", 40),
        Col::Rest("ERROR"),
    ]);
    for h in &info.history {
        t.row(vec![
            h.attempt.to_string(),
            h.started_at.clone(),
            h.finished_at.clone().unwrap_or_else(|| "-".into()),
            h.outcome.clone(),
            h.worker.clone().unwrap_or_else(|| "-".into()),
            cut(h.error.as_deref().unwrap_or(""), 200),
        ]);
    }
    t.lines().into_iter().try_for_each(|l| out(format!("  {l}")))
}
