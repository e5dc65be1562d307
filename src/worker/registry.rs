//! The worker registry: each running worker keeps a short description of
//! itself in Redis — host, pid, version, queues and weights, concurrency,
//! the jobs it holds — renewed every [`EVERY`] with a TTL of [`TTL`], so a
//! worker that dies without a word drops out within the TTL. Read by
//! `dtq inspect workers` and `GET /v1/workers` (the panel's workers page).
//!
//! Keys (see `keys.rs`): `ns:workers` ZSET (worker id → last report, ms)
//! and `ns:worker:<id>` STRING (the JSON description, expiring). Plain
//! commands, no script: each worker writes only its own entry.

use super::Shared;
use crate::broker::{Broker, BrokerError};
use fred::interfaces::{KeysInterface, SortedSetsInterface};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// How often a worker renews its entry.
pub const EVERY: Duration = Duration::from_secs(5);
/// How long an entry outlives its last renewal.
pub const TTL: Duration = Duration::from_secs(30);
/// Most busy jobs one entry lists (its `busy_count` says how many there are).
pub const MAX_BUSY_LISTED: usize = 100;
/// Most workers a listing returns.
pub const MAX_LISTED: usize = 1000;

/// What a worker says about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// `host-pid-random`, unique per process.
    pub id: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// dtq's version.
    pub version: String,
    /// The queues it takes from.
    pub queues: Vec<QueueWeight>,
    /// Jobs it runs at once.
    pub concurrency: usize,
    /// Jobs it holds now (leased: running or about to).
    pub busy_count: usize,
    /// Up to [`MAX_BUSY_LISTED`] of them, longest-held first.
    pub busy: Vec<BusyJob>,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339: when this entry was written.
    pub heartbeat_at: String,
}

/// A queue a worker takes from, with its weight.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueueWeight {
    /// The queue.
    pub name: String,
    /// Its weight (1–1000).
    pub weight: u32,
}

/// A job a worker holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BusyJob {
    /// The job's id.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// RFC 3339: when the worker leased it.
    pub started_at: String,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// This process' host name.
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// A new worker id: `host-pid-random`.
pub(crate) fn new_id() -> String {
    format!("{}-{}-{:04x}", hostname(), std::process::id(), fastrand::u16(..))
}

/// Keeps this worker's entry until `stop`, then removes it.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let host = hostname();
    let pid = std::process::id();
    let id = shared.id.clone();
    let started_at = crate::retention::rfc3339(now_ms());
    let ns = shared.broker.namespace().to_string();
    let (set, key) = (crate::keys::workers(&ns), crate::keys::worker(&ns, &id));
    loop {
        let info = WorkerInfo {
            id: id.clone(),
            host: host.clone(),
            pid,
            version: env!("CARGO_PKG_VERSION").into(),
            queues: shared
                .cfg
                .queues
                .iter()
                .map(|(name, weight)| QueueWeight { name: name.clone(), weight: *weight })
                .collect(),
            concurrency: shared.cfg.concurrency,
            busy_count: 0,
            busy: Vec::new(),
            started_at: started_at.clone(),
            heartbeat_at: crate::retention::rfc3339(now_ms()),
        };
        let info = with_busy(&shared, info);
        if let Err(e) = report(&shared.broker, &set, &key, &info).await {
            tracing::debug!(error = %e, "could not renew this worker's registry entry");
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.cancelled() => break,
        }
    }
    let c = shared.broker.client();
    let _: Result<i64, _> = c.del(&key).await;
    let _: Result<i64, _> = c.zrem(&set, id.as_str()).await;
}

/// `info` with the jobs held now.
fn with_busy(shared: &Shared, mut info: WorkerInfo) -> WorkerInfo {
    let held = shared.lock_held();
    let mut busy: Vec<(u64, BusyJob)> = Vec::new();
    for (qi, jobs) in held.iter().enumerate() {
        info.busy_count += jobs.len();
        for (id, h) in jobs {
            busy.push((
                h.leased_at,
                BusyJob { id: id.clone(), queue: shared.queues[qi].name.to_string(), started_at: String::new() },
            ));
        }
    }
    drop(held);
    busy.sort_by_key(|(at, _)| *at);
    info.busy = busy
        .into_iter()
        .take(MAX_BUSY_LISTED)
        .map(|(at, mut b)| {
            b.started_at = crate::retention::rfc3339(at);
            b
        })
        .collect();
    info
}

async fn report(broker: &Broker, set: &str, key: &str, info: &WorkerInfo) -> Result<(), fred::error::Error> {
    let c = broker.client();
    let body = serde_json::to_string(info).expect("worker info serializes");
    let _: () = c.set(key, body, Some(fred::types::Expiration::PX(TTL.as_millis() as i64)), None, false).await?;
    let _: i64 = c.zadd(set, None, None, false, false, (now_ms() as f64, info.id.as_str())).await?;
    Ok(())
}

/// Every live worker of the broker's namespace (at most [`MAX_LISTED`]),
/// oldest first; entries of workers gone for longer than the TTL are
/// dropped from the index on the way.
pub async fn list(broker: &Broker) -> Result<Vec<WorkerInfo>, BrokerError> {
    let c = broker.client();
    let ns = broker.namespace();
    let set = crate::keys::workers(ns);
    let stale = now_ms().saturating_sub(TTL.as_millis() as u64);
    let _: i64 = c
        .zremrangebyscore(&set, f64::NEG_INFINITY, stale as f64)
        .await
        .map_err(|e| BrokerError::redis("list workers", e))?;
    let ids: Vec<String> = c
        .zrange(&set, 0, MAX_LISTED as i64 - 1, None, false, None, false)
        .await
        .map_err(|e| BrokerError::redis("list workers", e))?;
    let bodies = futures::future::try_join_all(ids.iter().map(|id| async move {
        let body: Option<String> = c.get(crate::keys::worker(ns, id)).await?;
        Ok::<_, fred::error::Error>(body)
    }))
    .await
    .map_err(|e| BrokerError::redis("list workers", e))?;
    Ok(bodies.into_iter().flatten().filter_map(|b| serde_json::from_str(&b).ok()).collect())
}
