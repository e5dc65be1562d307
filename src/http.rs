//! The operations endpoint of `work` and `reap`: `/health` (liveness),
//! `/ready` (Redis answers and not shutting down) and `/metrics`
//! (Prometheus). Served on its own task, so it never blocks job processing.

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::status::Status;

/// A response with a fixed body.
pub type Reply = Response<Full<Bytes>>;

/// A response of `status` with `body`.
pub fn respond(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Reply {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("static response parts are valid")
}

/// Most connections the ops endpoint serves at once; more are closed at once.
pub const MAX_CONNECTIONS: usize = 64;
/// How long a client may take to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a connection stays open, keep-alive included (then it is closed
/// after the request in progress, which gets as long again).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// What a server answers.
pub trait Routes: Send + Sync + 'static {
    /// The response to `req`.
    fn answer(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> futures::future::BoxFuture<'static, Reply>;
}

/// The ops routes: `/health`, `/ready`, `/metrics`.
pub struct Ops {
    /// The readiness `/ready` reports.
    pub status: Arc<Status>,
    /// The Prometheus recorder `/metrics` renders.
    pub metrics: PrometheusHandle,
}

impl Ops {
    /// The answer to an ops path, or `None` for any other request.
    pub async fn get(&self, method: &hyper::Method, path: &str) -> Option<Reply> {
        const TEXT: &str = "text/plain; charset=utf-8";
        if method != hyper::Method::GET {
            return None;
        }
        Some(match path {
            "/health" => respond(StatusCode::OK, TEXT, "ok\n"),
            "/ready" if self.status.ready() => respond(StatusCode::OK, TEXT, "ready\n"),
            "/ready" => respond(StatusCode::SERVICE_UNAVAILABLE, TEXT, "not ready\n"),
            "/metrics" => {
                // Rendering is CPU work: off the runtime's threads, so a
                // scrape never holds up the jobs.
                let m = self.metrics.clone();
                match tokio::task::spawn_blocking(move || crate::metrics::render(&m)).await {
                    Ok(text) => respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text),
                    Err(_) => respond(StatusCode::INTERNAL_SERVER_ERROR, TEXT, "render failed\n"),
                }
            }
            _ => return None,
        })
    }
}

impl Routes for Ops {
    fn answer(self: Arc<Self>, req: Request<hyper::body::Incoming>) -> futures::future::BoxFuture<'static, Reply> {
        Box::pin(async move {
            match self.get(req.method(), req.uri().path()).await {
                Some(r) => r,
                None => respond(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found\n"),
            }
        })
    }
}

/// Serves `routes` on `listener` until `shutdown`, on a spawned task, with
/// at most `max_connections` at once (more are closed at once), a header
/// timeout and a connection lifetime.
pub fn serve_on(
    listener: TcpListener,
    routes: Arc<dyn Routes>,
    max_connections: usize,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    tokio::spawn(async move {
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
                _ = shutdown.cancelled() => break,
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let routes = routes.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let routes = routes.clone();
                    async move { Ok::<_, std::convert::Infallible>(routes.answer(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::pin!(conn);
                // At the end of its lifetime or at shutdown, a connection
                // finishes the request in progress, then closes.
                let ended = tokio::select! {
                    _ = tokio::time::sleep(CONNECTION_LIFETIME) => false,
                    _ = shutdown.cancelled() => false,
                    _ = conn.as_mut() => true,
                };
                if !ended {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
                }
                drop(slot);
            });
        }
        // Shutdown: wait for the requests in progress (bounded).
        let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(CONNECTION_LIFETIME, slots.acquire_many(all)).await;
    })
}

/// Binds `addr` now (so a bad address fails at start-up) and serves the
/// ops routes until `shutdown` on a spawned task.
pub async fn serve(
    addr: SocketAddr,
    status: Arc<Status>,
    metrics: PrometheusHandle,
    shutdown: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /health, /ready and /metrics");
    Ok(serve_on(listener, Arc::new(Ops { status, metrics }), MAX_CONNECTIONS, shutdown))
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
