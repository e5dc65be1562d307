//! `--http URL`: each job is a POST of its payload to URL, over a keep-alive
//! connection pool (TLS for https). 2xx = success; 429 and 5xx = retry
//! (`Retry-After` in seconds sets the delay); anything else = permanent.

use super::handler::{Handler, HandlerError, HandlerFuture, JobContext};
use http_body_util::Full;
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
    /// The URL as logged and stored in errors: no userinfo, no query (either
    /// may carry a token).
    shown: String,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Extra headers of every request (`--http-header`; values never logged).
    headers: hyper::HeaderMap,
}

/// Parses `--http-header` specs: `NAME=VALUE`, `NAME=@env:VAR` (the value of
/// an environment variable) or `NAME=@file:PATH` (a file's content, without
/// its trailing newline), so a secret need not be on the command line.
/// Values are checked, read once at start, and marked sensitive.
pub fn parse_headers(specs: &[String]) -> Result<hyper::HeaderMap, String> {
    let mut map = hyper::HeaderMap::new();
    for spec in specs {
        let Some((name, value)) = spec.split_once('=') else {
            return Err(format!("--http-header {spec:?}: expected NAME=VALUE, NAME=@env:VAR or NAME=@file:PATH"));
        };
        let name: hyper::header::HeaderName =
            name.trim().parse().map_err(|_| format!("--http-header: {name:?} is not a valid header name"))?;
        let value = if let Some(var) = value.strip_prefix("@env:") {
            std::env::var(var).map_err(|_| format!("--http-header {name}: environment variable {var} is not set"))?
        } else if let Some(path) = value.strip_prefix("@file:") {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("--http-header {name}: reading {path}: {e}"))?;
            text.trim_end_matches(['\n', '\r']).to_string()
        } else {
            value.to_string()
        };
        let mut value: hyper::header::HeaderValue = value.parse().map_err(|_| {
            format!("--http-header {name}: the value holds characters a header cannot (control characters, newlines)")
        })?;
        value.set_sensitive(true);
        map.append(name, value);
    }
    Ok(map)
}

impl HttpHandler {
    /// A handler that posts jobs to `url` (`http://` or `https://`).
    pub fn new(url: &str) -> Result<Self, String> {
        Self::with_headers(url, hyper::HeaderMap::new())
    }

    /// A handler that adds `headers` (see [`parse_headers`]) to every request.
    pub fn with_headers(url: &str, headers: hyper::HeaderMap) -> Result<Self, String> {
        let redacted = crate::broker::redact_url(url.split('?').next().unwrap_or(url));
        let uri: Uri = url.parse().map_err(|e| format!("--http {redacted:?}: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(format!("--http {redacted:?}: expected an http:// or https:// URL"));
        }
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| format!("--http: loading the system's root certificates: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(https);
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default();
        let shown = format!("{}://{host}{port}{}", uri.scheme_str().unwrap_or("http"), uri.path());
        Ok(HttpHandler { url: uri, shown, client, headers })
    }
}

/// Most bytes of a response body read (the rest is not waited for): one
/// more than a result may have, so a larger one is seen as such.
const MAX_BODY: usize = crate::retention::MAX_RESULT + 1;
/// Longest `Retry-After` honoured; the worker clamps it to `--backoff-max` too.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(365 * 24 * 3600);

/// `Retry-After` as delay-seconds (an HTTP date is not honoured: backoff
/// applies), clamped so that no later arithmetic can overflow.
fn retry_after(headers: &hyper::HeaderMap) -> Option<Duration> {
    let v = headers.get(hyper::header::RETRY_AFTER)?.to_str().ok()?;
    let secs = v.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// A client error with its cause chain (connection refused, DNS, TLS...).
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// Reads at most [`MAX_BODY`] bytes of a body.
async fn read_bounded(mut body: hyper::body::Incoming) -> Vec<u8> {
    use hyper::body::Body;
    let mut out = Vec::new();
    while out.len() < MAX_BODY {
        match std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(&data[..data.len().min(MAX_BODY - out.len())]);
                }
            }
            _ => break,
        }
    }
    out
}

impl Handler for HttpHandler {
    fn handle<'a>(&'a self, job: &'a JobContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let mut req = Request::post(self.url.clone())
                .header("content-type", "application/json")
                .header("x-dtq-job-id", &job.id)
                .header("x-dtq-queue", &*job.queue)
                .header("x-dtq-kind", &job.kind)
                .header("x-dtq-attempt", job.attempt.to_string())
                .header("idempotency-key", job.idempotency_key.as_deref().unwrap_or(&job.id))
                .body(Full::new(Bytes::copy_from_slice(job.payload.get().as_bytes())))
                .map_err(|e| HandlerError::permanent(format!("building the request: {e}")))?;
            req.headers_mut().extend(self.headers.clone());
            let url = &self.shown;
            // A cancelled attempt (lease lost, timeout, shutdown) aborts the request.
            let resp = tokio::select! {
                r = self.client.request(req) => r.map_err(|e| HandlerError::retry(format!("POST {url}: {}", cause(&e))))?,
                reason = job.cancel.cancelled() => return Err(HandlerError::retry(format!("POST {url}: aborted ({reason:?})"))),
            };
            let status = resp.status();
            let after = retry_after(resp.headers());
            // Read (a bounded part of) the body so the connection goes back to the pool.
            let body = tokio::select! {
                b = read_bounded(resp.into_body()) => b,
                reason = job.cancel.cancelled() => return Err(HandlerError::retry(format!("POST {url}: aborted ({reason:?})"))),
            };
            if status.is_success() {
                // The 2xx body is the job's result.
                return Ok((!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned()));
            }
            let excerpt: String = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_string();
            let excerpt: String = excerpt.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
            let message =
                format!("POST {url} returned {status}{}{excerpt}", if excerpt.is_empty() { "" } else { ": " });
            if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
                Err(HandlerError::Retry { message, after })
            } else {
                Err(HandlerError::permanent(message))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn any_retry_after_is_bounded(v in "[0-9]{0,30}|.{0,20}") {
            let mut h = hyper::HeaderMap::new();
            if let Ok(value) = hyper::header::HeaderValue::from_str(&v) {
                h.insert(hyper::header::RETRY_AFTER, value);
                if let Some(d) = retry_after(&h) {
                    proptest::prop_assert!(d <= MAX_RETRY_AFTER);
                    // What the pipeline does with it cannot overflow.
                    let _ = d.min(Duration::from_secs(3600)).as_millis() as u64;
                }
            }
        }
    }

    #[test]
    fn huge_retry_after_is_clamped() {
        let mut h = hyper::HeaderMap::new();
        h.insert(hyper::header::RETRY_AFTER, "18446744073709551615".parse().unwrap());
        assert_eq!(retry_after(&h), Some(MAX_RETRY_AFTER));
    }
}
