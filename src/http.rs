//! The operations endpoint of `work` and `reap`: `/health` (liveness),
//! `/ready` (Redis answers and not shutting down) and `/metrics`
//! (Prometheus). Served on its own task, so it never blocks job processing.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

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
    pub fn ready(&self) -> bool {
        self.redis_ok.load(Ordering::Relaxed)
            && self.outcomes_ok.load(Ordering::Relaxed)
            && !self.shutting_down.load(Ordering::Relaxed)
    }

    pub fn set_outcomes_ok(&self, ok: bool) {
        self.outcomes_ok.store(ok, Ordering::Relaxed);
    }

    pub fn set_redis_ok(&self, ok: bool) {
        self.redis_ok.store(ok, Ordering::Relaxed);
    }

    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Relaxed);
    }
}

fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

/// Most connections served at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection stays open, keep-alive included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

async fn route(
    req: Request<hyper::body::Incoming>,
    status: &Status,
    metrics: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/health") => respond(StatusCode::OK, TEXT, "ok\n"),
        (&hyper::Method::GET, "/ready") if status.ready() => respond(StatusCode::OK, TEXT, "ready\n"),
        (&hyper::Method::GET, "/ready") => respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n"),
        (&hyper::Method::GET, "/metrics") => {
            // Rendering is CPU work: off the runtime's only thread, so a
            // scrape never holds up the jobs.
            let m = metrics.clone();
            match tokio::task::spawn_blocking(move || crate::metrics::render(&m)).await {
                Ok(text) => respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text),
                Err(_) => respond(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "render failed\n"),
            }
        }
        _ => respond(StatusCode::NOT_FOUND, TEXT, "not found\n"),
    }
}

/// Binds `addr` now (so a bad address fails at start-up) and serves until
/// `shutdown` on a spawned task.
pub async fn serve(
    addr: SocketAddr,
    status: Arc<Status>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /health, /ready and /metrics");
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: pause rather than spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let (status, metrics) = (status.clone(), metrics.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let (status, metrics) = (status.clone(), metrics.clone());
                    async move { Ok::<_, std::convert::Infallible>(route(req, &status, &metrics).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
                drop(slot);
            });
        }
    }))
}

/// A running endpoint with its own stop token, closed last by the command so
/// `/ready` answers 503 (and `/metrics` stays scrapable) through shutdown.
pub struct Endpoint {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Endpoint {
    /// Serves on `listen` (none = `--listen off`); also installs the metrics recorder.
    pub async fn start(listen: Option<SocketAddr>, status: Arc<Status>) -> anyhow::Result<Endpoint> {
        let metrics = crate::metrics::install();
        let stop = CancellationToken::new();
        let task = match listen {
            Some(addr) => Some(
                serve(addr, status, metrics, stop.clone()).await.map_err(|e| {
                    if e.kind() == std::io::ErrorKind::AddrInUse {
                        anyhow::anyhow!(
                            "the ops endpoint (/health, /ready, /metrics) cannot listen on {addr}: the port is in use (another dtq on this machine?); choose one with --listen ADDR:PORT, or --listen off"
                        )
                    } else {
                        anyhow::anyhow!("the ops endpoint cannot listen on {addr} (--listen): {e}")
                    }
                })?,
            ),
            None => None,
        };
        Ok(Endpoint { stop, task })
    }

    /// Stops serving and waits for the server task.
    pub async fn close(self) {
        self.stop.cancel();
        if let Some(t) = self.task {
            let _ = t.await;
        }
    }
}
