//! `dtq admin`: requeue, purge, cancel, pause, resume, retention, delete-queue.
//!
//! One rule for every command that names a job: it is looked for in every
//! queue, `--queue` narrows the search, and an id found in several queues is
//! refused (exit 2, naming them). Outcomes: exit 0 when done (or when there
//! was nothing to do, like pausing a paused queue), 2 when the job or queue
//! does not exist, 3 when it exists but nothing was changed (a job in
//! flight, a queue holding jobs); `--json` prints the outcome as one object
//! either way. Operations over many jobs act on what existed when they
//! started, so they end even while workers and producers run.

use super::{out, usage, Unchanged};
use crate::broker::{Broker, Cancel, JobInfo, QueueStats, CANCEL_REACH};
use crate::cli::{AdminCommand, Global};
use crate::retention::RetentionUpdate;
use anyhow::Result;
use serde_json::json;

/// Jobs moved per script call by the looping operations.
const BATCH: usize = 1000;

pub async fn run(g: &Global, c: AdminCommand) -> Result<()> {
    let broker = super::connect(g).await?;
    match c {
        AdminCommand::Schedule(s) => super::schedule::run(&broker, s).await,
        AdminCommand::Requeue { id: Some(id), queue, dry_run, json, .. } => {
            requeue_one(&broker, &id, queue.as_deref(), dry_run, json).await
        }
        AdminCommand::Requeue { id: None, queue, dry_run, json, .. } => {
            let queues = match queue {
                Some(q) => vec![known(&broker, &q).await?],
                None => broker.queues().await?,
            };
            let mut moved = serde_json::Map::new();
            for q in &queues {
                let k = broker.keys(q);
                // The dead set is ordered by time of death: a job that dies
                // again meanwhile goes behind every one counted here.
                let n = broker.queue_stats(q).await?.dead;
                let done = if dry_run { n } else { drain(n, |limit| broker.requeue(&k, &[], limit)).await? };
                moved.insert(q.clone(), done.into());
                if !json {
                    out(format!("{} {done} job(s) in queue {q}", if dry_run { "would requeue" } else { "requeued" }))?;
                }
            }
            if json {
                out(json!({"command": "requeue", "requeued": moved, "dry_run": dry_run}))?;
            }
            Ok(())
        }
        AdminCommand::Purge { queue, dead, pending, scheduled, completed, all, dry_run, json } => {
            let q = known(&broker, &queue).await?;
            let k = broker.keys(&q);
            let picked = [(pending, "pending"), (scheduled, "scheduled"), (dead, "dead"), (completed, "completed")];
            let stats = broker.queue_stats(&q).await?;
            let mut purged = serde_json::Map::new();
            for (_, state) in picked.into_iter().filter(|(on, _)| *on || all) {
                // At most what the state held when the command started.
                let n = count(&stats, state);
                let done = if dry_run { n } else { drain(n, |limit| broker.purge(&k, state, limit)).await? };
                purged.insert(state.to_string(), done.into());
                if !json {
                    out(format!(
                        "{} {done} {state} job(s) from queue {q}",
                        if dry_run { "would purge" } else { "purged" }
                    ))?;
                }
            }
            if json {
                out(json!({"command": "purge", "queue": q, "purged": purged, "dry_run": dry_run}))?;
            }
            Ok(())
        }
        AdminCommand::Cancel { id, queue, json } => {
            let job = the_job(&broker, &id, queue.as_deref()).await?;
            let q = job.queue;
            let outcome = broker.cancel(&broker.keys(&q), &id).await?;
            let (word, line) = match outcome {
                Cancel::Cancelled => ("cancelled", format!("cancelled job {id} in queue {q}")),
                Cancel::Running => ("running", format!("job {id} in queue {q} is running; nothing changed")),
                Cancel::Dead => (
                    "dead",
                    format!("job {id} in queue {q} is dead-lettered; nothing changed (use admin purge or requeue)"),
                ),
                Cancel::Completed => ("completed", format!("job {id} in queue {q} has completed; nothing changed")),
                Cancel::TooDeep => (
                    "too_deep",
                    format!(
                        "job {id} in queue {q} is pending beyond the {CANCEL_REACH} oldest and newest jobs that cancel looks at; nothing changed"
                    ),
                ),
                // Gone between the lookup and the cancel (started, or done).
                Cancel::NotFound => ("not_found", format!("job {id} in queue {q} is no longer pending or scheduled")),
            };
            if json {
                out(json!({"command": "cancel", "id": id, "queue": q, "outcome": word}))?;
            }
            match outcome {
                Cancel::Cancelled if !json => out(line),
                Cancel::Cancelled => Ok(()),
                _ => Err(Unchanged(line).into()),
            }
        }
        AdminCommand::Pause { name, queue, create, json } => {
            let q = name.or(queue).expect("clap requires one");
            let k = broker.keys(&q);
            if !create {
                known(&broker, &q).await?;
            }
            let was = broker.is_paused(&k).await?;
            if !was {
                broker.register_queue(&q).await?;
                broker.set_paused(&k, true).await?;
            }
            let line = if was { format!("queue {q} was already paused") } else { format!("paused queue {q}") };
            say(json, json!({"command": "pause", "queue": q, "changed": !was}), line)
        }
        AdminCommand::Resume { name, queue, json } => {
            let q = known(&broker, &name.or(queue).expect("clap requires one")).await?;
            let k = broker.keys(&q);
            let was = broker.is_paused(&k).await?;
            if was {
                broker.set_paused(&k, false).await?;
                // Wake idle workers: the queue may hold jobs they skipped while paused.
                let _: Result<i64, _> = fred::interfaces::ListInterface::lpush(broker.client(), &k.signal, 1).await;
            }
            let line = if was { format!("resumed queue {q}") } else { format!("queue {q} was not paused") };
            say(json, json!({"command": "resume", "queue": q, "changed": was}), line)
        }
        AdminCommand::Retention { name, queue, dead_max, dead_ttl, completed_max, completed_ttl, create, json } => {
            let q = name.or(queue).expect("clap requires one");
            let k = broker.keys(&q);
            let update = RetentionUpdate { dead_max, dead_ttl, completed_max, completed_ttl };
            if !create || update.is_empty() {
                known(&broker, &q).await?;
            }
            let mut trimmed = (0, 0);
            if !update.is_empty() {
                broker.register_queue(&q).await?;
                broker.set_retention(&k, &update).await?;
                // Lowered limits apply now, not at the next write.
                loop {
                    let (d, c) = broker.trim(&k, BATCH).await?;
                    trimmed = (trimmed.0 + d, trimmed.1 + c);
                    if d < BATCH as u64 && c < BATCH as u64 {
                        break;
                    }
                }
            }
            let r = broker.retention(&k).await?;
            if json {
                return out(json!({
                    "command": "retention",
                    "queue": q,
                    "retention": r,
                    "changed": !update.is_empty(),
                    "trimmed": {"dead": trimmed.0, "completed": trimmed.1},
                }));
            }
            let d = crate::retention::DEFAULT;
            let note = |same: bool| if same { "  (default)" } else { "" };
            let age = super::table::span;
            out(format!("retention of queue {q}:"))?;
            out(format!(
                "  dead-letter  at most {} jobs, for {}{}",
                super::table::digits(r.dead_max),
                age(r.dead_ttl),
                note(r.dead_max == d.dead_max && r.dead_ttl == d.dead_ttl)
            ))?;
            if r.completed_max == 0 {
                out(format!("  completed    none kept{}", note(false)))?;
            } else {
                out(format!(
                    "  completed    at most {} jobs, for {}{}",
                    super::table::digits(r.completed_max),
                    age(r.completed_ttl),
                    note(r.completed_max == d.completed_max && r.completed_ttl == d.completed_ttl)
                ))?;
            }
            if trimmed != (0, 0) {
                out(format!("trimmed {} dead and {} completed job(s)", trimmed.0, trimmed.1))?;
            }
            Ok(())
        }
        AdminCommand::DeleteQueue { queue, force, dry_run, json } => {
            let q = known(&broker, &queue).await?;
            let s = broker.queue_stats(&q).await?;
            let held = s.pending + s.inflight + s.scheduled + s.dead;
            let counts =
                format!("{} pending, {} in flight, {} scheduled, {} dead", s.pending, s.inflight, s.scheduled, s.dead);
            let refused = held > 0 && !force;
            if json {
                let deleted = !refused && !dry_run;
                out(
                    json!({"command": "delete-queue", "queue": q, "jobs": held, "deleted": deleted, "dry_run": dry_run}),
                )?;
            }
            if refused {
                return Err(Unchanged(format!(
                    "queue {q} holds {held} job(s) ({counts}); nothing deleted (--force deletes them with it)"
                ))
                .into());
            }
            if dry_run {
                return if json {
                    Ok(())
                } else {
                    out(format!("would delete queue {q} and its {held} job(s) ({counts})"))
                };
            }
            broker.delete_queue(&q).await?;
            if json {
                Ok(())
            } else {
                out(format!("deleted queue {q} and its {held} job(s) ({counts})"))
            }
        }
    }
}

/// Requeues one dead job, found by the rule of this module.
async fn requeue_one(broker: &Broker, id: &str, queue: Option<&str>, dry_run: bool, json: bool) -> Result<()> {
    let job = the_job(broker, id, queue).await?;
    let q = job.queue;
    if job.state != "dead" {
        let why = format!("job {id} in queue {q} is {}, not dead-lettered; nothing changed", job.state);
        if json {
            out(json!({"command": "requeue", "id": id, "queue": q, "outcome": job.state}))?;
        }
        return Err(Unchanged(why).into());
    }
    let moved = if dry_run { 1 } else { broker.requeue(&broker.keys(&q), &[id.to_string()], 1).await? };
    if json {
        let outcome = if moved == 1 { "requeued" } else { "not_found" };
        out(json!({"command": "requeue", "id": id, "queue": q, "outcome": outcome, "dry_run": dry_run}))?;
    }
    match (moved, dry_run) {
        (0, _) => Err(Unchanged(format!("job {id} in queue {q} is no longer dead-lettered; nothing changed")).into()),
        _ if json => Ok(()),
        (_, true) => out(format!("would requeue job {id} in queue {q}")),
        (_, false) => out(format!("requeued job {id} in queue {q}")),
    }
}

/// The one job named `id` (in `queue`, or in every queue): exit 2 when no
/// queue or several hold it.
pub(super) async fn the_job(broker: &Broker, id: &str, queue: Option<&str>) -> Result<JobInfo> {
    match lookup(broker, id, queue).await? {
        Some(job) => Ok(job),
        None => usage(not_found(id, queue)),
    }
}

/// What to say of a job that is not there.
pub(super) fn not_found(id: &str, queue: Option<&str>) -> String {
    match queue {
        Some(q) => format!("job {id:?} not found in queue {q}"),
        None => format!("job {id:?} not found in any queue"),
    }
}

/// The job named `id` (in `queue`, or in every queue), if any: exit 2 when
/// several queues hold it, or `queue` does not exist.
pub(super) async fn lookup(broker: &Broker, id: &str, queue: Option<&str>) -> Result<Option<JobInfo>> {
    if let Some(q) = queue {
        known(broker, q).await?;
    }
    let mut found = broker.find_job(id, queue).await?;
    match found.len() {
        0 => Ok(None),
        1 => Ok(Some(found.remove(0))),
        _ => {
            let queues: Vec<String> = found.iter().map(|j| format!("{} ({})", j.queue, j.state)).collect();
            usage(format!("job {id:?} is in several queues: {}; say which with --queue", queues.join(", ")))
        }
    }
}

/// `queue`, if Redis knows it: exit 2 otherwise.
async fn known(broker: &Broker, queue: &str) -> Result<String> {
    if broker.queue_exists(queue).await? {
        Ok(queue.to_string())
    } else {
        usage(format!("no queue named {queue:?} (see dtq inspect queues)"))
    }
}

pub(crate) fn count(s: &QueueStats, state: &str) -> u64 {
    match state {
        "pending" => s.pending,
        "scheduled" => s.scheduled,
        "completed" => s.completed,
        _ => s.dead,
    }
}

/// Runs `step(limit)` until `total` jobs were moved or a step moves none.
pub(crate) async fn drain<F, Fut>(total: u64, mut step: F) -> Result<u64>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<u64, crate::broker::BrokerError>>,
{
    let mut done = 0;
    while done < total {
        let n = step((total - done).min(BATCH as u64) as usize).await?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// Prints the outcome: the JSON object, or the line.
fn say(json: bool, object: serde_json::Value, line: String) -> Result<()> {
    if json {
        out(object)
    } else {
        out(line)
    }
}
