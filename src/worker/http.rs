//! `--http URL`: each job is a POST of its payload to URL, over a keep-alive
//! connection pool (TLS for https). 2xx = success; 429 and 5xx = retry
//! (`Retry-After` in seconds sets the delay); anything else = permanent.

use super::handler::{Handler, HandlerError, HandlerFuture, JobContext};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Pushes jobs to an HTTP endpoint.
pub struct HttpHandler {
    url: Uri,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpHandler {
    pub fn new(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("--http {url:?}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!("--http {url:?}: expected an http:// or https:// URL"));
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("--http: loading the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https);
        Ok(HttpHandler { url: uri, client })
    }
}

/// `Retry-After` as delay-seconds (an HTTP date is not honoured: backoff applies).
fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    let v = headers.get(hyper::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Handler for HttpHandler {
    fn handle<'a>(&'a self, job: &'a JobContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let req = Request::post(self.url.clone())
                .header("content-type", "application/json")
                .header("x-dtq-job-id", &job.id)
                .header("x-dtq-queue", &*job.queue)
                .header("x-dtq-kind", &job.kind)
                .header("x-dtq-attempt", job.attempt.to_string())
                .header("idempotency-key", job.idempotency_key.as_deref().unwrap_or(&job.id))
                .body(Full::new(Bytes::copy_from_slice(job.payload.get().as_bytes())))
                .map_err(|e| HandlerError::permanent(format!("building the request: {e}")))?;
            let resp =
                self.client.request(req).await.map_err(|e| HandlerError::retry(format!("POST {}: {e}", self.url)))?;
            let status = resp.status();
            let after = retry_after(resp.headers());
            // Read the body so the connection goes back to the pool.
            let body = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            if status.is_success() {
                return Ok(());
            }
            let excerpt: String = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
            let message =
                format!("POST {} returned {status}{}{excerpt}", self.url, if excerpt.is_empty() { "" } else { ": " });
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                Err(HandlerError::Retry { message, after })
            } else {
                Err(HandlerError::permanent(message))
            }
        })
    }
}
