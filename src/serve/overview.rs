//! `GET /v1/overview` (and `GET /v1/queues`): every queue's counts and
//! rates, Redis' state and what looks wrong, read from Redis at most once
//! per [`SAMPLE_TTL`] however many browsers and scripts ask — one refresh
//! at a time, the others wait for it and share its answer. Rates come from
//! the difference of two samples; a few minutes of totals are kept for the
//! panel's chart.

use crate::broker::{Broker, BrokerError, QueueStats};
use hyper::body::Bytes;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long a sample is reused.
pub const SAMPLE_TTL: Duration = Duration::from_secs(1);
/// Points of the throughput chart kept (one per sample, so about five
/// minutes while someone watches at the panel's 2 s).
const SERIES: usize = 150;
/// A dead set that grew over this long raises an alert.
const DEAD_WINDOW: Duration = Duration::from_secs(60);
/// Memory above this share of `maxmemory` raises an alert.
const MEMORY_ALERT: f64 = 0.8;

/// The shared sample.
#[derive(Default)]
pub struct Sampler {
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    last: Option<Sample>,
    series: VecDeque<Value>,
    /// Dead counts per queue at past samples, for the growth alert.
    dead: VecDeque<(Instant, HashMap<String, u64>)>,
}

struct Sample {
    at: Instant,
    stats: BTreeMap<String, QueueStats>,
    /// The answers, serialized once per sample: a request in between
    /// costs a copy of a reference.
    answers: Answers,
}

/// The bodies of `GET /v1/overview` and `GET /v1/queues`, as JSON.
#[derive(Clone)]
pub struct Answers {
    pub overview: Bytes,
    pub queues: Bytes,
}

impl Sampler {
    /// The answers of a fresh sample if the last one is older than
    /// [`SAMPLE_TTL`], else of the last one.
    pub async fn answers(&self, broker: &Broker) -> Result<Answers, BrokerError> {
        let mut st = self.state.lock().await;
        if let Some(s) = st.last.as_ref().filter(|s| s.at.elapsed() < SAMPLE_TTL) {
            return Ok(s.answers.clone());
        }
        let (stats, info) = tokio::try_join!(broker.all_queue_stats(), server_info(broker))?;
        let at = Instant::now();
        let st = &mut *st;
        let previous = st.last.take();
        let elapsed = previous.as_ref().map(|p| at.duration_since(p.at).as_secs_f64()).filter(|&s| s > 0.0);
        let rate = |now: u64, before: Option<u64>| match (elapsed, before) {
            (Some(secs), Some(b)) => (now.saturating_sub(b) as f64 / secs * 10.0).round() / 10.0,
            _ => 0.0,
        };
        let (mut queues, mut counts) = (serde_json::Map::new(), serde_json::Map::new());
        let (mut processed, mut failed) = (0.0, 0.0);
        for (name, s) in &stats {
            let before = previous.as_ref().and_then(|p| p.stats.get(name));
            let (p, f) = (rate(s.processed, before.map(|b| b.processed)), rate(s.failed, before.map(|b| b.failed)));
            processed += p;
            failed += f;
            let mut v = serde_json::to_value(s).expect("stats serialize");
            counts.insert(name.clone(), v.clone());
            v["processed_per_s"] = p.into();
            v["failed_per_s"] = f.into();
            queues.insert(name.clone(), v);
        }
        let wall = crate::job::now_ms();
        if elapsed.is_some() {
            st.series.push_back(json!({"t": wall, "processed_per_s": processed, "failed_per_s": failed}));
            while st.series.len() > SERIES {
                st.series.pop_front();
            }
        }
        st.dead.push_back((at, stats.iter().map(|(q, s)| (q.clone(), s.dead)).collect()));
        while st.dead.len() > 2 && at.duration_since(st.dead[1].0) >= DEAD_WINDOW {
            st.dead.pop_front();
        }
        let alerts = alerts(&info, &stats, st.dead.front().filter(|(t, _)| at.duration_since(*t) >= DEAD_WINDOW / 2));
        let overview = json!({
            "sampled_at": crate::retention::rfc3339(wall),
            "interval_ms": SAMPLE_TTL.as_millis() as u64,
            "redis": info,
            "queues": queues,
            "series": st.series,
            "alerts": alerts,
        });
        let answers =
            Answers { overview: overview.to_string().into(), queues: json!({ "queues": counts }).to_string().into() };
        st.last = Some(Sample { at, stats, answers: answers.clone() });
        Ok(answers)
    }

    /// Drops the shared sample, so the next read sees a change this
    /// server just made (an action answered, then the counts from before
    /// it, would look wrong).
    pub async fn invalidate(&self) {
        let mut st = self.state.lock().await;
        if let Some(s) = st.last.as_mut() {
            s.at = s.at.checked_sub(SAMPLE_TTL).unwrap_or(s.at);
        }
    }
}

/// What Redis says about itself (INFO server, memory, clients).
async fn server_info(broker: &Broker) -> Result<Value, BrokerError> {
    use fred::interfaces::ClientLike;
    let c = broker.client();
    let text: String = match c.info(None).await {
        Ok(t) => t,
        Err(e) => {
            let e = BrokerError::redis("INFO", e);
            // INFO may be denied by an ACL: the overview goes on without it.
            return if e.is_transient() { Err(e) } else { Ok(json!({"reachable": true})) };
        }
    };
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim);
    let int = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
    let (server, version) = match field("valkey_version") {
        Some(v) => ("valkey", v),
        None => ("redis", field("redis_version").unwrap_or("")),
    };
    Ok(json!({
        "reachable": true,
        "server": server,
        "version": version,
        "mode": if c.is_clustered() { "cluster" } else { "standalone" },
        "used_memory": int("used_memory"),
        "maxmemory": int("maxmemory"),
        "maxmemory_policy": field("maxmemory_policy"),
        "connected_clients": int("connected_clients"),
    }))
}

/// Warnings and errors worth a banner.
fn alerts(
    info: &Value,
    stats: &BTreeMap<String, QueueStats>,
    dead_then: Option<&(Instant, HashMap<String, u64>)>,
) -> Vec<Value> {
    let mut out = Vec::new();
    if let (Some(used), Some(max)) = (info["used_memory"].as_u64(), info["maxmemory"].as_u64().filter(|&m| m > 0)) {
        let share = used as f64 / max as f64;
        if share > MEMORY_ALERT {
            out.push(json!({"level": if share > 0.95 { "error" } else { "warning" },
                "message": format!("Redis memory at {:.0} % of maxmemory: at 100 % enqueues fail and workers take no new jobs", share * 100.0)}));
        }
    }
    if let Some(policy) = info["maxmemory_policy"].as_str().filter(|p| *p != "noeviction") {
        out.push(json!({"level": "error", "message": format!("maxmemory-policy is {policy}: at maxmemory Redis may evict job data; set it to noeviction")}));
    }
    if let Some((then, before)) = dead_then {
        for (q, s) in stats {
            let grew = s.dead.saturating_sub(before.get(q).copied().unwrap_or(s.dead));
            if grew > 0 {
                out.push(json!({"level": "warning",
                    "message": format!("queue {q}: the dead set grew by {grew} in the last {} s", then.elapsed().as_secs())}));
            }
        }
    }
    out
}
