//! Read-only views of the keyspace for `inspect` and the queue-depth gauge.
//! Reads are plain commands (no script): they change nothing.

use super::{Broker, BrokerError};
use crate::job::StoredJob;
use fred::prelude::*;
use serde::Serialize;

/// Sizes and lifetime counters of one queue.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QueueStats {
    pub pending: u64,
    pub inflight: u64,
    pub scheduled: u64,
    pub dead: u64,
    pub processed: u64,
    pub failed: u64,
    pub paused: bool,
}

/// One dead-lettered job, as `inspect dead-letter` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadJob {
    pub id: String,
    pub queue: String,
    pub kind: Option<String>,
    pub attempts: u64,
    pub error: Option<String>,
    /// RFC 3339 time it was dead-lettered.
    pub died_at: String,
    pub payload: serde_json::Value,
    /// The stored body could not be read (not UTF-8, not JSON, or missing).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub corrupt: bool,
}

/// Everything known about one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    pub id: String,
    pub queue: String,
    /// pending, scheduled, inflight, dead or completed.
    pub state: String,
    pub kind: Option<String>,
    pub attempts: u64,
    pub max_retries: Option<u32>,
    pub error: Option<String>,
    /// Lease deadline (inflight), run-at (scheduled) or died-at (dead), RFC 3339.
    pub at: Option<String>,
    pub enqueued_at: Option<String>,
    pub idempotency_key: Option<String>,
    pub payload: serde_json::Value,
    /// The stored body could not be read (not UTF-8, not JSON).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub corrupt: bool,
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

fn redis(op: &'static str) -> impl FnOnce(Error) -> BrokerError {
    move |e| BrokerError::redis(op, e)
}

impl Broker {
    /// Sizes and counters of `queue`.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let k = self.keys(queue);
        let c = self.client();
        let op = "read queue stats";
        let (pending, inflight, scheduled, dead, counters, paused) = tokio::try_join!(
            c.llen::<u64, _>(&k.pending),
            c.zcard::<u64, _>(&k.inflight),
            c.zcard::<u64, _>(&k.scheduled),
            c.zcard::<u64, _>(&k.dead),
            c.hmget::<Vec<Option<u64>>, _, _>(&k.stats, vec!["processed", "failed"]),
            c.exists::<u64, _>(&k.paused),
        )
        .map_err(redis(op))?;
        Ok(QueueStats {
            pending,
            inflight,
            scheduled,
            dead,
            processed: counters.first().copied().flatten().unwrap_or(0),
            failed: counters.get(1).copied().flatten().unwrap_or(0),
            paused: paused == 1,
        })
    }

    /// Dead-lettered jobs of `queue`, newest first.
    pub async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<DeadJob>, BrokerError> {
        let k = self.keys(queue);
        let c = self.client();
        let op = "read dead letters";
        let entries: Vec<(String, f64)> =
            c.zrange(&k.dead, 0, limit as i64 - 1, None, true, None, true).await.map_err(redis(op))?;
        let mut out = Vec::with_capacity(entries.len());
        for (id, died) in entries {
            let (body, attempts, error): (Option<fred::bytes::Bytes>, Option<u64>, Option<fred::bytes::Bytes>) =
                tokio::try_join!(c.hget(&k.jobs, &id), c.hget(&k.attempts, &id), c.hget(&k.errors, &id),)
                    .map_err(redis(op))?;
            let (kind, payload, corrupt) = decode(body.as_deref());
            out.push(DeadJob {
                id,
                queue: queue.to_string(),
                kind,
                attempts: attempts.unwrap_or(0),
                error: error.map(|e| String::from_utf8_lossy(&e).into_owned()),
                died_at: rfc3339(died as u64),
                payload,
                corrupt,
            });
        }
        Ok(out)
    }

    /// Looks a job up in `queue`, or in every known queue: one entry per
    /// queue that holds a job of that id (ids are unique per queue only).
    pub async fn find_job(&self, id: &str, queue: Option<&str>) -> Result<Vec<JobInfo>, BrokerError> {
        let queues = match queue {
            Some(q) => vec![q.to_string()],
            None => self.queues().await?,
        };
        let mut found = Vec::new();
        for q in queues {
            found.extend(self.job_in(id, &q).await?);
        }
        Ok(found)
    }

    async fn job_in(&self, id: &str, queue: &str) -> Result<Option<JobInfo>, BrokerError> {
        let k = self.keys(queue);
        let c = self.client();
        let op = "read job";
        let (body, attempts, error) = tokio::try_join!(
            c.hget::<Option<fred::bytes::Bytes>, _, _>(&k.jobs, id),
            c.hget::<Option<u64>, _, _>(&k.attempts, id),
            c.hget::<Option<fred::bytes::Bytes>, _, _>(&k.errors, id),
        )
        .map_err(redis(op))?;
        let (inflight, scheduled, dead, done) = tokio::try_join!(
            c.zscore::<Option<f64>, _, _>(&k.inflight, id),
            c.zscore::<Option<f64>, _, _>(&k.scheduled, id),
            c.zscore::<Option<f64>, _, _>(&k.dead, id),
            c.get::<Option<String>, _>(k.idem(id)),
        )
        .map_err(redis(op))?;
        let done = done.is_some_and(|v| !v.starts_with("r:"));
        if body.is_none() && !done {
            return Ok(None);
        }
        let (state, at) = match (inflight, scheduled, dead) {
            _ if body.is_none() => ("completed", None),
            (Some(t), _, _) => ("inflight", Some(t)),
            (_, Some(t), _) => ("scheduled", Some(t)),
            (_, _, Some(t)) => ("dead", Some(t)),
            _ => ("pending", None),
        };
        let parsed = body.as_deref().and_then(|b| serde_json::from_slice::<StoredJob>(b).ok());
        let (kind, payload, corrupt) = decode(body.as_deref());
        Ok(Some(JobInfo {
            id: id.to_string(),
            queue: queue.to_string(),
            state: state.to_string(),
            kind,
            attempts: attempts.unwrap_or(0),
            max_retries: parsed.as_ref().map(|j| j.max_retries),
            error: error.map(|e| String::from_utf8_lossy(&e).into_owned()),
            at: at.map(|t| rfc3339(t as u64)),
            enqueued_at: parsed.as_ref().filter(|j| j.enqueued_at > 0).map(|j| rfc3339(j.enqueued_at)),
            idempotency_key: parsed.as_ref().and_then(|j| j.effective_key(id).map(str::to_string)),
            payload,
            corrupt: corrupt && body.is_some(),
        }))
    }
}

/// Kind and payload of a stored body, and whether it is corrupt (missing,
/// not UTF-8 or not a job): a corrupt body has neither, and never stops a
/// reader from showing the rest.
fn decode(body: Option<&[u8]>) -> (Option<String>, serde_json::Value, bool) {
    // StoredJob borrows strings, so it needs UTF-8 text (from_slice checks it).
    match body.map(serde_json::from_slice::<StoredJob>) {
        Some(Ok(j)) => {
            let payload = serde_json::from_str(j.payload.get()).unwrap_or(serde_json::Value::Null);
            (Some(j.kind.into_owned()), payload, false)
        }
        _ => (None, serde_json::Value::Null, true),
    }
}
