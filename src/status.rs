//! The readiness a process reports on `/ready`, kept by the worker, the
//! reaper and `serve`.

use std::sync::atomic::{AtomicBool, Ordering};

/// Readiness of a process as `/ready` reports it.
#[derive(Debug)]
pub struct Status {
    redis_ok: AtomicBool,
    /// False while a worker cannot write job outcomes.
    outcomes_ok: AtomicBool,
    shutting_down: AtomicBool,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            redis_ok: AtomicBool::new(false),
            outcomes_ok: AtomicBool::new(true),
            shutting_down: AtomicBool::new(false),
        }
    }
}

impl Status {
    /// Redis answers, outcomes can be written, and no shutdown has begun.
    pub fn ready(&self) -> bool {
        self.redis_ok.load(Ordering::Relaxed)
            && self.outcomes_ok.load(Ordering::Relaxed)
            && !self.shutting_down.load(Ordering::Relaxed)
    }

    /// Records whether job outcomes can be written to Redis.
    pub fn set_outcomes_ok(&self, ok: bool) {
        self.outcomes_ok.store(ok, Ordering::Relaxed);
    }

    /// Records whether Redis answers.
    pub fn set_redis_ok(&self, ok: bool) {
        self.redis_ok.store(ok, Ordering::Relaxed);
    }

    /// Marks the process as shutting down: not ready from now on.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}
