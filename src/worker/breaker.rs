//! Circuit breaker, per job kind and per worker process.
//!
//! Closed: outcomes go into a rolling window (ten buckets spanning
//! `window`); once it holds at least `min_calls` and the failure rate reaches
//! `failure_rate`, the breaker opens. Open: the kind's jobs are deferred until
//! `cooldown` has passed. Half-open: up to `probes` jobs run; the first
//! success closes the breaker, a failure opens it again.

use metrics::gauge;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BUCKETS: usize = 10;

/// Breaker settings (the contract's defaults in `Default`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failure rate (over 0, at most 1) of the window that opens the breaker.
    pub failure_rate: f64,
    /// The span of the rolling window of outcomes.
    pub window: Duration,
    /// Fewest outcomes in the window before the breaker can open.
    pub min_calls: u32,
    /// How long an open breaker defers the kind's jobs before going half-open.
    pub cooldown: Duration,
    /// Probe jobs let through at once while half-open.
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_rate: 0.5,
            window: Duration::from_secs(30),
            min_calls: 20,
            cooldown: Duration::from_secs(10),
            probes: 3,
        }
    }
}

impl BreakerConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return Err("breaker failure rate must be in (0, 1]".into());
        }
        if self.window.is_zero() || self.cooldown.is_zero() {
            return Err("breaker window and cool-down must be greater than zero".into());
        }
        if self.min_calls == 0 || self.probes == 0 {
            return Err("breaker min calls and probes must be at least 1".into());
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probes_running: u32 },
}

#[derive(Debug)]
struct Breaker {
    state: State,
    /// (bucket start, calls, failures)
    buckets: [(Option<Instant>, u32, u32); BUCKETS],
}

/// May this job run now?
#[derive(Debug)]
pub enum Admission {
    /// Run it; report the outcome with [`Breakers::record`].
    Run(Ticket),
    /// Defer it this long; no attempt is spent.
    Defer(Duration),
}

/// Proof of admission. A probe ticket dropped without an outcome (the job was
/// deferred later in the pipeline) frees its probe slot.
#[derive(Debug)]
pub struct Ticket {
    kind: String,
    probe: bool,
    recorded: bool,
    owner: Arc<Mutex<HashMap<String, Breaker>>>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            let mut map = self.owner.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(b) = map.get_mut(&self.kind) {
                if let State::HalfOpen { probes_running } = &mut b.state {
                    *probes_running = probes_running.saturating_sub(1);
                }
            }
        }
    }
}

/// Most kinds with a breaker of their own, per worker process.
pub const MAX_KINDS: usize = 1000;

/// The breakers of every kind this worker has seen (up to [`MAX_KINDS`]).
#[derive(Debug, Clone)]
pub struct Breakers {
    cfg: BreakerConfig,
    // A std mutex: held for a few arithmetic steps, never across an await.
    map: Arc<Mutex<HashMap<String, Breaker>>>,
}

fn publish(kind: &str, state: State) {
    let v = match state {
        State::Closed => 0.0,
        State::HalfOpen { .. } => 1.0,
        State::Open { .. } => 2.0,
    };
    gauge!(crate::metrics::CIRCUIT_STATE, "kind" => kind.to_string()).set(v);
}

impl Breakers {
    /// No breakers yet; each kind gets one with `cfg` when first seen.
    pub fn new(cfg: BreakerConfig) -> Self {
        Breakers { cfg, map: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Asks whether a job of `kind` may run. Past [`MAX_KINDS`] kinds, a new
    /// kind has no breaker (always admitted, outcomes not kept): what a
    /// worker keeps per kind is bounded.
    pub fn admit(&self, kind: &str) -> Admission {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let untracked = map.len() >= MAX_KINDS && !map.contains_key(kind);
        if untracked {
            return Admission::Run(Ticket {
                kind: kind.to_string(),
                probe: false,
                recorded: false,
                owner: self.map.clone(),
            });
        }
        let b = match map.get_mut(kind) {
            Some(b) => b,
            None => {
                publish(kind, State::Closed);
                map.entry(kind.to_string())
                    .or_insert(Breaker { state: State::Closed, buckets: [(None, 0, 0); BUCKETS] })
            }
        };
        let probe = match b.state {
            State::Closed => false,
            State::Open { until } if now < until => return Admission::Defer(until - now),
            State::Open { .. } => {
                b.state = State::HalfOpen { probes_running: 1 };
                publish(kind, b.state);
                true
            }
            State::HalfOpen { probes_running } if probes_running < self.cfg.probes => {
                b.state = State::HalfOpen { probes_running: probes_running + 1 };
                true
            }
            State::HalfOpen { .. } => return Admission::Defer(self.cfg.cooldown.min(Duration::from_secs(1))),
        };
        Admission::Run(Ticket { kind: kind.to_string(), probe, recorded: false, owner: self.map.clone() })
    }

    /// Reports the outcome of an admitted job (`true` = success).
    pub fn record(&self, mut ticket: Ticket, success: bool) {
        ticket.recorded = true;
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let Some(b) = map.get_mut(&ticket.kind) else { return };
        match b.state {
            State::HalfOpen { .. } if ticket.probe => {
                b.state = if success { State::Closed } else { State::Open { until: now + self.cfg.cooldown } };
                b.buckets = [(None, 0, 0); BUCKETS];
                publish(&ticket.kind, b.state);
            }
            State::Closed => {
                let span = self.cfg.window / BUCKETS as u32;
                let fresh = |t: Option<Instant>| t.is_some_and(|t| now.duration_since(t) < self.cfg.window);
                // The newest bucket takes the outcome while it is younger than one span.
                let newest = b.buckets.iter().enumerate().filter(|(_, x)| x.0.is_some()).max_by_key(|(_, x)| x.0);
                let idx = match newest {
                    Some((i, x)) if x.0.is_some_and(|t| now.duration_since(t) < span) => i,
                    _ => {
                        let oldest = b.buckets.iter().enumerate().min_by_key(|(_, x)| x.0).map(|(i, _)| i).unwrap_or(0);
                        b.buckets[oldest] = (Some(now), 0, 0);
                        oldest
                    }
                };
                b.buckets[idx].1 += 1;
                if !success {
                    b.buckets[idx].2 += 1;
                }
                let (calls, failures) =
                    b.buckets.iter().filter(|x| fresh(x.0)).fold((0u32, 0u32), |(c, f), x| (c + x.1, f + x.2));
                if calls >= self.cfg.min_calls && failures as f64 >= self.cfg.failure_rate * calls as f64 {
                    b.state = State::Open { until: now + self.cfg.cooldown };
                    b.buckets = [(None, 0, 0); BUCKETS];
                    tracing::warn!(kind = %ticket.kind, calls, failures, cooldown = ?self.cfg.cooldown, "circuit breaker opened");
                    publish(&ticket.kind, b.state);
                }
            }
            // Outcomes of jobs admitted before the breaker opened change nothing.
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            failure_rate: 0.5,
            window: Duration::from_secs(10),
            min_calls: 4,
            cooldown: Duration::from_millis(50),
            probes: 1,
        }
    }

    fn run(b: &Breakers) -> Ticket {
        match b.admit("k") {
            Admission::Run(t) => t,
            Admission::Defer(d) => panic!("deferred {d:?}"),
        }
    }

    #[test]
    fn kinds_past_the_cap_get_no_breaker_and_no_entry() {
        let b = Breakers::new(cfg());
        for i in 0..MAX_KINDS {
            let Admission::Run(t) = b.admit(&format!("k{i}")) else { panic!("closed") };
            b.record(t, true);
        }
        for _ in 0..10 {
            let Admission::Run(t) = b.admit("over") else { panic!("untracked kinds always run") };
            b.record(t, false);
        }
        assert!(matches!(b.admit("over"), Admission::Run(_)), "no breaker opened for an untracked kind");
        assert_eq!(b.map.lock().unwrap().len(), MAX_KINDS);
    }

    #[test]
    fn opens_after_min_calls_and_closes_after_a_good_probe() {
        let b = Breakers::new(cfg());
        for _ in 0..3 {
            b.record(run(&b), false);
        }
        b.record(run(&b), true); // 3 of 4 failed
        assert!(matches!(b.admit("k"), Admission::Defer(_)));
        std::thread::sleep(Duration::from_millis(60));
        let probe = run(&b);
        assert!(matches!(b.admit("k"), Admission::Defer(_)), "one probe at a time");
        b.record(probe, true);
        b.record(run(&b), true);
    }

    #[test]
    fn a_failed_probe_opens_again_and_a_dropped_probe_frees_its_slot() {
        let b = Breakers::new(cfg());
        for _ in 0..4 {
            b.record(run(&b), false);
        }
        std::thread::sleep(Duration::from_millis(60));
        drop(run(&b));
        let probe = run(&b);
        b.record(probe, false);
        assert!(matches!(b.admit("k"), Admission::Defer(_)));
    }
}
