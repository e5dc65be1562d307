//! The [`Handler`] trait (how a worker runs a job) and the built-in handlers
//! `noop`, `sleep`, `fail` and `echo`.

use serde_json::value::RawValue;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Why an attempt is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelReason {
    /// Its lease could not be renewed in time (or was taken over): another
    /// worker may run the job soon, so this attempt must stop and its result
    /// is discarded.
    LeaseLost,
    /// The job's timeout passed: the attempt counts as failed.
    Timeout,
    /// The worker's shutdown grace is over: the job is handed back.
    Shutdown,
}

/// The stop signal of one attempt. The first reason given wins.
#[derive(Debug, Clone, Default)]
pub struct Cancellation {
    token: CancellationToken,
    reason: Arc<OnceLock<CancelReason>>,
}

impl Cancellation {
    /// Asks the attempt to stop (no-op if it was already asked).
    pub fn cancel(&self, reason: CancelReason) {
        let _ = self.reason.set(reason);
        self.token.cancel();
    }

    /// Why the attempt was asked to stop, if it was.
    pub fn reason(&self) -> Option<CancelReason> {
        self.token.is_cancelled().then(|| self.reason.get().copied()).flatten()
    }

    /// Resolves once the attempt is asked to stop.
    pub async fn cancelled(&self) -> CancelReason {
        self.token.cancelled().await;
        self.reason.get().copied().unwrap_or(CancelReason::Shutdown)
    }
}

/// What a handler sees of a job.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job id.
    pub id: String,
    /// The queue it was leased from.
    pub queue: Arc<str>,
    /// The job kind.
    pub kind: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// The payload, as JSON text.
    pub payload: Box<RawValue>,
    /// The idempotency key in force (explicit key, else a client-chosen id).
    pub idempotency_key: Option<String>,
    /// The handler is cancelled after this long.
    pub timeout: Duration,
    /// Fires when the attempt must stop (lease lost, timeout, shutdown).
    /// A handler that watches it can stop cleanly; one that does not is
    /// dropped `grace` after it fires.
    pub cancel: Cancellation,
    /// Time between the cancellation signal and the handler being dropped
    /// (an `--exec` process group gets SIGTERM, then SIGKILL after it).
    pub grace: Duration,
}

/// Why a handler failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandlerError {
    /// Try again later: after `after` if the handler said so (`Retry-After`),
    /// else after the backoff delay.
    Retry {
        /// What went wrong.
        message: String,
        /// How long to wait before the retry; `None` for the backoff delay.
        after: Option<Duration>,
    },
    /// Do not retry: dead-letter now.
    Permanent {
        /// What went wrong.
        message: String,
    },
    /// The worker cannot run this job at all (its `--exec` command is
    /// missing or not executable): not the job's fault. The job is handed
    /// back with its attempt refunded, and the worker pauses taking jobs.
    Unavailable {
        /// What went wrong.
        message: String,
    },
}

impl HandlerError {
    /// A retryable failure, retried after the backoff delay.
    pub fn retry(message: impl Into<String>) -> Self {
        HandlerError::Retry { message: message.into(), after: None }
    }

    /// A failure that dead-letters the job now.
    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError::Permanent { message: message.into() }
    }

    /// The error message, whatever the kind of failure.
    pub fn message(&self) -> &str {
        match self {
            HandlerError::Retry { message, .. }
            | HandlerError::Permanent { message }
            | HandlerError::Unavailable { message } => message,
        }
    }
}

/// What a handler that succeeded returns: its result, if any, kept with
/// the completed job while the queue's retention keeps it (at most
/// [`crate::retention::MAX_RESULT`] bytes; a larger one is not kept).
pub type JobResult = Option<String>;

/// The future a handler returns.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<JobResult, HandlerError>> + Send + 'a>>;

/// Runs jobs. Implement it to embed dtq's worker in another Rust program.
/// When an attempt must stop (its lease is lost, its timeout passes, or the
/// shutdown grace ends) `JobContext::cancel` fires and the future is dropped
/// `JobContext::grace` later, so a handler must be cancel-safe: release what
/// it holds on drop. A panic fails the attempt like an error.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt of `job`: `Ok` with its result completes it, `Err`
    /// fails the attempt as the error says.
    fn handle<'a>(&'a self, job: &'a JobContext) -> HandlerFuture<'a>;
}

/// The built-in kinds: `noop`, `sleep` (`{"ms": N}`), `fail` (`{"p": 0.3}`)
/// and `echo` (logs its payload and returns it as its result). Any other kind is a permanent failure.
#[derive(Debug, Default, Clone, Copy)]
pub struct Builtin;

#[derive(serde::Deserialize, Default)]
struct SleepArgs {
    #[serde(default)]
    ms: u64,
}

#[derive(serde::Deserialize)]
struct FailArgs {
    #[serde(default = "always")]
    p: f64,
}

impl Default for FailArgs {
    fn default() -> Self {
        FailArgs { p: always() }
    }
}

fn always() -> f64 {
    1.0
}

/// The payload as `T`; a payload that does not fit takes the defaults.
fn args<T: serde::de::DeserializeOwned + Default>(job: &JobContext) -> T {
    serde_json::from_str(job.payload.get()).unwrap_or_default()
}

impl Handler for Builtin {
    fn handle<'a>(&'a self, job: &'a JobContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            match job.kind.as_str() {
                "noop" => Ok(None),
                "sleep" => {
                    let a: SleepArgs = args(job);
                    tokio::time::sleep(Duration::from_millis(a.ms)).await;
                    Ok(None)
                }
                "fail" => {
                    let a: FailArgs = args(job);
                    if fastrand::f64() < a.p {
                        Err(HandlerError::retry(format!("fail: injected failure (p={})", a.p)))
                    } else {
                        Ok(None)
                    }
                }
                "echo" => {
                    tracing::info!(payload = %job.payload.get(), "echo");
                    // Its result is its payload.
                    Ok(Some(job.payload.get().to_string()))
                }
                other => Err(HandlerError::permanent(format!("no handler for kind \"{other}\""))),
            }
        })
    }
}
