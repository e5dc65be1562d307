//! Retention: how many finished jobs a queue keeps, and for how long.
//!
//! Settings live in the queue's `retention` hash in Redis, so every process
//! on the same Redis applies the same ones; a field not set there takes its
//! default. The scripts that finish jobs (ack, fail, recover) trim in the
//! same call, with bounded work; the reaper's `trim` call applies the age
//! limits to queues that are quiet.

use std::time::Duration;

/// One queue's retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Retention {
    /// Most dead-lettered jobs kept (the oldest go first); at least 1.
    pub dead_max: u64,
    /// Dead-lettered jobs older than this go.
    #[serde(serialize_with = "as_secs")]
    pub dead_ttl: Duration,
    /// Most completed jobs kept; 0 keeps none.
    pub completed_max: u64,
    /// Completed jobs older than this go.
    #[serde(serialize_with = "as_secs")]
    pub completed_ttl: Duration,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

/// The defaults: 10,000 dead jobs for 90 days; 1,000 completed for 24 hours.
pub const DEFAULT: Retention = Retention {
    dead_max: 10_000,
    dead_ttl: Duration::from_secs(90 * 24 * 3600),
    completed_max: 1_000,
    completed_ttl: Duration::from_secs(24 * 3600),
};

/// Attempts kept in a job's history (the oldest go first).
pub const HISTORY_MAX: usize = 20;
/// Largest result a handler may return; a larger one is not kept.
pub const MAX_RESULT: usize = 64 * 1024;
/// Longest error message stored (longer ones are cut at a character boundary).
pub const MAX_ERROR: usize = 4096;

/// A change to some of a queue's settings (`None` = leave as is).
#[derive(Debug, Clone, Copy, Default)]
pub struct RetentionUpdate {
    /// New [`Retention::dead_max`].
    pub dead_max: Option<u64>,
    /// New [`Retention::dead_ttl`].
    pub dead_ttl: Option<Duration>,
    /// New [`Retention::completed_max`].
    pub completed_max: Option<u64>,
    /// New [`Retention::completed_ttl`].
    pub completed_ttl: Option<Duration>,
}

impl RetentionUpdate {
    /// Changes nothing: no setting is given.
    pub fn is_empty(&self) -> bool {
        self.dead_max.is_none()
            && self.dead_ttl.is_none()
            && self.completed_max.is_none()
            && self.completed_ttl.is_none()
    }

    /// The hash fields to write, values as the scripts read them (ttl in ms).
    pub fn fields(&self) -> Vec<(&'static str, u64)> {
        let ms = |d: Duration| d.as_millis() as u64;
        [
            ("dead_max", self.dead_max),
            ("dead_ttl", self.dead_ttl.map(ms)),
            ("completed_max", self.completed_max),
            ("completed_ttl", self.completed_ttl.map(ms)),
        ]
        .into_iter()
        .filter_map(|(f, v)| v.map(|v| (f, v)))
        .collect()
    }
}

/// `s` cut to at most `max` bytes at a character boundary, marked with `…`.
pub fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

/// One attempt of a job, from its stored history.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AttemptRecord {
    /// 1-based; 0 for a job acknowledged without running (`skipped`).
    pub attempt: u64,
    /// RFC 3339 time it started.
    pub started_at: String,
    /// `None` while the attempt runs.
    pub finished_at: Option<String>,
    /// ok, retry, dead, timeout, lost, skipped; `running` while it runs.
    pub outcome: String,
    /// The attempt's error, if it failed.
    pub error: Option<String>,
    /// The registry id of the worker that ran it (`None` if no worker
    /// started it, or it was recorded before workers were).
    pub worker: Option<String>,
}

/// The history as stored (one JSON array a line; see `lua/lib/retain.lua`).
/// Lines that do not read are skipped: history is informational.
pub fn parse_history(stored: &[u8]) -> Vec<AttemptRecord> {
    let text = String::from_utf8_lossy(stored);
    text.lines()
        .filter_map(|line| {
            let closed = line.ends_with(']');
            let line = if closed { line.to_string() } else { format!("{line}]") };
            let v: Vec<serde_json::Value> = serde_json::from_str(&line).ok()?;
            let attempt = v.first()?.as_u64()?;
            let started = v.get(1)?.as_u64()?;
            let worker = v.get(2).and_then(|w| w.as_str()).map(str::to_string);
            let rest = if worker.is_some() { 3 } else { 2 };
            Some(AttemptRecord {
                attempt,
                started_at: rfc3339(started),
                finished_at: v.get(rest).and_then(|t| t.as_u64()).map(rfc3339),
                outcome: v.get(rest + 1).and_then(|o| o.as_str()).unwrap_or("running").to_string(),
                error: v.get(rest + 2).and_then(|e| e.as_str()).map(str::to_string),
                worker,
            })
        })
        .collect()
}

/// Unix ms as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_lines_read_closed_and_open() {
        let h = parse_history(b"[1,1000,2000,\"retry\",\"boom \\\"x\\\"\"]\n[2,3000,4000,\"ok\",null]\n[3,5000");
        assert_eq!(h.len(), 3);
        assert_eq!(h[0].error.as_deref(), Some("boom \"x\""));
        assert_eq!(h[1].outcome, "ok");
        assert_eq!(h[1].error, None);
        assert_eq!(h[2].outcome, "running");
        assert_eq!(h[2].finished_at, None);
        assert!(h.iter().all(|a| a.worker.is_none()));
    }

    #[test]
    fn history_lines_name_their_worker() {
        let h =
            parse_history(b"[1,1000,\"w-1\",2000,\"retry\",\"boom\"]\n[0,3000,3000,\"skipped\",null]\n[2,5000,\"w-2\"");
        assert_eq!(h.len(), 3);
        assert_eq!(
            (h[0].worker.as_deref(), h[0].outcome.as_str(), h[0].error.as_deref()),
            (Some("w-1"), "retry", Some("boom"))
        );
        assert_eq!(h[0].finished_at.as_deref(), Some("1970-01-01T00:00:02.000Z"));
        assert_eq!((h[1].worker.as_deref(), h[1].outcome.as_str()), (None, "skipped"));
        assert_eq!(
            (h[2].worker.as_deref(), h[2].outcome.as_str(), h[2].finished_at.as_deref()),
            (Some("w-2"), "running", None)
        );
    }

    #[test]
    fn cut_keeps_characters_whole() {
        assert_eq!(cut("héllo", 10), "héllo");
        let long = "é".repeat(100);
        let c = cut(&long, 11);
        assert!(c.len() <= 11 && c.ends_with('…'), "{c}");
    }
}
