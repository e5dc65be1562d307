//! dtq as a Rust library: a [`Client`] for producers, typed [`Job`]s, and a
//! [`Worker`] that routes kinds to async handlers ([`Router`]).
//!
//! Everything goes through the same Lua scripts and the same validation as
//! the command line, so a job enqueued here is exactly one that `dtq
//! produce` would have made.
//!
//! ```no_run
//! use dtq::{Client, Job, JobContext, JobError, Router, Worker};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendEmail { to: String }
//!
//! impl Job for SendEmail {
//!     const KIND: &'static str = "email.send";
//!     const QUEUE: &'static str = "emails";
//! }
//!
//! # async fn demo() -> Result<(), dtq::Error> {
//! let client = Client::connect("redis://127.0.0.1:6379").await?;
//! let sent = client.enqueue(&SendEmail { to: "ann@example.com".into() }).id("welcome-ann").await?;
//! assert!(!sent.duplicate);
//!
//! let router = Router::new().route(|job: SendEmail, _ctx: JobContext| async move {
//!     println!("mail to {}", job.to);
//!     Ok::<_, JobError>(format!("sent to {}", job.to))
//! });
//! let worker = Worker::builder(&client).queue("emails", 1).concurrency(8).router(router).start()?;
//! worker.shutdown().await?;
//! # Ok(()) }
//! ```

use crate::broker::{Broker, BrokerError, JobInfo, TlsFiles};
use crate::job::{Defaults, JobSpec, RunAt};
use crate::worker::handler::{Handler, HandlerFuture};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub use crate::worker::handler::{CancelReason, HandlerError as JobError, JobContext};

/// What can go wrong in the library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Redis could not be reached at connect time.
    #[error("connect: {0}")]
    Connect(String),
    /// A Redis command or script failed.
    #[error(transparent)]
    Redis(#[from] BrokerError),
    /// A job that `dtq produce` would reject too (with the field at fault).
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// A payload that does not serialize to JSON.
    #[error("kind {kind}: the payload does not serialize: {message}")]
    Serialize {
        /// The job kind whose payload failed.
        kind: String,
        /// The serializer's error message.
        message: String,
    },
    /// A worker setting out of range.
    #[error("worker configuration: {0}")]
    Config(String),
    /// [`Client::wait`] ran out of time; the job is in this state.
    #[error("job {id} still {state} after the wait")]
    Timeout {
        /// The job id waited on.
        id: String,
        /// The job's state when the wait ended.
        state: String,
    },
}

/// A job type: plain data tied to a stable kind name (the wire name: do not
/// derive it from the Rust type, so renaming the type breaks nothing).
pub trait Job: Serialize + DeserializeOwned + Send + 'static {
    /// The kind that routes it to its handler.
    const KIND: &'static str;
    /// The queue it goes to unless the enqueue says otherwise.
    const QUEUE: &'static str = "default";
}

/// A producer handle: cheap to clone, shared by every task of a service.
#[derive(Clone)]
pub struct Client {
    broker: Broker,
}

impl Client {
    /// Connects to Redis (`redis://`, `rediss://`, `redis-cluster://`) with
    /// the default namespace `dtq`, retrying for up to 10 s.
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Self::connect_with(url, "dtq", Some(Duration::from_secs(10))).await
    }

    /// Connects with a namespace; `give_up_after: None` retries until Redis
    /// answers (for a service that may start before Redis).
    pub async fn connect_with(url: &str, namespace: &str, give_up_after: Option<Duration>) -> Result<Client, Error> {
        crate::config::namespace(namespace).map_err(Error::Connect)?;
        let target = crate::broker::connect::parse_target(url, &TlsFiles::default()).map_err(Error::Connect)?;
        let broker = Broker::connect(target, namespace, give_up_after).await.map_err(Error::Connect)?;
        Ok(Client { broker })
    }

    /// A client on an existing broker connection.
    pub fn from_broker(broker: Broker) -> Client {
        Client { broker }
    }

    /// The underlying broker (reads for inspection, admin operations).
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Enqueues a typed job; set options on the returned builder, then
    /// `.await` it.
    pub fn enqueue<J: Job>(&self, job: &J) -> Enqueue<'_> {
        let payload = serde_json::to_value(job)
            .map_err(|e| Error::Serialize { kind: J::KIND.to_string(), message: e.to_string() });
        Enqueue::new(self, J::KIND, J::QUEUE, payload)
    }

    /// Enqueues a job of any kind with any serializable payload.
    pub fn enqueue_raw(&self, kind: &str, payload: impl Serialize) -> Enqueue<'_> {
        let payload = serde_json::to_value(payload)
            .map_err(|e| Error::Serialize { kind: kind.to_string(), message: e.to_string() });
        Enqueue::new(self, kind, "default", payload)
    }

    /// Enqueues many jobs: every one is validated first (one invalid job
    /// enqueues none), then each queue's jobs go in batched script calls
    /// (all of a call or none of it). Answers in order.
    pub async fn enqueue_batch<'a>(
        &'a self,
        jobs: impl IntoIterator<Item = Enqueue<'a>>,
    ) -> Result<Vec<Enqueued>, Error> {
        let mut built = Vec::new();
        for (i, e) in jobs.into_iter().enumerate() {
            let (queue, job) = e.build().map_err(|err| match err {
                Error::InvalidJob(m) => Error::InvalidJob(format!("job {} (counting from 1): {m}", i + 1)),
                other => other,
            })?;
            built.push((queue, job));
        }
        let order: Vec<(String, String)> = built.iter().map(|(q, j)| (q.clone(), j.id.clone())).collect();
        let fresh = crate::group::call_per_group(built, |queue, jobs| async move {
            self.broker.enqueue(&self.broker.keys(&queue), &jobs).await
        })
        .await?;
        Ok(order.into_iter().zip(fresh).map(|((queue, id), ok)| Enqueued { id, queue, duplicate: !ok }).collect())
    }

    /// The job `id` of `queue` in whatever state it is, if it exists.
    pub async fn job(&self, queue: &str, id: &str) -> Result<Option<JobInfo>, Error> {
        Ok(self.broker.job_in(id, queue).await?)
    }

    /// Waits until the job is completed or dead (its result is in
    /// [`JobInfo::result`]), or `timeout` passes ([`Error::Timeout`]).
    /// `None` if there is no such job (or it completed and its queue keeps
    /// no completed jobs).
    pub async fn wait(&self, queue: &str, id: &str, timeout: Duration) -> Result<Option<JobInfo>, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut poll = Duration::from_millis(10);
        loop {
            match self.job(queue, id).await? {
                Some(j) if j.is_finished() => return Ok(Some(j)),
                None => return Ok(None),
                Some(j) if tokio::time::Instant::now() >= deadline => {
                    return Err(Error::Timeout { id: id.to_string(), state: j.state });
                }
                Some(_) => {}
            }
            tokio::time::sleep(poll.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
            poll = (poll * 2).min(Duration::from_millis(500));
        }
    }
}

/// What an enqueue did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job id (chosen, or generated when none was given).
    pub id: String,
    /// The queue the job went to.
    pub queue: String,
    /// A job with this id already existed (or completed within the
    /// idempotency window): nothing new was enqueued. Not an error.
    pub duplicate: bool,
}

/// One job on its way in: options, then `.await` (or hand several to
/// [`Client::enqueue_batch`]).
#[must_use = "an enqueue does nothing until it is awaited"]
pub struct Enqueue<'a> {
    client: &'a Client,
    kind: String,
    queue: String,
    payload: Result<serde_json::Value, Error>,
    id: Option<String>,
    idempotency_key: Option<String>,
    run_at: RunAt,
    max_retries: Option<u32>,
    timeout: Option<Duration>,
}

impl<'a> Enqueue<'a> {
    fn new(client: &'a Client, kind: &str, queue: &str, payload: Result<serde_json::Value, Error>) -> Self {
        Enqueue {
            client,
            kind: kind.to_string(),
            queue: queue.to_string(),
            payload,
            id: None,
            idempotency_key: None,
            run_at: RunAt::Now,
            max_retries: None,
            timeout: None,
        }
    }

    /// The queue (default: the job type's `QUEUE`, or `default`).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// A job id of your own: enqueuing it again is a duplicate.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The execution guard key (default: the id, when you chose one).
    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Runs no earlier than this long from now.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.run_at = RunAt::After(delay);
        self
    }

    /// Runs no earlier than this time.
    pub fn run_at(mut self, at: std::time::SystemTime) -> Self {
        let ms = at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        self.run_at = RunAt::At(ms.max(1));
        self
    }

    /// Failures allowed before dead-letter (default 3).
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = Some(n);
        self
    }

    /// The handler's time limit (default: the worker's).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Validated exactly as `dtq produce` validates a job spec.
    fn build(self) -> Result<(String, crate::broker::NewJob), Error> {
        let mut spec = serde_json::json!({ "kind": self.kind, "payload": self.payload?, "queue": self.queue });
        for (field, value) in [("id", self.id), ("idempotency_key", self.idempotency_key)] {
            if let Some(v) = value {
                spec[field] = v.into();
            }
        }
        if let Some(n) = self.max_retries {
            spec["max_retries"] = n.into();
        }
        if spec.to_string().len() > crate::job::MAX_SPEC_BYTES {
            return Err(Error::InvalidJob("the job spec is over the 1 MiB limit".into()));
        }
        let mut parsed: JobSpec = crate::job::spec_from_value(spec).map_err(|e| Error::InvalidJob(e.to_string()))?;
        parsed.run_at = self.run_at;
        parsed.timeout = self.timeout;
        let queue = parsed.queue.clone().unwrap_or_default();
        let defaults = Defaults { queue: queue.clone(), max_retries: 3, delay: None, idempotency_key: None };
        let job = defaults.new_job(&self.client.broker, &queue, parsed);
        Ok((queue, job))
    }
}

impl<'a> IntoFuture for Enqueue<'a> {
    type Output = Result<Enqueued, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let client = self.client;
            let (queue, job) = self.build()?;
            let id = job.id.clone();
            let ok = client.broker.enqueue(&client.broker.keys(&queue), std::slice::from_ref(&job)).await?;
            Ok(Enqueued { id, queue, duplicate: !ok.first().copied().unwrap_or(false) })
        })
    }
}

type Route = Arc<dyn Fn(&JobContext) -> HandlerFuture<'_> + Send + Sync>;

/// Routes kinds to typed async handlers; one worker runs many kinds.
/// A kind without a route is a permanent failure (`no handler for kind`),
/// a payload that does not decode as its type too.
///
/// A handler can be tried without Redis by giving the router a context:
///
/// ```
/// use dtq::worker::handler::{Cancellation, Handler};
/// use dtq::{Job, JobContext, JobError, Router};
/// # #[derive(serde::Serialize, serde::Deserialize)]
/// # struct Add { a: i64, b: i64 }
/// # impl Job for Add { const KIND: &'static str = "add"; }
/// let router = Router::new().route(|job: Add, _ctx: JobContext| async move { Ok::<_, JobError>(job.a + job.b) });
/// let ctx = JobContext {
///     id: "j1".into(),
///     queue: "default".into(),
///     kind: "add".into(),
///     attempt: 1,
///     payload: serde_json::value::RawValue::from_string(r#"{"a":2,"b":3}"#.into()).unwrap(),
///     idempotency_key: None,
///     timeout: std::time::Duration::from_secs(5),
///     cancel: Cancellation::default(),
///     grace: std::time::Duration::from_secs(1),
/// };
/// let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// assert_eq!(rt.block_on(router.handle(&ctx)).unwrap(), Some("5".to_string()));
/// let mut other = ctx.clone();
/// other.kind = "sub".into();
/// assert!(rt.block_on(router.handle(&other)).unwrap_err().message().contains("no handler"));
/// ```
#[derive(Default, Clone)]
pub struct Router {
    routes: HashMap<String, Route>,
}

impl Router {
    /// A router with no routes.
    pub fn new() -> Self {
        Router::default()
    }

    /// Runs jobs of `J::KIND` with `handler(job, context)`. Its `Ok`
    /// value is the job's result (serialized as JSON; `()` keeps none).
    ///
    /// # Panics
    /// If `J::KIND` already has a route.
    #[track_caller]
    pub fn route<J, F, Fut, O>(mut self, handler: F) -> Self
    where
        J: Job,
        F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, JobError>> + Send + 'static,
        O: Serialize,
    {
        assert!(!self.routes.contains_key(J::KIND), "kind {:?} is routed twice", J::KIND);
        let handler = Arc::new(handler);
        let route: Route = Arc::new(move |ctx: &JobContext| {
            let handler = handler.clone();
            let ctx = ctx.clone();
            Box::pin(async move {
                let job: J = serde_json::from_str(ctx.payload.get()).map_err(|e| {
                    JobError::permanent(format!(
                        "the payload of kind {:?} does not decode as {}: {e}",
                        J::KIND,
                        std::any::type_name::<J>()
                    ))
                })?;
                let out = handler(job, ctx).await?;
                let text = serde_json::to_string(&out)
                    .map_err(|e| JobError::permanent(format!("the result does not serialize: {e}")))?;
                Ok((text != "null").then_some(text))
            })
        });
        self.routes.insert(J::KIND.to_string(), route);
        self
    }
}

impl Handler for Router {
    fn handle<'a>(&'a self, job: &'a JobContext) -> HandlerFuture<'a> {
        match self.routes.get(&job.kind) {
            Some(route) => route(job),
            None => {
                let kind = job.kind.clone();
                Box::pin(async move { Err(JobError::permanent(format!("no handler for kind \"{kind}\""))) })
            }
        }
    }
}

/// Builds a [`Worker`]: queues and weights, concurrency, timeouts, a router.
pub struct WorkerBuilder {
    client: Client,
    cfg: crate::worker::WorkerConfig,
    router: Option<Arc<dyn Handler>>,
    reaper: bool,
}

/// Runs jobs in this process; see [`WorkerBuilder`].
pub struct Worker;

impl Worker {
    /// A builder for a worker on `client`'s connection, with the default
    /// settings, no queues and no router; the reaper is on.
    pub fn builder(client: &Client) -> WorkerBuilder {
        WorkerBuilder {
            client: client.clone(),
            cfg: crate::worker::WorkerConfig::new(Vec::new()),
            router: None,
            reaper: true,
        }
    }
}

impl WorkerBuilder {
    /// Takes jobs from `queue` with this weight (1–1000) among the others.
    pub fn queue(mut self, queue: &str, weight: u32) -> Self {
        self.cfg.queues.push((queue.to_string(), weight));
        self
    }

    /// Jobs run at once (default 32).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.cfg.concurrency = n;
        self
    }

    /// How long a lease lasts without a heartbeat (default 30 s).
    pub fn visibility_timeout(mut self, d: Duration) -> Self {
        self.cfg.visibility_timeout = d;
        self
    }

    /// A handler's time limit for jobs that set none (default 5 min).
    pub fn job_timeout(mut self, d: Duration) -> Self {
        self.cfg.job_timeout = d;
        self
    }

    /// How long running jobs get to finish at shutdown (default 30 s).
    pub fn shutdown_grace(mut self, d: Duration) -> Self {
        self.cfg.shutdown_grace = d;
        self
    }

    /// Retry backoff: full jitter over `base · 2^(n-1)`, at most `max`.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.cfg.backoff_base = base;
        self.cfg.backoff_max = max;
        self
    }

    /// Whether this process also runs the (leader-elected) reaper that
    /// recovers expired leases and promotes scheduled jobs (default: yes).
    pub fn reaper(mut self, on: bool) -> Self {
        self.reaper = on;
        self
    }

    /// The handlers.
    pub fn router(mut self, router: Router) -> Self {
        self.router = Some(Arc::new(router));
        self
    }

    /// Any [`Handler`] (the router is one).
    pub fn handler(mut self, handler: Arc<dyn Handler>) -> Self {
        self.router = Some(handler);
        self
    }

    /// Checks the settings and starts the worker on the current tokio
    /// runtime.
    pub fn start(self) -> Result<WorkerHandle, Error> {
        if self.cfg.queues.is_empty() {
            return Err(Error::Config("no queues: add one with .queue(name, weight)".into()));
        }
        self.cfg.validate().map_err(Error::Config)?;
        let handler = self.router.ok_or_else(|| Error::Config("no router: add one with .router(...)".into()))?;
        let stop = CancellationToken::new();
        let status = Arc::new(crate::status::Status::default());
        let broker = self.client.broker.clone();
        let reaper = self.reaper.then(|| {
            tokio::spawn(crate::reaper::run(
                broker.clone(),
                crate::reaper::ReaperConfig::default(),
                Arc::new(crate::status::Status::default()),
                stop.clone(),
            ))
        });
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let r = crate::worker::run(broker, self.cfg, handler, status, stop).await;
                if let Some(reaper) = reaper {
                    let _ = reaper.await;
                }
                r
            }
        });
        Ok(WorkerHandle { stop, task })
    }
}

/// A running worker. Dropping it leaves it running; call
/// [`shutdown`](WorkerHandle::shutdown) to stop it cleanly.
#[must_use = "a worker handle is how the worker is stopped"]
pub struct WorkerHandle {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl WorkerHandle {
    /// Stops taking jobs, lets running ones finish within the shutdown
    /// grace, hands the rest back, and waits for all of it.
    pub async fn shutdown(self) -> Result<(), Error> {
        self.stop.cancel();
        match self.task.await {
            Ok(r) => r.map_err(Error::Config),
            Err(e) => Err(Error::Config(format!("the worker task failed: {e}"))),
        }
    }
}
