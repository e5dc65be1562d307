//! Weighted queue selection: smooth weighted round-robin charged per job, so
//! while every queue has work each gets its weight's share of the jobs taken,
//! and an empty or paused queue's share goes to the others.

use std::time::{Duration, Instant};

/// How long a queue found empty is skipped before it is asked again: this
/// after the first empty answer, doubling with each further one up to
/// [`MAX_EMPTY_BACKOFF`] (the idle wait), each ±50 % jittered so workers do
/// not poll in step. A queue that returns jobs, or a wake-up signal, starts
/// it over; an idle worker is woken by the queue's signal at once anyway.
const EMPTY_BACKOFF: Duration = Duration::from_millis(20);
const MAX_EMPTY_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct Weighted {
    weights: Vec<i64>,
    credit: Vec<i64>,
    empty_until: Vec<Option<Instant>>,
    /// Empty answers in a row, per queue.
    empty_runs: Vec<u32>,
}

impl Weighted {
    pub fn new(weights: &[u32]) -> Self {
        Weighted {
            weights: weights.iter().map(|&w| w as i64).collect(),
            credit: vec![0; weights.len()],
            empty_until: vec![None; weights.len()],
            empty_runs: vec![0; weights.len()],
        }
    }

    fn eligible(&self, i: usize, now: Instant) -> bool {
        self.empty_until[i].is_none_or(|t| now >= t)
    }

    /// The queue to take from next, or `None` if every queue is marked empty.
    pub fn pick(&self) -> Option<usize> {
        let now = Instant::now();
        (0..self.weights.len()).filter(|&i| self.eligible(i, now)).max_by_key(|&i| (self.credit[i], self.weights[i]))
    }

    /// Records that `n` jobs were taken from queue `i` (negative: handed
    /// back, e.g. a request that got fewer jobs than it was charged for).
    pub fn charge(&mut self, i: usize, n: i64) {
        let now = Instant::now();
        let eligible: Vec<usize> = (0..self.weights.len()).filter(|&j| self.eligible(j, now)).collect();
        let total: i64 = eligible.iter().map(|&j| self.weights[j]).sum();
        for &j in &eligible {
            self.credit[j] += self.weights[j] * n;
        }
        self.credit[i] -= total * n;
        // Bound the drift that eligibility changes leave behind.
        let cap = total * 1024;
        for c in &mut self.credit {
            *c = (*c).clamp(-cap, cap);
        }
    }

    /// Marks queue `i` as empty for a while (see [`EMPTY_BACKOFF`]).
    pub fn mark_empty(&mut self, i: usize) {
        self.empty_until[i] = Some(Instant::now() + self.empty_backoff(i));
        self.empty_runs[i] = self.empty_runs[i].saturating_add(1);
    }

    /// The skip after the next empty answer of queue `i`.
    fn empty_backoff(&self, i: usize) -> Duration {
        let base = EMPTY_BACKOFF.saturating_mul(1 << self.empty_runs[i].min(10)).min(MAX_EMPTY_BACKOFF);
        base.mul_f64(0.5 + fastrand::f64())
    }

    /// Queue `i` returned jobs: its next empty answer backs off from the start.
    pub fn mark_busy(&mut self, i: usize) {
        self.empty_runs[i] = 0;
    }

    /// Forgets every empty mark (after a wake-up signal).
    pub fn reset_empty(&mut self) {
        self.empty_until.iter_mut().for_each(|e| *e = None);
        self.empty_runs.iter_mut().for_each(|r| *r = 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_follow_weights_while_all_have_work() {
        let mut w = Weighted::new(&[6, 3, 1]);
        let mut taken = [0usize; 3];
        for step in 0..1000 {
            let i = w.pick().unwrap();
            let n = 1 + step % 7;
            taken[i] += n;
            w.charge(i, n as i64);
        }
        let total: usize = taken.iter().sum();
        for (i, want) in [0.6, 0.3, 0.1].iter().enumerate() {
            let got = taken[i] as f64 / total as f64;
            assert!((got - want).abs() < 0.01, "queue {i}: {got} vs {want}");
        }
    }

    #[test]
    fn an_empty_queue_share_goes_to_the_others() {
        let mut w = Weighted::new(&[6, 3, 1]);
        w.mark_empty(0);
        let mut taken = [0usize; 3];
        for _ in 0..400 {
            let i = w.pick().unwrap();
            assert_ne!(i, 0);
            taken[i] += 1;
            w.charge(i, 1);
            w.mark_empty(0);
        }
        assert!((taken[1] as f64 / 400.0 - 0.75).abs() < 0.02);
        w.mark_empty(1);
        w.mark_empty(2);
        assert_eq!(w.pick(), None);
        w.reset_empty();
        assert!(w.pick().is_some());
    }

    #[test]
    fn an_empty_queue_is_asked_less_and_less_often_then_at_once_when_busy_again() {
        let mut w = Weighted::new(&[1, 1]);
        let mut last = Duration::ZERO;
        for run in 0..12 {
            let d = w.empty_backoff(0);
            let cap = EMPTY_BACKOFF.saturating_mul(1 << run.min(10)).min(MAX_EMPTY_BACKOFF);
            assert!(d >= cap / 2 && d <= cap.mul_f64(1.5), "run {run}: {d:?} vs {cap:?}");
            w.mark_empty(0);
            last = d;
        }
        assert!(last >= MAX_EMPTY_BACKOFF / 2, "grows to the idle wait: {last:?}");
        w.mark_busy(0);
        assert!(w.empty_backoff(0) <= EMPTY_BACKOFF.mul_f64(1.5));
    }
}
