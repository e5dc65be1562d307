//! Parsers that turn flag values into validated settings; no I/O here.

use crate::job::{parse_duration, validate_queue_name};
use crate::worker::RateLimit;
use std::collections::HashMap;
use std::time::Duration;

/// A humantime duration flag (`250ms`, `30s`, `1h 30m`).
pub fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// A duration flag that must be greater than zero.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be greater than zero".to_string()),
        d => Ok(d),
    }
}

/// A reaper lock TTL: at least 1s, or leadership would flap on any stall
/// (the leader renews every third of it).
pub fn lock_ttl(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d < Duration::from_secs(1) => {
            Err("must be at least 1s (the leader renews the lock every third of it)".to_string())
        }
        d => Ok(d),
    }
}

/// A flag that takes a value or "off".
#[derive(Debug, Clone, Copy)]
pub struct Optional<T>(pub Option<T>);

/// A positive duration, or "off".
pub fn optional_duration(s: &str) -> Result<Optional<Duration>, String> {
    if s == "off" {
        return Ok(Optional(None));
    }
    positive_duration(s).map(|d| Optional(Some(d)))
}

/// A queue name flag.
pub fn queue_name(s: &str) -> Result<String, String> {
    validate_queue_name(s).map(|_| s.to_string())
}

/// Queues and their weights, in flag order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueWeights(pub Vec<(String, u32)>);

/// `high:6,default:3,low:1` (a name alone has weight 1).
pub fn weighted_queues(s: &str) -> Result<QueueWeights, String> {
    let mut out: Vec<(String, u32)> = Vec::new();
    for part in s.split(',').map(str::trim) {
        let (name, weight) = match part.rsplit_once(':') {
            Some((n, w)) => {
                let w: u64 =
                    w.parse().map_err(|_| format!("queue {n:?}: weight {w:?} is not a whole number 1 to 1000"))?;
                (n, u32::try_from(w).unwrap_or(u32::MAX))
            }
            None => (part, 1),
        };
        validate_queue_name(name)?;
        if weight == 0 || weight > 1000 {
            return Err(format!("queue {name:?}: weight must be 1 to 1000"));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(format!("queue {name:?} is listed twice"));
        }
        out.push((name.to_string(), weight));
    }
    Ok(QueueWeights(out))
}

/// `KIND=N/PERIOD`, e.g. `charge=100/1s` or `email=1000/m`.
pub fn rate_limit(s: &str) -> Result<(String, RateLimit), String> {
    let (kind, rest) = s.split_once('=').ok_or_else(|| format!("{s:?}: expected KIND=N/PERIOD"))?;
    let (n, period) = rest.split_once('/').ok_or_else(|| format!("{s:?}: expected KIND=N/PERIOD"))?;
    if kind.is_empty() {
        return Err(format!("{s:?}: empty kind"));
    }
    let limit: u64 = n.trim().parse().map_err(|_| format!("{s:?}: N must be a positive integer"))?;
    if limit == 0 || limit > 1_000_000 {
        return Err(format!("{s:?}: N must be 1 to 1000000"));
    }
    let period = period.trim();
    // A bare unit ("s", "m") means one of it.
    let period =
        if period.chars().all(|c| c.is_ascii_alphabetic()) { format!("1{period}") } else { period.to_string() };
    let period = positive_duration(&period).map_err(|e| format!("{s:?}: period: {e}"))?;
    Ok((kind.to_string(), RateLimit { limit, period }))
}

/// Collects `--rate-limit` flags, one per kind.
pub fn rate_limits(items: &[(String, RateLimit)]) -> Result<HashMap<String, RateLimit>, String> {
    let mut map = HashMap::new();
    for (kind, limit) in items {
        if map.insert(kind.clone(), *limit).is_some() {
            return Err(format!("--rate-limit: kind {kind:?} has two limits"));
        }
    }
    Ok(map)
}

/// A `--listen` address, or none for `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<std::net::SocketAddr>);

/// Parses `--listen HOST:PORT` or `--listen off`.
pub fn listen(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen(None));
    }
    s.parse().map(|a| Listen(Some(a))).map_err(|e| format!("{s:?}: {e} (expected HOST:PORT or off)"))
}

/// A key namespace: 1–64 characters, no braces (the hash tags) or spaces.
pub fn namespace(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 64 || s.contains(['{', '}', ' ']) {
        return Err("namespace must be 1 to 64 characters, without braces or spaces".to_string());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_queue_lists() {
        assert_eq!(weighted_queues("q").unwrap().0, [("q".to_string(), 1)]);
        assert_eq!(weighted_queues("high:6,default:3").unwrap().0[1], ("default".to_string(), 3));
        assert!(weighted_queues("a:0").is_err());
        assert!(weighted_queues("a,a").is_err());
        assert!(weighted_queues("a b:1").is_err());
    }

    #[test]
    fn rate_limit_specs() {
        let (k, l) = rate_limit("charge=100/1s").unwrap();
        assert_eq!((k.as_str(), l.limit, l.period), ("charge", 100, Duration::from_secs(1)));
        assert_eq!(rate_limit("e=5/m").unwrap().1.period, Duration::from_secs(60));
        for bad in ["x", "=1/s", "a=0/s", "a=1/0s", "a=b/s"] {
            assert!(rate_limit(bad).is_err(), "{bad}");
        }
    }
}
