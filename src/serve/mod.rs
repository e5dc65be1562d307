//! `dtq serve`: the HTTP API (`/v1`), JSON in and out, for any language.
//!
//! It runs on the same bounded server as the ops endpoint (a connection cap,
//! a header timeout, a connection lifetime) and adds: bearer tokens (admin
//! and read-only, compared in constant time), a request body limit and read
//! timeout, per-request metrics and logs (never the token), and 503 while
//! Redis is away — the process stays up and recovers with it. Enqueues of
//! concurrent requests are coalesced into batched script calls.

use crate::broker::{Broker, BrokerError, Cancel, Cursor, Filter, JobState, NewJob};
use crate::http::{respond, Ops, Reply, Routes};
use crate::job::Defaults;
use crate::worker::batch::Batcher;
use futures::future::BoxFuture;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Largest request body (413 beyond it).
pub const MAX_BODY: usize = 8 << 20;
/// How long a client may take to send a request body (408 beyond it).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Most jobs one `POST /v1/jobs` may carry, and ids one action names.
pub const MAX_ITEMS: usize = 1000;
/// Longest `wait=` of `GET /v1/jobs/{id}`.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Default and largest page of a job list.
const PAGE: (usize, usize) = (50, 1000);

mod auth;
mod jobs;
mod overview;
pub mod panel;
mod queues;
mod schedules;

pub use auth::{Role, TokenFiles, Tokens};

type Enqueuer = Batcher<String, Vec<NewJob>, Vec<bool>>;

/// The API's state, shared by every connection.
pub struct Api {
    broker: OnceCell<Broker>,
    enqueuer: OnceCell<Enqueuer>,
    ops: Ops,
    tokens: TokenFiles,
    /// Every queue's counts and Redis' state, read at most once a second
    /// for every client (`/v1/queues`, `/v1/overview`).
    sampler: overview::Sampler,
}

impl Api {
    /// The API with its ops routes and accepted tokens, not connected to
    /// Redis yet (see [`Api::connected`]).
    pub fn new(ops: Ops, tokens: TokenFiles) -> Self {
        Api { broker: OnceCell::new(), enqueuer: OnceCell::new(), ops, tokens, sampler: Default::default() }
    }

    /// Re-reads the token files every second until `stop` (see
    /// [`TokenFiles::watch`]).
    pub async fn watch_tokens(&self, stop: tokio_util::sync::CancellationToken) {
        self.tokens.watch(stop).await
    }

    /// Hands over the connected broker: from now on requests reach Redis.
    pub fn connected(&self, broker: Broker) {
        let b = broker.clone();
        let enqueuer = Batcher::spawn("enqueue", move |queue: String, requests: Vec<Vec<NewJob>>| {
            let b = b.clone();
            async move {
                let sizes: Vec<usize> = requests.iter().map(Vec::len).collect();
                let all: Vec<NewJob> = requests.into_iter().flatten().collect();
                let flags = b.enqueue(&b.keys(&queue), &all).await?;
                let mut it = flags.into_iter();
                Ok(sizes.into_iter().map(|n| it.by_ref().take(n).collect()).collect())
            }
        });
        let _ = self.enqueuer.set(enqueuer);
        let _ = self.broker.set(broker);
    }
}

/// An error answer: `{"error":{"code","message","field"?}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

fn err(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError { status, code, message: message.into(), field: None }
}

fn invalid(message: impl Into<String>) -> ApiError {
    err(StatusCode::BAD_REQUEST, "invalid_input", message)
}

impl From<BrokerError> for ApiError {
    fn from(e: BrokerError) -> Self {
        if e.is_transient() {
            err(StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable", format!("Redis is unavailable: {e}"))
        } else {
            err(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<BrokerError>() {
            Ok(b) => b.into(),
            Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, "internal", format!("{e:#}")),
        }
    }
}

fn json_reply(status: StatusCode, v: &Value) -> Reply {
    respond(status, "application/json", v.to_string())
}

impl ApiError {
    fn reply(&self) -> Reply {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(f) = &self.field {
            e["field"] = f.as_str().into();
        }
        let mut r = json_reply(self.status, &json!({ "error": e }));
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert("www-authenticate", hyper::header::HeaderValue::from_static("Bearer"));
        }
        r
    }
}

type Answer = Result<(StatusCode, Value), ApiError>;

/// Every route of the API: its method and path (`{...}` is one segment).
const ROUTES: &[(Method, &str)] = &[
    (Method::GET, "/v1/openapi.json"),
    (Method::GET, "/v1/session"),
    (Method::POST, "/v1/session"),
    (Method::DELETE, "/v1/session"),
    (Method::GET, "/v1/overview"),
    (Method::GET, "/v1/workers"),
    (Method::GET, "/v1/queues"),
    (Method::GET, "/v1/queues/{queue}/jobs"),
    (Method::POST, "/v1/queues/{queue}/requeue"),
    (Method::POST, "/v1/queues/{queue}/cancel"),
    (Method::POST, "/v1/queues/{queue}/delete"),
    (Method::POST, "/v1/queues/{queue}/pause"),
    (Method::POST, "/v1/queues/{queue}/resume"),
    (Method::POST, "/v1/jobs"),
    (Method::GET, "/v1/jobs/{id}"),
    (Method::GET, "/v1/schedules"),
    (Method::PUT, "/v1/schedules/{name}"),
    (Method::DELETE, "/v1/schedules/{name}"),
    (Method::POST, "/v1/schedules/{name}/trigger"),
    (Method::POST, "/v1/schedules/{name}/pause"),
    (Method::POST, "/v1/schedules/{name}/resume"),
];

/// The route `method` and the path's segments `parts` name, or the methods
/// the path takes (none: no such path).
fn find_route(method: &Method, parts: &[&str]) -> Result<&'static str, String> {
    let fits = |pattern: &str| {
        let want: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        want.len() == parts.len()
            && want.iter().zip(parts).all(|(w, p)| if w.starts_with('{') { !p.is_empty() } else { w == p })
    };
    let mut allowed = Vec::new();
    for (m, pattern) in ROUTES {
        if fits(pattern) {
            if m == method {
                return Ok(pattern);
            }
            allowed.push(m.as_str());
        }
    }
    Err(allowed.join(", "))
}

impl Routes for Api {
    fn answer(self: Arc<Self>, req: Request<Incoming>) -> BoxFuture<'static, Reply> {
        Box::pin(async move {
            let started = Instant::now();
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            // HEAD is answered as GET (hyper sends no body for it).
            let read = if method == Method::HEAD { Method::GET } else { method.clone() };
            if let Some(r) = self.ops.get(&read, &path).await {
                return r;
            }
            if read == Method::GET {
                if let Some(r) = panel::asset(&path) {
                    return r;
                }
            }
            let (route, result) = self.route(req).await;
            let mut reply = result.unwrap_or_else(|e| e.reply());
            reply.headers_mut().insert("x-content-type-options", hyper::header::HeaderValue::from_static("nosniff"));
            let code = reply.status().as_u16();
            let elapsed = started.elapsed();
            ::metrics::counter!(crate::metrics::HTTP_REQUESTS, "route" => route, "code" => code.to_string())
                .increment(1);
            ::metrics::histogram!(crate::metrics::HTTP_DURATION, "route" => route).record(elapsed.as_secs_f64());
            tracing::info!(method = %method, route, code, ms = elapsed.as_secs_f64() * 1000.0, "request");
            reply
        })
    }
}

/// Query parameters, percent-decoded.
fn query(req: &Request<Incoming>) -> Vec<(String, String)> {
    req.uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k, true), decode(v, true))
        })
        .collect()
}

/// Percent-decoding; in a query `+` is a space too.
fn decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let hex = |j: usize| b.get(j).and_then(|c| (*c as char).to_digit(16));
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match (b[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
            (b'+', ..) if plus_is_space => out.push(b' '),
            (c, ..) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

fn queue_param(q: Option<&str>, what: &str) -> Result<Option<String>, ApiError> {
    match q {
        None => Ok(None),
        Some(q) => crate::job::validate_queue_name(q).map(|_| Some(q.to_string())).map_err(|e| {
            let mut e = invalid(format!("{what}: {e}"));
            e.field = Some("queue".into());
            e
        }),
    }
}

fn duration_param(q: &[(String, String)], name: &str) -> Result<Option<Duration>, ApiError> {
    param(q, name).map(|v| crate::job::parse_duration(v).map_err(|e| invalid(format!("{name}: {e}")))).transpose()
}

/// The body, at most [`MAX_BODY`] bytes within [`BODY_TIMEOUT`].
async fn body(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    let too_big =
        || err(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the request body is over {} bytes", MAX_BODY));
    let declared =
        req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_big());
    }
    let limited = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(err(StatusCode::REQUEST_TIMEOUT, "timeout", "the request body did not arrive in time")),
        Ok(Err(e)) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(too_big()),
        Ok(Err(e)) => Err(invalid(format!("reading the request body: {e}"))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| invalid(format!("the body is not valid JSON: {e}")))
}

impl Api {
    async fn route(&self, req: Request<Incoming>) -> (&'static str, Result<Reply, ApiError>) {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let parts: Vec<String> = path.trim_matches('/').split('/').map(|p| decode(p, false)).collect();
        let p: Vec<&str> = parts.iter().map(String::as_str).collect();
        let route = match find_route(&method, &p) {
            Ok(route) => route,
            Err(allowed) if allowed.is_empty() => {
                return ("unknown", Err(err(StatusCode::NOT_FOUND, "not_found", format!("no route {method} {path}"))))
            }
            Err(allowed) => {
                let e = err(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{path} takes {allowed}"));
                let mut r = e.reply();
                r.headers_mut().insert(hyper::header::ALLOW, allowed.parse().expect("method names are header-safe"));
                return ("unknown", Ok(r));
            }
        };
        let json = |a: Answer| a.map(|(status, v)| json_reply(status, &v));
        if route == "/v1/openapi.json" {
            let doc: Value = serde_json::from_str(OPENAPI).expect("the OpenAPI document is valid JSON");
            return (route, Ok(json_reply(StatusCode::OK, &doc)));
        }
        if route == "/v1/session" {
            return (route, self.session(req).await);
        }
        if let Err(e) = self.tokens.current().authorize(&method, req.headers()) {
            return (route, Err(e));
        }
        let Some(broker) = self.broker.get() else {
            return (
                route,
                Err(err(StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable", "not connected to Redis yet")),
            );
        };
        if route == "/v1/queues" || route == "/v1/overview" {
            let answers = self.sampler.answers(broker).await.map_err(ApiError::from);
            let body = |a: overview::Answers| if route == "/v1/queues" { a.queues } else { a.overview };
            return (route, answers.map(|a| respond(StatusCode::OK, "application/json", body(a))));
        }
        let q = query(&req);
        let answer = match route {
            "/v1/workers" => crate::worker::registry::list(broker)
                .await
                .map(|w| (StatusCode::OK, json!({ "workers": w })))
                .map_err(ApiError::from),
            "/v1/queues/{queue}/jobs" => self.list(broker, p[2], &q).await,
            "/v1/jobs" => match body(req).await {
                Ok(b) => self.enqueue(broker, &b, &q).await,
                Err(e) => Err(e),
            },
            "/v1/jobs/{id}" => self.job(broker, p[2], &q).await,
            "/v1/schedules" => self.schedules(broker).await,
            "/v1/schedules/{name}" if method == Method::DELETE => self.delete_schedule(broker, p[2]).await,
            "/v1/schedules/{name}" => match body(req).await {
                Ok(b) => self.put_schedule(broker, p[2], &b).await,
                Err(e) => Err(e),
            },
            r if r.starts_with("/v1/schedules/{name}/") => self.schedule_action(broker, p[2], p[3]).await,
            _ => {
                let action = p[3].to_string();
                let queue = p[2].to_string();
                match body(req).await {
                    Ok(b) => self.act(broker, &queue, &action, &b).await,
                    Err(e) => Err(e),
                }
            }
        };
        (route, json(answer))
    }

    async fn known(&self, broker: &Broker, queue: &str) -> Result<(), ApiError> {
        queue_param(Some(queue), "queue")?;
        if broker.queue_exists(queue).await? {
            Ok(())
        } else {
            Err(err(StatusCode::NOT_FOUND, "not_found", format!("no queue named {queue:?}")))
        }
    }
}

/// The OpenAPI 3.1 document of every route.
pub const OPENAPI: &str = include_str!("openapi.json");
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(decode("a%20b+c", true), "a b c");
        assert_eq!(decode("a+b", false), "a+b");
        assert_eq!(decode("100%", true), "100%");
        assert_eq!(decode("%zz", true), "%zz");
        assert_eq!(decode("%e2%9c%93", true), "✓");
    }

    #[test]
    fn the_openapi_document_is_json() {
        let v: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(v["openapi"], "3.1.0");
    }
}
