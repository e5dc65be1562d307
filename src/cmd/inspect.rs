//! `dtq inspect`: tables for people, `--json` for scripts.

use super::out;
use crate::cli::{Global, InspectCommand};
use anyhow::Result;
use std::collections::BTreeMap;

pub async fn run(g: &Global, c: InspectCommand) -> Result<()> {
    let broker = super::connect(g).await?;
    match c {
        InspectCommand::Stats { json } => {
            let mut queues = BTreeMap::new();
            for q in broker.queues().await? {
                let s = broker.queue_stats(&q).await?;
                queues.insert(q, s);
            }
            if json {
                return out(serde_json::json!({ "queues": queues }));
            }
            out(format!(
                "{:<24} {:>10} {:>9} {:>10} {:>8} {:>12} {:>10}  {}",
                "QUEUE", "PENDING", "INFLIGHT", "SCHEDULED", "DEAD", "PROCESSED", "FAILED", "STATE"
            ))?;
            for (q, s) in &queues {
                out(format!(
                    "{:<24} {:>10} {:>9} {:>10} {:>8} {:>12} {:>10}  {}",
                    q,
                    s.pending,
                    s.inflight,
                    s.scheduled,
                    s.dead,
                    s.processed,
                    s.failed,
                    if s.paused { "paused" } else { "active" }
                ))?;
            }
            if queues.is_empty() {
                out("(no queues yet)")?;
            }
            Ok(())
        }
        InspectCommand::Queues => {
            for q in broker.queues().await? {
                out(q)?;
            }
            Ok(())
        }
        InspectCommand::DeadLetter { queue, limit, json } => {
            let queues = match queue {
                Some(q) => vec![q],
                None => broker.queues().await?,
            };
            let mut dead = Vec::new();
            for q in &queues {
                dead.extend(broker.dead_letters(q, limit).await?);
            }
            // RFC 3339 UTC strings sort chronologically.
            dead.sort_by(|a, b| b.died_at.cmp(&a.died_at));
            dead.truncate(limit);
            if json {
                return out(serde_json::to_string(&dead)?);
            }
            out(format!(
                "{:<28} {:<14} {:<12} {:>8}  {:<24} {}",
                "ID", "QUEUE", "KIND", "ATTEMPTS", "DIED AT", "ERROR"
            ))?;
            for d in &dead {
                out(format!(
                    "{:<28} {:<14} {:<12} {:>8}  {:<24} {}",
                    d.id,
                    d.queue,
                    d.kind.as_deref().unwrap_or("?"),
                    d.attempts,
                    d.died_at,
                    d.error.as_deref().unwrap_or("")
                ))?;
            }
            Ok(())
        }
        InspectCommand::Job { id, queue, json } => {
            let info = super::admin::the_job(&broker, &id, queue.as_deref()).await?;
            if json {
                return out(serde_json::to_string(&info)?);
            }
            // Who and where first; each time named for what it is.
            let at_label = match info.state.as_str() {
                "inflight" => "lease until",
                "scheduled" => "runs at",
                "dead" => "died at",
                _ => "at",
            };
            let attempts = match info.max_retries {
                Some(m) => format!("{} started, {} allowed", info.attempts, u64::from(m) + 1),
                None => format!("{} started", info.attempts),
            };
            let kind = if info.corrupt { "(corrupt body)".to_string() } else { info.kind.clone().unwrap_or_default() };
            let rows: Vec<(&str, Option<String>)> = vec![
                ("id", Some(escape(&info.id))),
                ("queue", Some(info.queue.clone())),
                ("state", Some(info.state.clone())),
                ("kind", Some(escape(&kind))),
                ("attempts", Some(attempts)),
                (at_label, info.at.clone()),
                ("enqueued at", info.enqueued_at.clone()),
                ("idempotency key", info.idempotency_key.as_deref().map(escape)),
                ("last error", info.error.as_deref().map(escape)),
                ("payload", Some(info.payload.to_string())),
            ];
            for (label, value) in rows {
                if let Some(v) = value {
                    out(format!("{label:<16} {v}"))?;
                }
            }
            Ok(())
        }
    }
}

/// Control characters shown escaped, so stored text cannot drive the
/// operator's terminal.
fn escape(s: &str) -> String {
    s.chars().flat_map(|c| if c.is_control() { c.escape_default().collect::<Vec<_>>() } else { vec![c] }).collect()
}
