//! `dtq admin`: requeue, purge, cancel, pause, resume.

use super::out;
use crate::broker::Cancel;
use crate::cli::{AdminCommand, Global};
use anyhow::Result;

/// Jobs moved per script call by the looping operations.
const BATCH: usize = 1000;

pub async fn run(g: &Global, c: AdminCommand) -> Result<()> {
    let broker = super::connect(g).await?;
    match c {
        AdminCommand::Requeue { id, all: _, queue } => {
            let k = broker.keys(&queue);
            let moved = match id {
                Some(id) => {
                    let n = broker.requeue(&k, std::slice::from_ref(&id), 1).await?;
                    if n == 0 {
                        anyhow::bail!("job {id:?} is not in the dead-letter set of queue {queue}");
                    }
                    n
                }
                None => {
                    let mut total = 0;
                    loop {
                        let n = broker.requeue(&k, &[], BATCH).await?;
                        total += n;
                        if n == 0 {
                            break total;
                        }
                    }
                }
            };
            out(format!("requeued {moved} job(s) in queue {queue}"))
        }
        AdminCommand::Purge { queue, dead, pending, all } => {
            let k = broker.keys(&queue);
            let states: Vec<&str> = if all {
                vec!["pending", "scheduled", "dead"]
            } else {
                [(pending, "pending"), (dead, "dead")].into_iter().filter(|(on, _)| *on).map(|(_, s)| s).collect()
            };
            for state in states {
                let mut total = 0;
                loop {
                    let n = broker.purge(&k, state, BATCH).await?;
                    total += n;
                    if n == 0 {
                        break;
                    }
                }
                out(format!("purged {total} {state} job(s) from queue {queue}"))?;
            }
            Ok(())
        }
        AdminCommand::Cancel { id, queue } => {
            let queues = match queue {
                Some(q) => vec![q],
                None => broker.queues().await?,
            };
            for q in &queues {
                match broker.cancel(&broker.keys(q), &id).await? {
                    Cancel::Cancelled => return out(format!("cancelled job {id} in queue {q}")),
                    Cancel::Running => {
                        return out(format!("job {id} in queue {q} is running; nothing changed"));
                    }
                    Cancel::Dead => {
                        return out(format!(
                            "job {id} in queue {q} is dead-lettered; nothing changed (use admin purge or requeue)"
                        ));
                    }
                    Cancel::NotFound => {}
                }
            }
            anyhow::bail!("job {id:?} not found (not pending or scheduled)")
        }
        AdminCommand::Pause { queue } => {
            broker.register_queue(&queue).await?;
            broker.set_paused(&broker.keys(&queue), true).await?;
            out(format!("paused queue {queue}"))
        }
        AdminCommand::Resume { queue } => {
            let k = broker.keys(&queue);
            broker.set_paused(&k, false).await?;
            // Wake idle workers: the queue may hold jobs they skipped while paused.
            let _: Result<i64, _> = fred::interfaces::ListInterface::lpush(broker.client(), &k.signal, 1).await;
            out(format!("resumed queue {queue}"))
        }
    }
}
