//! The Redis side of dtq: one [`Broker`] per process wraps a fred client and
//! the Lua scripts, and exposes every state transition as one batched script
//! call. Nothing here knows about handlers or scheduling policy.

pub mod connect;
mod inspect;
pub mod scripts;
mod tls;

pub use connect::{redact_url, RedisTarget, TlsFiles};
pub use inspect::{Cursor, Filter, JobInfo, JobState, ListedJob, Page, QueueStats};

use crate::keys::{self, QueueKeys};
use crate::retention::{Retention, RetentionUpdate};
use fred::prelude::*;
use scripts::{eval, Scripts};
use std::sync::Arc;
use std::time::Duration;

/// A failed broker operation; `op` names what was being done.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// Redis (or the connection to it) returned an error.
    #[error("{op}: {message}")]
    Redis {
        /// The operation that failed.
        op: &'static str,
        /// The error, described.
        message: String,
        /// fred's classification of the error.
        kind: ErrorKind,
    },
    /// Redis answered with something the operation cannot read.
    #[error("{op}: unexpected reply from Redis: {detail}")]
    Reply {
        /// The operation that failed.
        op: &'static str,
        /// The reply, or what is wrong with it.
        detail: String,
    },
}

impl BrokerError {
    pub(crate) fn redis(op: &'static str, e: Error) -> Self {
        BrokerError::Redis { op, message: connect::describe(&e), kind: e.kind().clone() }
    }

    fn reply(op: &'static str, v: &Value) -> Self {
        BrokerError::Reply { op, detail: format!("{v:?}") }
    }

    /// True for errors that go away by themselves (connection lost,
    /// timeouts, failover, a loading, busy or full server): worth retrying.
    pub fn is_transient(&self) -> bool {
        match self {
            BrokerError::Redis { kind, message, .. } => {
                use fred::error::ErrorKind::*;
                matches!(kind, IO | Timeout | Canceled | Cluster | Backpressure | Unknown)
                    || ["READONLY", "MASTERDOWN", "LOADING", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "OOM", "NOSCRIPT"]
                        .iter()
                        .any(|p| message.contains(p))
            }
            BrokerError::Reply { .. } => false,
        }
    }
}

/// A job leased to this worker by [`Broker::dequeue`].
#[derive(Debug, Clone)]
pub struct Leased {
    /// The job id.
    pub id: String,
    /// The stored body; `None` if it was missing (it may not be UTF-8 or JSON).
    pub body: Option<fred::bytes::Bytes>,
    /// 1-based number this attempt gets if it starts (confirmed by [`Broker::start`]).
    pub attempt: u32,
    /// The lease token that fences this attempt's settle calls.
    pub token: String,
}

/// A job to enqueue: its id, stored body and schedule.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// The job id.
    pub id: String,
    /// The body to store (a serialized [`crate::job::StoredJob`]).
    pub body: String,
    /// Delay before it may run, in ms from when Redis accepts it; 0 = none.
    pub delay_ms: u64,
    /// Absolute run-at (Unix ms, Redis clock); 0 = none.
    pub run_at_ms: u64,
    /// Completion marker to check for dedup (client-chosen ids only).
    pub marker: Option<String>,
}

/// One leased attempt, with the idempotency key it may hold.
#[derive(Debug, Clone)]
pub struct LeaseRef {
    /// The job id.
    pub id: String,
    /// The attempt's lease token.
    pub token: String,
    /// Full key of the idempotency state this attempt holds (`r:<token>`), if any.
    pub lock: Option<String>,
}

/// A completed attempt (see [`Broker::ack`]).
#[derive(Debug, Clone, Copy)]
pub struct Completion<'a> {
    /// The attempt that completed.
    pub lease: &'a LeaseRef,
    /// Idempotency keys to mark completed.
    pub markers: &'a [String],
    /// The handler's result (at most [`crate::retention::MAX_RESULT`] bytes).
    pub result: Option<&'a str>,
}

/// A failed attempt (see [`Broker::fail`]).
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The attempt that failed.
    pub lease: &'a LeaseRef,
    /// Retry later or dead-letter.
    pub to: FailTo,
    /// The error to store (cut to [`crate::retention::MAX_ERROR`] bytes).
    pub error: &'a str,
    /// The attempt's number.
    pub attempt: u32,
    /// The attempt ran out of time (its history says `timeout`).
    pub timed_out: bool,
}

/// What an ack or fail call did: per job, whether it was recorded (false:
/// stale lease); and how many finished jobs retention trimmed meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Per job, in order: recorded (`false`: stale lease, nothing changed).
    pub done: Vec<bool>,
    /// Finished jobs retention trimmed in the same call.
    pub trimmed: u64,
}

/// What one recover call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovered {
    /// Jobs with an expired lease put back in pending.
    pub recovered: u64,
    /// Jobs with an expired lease dead-lettered (that attempt was their last).
    pub dead: u64,
    /// Expired leases remain.
    pub more: bool,
    /// Dead jobs trimmed by retention.
    pub trimmed: u64,
}

/// Where a failed attempt goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailTo {
    /// Scheduled again after this many ms.
    RetryIn(u64),
    /// The dead-letter set.
    Dead,
}

/// One leased job about to start (see [`Broker::start`]).
#[derive(Debug, Clone)]
pub struct StartCheck {
    /// The job id.
    pub id: String,
    /// The attempt's lease token.
    pub token: String,
    /// Full key of the job's idempotency state, if it has a key: checked
    /// (not completed, not held by another lease).
    pub key: Option<String>,
    /// Take the key for this lease (for idempotency keys; a client id needs
    /// no taking, being unique in its queue and covered by the lease).
    pub take: bool,
    /// Charge the attempt (its handler is starting).
    pub charge: bool,
}

/// Outcome of [`Broker::start`] for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Go on, as this (1-based) attempt; charged if the check asked.
    Run(u32),
    /// The lease is gone: do not run, do not settle.
    LeaseLost,
    /// The key completed within the window: acknowledge without running.
    Completed,
    /// Another live attempt holds the key: defer.
    Held,
}

/// Outcome of [`Broker::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// Removed, with everything stored for it.
    Cancelled,
    /// Inflight: nothing changed.
    Running,
    /// Dead-lettered: nothing changed.
    Dead,
    /// Completed: nothing changed.
    Completed,
    /// Pending, but farther than [`CANCEL_REACH`] from either end of the
    /// list: nothing changed.
    TooDeep,
    /// No such job in the queue.
    NotFound,
}

/// Most body bytes one dequeue returns (always at least one job; a body is
/// a job spec of at most [`crate::job::MAX_SPEC_BYTES`] from `produce`).
pub const MAX_DEQUEUE_BYTES: usize = 4 << 20;

/// Pending entries `cancel` looks at from each end of a queue's list.
pub const CANCEL_REACH: usize = 10_000;

/// The connection to Redis and the scripts; cheap to clone.
#[derive(Clone)]
pub struct Broker {
    client: Client,
    scripts: Arc<Scripts>,
    namespace: Arc<str>,
    target: Arc<RedisTarget>,
    command_timeout: Duration,
    /// Queues this process registered (by their pending key), so enqueue
    /// registers each once.
    registered: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

/// Most jobs one enqueue script call carries (well under Lua's `unpack` limit).
pub const MAX_ENQUEUE_JOBS: usize = 1000;
/// Most bytes of bodies one enqueue script call carries.
pub const MAX_ENQUEUE_BYTES: usize = 8 << 20;

/// How long a Redis command may take before it fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);

impl Broker {
    /// Connects (retrying until `give_up_after`, or forever) and loads the scripts.
    pub async fn connect(
        target: RedisTarget,
        namespace: &str,
        give_up_after: Option<Duration>,
    ) -> Result<Broker, String> {
        let started = tokio::time::Instant::now();
        let client = connect::connect(&target, COMMAND_TIMEOUT, give_up_after).await?;
        let scripts = Arc::new(Scripts::new());
        let load = scripts.load_all(&client);
        let loaded = match give_up_after {
            Some(limit) => tokio::time::timeout(limit.saturating_sub(started.elapsed()), load)
                .await
                .unwrap_or_else(|_| Err(BrokerError::Reply { op: "load scripts", detail: "timed out".into() })),
            None => load.await,
        };
        loaded.map_err(|e| format!("Redis at {}: {e}", target.redacted))?;
        check_server(&client, &target.redacted).await?;
        Ok(Broker {
            client,
            scripts,
            namespace: namespace.into(),
            target: Arc::new(target),
            command_timeout: COMMAND_TIMEOUT,
            registered: Arc::default(),
        })
    }

    /// The underlying fred client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The Redis URL with its password redacted.
    pub fn redacted_url(&self) -> &str {
        &self.target.redacted
    }

    /// The key namespace (e.g. `dtq`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Connected to a Redis Cluster (a `redis-cluster://` URL).
    pub fn is_clustered(&self) -> bool {
        self.target.clustered
    }

    /// The keys of `queue`.
    pub fn keys(&self, queue: &str) -> QueueKeys {
        QueueKeys::new(&self.namespace, queue)
    }

    /// A second connection for blocking waits (BLPOP would stall every other
    /// command pipelined on the shared connection).
    pub async fn blocking_client(&self) -> Result<Client, String> {
        connect::connect(&self.target, self.command_timeout, None).await
    }

    /// True if Redis answers a PING within a second. (While fred reconnects
    /// it queues commands, so an unbounded PING would hang, not fail.)
    pub async fn ping(&self) -> bool {
        matches!(tokio::time::timeout(Duration::from_secs(1), self.client.ping::<String>(None)).await, Ok(Ok(_)))
    }

    /// Records `queue` in the set of known queues (idempotent).
    pub async fn register_queue(&self, queue: &str) -> Result<(), BrokerError> {
        self.client
            .sadd::<i64, _, _>(keys::queues(&self.namespace), queue)
            .await
            .map(|_| ())
            .map_err(|e| BrokerError::redis("register queue", e))
    }

    /// True if `queue` is known or holds anything.
    pub async fn queue_exists(&self, queue: &str) -> Result<bool, BrokerError> {
        let k = self.keys(queue);
        let (member, keys): (bool, u64) = tokio::try_join!(
            self.client.sismember(keys::queues(&self.namespace), queue),
            self.client.exists(vec![k.pending, k.inflight, k.scheduled, k.dead, k.jobs, k.stats, k.paused]),
        )
        .map_err(|e| BrokerError::redis("check queue", e))?;
        Ok(member || keys > 0)
    }

    /// Every queue that has had a job, sorted.
    pub async fn queues(&self) -> Result<Vec<String>, BrokerError> {
        let mut q: Vec<String> = self
            .client
            .smembers(keys::queues(&self.namespace))
            .await
            .map_err(|e| BrokerError::redis("list queues", e))?;
        q.sort();
        Ok(q)
    }

    /// Enqueues jobs into one queue (registering the queue, so the reaper
    /// visits it); returns per job `true` = enqueued, `false` = duplicate.
    /// Jobs go out in script calls of at most [`MAX_ENQUEUE_JOBS`] jobs and
    /// [`MAX_ENQUEUE_BYTES`] of bodies; each call is atomic, and on an error
    /// the calls before it stand (a retry reports their jobs as duplicates
    /// only if they carry client ids).
    pub async fn enqueue(&self, k: &QueueKeys, jobs: &[NewJob]) -> Result<Vec<bool>, BrokerError> {
        if !self.registered.lock().unwrap_or_else(|p| p.into_inner()).contains(&k.pending) {
            self.register_queue(k.queue()).await?;
            self.registered.lock().unwrap_or_else(|p| p.into_inner()).insert(k.pending.clone());
        }
        let mut out = Vec::with_capacity(jobs.len());
        let mut rest = jobs;
        while !rest.is_empty() {
            let mut n = 0;
            let mut bytes = 0;
            while n < rest.len() && n < MAX_ENQUEUE_JOBS && (n == 0 || bytes + rest[n].body.len() <= MAX_ENQUEUE_BYTES)
            {
                bytes += rest[n].body.len();
                n += 1;
            }
            out.extend(self.enqueue_call(k, &rest[..n]).await?);
            rest = &rest[n..];
        }
        Ok(out)
    }

    async fn enqueue_call(&self, k: &QueueKeys, jobs: &[NewJob]) -> Result<Vec<bool>, BrokerError> {
        let mut keys: Vec<&str> = vec![&k.pending, &k.scheduled, &k.jobs, &k.stats, &k.signal];
        let mut args: Vec<Value> = Vec::with_capacity(1 + jobs.len() * 5);
        args.push(Value::Integer(jobs.len() as i64));
        for j in jobs {
            args.push(j.id.as_str().into());
            args.push(j.body.as_str().into());
            args.push(Value::Integer(j.delay_ms as i64));
            args.push(Value::Integer(j.run_at_ms as i64));
            args.push(Value::Integer(j.marker.is_some() as i64));
            if let Some(m) = &j.marker {
                keys.push(m);
            }
        }
        let v = eval(&self.client, &self.scripts.enqueue, "enqueue", &keys, args).await?;
        flags("enqueue", v, jobs.len())
    }

    /// Leases up to `n` jobs of one queue for `visibility`. `token_prefix`
    /// must be unique to this call: a replay of the same call (fred resends
    /// a command after a reconnect) returns the same batch. `done_receipts`
    /// are receipts of earlier calls of this queue whose replies arrived
    /// (deleted by this call; see [`QueueKeys::receipt`]).
    pub async fn dequeue(
        &self,
        k: &QueueKeys,
        n: usize,
        visibility: Duration,
        token_prefix: &str,
        done_receipts: &[String],
    ) -> Result<Vec<Leased>, BrokerError> {
        let receipt = k.receipt(token_prefix);
        let mut keys: Vec<&str> = vec![
            &k.pending,
            &k.inflight,
            &k.jobs,
            &k.attempts,
            &k.leases,
            &k.paused,
            &k.scheduled,
            &k.signal,
            &receipt,
        ];
        keys.extend(done_receipts.iter().map(String::as_str));
        let args = vec![
            Value::Integer(n as i64),
            Value::Integer(visibility.as_millis() as i64),
            token_prefix.into(),
            Value::Integer(visibility.as_millis() as i64),
            Value::Integer(MAX_DEQUEUE_BYTES as i64),
        ];
        let v = eval(&self.client, &self.scripts.dequeue, "dequeue", &keys, args).await?;
        let Value::Array(items) = v else {
            return if v.is_null() { Ok(Vec::new()) } else { Err(BrokerError::reply("dequeue", &v)) };
        };
        let mut out = Vec::with_capacity(items.len() / 4);
        let mut it = items.into_iter();
        while let (Some(id), Some(body), Some(attempt), Some(i)) = (it.next(), it.next(), it.next(), it.next()) {
            let id = id.into_string().ok_or_else(|| BrokerError::Reply { op: "dequeue", detail: "id".into() })?;
            let attempt = attempt.as_u64().unwrap_or(1) as u32;
            let i = i.as_u64().unwrap_or(0);
            out.push(Leased { id, body: body.into_bytes(), attempt, token: format!("{token_prefix}{i}") });
        }
        Ok(out)
    }

    /// Acknowledges completed attempts; `markers[i]` are the idempotency keys
    /// of job `i`, marked completed (the key an attempt holds is always among
    /// them). Returns per job whether its lease was still valid.
    pub async fn ack(&self, k: &QueueKeys, jobs: &[Completion<'_>], window: Duration) -> Result<Settled, BrokerError> {
        let mut keys: Vec<&str> = vec![
            &k.inflight,
            &k.jobs,
            &k.attempts,
            &k.leases,
            &k.errors,
            &k.stats,
            &k.completed,
            &k.results,
            &k.history,
            &k.retention,
        ];
        let mut args: Vec<Value> = Vec::with_capacity(2 + jobs.len() * 4);
        args.push(Value::Integer(window.as_millis().max(1) as i64));
        args.push(Value::Integer(jobs.len() as i64));
        for j in jobs {
            args.push(j.lease.id.as_str().into());
            args.push(j.lease.token.as_str().into());
            args.push(Value::Integer(j.markers.len() as i64));
            args.push(j.result.unwrap_or("").into());
            keys.extend(j.markers.iter().map(String::as_str));
        }
        let v = eval(&self.client, &self.scripts.ack, "ack", &keys, args).await?;
        settled("ack", v, jobs.len())
    }

    /// Records failed attempts: each job is scheduled for a retry or
    /// dead-lettered (the dead-letter set trimmed to its retention).
    pub async fn fail(&self, k: &QueueKeys, jobs: &[Failure<'_>]) -> Result<Settled, BrokerError> {
        let mut keys: Vec<&str> = vec![
            &k.inflight,
            &k.scheduled,
            &k.dead,
            &k.leases,
            &k.errors,
            &k.stats,
            &k.attempts,
            &k.history,
            &k.retention,
            &k.jobs,
            &k.results,
        ];
        let mut args: Vec<Value> = Vec::with_capacity(1 + jobs.len() * 7);
        args.push(Value::Integer(jobs.len() as i64));
        for j in jobs {
            args.push(j.lease.id.as_str().into());
            args.push(j.lease.token.as_str().into());
            args.push(Value::Integer(match j.to {
                FailTo::RetryIn(ms) => ms as i64,
                FailTo::Dead => -1,
            }));
            args.push(crate::retention::cut(j.error, crate::retention::MAX_ERROR).as_ref().into());
            args.push(Value::Integer(j.lease.lock.is_some() as i64));
            args.push(Value::Integer(j.attempt as i64));
            args.push(
                match (j.timed_out, j.to) {
                    (true, _) => "timeout",
                    (false, FailTo::Dead) => "dead",
                    (false, FailTo::RetryIn(_)) => "retry",
                }
                .into(),
            );
            keys.extend(j.lease.lock.as_deref());
        }
        let v = eval(&self.client, &self.scripts.fail, "fail", &keys, args).await?;
        settled("fail", v, jobs.len())
    }

    /// Gives leased jobs back without spending an attempt: each `(lease,
    /// delay in ms, refund)` is visible again after the delay (0: at once, at
    /// the head of the queue); `refund: Some(n)` gives back attempt `n` whose
    /// handler started. Per job, in order: released (`false`: stale lease).
    pub async fn release(
        &self,
        k: &QueueKeys,
        jobs: &[(&LeaseRef, u64, Option<u32>)],
    ) -> Result<Vec<bool>, BrokerError> {
        let mut keys: Vec<&str> =
            vec![&k.inflight, &k.scheduled, &k.pending, &k.leases, &k.attempts, &k.signal, &k.history];
        let mut args: Vec<Value> = Vec::with_capacity(1 + jobs.len() * 5);
        args.push(Value::Integer(jobs.len() as i64));
        for (lease, delay, refund) in jobs {
            args.push(lease.id.as_str().into());
            args.push(lease.token.as_str().into());
            args.push(Value::Integer(*delay as i64));
            args.push(Value::Integer(lease.lock.is_some() as i64));
            args.push(Value::Integer(refund.unwrap_or(0) as i64));
            keys.extend(lease.lock.as_deref());
        }
        let v = eval(&self.client, &self.scripts.release, "release", &keys, args).await?;
        flags("release", v, jobs.len())
    }

    /// Extends the leases of running jobs and the idempotency keys they
    /// hold; `false` = lease lost.
    pub async fn heartbeat(
        &self,
        k: &QueueKeys,
        visibility: Duration,
        jobs: &[&LeaseRef],
    ) -> Result<Vec<bool>, BrokerError> {
        let mut keys: Vec<&str> = vec![&k.inflight, &k.leases];
        let mut args: Vec<Value> = Vec::with_capacity(2 + jobs.len() * 3);
        args.push(Value::Integer(visibility.as_millis() as i64));
        args.push(Value::Integer(jobs.len() as i64));
        for lease in jobs {
            args.push(lease.id.as_str().into());
            args.push(lease.token.as_str().into());
            args.push(Value::Integer(lease.lock.is_some() as i64));
            keys.extend(lease.lock.as_deref());
        }
        let v = eval(&self.client, &self.scripts.heartbeat, "heartbeat", &keys, args).await?;
        flags("heartbeat", v, jobs.len())
    }

    /// Recovers up to `limit` expired leases: `(recovered, dead_lettered, more)`.
    pub async fn recover(&self, k: &QueueKeys, limit: usize) -> Result<Recovered, BrokerError> {
        let keys = [
            &*k.inflight,
            &k.pending,
            &k.leases,
            &k.attempts,
            &k.jobs,
            &k.dead,
            &k.errors,
            &k.stats,
            &k.signal,
            &k.history,
            &k.retention,
            &k.results,
        ];
        let v = eval(&self.client, &self.scripts.recover, "recover", &keys, vec![Value::Integer(limit as i64)]).await?;
        let n = ints("recover", v)?;
        match n[..] {
            [r, d, more, trimmed] => {
                Ok(Recovered { recovered: r as u64, dead: d as u64, more: more == 1, trimmed: trimmed as u64 })
            }
            _ => Err(BrokerError::Reply { op: "recover", detail: format!("{n:?}") }),
        }
    }

    /// Promotes up to `limit` due scheduled jobs: `(moved, ms until the next
    /// is due or None if none is scheduled)`.
    pub async fn promote(&self, k: &QueueKeys, limit: usize) -> Result<(u64, Option<u64>), BrokerError> {
        let keys = [&*k.scheduled, &k.pending, &k.signal];
        let v = eval(&self.client, &self.scripts.promote, "promote", &keys, vec![Value::Integer(limit as i64)]).await?;
        let n = ints("promote", v)?;
        match n[..] {
            [moved, wait] => Ok((moved as u64, u64::try_from(wait).ok())),
            _ => Err(BrokerError::Reply { op: "promote", detail: format!("{n:?}") }),
        }
    }

    /// Moves dead jobs back to pending with a fresh retry budget: the given
    /// ids, or (with `ids` empty) up to `limit` of the oldest. Returns how many.
    pub async fn requeue(&self, k: &QueueKeys, ids: &[String], limit: usize) -> Result<u64, BrokerError> {
        let keys = [&*k.dead, &k.pending, &k.attempts, &k.errors, &k.signal];
        let args: Vec<Value> = if ids.is_empty() {
            vec!["oldest".into(), Value::Integer(limit as i64)]
        } else {
            std::iter::once("ids".into()).chain(ids.iter().map(|i| i.as_str().into())).collect()
        };
        let v = eval(&self.client, &self.scripts.requeue, "requeue", &keys, args).await?;
        v.as_u64().ok_or_else(|| BrokerError::reply("requeue", &v))
    }

    /// Deletes up to `limit` jobs of one state (`pending`, `scheduled` or `dead`).
    pub async fn purge(&self, k: &QueueKeys, state: &str, limit: usize) -> Result<u64, BrokerError> {
        let (key, kind) = match state {
            "pending" => (&k.pending, "list"),
            "scheduled" => (&k.scheduled, "zset"),
            "dead" => (&k.dead, "zset"),
            "completed" => (&k.completed, "zset"),
            other => return Err(BrokerError::Reply { op: "purge", detail: format!("unknown state {other}") }),
        };
        let keys = [key.as_str(), &k.jobs, &k.attempts, &k.errors, &k.history, &k.results];
        let v =
            eval(&self.client, &self.scripts.purge, "purge", &keys, vec![kind.into(), Value::Integer(limit as i64)])
                .await?;
        v.as_u64().ok_or_else(|| BrokerError::reply("purge", &v))
    }

    /// Cancels a job that has not started. A pending job is looked for
    /// among the [`CANCEL_REACH`] oldest and newest of its queue.
    pub async fn cancel(&self, k: &QueueKeys, id: &str) -> Result<Cancel, BrokerError> {
        self.remove(k, id, false).await
    }

    /// Deletes a job that is not running: pending, scheduled, dead or
    /// completed (`Cancel::Cancelled` = deleted), with everything stored for it.
    pub async fn delete_job(&self, k: &QueueKeys, id: &str) -> Result<Cancel, BrokerError> {
        self.remove(k, id, true).await
    }

    async fn remove(&self, k: &QueueKeys, id: &str, finished_too: bool) -> Result<Cancel, BrokerError> {
        let keys = [
            &*k.pending,
            &k.scheduled,
            &k.inflight,
            &k.dead,
            &k.jobs,
            &k.attempts,
            &k.errors,
            &k.history,
            &k.completed,
            &k.results,
        ];
        let flag = if finished_too { "1" } else { "0" };
        let args = vec![id.into(), Value::Integer(CANCEL_REACH as i64), flag.into()];
        let v = eval(&self.client, &self.scripts.cancel, "cancel", &keys, args).await?;
        Ok(match v.as_i64() {
            Some(1) => Cancel::Cancelled,
            Some(2) => Cancel::Running,
            Some(3) => Cancel::Dead,
            Some(5) => Cancel::Completed,
            Some(4) => Cancel::TooDeep,
            Some(0) => Cancel::NotFound,
            _ => return Err(BrokerError::reply("cancel", &v)),
        })
    }

    /// Deletes a whole queue: every job in every state, its counters, and its
    /// entry in the set of queues (`admin delete-queue`, and `bench`, which
    /// cleans up after itself). Idempotency and receipt keys expire by
    /// themselves.
    pub async fn delete_queue(&self, queue: &str) -> Result<(), BrokerError> {
        let k = self.keys(queue);
        let keys = vec![
            k.pending,
            k.inflight,
            k.scheduled,
            k.dead,
            k.jobs,
            k.attempts,
            k.leases,
            k.errors,
            k.completed,
            k.results,
            k.history,
            k.retention,
            k.stats,
            k.paused,
            k.signal,
        ];
        // UNLINK: a big hash is freed off Redis's main thread.
        self.client.unlink::<i64, _>(keys).await.map_err(|e| BrokerError::redis("delete queue", e))?;
        self.client
            .srem::<i64, _, _>(keys::queues(&self.namespace), queue)
            .await
            .map(|_| ())
            .map_err(|e| BrokerError::redis("delete queue", e))
    }

    /// The retention in force for `queue` (defaults for what is not set).
    pub async fn retention(&self, k: &QueueKeys) -> Result<Retention, BrokerError> {
        let v: Vec<Option<u64>> = self
            .client
            .hmget(&k.retention, vec!["dead_max", "dead_ttl", "completed_max", "completed_ttl"])
            .await
            .map_err(|e| BrokerError::redis("read retention", e))?;
        let d = crate::retention::DEFAULT;
        let get = |i: usize| v.get(i).copied().flatten();
        Ok(Retention {
            dead_max: get(0).unwrap_or(d.dead_max),
            dead_ttl: get(1).map(Duration::from_millis).unwrap_or(d.dead_ttl),
            completed_max: get(2).unwrap_or(d.completed_max),
            completed_ttl: get(3).map(Duration::from_millis).unwrap_or(d.completed_ttl),
        })
    }

    /// Stores a change to `queue`'s retention; every process reads it at
    /// its next write. (Trimming to it is [`Broker::trim`].)
    pub async fn set_retention(&self, k: &QueueKeys, update: &RetentionUpdate) -> Result<(), BrokerError> {
        let fields = update.fields();
        if fields.is_empty() {
            return Ok(());
        }
        self.client
            .hset::<i64, _, _>(&k.retention, fields)
            .await
            .map(|_| ())
            .map_err(|e| BrokerError::redis("set retention", e))
    }

    /// Applies `queue`'s retention to its dead and completed sets, at most
    /// `limit` jobs of each: (dead trimmed, completed trimmed).
    pub async fn trim(&self, k: &QueueKeys, limit: usize) -> Result<(u64, u64), BrokerError> {
        let keys = [&*k.dead, &k.completed, &k.jobs, &k.attempts, &k.errors, &k.results, &k.history, &k.retention];
        let v = eval(&self.client, &self.scripts.trim, "trim", &keys, vec![Value::Integer(limit as i64)]).await?;
        match ints("trim", v)?[..] {
            [d, c] => Ok((d as u64, c as u64)),
            ref other => Err(BrokerError::Reply { op: "trim", detail: format!("{other:?}") }),
        }
    }

    /// True while `k`'s queue is paused.
    pub async fn is_paused(&self, k: &QueueKeys) -> Result<bool, BrokerError> {
        self.client.exists::<u64, _>(&k.paused).await.map(|n| n > 0).map_err(|e| BrokerError::redis("pause", e))
    }

    /// Pauses (`true`) or resumes a queue: workers stop taking its jobs.
    pub async fn set_paused(&self, k: &QueueKeys, paused: bool) -> Result<(), BrokerError> {
        let r: Result<Value, _> = if paused {
            self.client.set(&k.paused, 1, None, None, false).await
        } else {
            self.client.del(&k.paused).await
        };
        r.map(|_| ()).map_err(|e| BrokerError::redis("pause", e))
    }

    /// Checks a batch of leased jobs of one queue, in order: for each job
    /// whose lease is still ours, the idempotency guard if it has a key (the
    /// key is then held for `visibility`, renewed by the heartbeat), and its
    /// attempt's charge if asked.
    pub async fn start(
        &self,
        k: &QueueKeys,
        visibility: Duration,
        worker: &str,
        jobs: &[StartCheck],
    ) -> Result<Vec<Start>, BrokerError> {
        let mut keys: Vec<&str> = Vec::with_capacity(3 + jobs.len());
        keys.extend([k.leases.as_str(), &k.attempts, &k.history]);
        let mut args: Vec<Value> = Vec::with_capacity(3 + jobs.len() * 3);
        args.push(Value::Integer(visibility.as_millis() as i64));
        args.push(Value::Integer(jobs.len() as i64));
        args.push(worker.into());
        for j in jobs {
            let flags = j.key.is_some() as i64 | (j.charge as i64) << 1 | ((j.key.is_some() && j.take) as i64) << 2;
            args.extend([j.id.as_str().into(), j.token.as_str().into(), Value::Integer(flags)]);
            keys.extend(j.key.as_deref());
        }
        let v = eval(&self.client, &self.scripts.start, "start", &keys, args).await?;
        per_job("start", v, jobs.len())?
            .into_iter()
            .map(|c| match c {
                1.. => Ok(Start::Run(u32::try_from(c).unwrap_or(u32::MAX))),
                0 => Ok(Start::LeaseLost),
                -1 => Ok(Start::Completed),
                -2 => Ok(Start::Held),
                _ => Err(BrokerError::Reply { op: "start", detail: format!("unknown outcome {c}") }),
            })
            .collect()
    }

    /// Asks the distributed rate limiter of `kind` for `starts` starts,
    /// granted in order: per start `None` = allowed, `Some(ms)` = wait that
    /// long (denied starts get staggered waits).
    pub async fn rate_limit(
        &self,
        kind: &str,
        limit: u64,
        period: Duration,
        starts: usize,
    ) -> Result<Vec<Option<u64>>, BrokerError> {
        let key = keys::rate_limit(&self.namespace, kind);
        let args = vec![
            Value::Integer(limit as i64),
            Value::Integer(period.as_millis().max(1) as i64),
            Value::Integer(starts as i64),
        ];
        let v = eval(&self.client, &self.scripts.rate_limit, "rate limit", &[&key], args).await?;
        Ok(per_job("rate limit", v, starts)?.into_iter().map(|ms| (ms > 0).then_some(ms as u64)).collect())
    }

    /// Tries to take a lock: `true` if `token` now holds it for `ttl`.
    pub async fn lock_acquire(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, BrokerError> {
        let r: Option<String> = self
            .client
            .set(key, token, Some(Expiration::PX(ttl.as_millis() as i64)), Some(SetOptions::NX), false)
            .await
            .map_err(|e| BrokerError::redis("acquire lock", e))?;
        Ok(r.is_some())
    }

    /// Extends a lock we hold; `false` if it is no longer ours.
    pub async fn lock_renew(&self, key: &str, token: &str, ttl: Duration) -> Result<bool, BrokerError> {
        let args = vec![token.into(), Value::Integer(ttl.as_millis() as i64)];
        let v = eval(&self.client, &self.scripts.lock_renew, "renew lock", &[key], args).await?;
        Ok(v.as_i64() == Some(1))
    }

    /// Releases a lock if we still hold it.
    pub async fn lock_release(&self, key: &str, token: &str) -> Result<(), BrokerError> {
        eval(&self.client, &self.scripts.lock_release, "release lock", &[key], vec![token.into()]).await?;
        Ok(())
    }
}

/// Refuses a server older than Redis 7.0 / Valkey 7.2 (the scripts' flags
/// need them), and warns when an eviction policy could drop job bodies.
async fn check_server(client: &Client, redacted: &str) -> Result<(), String> {
    let info: String = match client.info(None).await {
        Ok(i) => i,
        // INFO may be denied by an ACL: the scripts would fail loudly anyway.
        Err(e) => {
            tracing::debug!(error = %e, "INFO unavailable; server version not checked");
            return Ok(());
        }
    };
    let field =
        |name: &str| info.lines().find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':'))).map(str::trim);
    let (server, version, min) = match field("valkey_version") {
        Some(v) => ("Valkey", v, (7, 2)),
        None => ("Redis", field("redis_version").unwrap_or("0"), (7, 0)),
    };
    if !version_at_least(version, min) {
        return Err(format!(
            "Redis at {redacted} is {server} {version}; dtq needs Redis 7.0 or newer (or Valkey 7.2 or newer)"
        ));
    }
    if let Some(policy) = field("maxmemory_policy").filter(|p| *p != "noeviction") {
        tracing::warn!(redis = %redacted, policy, "maxmemory-policy is not noeviction: at maxmemory Redis may evict a queue's jobs hash and lose every job in it; set maxmemory-policy noeviction");
    }
    Ok(())
}

/// True if a dotted version is at least `(major, minor)`.
fn version_at_least(version: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) >= (major, minor)
}

fn ints(op: &'static str, v: Value) -> Result<Vec<i64>, BrokerError> {
    match v {
        Value::Array(items) => items.iter().map(|i| i.as_i64().ok_or_else(|| BrokerError::reply(op, i))).collect(),
        other => Err(BrokerError::reply(op, &other)),
    }
}

/// One integer per job of a batch.
fn per_job(op: &'static str, v: Value, n: usize) -> Result<Vec<i64>, BrokerError> {
    let out = ints(op, v)?;
    if out.len() != n {
        return Err(BrokerError::Reply { op, detail: format!("{} results for {n} jobs", out.len()) });
    }
    Ok(out)
}

/// One flag per job, then the number of jobs trimmed.
fn settled(op: &'static str, v: Value, n: usize) -> Result<Settled, BrokerError> {
    let mut out = per_job(op, v, n + 1)?;
    let trimmed = out.pop().unwrap_or(0) as u64;
    Ok(Settled { done: out.into_iter().map(|i| i == 1).collect(), trimmed })
}

fn flags(op: &'static str, v: Value, n: usize) -> Result<Vec<bool>, BrokerError> {
    Ok(per_job(op, v, n)?.into_iter().map(|i| i == 1).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_compare_by_major_then_minor() {
        assert!(super::version_at_least("7.0.15", (7, 0)));
        assert!(super::version_at_least("9.1.2", (7, 2)));
        assert!(!super::version_at_least("6.2.14", (7, 0)));
        assert!(!super::version_at_least("7.1.0", (7, 2)));
        assert!(!super::version_at_least("garbage", (7, 0)));
    }
}
