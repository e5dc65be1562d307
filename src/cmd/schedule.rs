//! `dtq admin schedule`: add, apply, list, remove, pause, resume, trigger.
//! Invalid input (a bad expression, an unknown zone, a name taken, an entry
//! of a file) exits 2 naming the schedule, the field and, for a file, the
//! line, and changes nothing.

use super::table::{escape, none, Col, Table};
use super::{out, usage};
use crate::cli::ScheduleCommand;
use crate::schedule::{Schedule, ScheduleError, Schedules};
use anyhow::Result;
use serde_json::value::RawValue;

pub async fn run(broker: &crate::broker::Broker, c: ScheduleCommand) -> Result<()> {
    let schedules = Schedules::new(broker);
    match c {
        ScheduleCommand::Add { name, cron, tz, every, kind, payload, queue, max_retries, timeout, catch_up } => {
            let payload = match payload {
                None => serde_json::json!({}),
                Some(p) => match serde_json::from_str(&p) {
                    Ok(v) => v,
                    Err(e) => return usage(format!("--payload is not valid JSON: {e}")),
                },
            };
            let catch_up = catch_up.parse().map_err(super::UsageError)?;
            let s =
                Schedule { name, cron, tz, every, kind, payload, queue, max_retries, timeout, catch_up, paused: false };
            let timing = Schedules::check(std::slice::from_ref(&s)).map_err(invalid)?.remove(0);
            if schedules.get(&s.name).await?.is_some() {
                return Err(invalid(ScheduleError::Exists(s.name)));
            }
            schedules.put(&s, &timing).await.map_err(invalid)?;
            out(format!("added schedule {} ({})", s.name, s.describe()))
        }
        ScheduleCommand::Apply { file, prune } => {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| super::UsageError(format!("cannot read {}: {e}", file.display())))?;
            let list = parse_file(&text).map_err(|e| super::UsageError(format!("{}: {e}", file.display())))?;
            let timings = Schedules::check(&list.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>()).map_err(|e| {
                let line = match &e {
                    ScheduleError::Invalid { name, .. } => list.iter().find(|(_, s)| &s.name == name).map(|(l, _)| *l),
                    _ => None,
                };
                super::UsageError(format!(
                    "{}{}: {e} (nothing was changed)",
                    file.display(),
                    line.map(|l| format!(":{l}")).unwrap_or_default()
                ))
            })?;
            let existing = schedules.all().await?;
            let (mut added, mut changed, mut removed) = (0, 0, 0);
            for ((_, s), timing) in list.iter().zip(&timings) {
                match existing.get(&s.name) {
                    Some(old) if old == s => continue,
                    Some(_) => changed += 1,
                    None => added += 1,
                }
                schedules.put(s, timing).await.map_err(invalid)?;
            }
            if prune {
                for name in existing.keys().filter(|n| !list.iter().any(|(_, s)| &s.name == *n)) {
                    schedules.remove(name).await?;
                    removed += 1;
                }
            }
            out(format!(
                "{added} added, {changed} changed, {removed} removed, {} unchanged",
                list.len() - added - changed
            ))
        }
        ScheduleCommand::List { json } => {
            let list = schedules.list().await?;
            if json {
                return out(serde_json::json!({ "schedules": list }));
            }
            if list.is_empty() {
                return out(none("schedules"));
            }
            let mut t = Table::new(&[
                Col::Text("SCHEDULE", 32),
                Col::Text("WHEN", 40),
                Col::Text("KIND → QUEUE", 32),
                Col::Text("NEXT RUN", 24),
                Col::Text("LAST RUN", 24),
                Col::Rest("LAST STATE"),
            ]);
            for l in &list {
                let s = &l.schedule;
                t.row(vec![
                    escape(&s.name),
                    escape(&s.describe()),
                    escape(&format!("{} → {}", s.kind, s.queue)),
                    if s.paused { "paused".into() } else { l.next_run.clone().unwrap_or_else(|| "-".into()) },
                    l.last_run.clone().unwrap_or_else(|| "-".into()),
                    l.last_state.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            t.lines().into_iter().try_for_each(out)
        }
        ScheduleCommand::Remove { name } => {
            if !schedules.remove(&name).await? {
                return Err(invalid(ScheduleError::NotFound(name)));
            }
            out(format!("removed schedule {name}"))
        }
        ScheduleCommand::Pause { name } => paused(&schedules, &name, true).await,
        ScheduleCommand::Resume { name } => paused(&schedules, &name, false).await,
        ScheduleCommand::Trigger { name } => {
            let (id, _) = schedules.trigger(&name).await.map_err(invalid)?;
            out(format!("enqueued {id}"))
        }
    }
}

async fn paused(schedules: &Schedules<'_>, name: &str, pause: bool) -> Result<()> {
    let changed = schedules.set_paused(name, pause).await.map_err(invalid)?;
    let word = if pause { "paused" } else { "resumed" };
    out(if changed { format!("{word} schedule {name}") } else { format!("schedule {name} was already {word}") })
}

/// A refusal is exit 2; Redis failing stays a runtime error.
fn invalid(e: ScheduleError) -> anyhow::Error {
    match e {
        ScheduleError::Broker(b) => b.into(),
        other => super::UsageError(other.to_string()).into(),
    }
}

/// The schedules of a file, each with the line its entry starts on.
fn parse_file(text: &str) -> Result<Vec<(usize, Schedule)>, String> {
    let entries: Vec<&RawValue> =
        serde_json::from_str(text).map_err(|e| format!("{e} (expected a JSON array of schedules)"))?;
    entries
        .into_iter()
        .enumerate()
        .map(|(i, raw)| {
            let offset = raw.get().as_ptr() as usize - text.as_ptr() as usize;
            let line = text[..offset].matches('\n').count() + 1;
            serde_json::from_str::<Schedule>(raw.get())
                .map(|s| (line, s))
                .map_err(|e| format!("{line}: entry {} (counting from 1): {e} (nothing was changed)", i + 1))
        })
        .collect()
}
