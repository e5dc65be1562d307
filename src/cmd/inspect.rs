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
            let v = serde_json::to_value(&info)?;
            for (k, val) in v.as_object().into_iter().flatten() {
                let shown = match val {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "-".to_string(),
                    other => other.to_string(),
                };
                out(format!("{k:<16} {shown}"))?;
            }
            Ok(())
        }
    }
}
