//! Prometheus metrics: the public names of the contract, described at
//! start-up (so `# HELP`/`# TYPE` are there before any job), and per
//! (queue, kind) handles cached so the hot path does no registry lookups.

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Counter, Gauge, Histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// Counter: jobs completed successfully.
pub const PROCESSED: &str = "dtq_tasks_processed_total";
/// Counter: failed attempts (errors and timeouts).
pub const FAILED: &str = "dtq_tasks_failed_total";
/// Counter: failed attempts scheduled for a retry.
pub const RETRIED: &str = "dtq_tasks_retried_total";
/// Counter: jobs moved to the dead-letter set.
pub const DEAD_LETTERED: &str = "dtq_tasks_dead_lettered_total";
/// Counter: expired leases whose jobs were put back in pending.
pub const RECOVERED: &str = "dtq_tasks_recovered_total";
/// Gauge: jobs being processed by this worker now.
pub const ACTIVE: &str = "dtq_active_processing";
/// Histogram: handler run time per attempt, in seconds.
pub const DURATION: &str = "dtq_task_duration_seconds";
/// Gauge: jobs per queue and state, sampled by the reaper leader.
pub const QUEUE_DEPTH: &str = "dtq_queue_depth";
/// Counter: jobs deferred by the distributed rate limiter.
pub const RATE_LIMITED: &str = "dtq_rate_limited_total";
/// Gauge: circuit breaker state per kind (0 closed, 1 half-open, 2 open).
pub const CIRCUIT_STATE: &str = "dtq_circuit_state";
/// Gauge: 1 in the process that holds the reaper lock, else 0.
pub const REAPER_LEADER: &str = "dtq_reaper_leader";
/// Counter: finished jobs removed by retention, by state (dead, completed).
pub const TRIMMED: &str = "dtq_jobs_trimmed_total";
/// Counter: API requests answered by `dtq serve`, by route and status code.
pub const HTTP_REQUESTS: &str = "dtq_http_requests_total";
/// Histogram: API request time in `dtq serve`, by route, in seconds.
pub const HTTP_DURATION: &str = "dtq_http_request_duration_seconds";

/// Counter: ticks of a periodic schedule enqueued, by schedule.
pub const SCHEDULE_TICKS: &str = "dtq_schedule_ticks_total";
/// Histogram: enqueue time minus tick time of periodic jobs, in seconds.
pub const SCHEDULE_LATENESS: &str = "dtq_schedule_lateness_seconds";

/// Histogram buckets from 1 ms to 60 s.
const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder (once), describes every metric, and starts
/// the exporter's upkeep: histogram samples are only folded into buckets by
/// `run_upkeep`, so without it (no one scraping) they would pile up forever.
/// Must be called inside the tokio runtime.
pub fn install() -> PrometheusHandle {
    let handle = recorder();
    static UPKEEP: std::sync::Once = std::sync::Once::new();
    UPKEEP.call_once(|| {
        let h = handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tick.tick().await;
                h.run_upkeep();
            }
        });
    });
    handle
}

fn recorder() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DURATION.to_string()), DURATION_BUCKETS)
                .expect("static buckets are valid")
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_string()), DURATION_BUCKETS)
                .expect("static buckets are valid")
                .set_buckets_for_metric(Matcher::Full(SCHEDULE_LATENESS.to_string()), DURATION_BUCKETS)
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // A second recorder (e.g. in tests) would fail; the first stays.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

/// Every public metric: name, Prometheus type, help text.
const ALL: &[(&str, &str, &str)] = &[
    (PROCESSED, "counter", "Jobs completed successfully."),
    (FAILED, "counter", "Failed attempts (errors and timeouts)."),
    (RETRIED, "counter", "Failed attempts scheduled for a retry."),
    (DEAD_LETTERED, "counter", "Jobs moved to the dead-letter set."),
    (RECOVERED, "counter", "Expired leases whose jobs were put back in pending."),
    (ACTIVE, "gauge", "Jobs being processed by this worker now."),
    (DURATION, "histogram", "Handler run time per attempt, in seconds."),
    (QUEUE_DEPTH, "gauge", "Jobs per queue and state, sampled by the reaper leader."),
    (RATE_LIMITED, "counter", "Jobs deferred by the distributed rate limiter."),
    (CIRCUIT_STATE, "gauge", "Circuit breaker state per kind: 0 closed, 1 half-open, 2 open."),
    (REAPER_LEADER, "gauge", "1 in the process that holds the reaper lock, else 0."),
    (TRIMMED, "counter", "Finished jobs removed by retention (state: dead, completed)."),
    (HTTP_REQUESTS, "counter", "API requests answered by dtq serve, by route and status code."),
    (HTTP_DURATION, "histogram", "API request time in dtq serve, by route, in seconds."),
    (SCHEDULE_TICKS, "counter", "Ticks of a periodic schedule enqueued (by the reaper leader), by schedule."),
    (SCHEDULE_LATENESS, "histogram", "How late periodic jobs were enqueued: enqueue time minus tick time, in seconds."),
];

fn describe() {
    for &(name, kind, help) in ALL {
        match kind {
            "counter" => describe_counter!(name, help),
            "gauge" => describe_gauge!(name, help),
            _ => describe_histogram!(name, Unit::Seconds, help),
        }
    }
    gauge!(REAPER_LEADER).set(0.0);
}

/// Renders the text exposition; also runs the exporter's upkeep so
/// histograms do not grow without bound.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    let mut text = handle.render();
    // The exporter writes HELP/TYPE only for metrics that have a series; the
    // contract wants every one from start-up, so add the missing ones.
    for &(name, kind, help) in ALL {
        if !text.contains(&format!("# TYPE {name} ")) {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        }
    }
    text
}

/// The series of one (queue, kind).
#[derive(Clone)]
pub struct KindMetrics {
    /// [`PROCESSED`].
    pub processed: Counter,
    /// [`FAILED`].
    pub failed: Counter,
    /// [`RETRIED`].
    pub retried: Counter,
    /// [`DEAD_LETTERED`].
    pub dead_lettered: Counter,
    /// [`RATE_LIMITED`].
    pub rate_limited: Counter,
    /// [`DURATION`].
    pub duration: Histogram,
}

/// Per-queue metric handles with a cache of per-kind ones.
pub struct QueueMetrics {
    queue: String,
    /// [`ACTIVE`].
    pub active: Gauge,
    /// [`RECOVERED`].
    pub recovered: Counter,
    kinds: Mutex<HashMap<String, Arc<KindMetrics>>>,
}

/// The retention counter of one (queue, state).
pub fn trimmed(queue: &str, state: &'static str) -> Counter {
    counter!(TRIMMED, "queue" => queue.to_string(), "state" => state)
}

impl QueueMetrics {
    /// The handles of `queue`, with no per-kind ones yet.
    pub fn new(queue: &str) -> Self {
        QueueMetrics {
            queue: queue.to_string(),
            active: gauge!(ACTIVE, "queue" => queue.to_string()),
            recovered: counter!(RECOVERED, "queue" => queue.to_string()),
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// Jobs of this queue trimmed by retention in `state` (dead, completed).
    pub fn trimmed(&self, state: &'static str) -> Counter {
        trimmed(&self.queue, state)
    }

    /// The handles of `kind` in this queue. Past [`MAX_KINDS`] kinds, new
    /// ones share the series of kind [`OTHER_KIND`]: every series lives as
    /// long as the process, so their number is bounded.
    pub fn kind(&self, kind: &str) -> Arc<KindMetrics> {
        // A std mutex: held for a map lookup only, never across an await.
        let mut kinds = self.kinds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = kinds.get(kind) {
            return m.clone();
        }
        let kind = if kinds.len() >= MAX_KINDS {
            if let Some(m) = kinds.get(OTHER_KIND) {
                return m.clone();
            }
            tracing::warn!(queue = %self.queue, max = MAX_KINDS, "more kinds than metrics track; the rest are counted as kind {OTHER_KIND:?}");
            OTHER_KIND
        } else {
            kind
        };
        let labels = [("queue", self.queue.clone()), ("kind", kind.to_string())];
        let m = Arc::new(KindMetrics {
            processed: counter!(PROCESSED, &labels),
            failed: counter!(FAILED, &labels),
            retried: counter!(RETRIED, &labels),
            dead_lettered: counter!(DEAD_LETTERED, &labels),
            rate_limited: counter!(RATE_LIMITED, &labels),
            duration: metrics::histogram!(DURATION, &labels),
        });
        kinds.insert(kind.to_string(), m.clone());
        m
    }
}

/// Most kinds per queue with series of their own (see [`QueueMetrics::kind`]).
pub const MAX_KINDS: usize = 1000;
/// The kind label shared by kinds past [`MAX_KINDS`].
pub const OTHER_KIND: &str = "_other";

/// Sets the queue-depth gauges of one queue.
pub fn set_queue_depth(queue: &str, stats: &crate::broker::QueueStats) {
    for (state, n) in [
        ("pending", stats.pending),
        ("inflight", stats.inflight),
        ("scheduled", stats.scheduled),
        ("dead", stats.dead),
        ("completed", stats.completed),
    ] {
        gauge!(QUEUE_DEPTH, "queue" => queue.to_string(), "state" => state).set(n as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_past_the_cap_share_one_series() {
        let m = QueueMetrics::new("q");
        let first = m.kind("k0");
        for i in 1..MAX_KINDS {
            m.kind(&format!("k{i}"));
        }
        let over = m.kind("one-too-many");
        assert!(Arc::ptr_eq(&over, &m.kind("another")), "past the cap, kinds share the _other series");
        assert!(Arc::ptr_eq(&first, &m.kind("k0")), "known kinds keep theirs");
        assert_eq!(m.kinds.lock().unwrap().len(), MAX_KINDS + 1);
    }
}
