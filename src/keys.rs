//! Every Redis key dtq uses is built here, and only here.
//!
//! Layout (`ns` = namespace, `q` = queue; the queue is the hash tag, so every
//! key one script touches lives in the same Cluster slot):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `ns:{q}:pending` | LIST | ids ready to run; LPUSH in, RPOP out (FIFO) |
//! | `ns:{q}:inflight` | ZSET | id → lease deadline (ms, Redis clock) |
//! | `ns:{q}:scheduled` | ZSET | id → run-at (delayed jobs, retries, deferrals) |
//! | `ns:{q}:dead` | ZSET | id → died-at |
//! | `ns:{q}:jobs` | HASH | id → body (the job, stored once) |
//! | `ns:{q}:attempts` | HASH | id → attempts started |
//! | `ns:{q}:leases` | HASH | id → lease token of the running attempt |
//! | `ns:{q}:errors` | HASH | id → last error |
//! | `ns:{q}:completed` | ZSET | id → finished-at (the retained completed jobs) |
//! | `ns:{q}:results` | HASH | id → a retained completed job's result |
//! | `ns:{q}:history` | HASH | id → attempt history (one line per attempt; the running one open) |
//! | `ns:{q}:retention` | HASH | dead_max, dead_ttl, completed_max, completed_ttl (unset = defaults) |
//! | `ns:{q}:stats` | HASH | lifetime counters (processed, failed, ...) |
//! | `ns:{q}:paused` | STRING | present while the queue is paused |
//! | `ns:{q}:signal` | LIST | wake-up marker for idle workers (≤ 1 element) |
//! | `ns:{q}:idem:<id or key>` | STRING | idempotency state: `r:<token>` while an attempt runs (TTL = lease, renewed with it), `d` once completed (TTL = idempotency window) |
//! | `ns:{q}:receipt:<token prefix>` | STRING | ids leased by one dequeue call, so a replayed call returns the same batch (TTL = lease) |
//! | `ns:queues` | SET | every queue that ever had a job |
//! | `ns:reaper:lock` | STRING | reaper leader lock (token) |
//! | `ns:schedules` | HASH | schedule name → definition (JSON) |
//! | `ns:schedules:state` | HASH | schedule name → watermark, last run and job (JSON) |
//! | `ns:schedules:due` | ZSET | schedule name → next run (ms); absent while paused |
//! | `ns:workers` | ZSET | worker id → its last registry report (ms) |
//! | `ns:worker:<id>` | STRING | a running worker's description (JSON, TTL 30 s) |
//! | `ns:rate:<kind>` | STRING | rate limiter state for one kind |

/// The keys of one queue, built once and reused on the hot path.
#[derive(Debug, Clone)]
pub struct QueueKeys {
    /// Namespace-qualified queue prefix with the hash tag, e.g. `dtq:{emails}`.
    prefix: String,
    queue_start: usize,
    /// `pending` LIST: ids ready to run.
    pub pending: String,
    /// `inflight` ZSET: id → lease deadline (ms, Redis clock).
    pub inflight: String,
    /// `scheduled` ZSET: id → run-at (ms).
    pub scheduled: String,
    /// `dead` ZSET: id → died-at (ms).
    pub dead: String,
    /// `jobs` HASH: id → job body.
    pub jobs: String,
    /// `attempts` HASH: id → attempts started.
    pub attempts: String,
    /// `leases` HASH: id → lease token of the running attempt.
    pub leases: String,
    /// `errors` HASH: id → last error.
    pub errors: String,
    /// `completed` ZSET: id → finished-at (ms) of retained completed jobs.
    pub completed: String,
    /// `results` HASH: id → a retained completed job's result.
    pub results: String,
    /// `history` HASH: id → attempt history.
    pub history: String,
    /// `retention` HASH: the queue's retention settings.
    pub retention: String,
    /// `stats` HASH: lifetime counters.
    pub stats: String,
    /// `paused` STRING: present while the queue is paused.
    pub paused: String,
    /// `signal` LIST: wake-up marker for idle workers.
    pub signal: String,
}

impl QueueKeys {
    /// Keys of `queue` under `namespace`. The queue name must already be
    /// validated (see [`crate::job::validate_queue_name`]): it can hold no brace.
    pub fn new(namespace: &str, queue: &str) -> Self {
        let prefix = format!("{namespace}:{{{queue}}}");
        let k = |suffix: &str| format!("{prefix}:{suffix}");
        QueueKeys {
            pending: k("pending"),
            inflight: k("inflight"),
            scheduled: k("scheduled"),
            dead: k("dead"),
            jobs: k("jobs"),
            attempts: k("attempts"),
            leases: k("leases"),
            errors: k("errors"),
            completed: k("completed"),
            results: k("results"),
            history: k("history"),
            retention: k("retention"),
            stats: k("stats"),
            paused: k("paused"),
            signal: k("signal"),
            queue_start: namespace.len() + 2,
            prefix,
        }
    }

    /// The queue's name.
    pub fn queue(&self) -> &str {
        &self.prefix[self.queue_start..self.prefix.len() - 1]
    }

    /// Idempotency state of a client-chosen id or an idempotency key: held
    /// by a running attempt, or marked completed.
    pub fn idem(&self, id_or_key: &str) -> String {
        format!("{}:idem:{id_or_key}", self.prefix)
    }

    /// Receipt of the dequeue call with this lease token prefix.
    pub fn receipt(&self, token_prefix: &str) -> String {
        format!("{}:receipt:{token_prefix}", self.prefix)
    }
}

/// Set of every queue name that has had a job.
pub fn queues(namespace: &str) -> String {
    format!("{namespace}:queues")
}

/// Periodic schedules: name → definition.
pub fn schedules(namespace: &str) -> String {
    format!("{namespace}:schedules")
}

/// Periodic schedules: name → what it has done.
pub fn schedule_state(namespace: &str) -> String {
    format!("{namespace}:schedules:state")
}

/// Periodic schedules: name → next run (ms).
pub fn schedules_due(namespace: &str) -> String {
    format!("{namespace}:schedules:due")
}

/// Index of the worker registry: worker id → last report (ms).
pub fn workers(namespace: &str) -> String {
    format!("{namespace}:workers")
}

/// One worker's registry entry.
pub fn worker(namespace: &str, id: &str) -> String {
    format!("{namespace}:worker:{id}")
}

/// The reaper leader lock.
pub fn reaper_lock(namespace: &str) -> String {
    format!("{namespace}:reaper:lock")
}

/// State of the distributed rate limit of one job kind.
pub fn rate_limit(namespace: &str, kind: &str) -> String {
    // The kind goes in a hash tag of its own so limits spread over a Cluster;
    // braces inside it would change the tag, so they are replaced.
    let safe: String = kind.chars().map(|c| if c == '{' || c == '}' { '_' } else { c }).collect();
    format!("{namespace}:rate:{{{safe}}}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_keys_share_the_queue_hash_tag() {
        let k = QueueKeys::new("dtq", "emails");
        for key in [&k.pending, &k.inflight, &k.jobs, &k.signal, &k.idem("a"), &k.receipt("b")] {
            assert!(key.starts_with("dtq:{emails}:"), "{key}");
        }
        assert_eq!(k.queue(), "emails");
    }

    #[test]
    fn rate_limit_key_cannot_escape_its_hash_tag() {
        assert_eq!(rate_limit("ns", "a{b}"), "ns:rate:{a_b_}");
    }
}
