//! Read-only views of the keyspace for `inspect` and the queue-depth gauge.
//! Reads are plain commands or the read-only `find` script: they change
//! nothing.

use super::scripts::eval;
use super::{Broker, BrokerError};
use crate::job::StoredJob;
use crate::retention::{parse_history, rfc3339, AttemptRecord};
use fred::prelude::*;
use serde::Serialize;

/// Sizes and lifetime counters of one queue.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QueueStats {
    /// Jobs waiting to be leased.
    pub pending: u64,
    /// Jobs leased to a worker and running.
    pub inflight: u64,
    /// Jobs waiting for their run time (delayed or retrying).
    pub scheduled: u64,
    /// Dead-lettered jobs.
    pub dead: u64,
    /// Completed jobs retained (see `admin retention`).
    pub completed: u64,
    /// Jobs completed successfully (lifetime counter).
    pub processed: u64,
    /// Failed attempts (not jobs).
    pub failed: u64,
    /// The queue is paused: workers lease nothing from it.
    pub paused: bool,
    /// Age of the oldest pending job (since it was enqueued), in ms; `None`
    /// when nothing is pending.
    pub oldest_pending_age_ms: Option<u64>,
}

/// A state a job can be listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Waiting to be leased.
    Pending,
    /// Waiting for its run time.
    Scheduled,
    /// Leased to a worker.
    Inflight,
    /// Dead-lettered.
    Dead,
    /// Completed and retained.
    Completed,
}

impl JobState {
    /// Every state, in listing order.
    pub const ALL: [JobState; 5] =
        [JobState::Pending, JobState::Scheduled, JobState::Inflight, JobState::Dead, JobState::Completed];

    /// Its lowercase name (`pending`, `scheduled`, ...), as the command line
    /// and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Scheduled => "scheduled",
            JobState::Inflight => "inflight",
            JobState::Dead => "dead",
            JobState::Completed => "completed",
        }
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown state {s:?}: one of pending, scheduled, inflight, dead, completed"))
    }
}

/// Filters of a finished-job listing, applied in Redis.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Case-insensitive text in the id, the error or the body.
    pub search: Option<String>,
    /// Only jobs finished within this long.
    pub since: Option<std::time::Duration>,
}

/// One job of a listing, as `inspect dead-letter`, `inspect completed` and
/// the API's job lists show it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedJob {
    /// The job id.
    pub id: String,
    /// The queue it is in.
    pub queue: String,
    /// The state it was listed in ([`JobState::as_str`]).
    pub state: &'static str,
    /// Its kind; `None` if the body is corrupt.
    pub kind: Option<String>,
    /// Attempts started.
    pub attempts: u64,
    /// The last failed attempt's error.
    pub error: Option<String>,
    /// RFC 3339 time it was dead-lettered (dead jobs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub died_at: Option<String>,
    /// RFC 3339 time it finished (dead and completed jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// When it runs (scheduled jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// When its lease ends (inflight jobs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    /// The time the listing is ordered by (Unix ms; 0 for pending jobs).
    #[serde(skip)]
    pub at_ms: u64,
    /// The job's payload; `null` if the body is corrupt.
    pub payload: serde_json::Value,
    /// A completed job's result (JSON if it reads as JSON, else a string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// The stored body could not be read (not UTF-8, not JSON, or missing).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub corrupt: bool,
}

/// One page of a listing and where the next one starts.
#[derive(Debug, Clone)]
pub struct Page {
    /// The jobs of this page, newest first.
    pub jobs: Vec<ListedJob>,
    /// `None` when nothing is left.
    pub next: Option<Cursor>,
}

/// A position in a finished set: entries scored at most `score`, the first
/// `skip` of those at exactly `score` already seen. Its text form is
/// `score:skip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    score: String,
    skip: u64,
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.score, self.skip)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid cursor {s:?}");
        let (score, skip) = s.split_once(':').ok_or_else(bad)?;
        score.parse::<u64>().map_err(|_| bad())?;
        Ok(Cursor { score: score.to_string(), skip: skip.parse().map_err(|_| bad())? })
    }
}

/// Most entries one `find` call reads.
const FIND_READ: usize = 5000;
/// Most matches one `find` call returns.
pub const MAX_PAGE: usize = 1000;

/// Everything known about one job.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    /// The job id.
    pub id: String,
    /// The queue it is in.
    pub queue: String,
    /// Its kind; `None` if the body is corrupt or gone (completed and not
    /// retained).
    pub kind: Option<String>,
    /// pending, scheduled, inflight, dead or completed.
    pub state: String,
    /// The job's payload; `null` if the body is corrupt or gone.
    pub payload: serde_json::Value,
    /// A completed job's result (JSON if it reads as JSON, else a string).
    pub result: Option<serde_json::Value>,
    /// The last failed attempt's error.
    pub error: Option<String>,
    /// Attempts started.
    pub attempts: u64,
    /// Failures allowed before dead-letter; `None` if the body is corrupt or
    /// gone.
    pub max_retries: Option<u32>,
    /// RFC 3339 time it was enqueued.
    pub enqueued_at: Option<String>,
    /// When a scheduled job runs.
    pub run_at: Option<String>,
    /// When an inflight job's lease ends (the heartbeat extends it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<String>,
    /// When a dead or completed job finished.
    pub finished_at: Option<String>,
    /// The idempotency key in force (explicit key, else a client-chosen id).
    pub idempotency_key: Option<String>,
    /// Its attempts, oldest first (at most [`crate::retention::HISTORY_MAX`]).
    pub history: Vec<AttemptRecord>,
    /// The stored body could not be read (not UTF-8, not JSON).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub corrupt: bool,
}

impl JobInfo {
    /// Dead or completed: nothing more will happen to it.
    pub fn is_finished(&self) -> bool {
        self.state == "dead" || self.state == "completed"
    }
}

fn redis(op: &'static str) -> impl FnOnce(Error) -> BrokerError {
    move |e| BrokerError::redis(op, e)
}

type Bytes = fred::bytes::Bytes;

/// A stored result as JSON: itself if it reads as JSON, else a string.
pub fn result_value(stored: &[u8]) -> serde_json::Value {
    serde_json::from_slice(stored).unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(stored).into()))
}

fn text(b: Option<Bytes>) -> Option<String> {
    b.map(|e| String::from_utf8_lossy(&e).into_owned())
}

impl Broker {
    /// Sizes and counters of `queue`.
    pub async fn queue_stats(&self, queue: &str) -> Result<QueueStats, BrokerError> {
        let k = self.keys(queue);
        let c = self.client();
        let op = "read queue stats";
        let (pending, inflight, scheduled, dead, completed, counters, paused, oldest) = tokio::try_join!(
            c.llen::<u64, _>(&k.pending),
            c.zcard::<u64, _>(&k.inflight),
            c.zcard::<u64, _>(&k.scheduled),
            c.zcard::<u64, _>(&k.dead),
            c.zcard::<u64, _>(&k.completed),
            c.hmget::<Vec<Option<u64>>, _, _>(&k.stats, vec!["processed", "failed"]),
            c.exists::<u64, _>(&k.paused),
            // Jobs go in at the head and out at the tail.
            c.lindex::<Option<String>, _>(&k.pending, -1),
        )
        .map_err(redis(op))?;
        let oldest_pending_age_ms = match oldest {
            Some(id) => {
                let body: Option<Bytes> = c.hget(&k.jobs, &id).await.map_err(redis(op))?;
                let at =
                    body.as_deref().and_then(|b| serde_json::from_slice::<StoredJob>(b).ok()).map(|j| j.enqueued_at);
                at.filter(|&e| e > 0).map(|e| crate::job::now_ms().saturating_sub(e))
            }
            None => None,
        };
        Ok(QueueStats {
            pending,
            inflight,
            scheduled,
            dead,
            completed,
            processed: counters.first().copied().flatten().unwrap_or(0),
            failed: counters.get(1).copied().flatten().unwrap_or(0),
            paused: paused == 1,
            oldest_pending_age_ms,
        })
    }

    /// Stats of every known queue, by name: read concurrently (the client
    /// pipelines them), so 100 queues cost about one round trip, not 100.
    pub async fn all_queue_stats(&self) -> Result<std::collections::BTreeMap<String, QueueStats>, BrokerError> {
        let queues = self.queues().await?;
        let stats = futures::future::try_join_all(queues.iter().map(|q| self.queue_stats(q))).await?;
        Ok(queues.into_iter().zip(stats).collect())
    }

    /// Dead-lettered jobs of `queue`, newest first.
    pub async fn dead_letters(&self, queue: &str, limit: usize) -> Result<Vec<ListedJob>, BrokerError> {
        self.finished_matching(queue, JobState::Dead, &Filter::default(), limit).await
    }

    /// Up to `limit` jobs of `queue` in `set` that match `filter`, newest
    /// first, paging through the set in bounded calls.
    pub async fn finished_matching(
        &self,
        queue: &str,
        set: JobState,
        filter: &Filter,
        limit: usize,
    ) -> Result<Vec<ListedJob>, BrokerError> {
        let mut out = Vec::new();
        let mut cursor = None;
        while out.len() < limit {
            let page = self.finished(queue, set, filter, cursor.as_ref(), limit - out.len()).await?;
            out.extend(page.jobs);
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        Ok(out)
    }

    /// One page of `queue`'s jobs in `set` that match `filter`, newest
    /// first, from `cursor`: at most `limit` (and [`MAX_PAGE`]) jobs, from
    /// at most a bounded number of entries read, so a page may be short
    /// (even empty) and still have a next one.
    pub async fn finished(
        &self,
        queue: &str,
        set: JobState,
        filter: &Filter,
        cursor: Option<&Cursor>,
        limit: usize,
    ) -> Result<Page, BrokerError> {
        let k = self.keys(queue);
        let zset = match set {
            JobState::Pending => &k.pending,
            JobState::Scheduled => &k.scheduled,
            JobState::Inflight => &k.inflight,
            JobState::Dead => &k.dead,
            JobState::Completed => &k.completed,
        };
        let keys = [zset.as_str(), &k.jobs, &k.errors, &k.attempts, &k.results];
        let args: Vec<Value> = vec![
            cursor.map_or("+inf".into(), |c| c.score.as_str().into()),
            Value::Integer(cursor.map_or(0, |c| c.skip) as i64),
            Value::Integer(filter.since.map_or(0, |d| d.as_millis().max(1) as i64)),
            filter.kind.as_deref().unwrap_or("").into(),
            filter.search.as_deref().map(str::to_lowercase).unwrap_or_default().into(),
            Value::Integer(FIND_READ as i64),
            Value::Integer(limit.clamp(1, MAX_PAGE) as i64),
            (if set == JobState::Pending { "list" } else { "zset" }).into(),
        ];
        let v = eval(self.client(), &self.scripts.find, "list finished jobs", &keys, args).await?;
        let bad = |v: &Value| BrokerError::reply("list finished jobs", v);
        let Value::Array(items) = v else { return Err(bad(&v)) };
        let mut it = items.into_iter();
        let (Some(score), Some(skip), Some(_read)) = (it.next(), it.next(), it.next()) else {
            return Err(BrokerError::Reply { op: "list finished jobs", detail: "short reply".into() });
        };
        let score = score.as_string().unwrap_or_default();
        let next = (!score.is_empty()).then(|| Cursor { score, skip: skip.as_u64().unwrap_or(0) });
        let rest: Vec<Value> = it.collect();
        let mut jobs = Vec::with_capacity(rest.len() / 6);
        for m in rest.chunks(6) {
            let [id, at, body, error, attempts, result] = m else { return Err(bad(&Value::Null)) };
            let bytes = |v: &Value| v.as_bytes().map(Bytes::copy_from_slice);
            let at_ms = at.as_string().and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0) as u64;
            let body = bytes(body);
            let (kind, payload, corrupt) = decode(body.as_deref());
            let time = |st: &[JobState]| st.contains(&set).then(|| rfc3339(at_ms));
            jobs.push(ListedJob {
                id: id.as_string().unwrap_or_default(),
                queue: queue.to_string(),
                state: set.as_str(),
                kind,
                attempts: attempts.as_string().and_then(|a| a.parse().ok()).unwrap_or(0),
                error: text(bytes(error)),
                died_at: time(&[JobState::Dead]),
                finished_at: time(&[JobState::Dead, JobState::Completed]),
                run_at: time(&[JobState::Scheduled]),
                lease_until: time(&[JobState::Inflight]),
                at_ms,
                payload,
                result: bytes(result).map(|r| result_value(&r)),
                corrupt,
            });
        }
        Ok(Page { jobs, next })
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

    /// The job `id` of `queue`, if it is there (or completed and marked so).
    pub async fn job_in(&self, id: &str, queue: &str) -> Result<Option<JobInfo>, BrokerError> {
        let k = self.keys(queue);
        let c = self.client();
        let op = "read job";
        let idem = k.idem(id);
        let keys = [
            &*k.jobs,
            &k.attempts,
            &k.errors,
            &k.history,
            &k.results,
            &k.inflight,
            &k.scheduled,
            &k.dead,
            &k.completed,
            &idem,
        ];
        let v = eval(c, &self.scripts.job, op, &keys, vec![id.into()]).await?;
        let Value::Array(f) = v else { return Err(BrokerError::reply(op, &v)) };
        if f.len() != 10 {
            return Err(BrokerError::Reply { op, detail: format!("{} fields", f.len()) });
        }
        let bytes = |i: usize| f[i].as_bytes().map(Bytes::copy_from_slice);
        let score = |i: usize| f[i].as_string().and_then(|s| s.parse::<f64>().ok());
        let (body, error, history, result) = (bytes(0), bytes(2), bytes(3), bytes(4));
        let attempts = f[1].as_string().and_then(|a| a.parse::<u64>().ok());
        let (inflight, scheduled, dead, completed) = (score(5), score(6), score(7), score(8));
        let marker = f[9].as_string();
        // Completed and not retained: only its completion marker is left.
        let marked = marker.is_some_and(|v| !v.starts_with("r:"));
        if body.is_none() && !marked {
            return Ok(None);
        }
        let ms = |t: Option<f64>| t.map(|t| rfc3339(t as u64));
        let state = match (inflight, scheduled, dead, completed) {
            _ if body.is_none() => "completed",
            (Some(_), ..) => "inflight",
            (_, Some(_), ..) => "scheduled",
            (_, _, Some(_), _) => "dead",
            (.., Some(_)) => "completed",
            _ => "pending",
        };
        let parsed = body.as_deref().and_then(|b| serde_json::from_slice::<StoredJob>(b).ok());
        let (kind, payload, corrupt) = decode(body.as_deref());
        Ok(Some(JobInfo {
            id: id.to_string(),
            queue: queue.to_string(),
            kind,
            state: state.to_string(),
            payload,
            result: result.map(|r| result_value(&r)),
            error: text(error),
            attempts: attempts.unwrap_or(0),
            max_retries: parsed.as_ref().map(|j| j.max_retries),
            enqueued_at: parsed.as_ref().filter(|j| j.enqueued_at > 0).map(|j| rfc3339(j.enqueued_at)),
            run_at: ms(scheduled),
            lease_until: ms(inflight),
            finished_at: ms(dead.or(completed)),
            idempotency_key: parsed.as_ref().and_then(|j| j.effective_key(id).map(str::to_string)),
            history: history.map(|h| parse_history(&h)).unwrap_or_default(),
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
