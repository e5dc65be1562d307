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

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every request.
    Admin,
    /// `GET` requests only.
    ReadOnly,
}

/// The accepted tokens; none configured means no authentication (only
/// allowed on loopback, or with `--insecure-no-auth`).
#[derive(Default)]
pub struct Tokens(Vec<(Vec<u8>, Role)>);

impl Tokens {
    /// Reads one token a line from each file (blank lines and `#` comments
    /// skipped; several tokens allow rotation).
    pub fn load(admin: Option<&std::path::Path>, read_only: Option<&std::path::Path>) -> Result<Tokens, String> {
        let mut out = Vec::new();
        for (path, role) in [(admin, Role::Admin), (read_only, Role::ReadOnly)] {
            let Some(path) = path else { continue };
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
            let before = out.len();
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
                if line.len() < 16 {
                    return Err(format!("token file {}: a token is shorter than 16 characters", path.display()));
                }
                out.push((line.as_bytes().to_vec(), role));
            }
            if out.len() == before {
                return Err(format!("token file {} holds no token", path.display()));
            }
        }
        Ok(Tokens(out))
    }

    /// No token is configured: requests are not authenticated.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The role of `presented`, checking every token in constant time.
    fn role(&self, presented: &[u8]) -> Option<Role> {
        let mut found = None;
        for (token, role) in &self.0 {
            if constant_time_eq(token, presented) {
                found = found.or(Some(*role));
            }
        }
        found
    }
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

type Enqueuer = Batcher<String, Vec<NewJob>, Vec<bool>>;

/// The API's state, shared by every connection.
pub struct Api {
    broker: OnceCell<Broker>,
    enqueuer: OnceCell<Enqueuer>,
    ops: Ops,
    tokens: Tokens,
    /// The last `GET /v1/queues` answer and when it was read: one read of
    /// every queue per [`STATS_TTL`], shared by every client.
    stats: tokio::sync::Mutex<Option<(Instant, Value)>>,
}

/// How long a `GET /v1/queues` answer is reused.
pub const STATS_TTL: Duration = Duration::from_secs(1);

impl Api {
    /// The API with its ops routes and accepted tokens, not connected to
    /// Redis yet (see [`Api::connected`]).
    pub fn new(ops: Ops, tokens: Tokens) -> Self {
        Api { broker: OnceCell::new(), enqueuer: OnceCell::new(), ops, tokens, stats: Default::default() }
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

impl Routes for Api {
    fn answer(self: Arc<Self>, req: Request<Incoming>) -> BoxFuture<'static, Reply> {
        Box::pin(async move {
            let started = Instant::now();
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            if let Some(r) = self.ops.get(&method, &path).await {
                return r;
            }
            let (route, result) = self.route(req).await;
            let reply = match result {
                Ok((status, v)) => json_reply(status, &v),
                Err(e) => e.reply(),
            };
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
    async fn route(&self, req: Request<Incoming>) -> (&'static str, Answer) {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let parts: Vec<String> = path.trim_matches('/').split('/').map(|p| decode(p, false)).collect();
        let p: Vec<&str> = parts.iter().map(String::as_str).collect();
        let route: &'static str = match (&method, p.as_slice()) {
            (&Method::GET, ["v1", "openapi.json"]) => "/v1/openapi.json",
            (&Method::GET, ["v1", "queues"]) => "/v1/queues",
            (&Method::GET, ["v1", "queues", _, "jobs"]) => "/v1/queues/{queue}/jobs",
            (&Method::POST, ["v1", "queues", _, "requeue"]) => "/v1/queues/{queue}/requeue",
            (&Method::POST, ["v1", "queues", _, "cancel"]) => "/v1/queues/{queue}/cancel",
            (&Method::POST, ["v1", "queues", _, "delete"]) => "/v1/queues/{queue}/delete",
            (&Method::POST, ["v1", "queues", _, "pause"]) => "/v1/queues/{queue}/pause",
            (&Method::POST, ["v1", "queues", _, "resume"]) => "/v1/queues/{queue}/resume",
            (&Method::POST, ["v1", "jobs"]) => "/v1/jobs",
            (&Method::GET, ["v1", "jobs", _]) => "/v1/jobs/{id}",
            (_, ["v1", ..]) => "unknown",
            _ => "unknown",
        };
        if route == "unknown" {
            return (route, Err(err(StatusCode::NOT_FOUND, "not_found", format!("no route {method} {path}"))));
        }
        if route == "/v1/openapi.json" {
            let doc: Value = serde_json::from_str(OPENAPI).expect("the OpenAPI document is valid JSON");
            return (route, Ok((StatusCode::OK, doc)));
        }
        if let Err(e) = self.authorize(&req) {
            return (route, Err(e));
        }
        let Some(broker) = self.broker.get() else {
            return (
                route,
                Err(err(StatusCode::SERVICE_UNAVAILABLE, "redis_unavailable", "not connected to Redis yet")),
            );
        };
        let q = query(&req);
        let answer = match route {
            "/v1/queues" => self.queues(broker).await,
            "/v1/queues/{queue}/jobs" => self.list(broker, p[2], &q).await,
            "/v1/jobs" => match body(req).await {
                Ok(b) => self.enqueue(broker, &b, &q).await,
                Err(e) => Err(e),
            },
            "/v1/jobs/{id}" => self.job(broker, p[2], &q).await,
            _ => {
                let action = p[3].to_string();
                let queue = p[2].to_string();
                match body(req).await {
                    Ok(b) => self.act(broker, &queue, &action, &b).await,
                    Err(e) => Err(e),
                }
            }
        };
        (route, answer)
    }

    fn authorize(&self, req: &Request<Incoming>) -> Result<(), ApiError> {
        if self.tokens.is_empty() {
            return Ok(());
        }
        let presented = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
            .ok_or_else(|| {
                err(StatusCode::UNAUTHORIZED, "unauthorized", "an Authorization: Bearer token is required")
            })?;
        match self.tokens.role(presented) {
            None => Err(err(StatusCode::UNAUTHORIZED, "unauthorized", "the token is not accepted")),
            Some(Role::ReadOnly) if req.method() != Method::GET => {
                Err(err(StatusCode::FORBIDDEN, "forbidden", "a read-only token may only GET"))
            }
            Some(_) => Ok(()),
        }
    }

    async fn known(&self, broker: &Broker, queue: &str) -> Result<(), ApiError> {
        queue_param(Some(queue), "queue")?;
        if broker.queue_exists(queue).await? {
            Ok(())
        } else {
            Err(err(StatusCode::NOT_FOUND, "not_found", format!("no queue named {queue:?}")))
        }
    }

    /// Every queue's stats, read at most once per [`STATS_TTL`] however
    /// many clients ask (one refresh at a time; the others wait for it).
    async fn queues(&self, broker: &Broker) -> Answer {
        let mut cached = self.stats.lock().await;
        if let Some((at, v)) = cached.as_ref() {
            if at.elapsed() < STATS_TTL {
                return Ok((StatusCode::OK, v.clone()));
            }
        }
        let mut queues = serde_json::Map::new();
        for (q, s) in broker.all_queue_stats().await? {
            queues.insert(q, serde_json::to_value(s).expect("stats serialize"));
        }
        let v = json!({ "queues": queues });
        *cached = Some((Instant::now(), v.clone()));
        Ok((StatusCode::OK, v))
    }

    async fn enqueue(&self, broker: &Broker, body: &[u8], q: &[(String, String)]) -> Answer {
        let default_queue =
            queue_param(param(q, "queue"), "query parameter queue")?.unwrap_or_else(|| "default".into());
        let value = parse_json(body)?;
        let (items, single) = match value {
            Value::Array(items) => (items, false),
            other => (vec![other], true),
        };
        if items.is_empty() {
            return Err(invalid("no job specs"));
        }
        if items.len() > MAX_ITEMS {
            return Err(invalid(format!("{} jobs in one request; at most {MAX_ITEMS}", items.len())));
        }
        let mut jobs = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let size = item.to_string().len();
            if size > crate::job::MAX_SPEC_BYTES {
                return Err(invalid(format!("item {} (counting from 1): {size} bytes, over the 1 MiB limit", i + 1)));
            }
            let spec = crate::job::spec_from_value(item).map_err(|e| {
                let at = if single { String::new() } else { format!("item {} (counting from 1): ", i + 1) };
                ApiError {
                    status: StatusCode::BAD_REQUEST,
                    code: "invalid_job",
                    message: format!("{at}{e} (nothing was enqueued)"),
                    field: e.field.clone(),
                }
            })?;
            let queue = spec.queue.clone().unwrap_or_else(|| default_queue.clone());
            let defaults = Defaults { queue: queue.clone(), max_retries: 3, delay: None, idempotency_key: None };
            jobs.push((queue.clone(), defaults.new_job(broker, &queue, spec)));
        }
        // One batched request per queue, in order; concurrent requests share
        // script calls.
        let enqueuer = self.enqueuer.get().expect("set with the broker");
        let order: Vec<(String, String)> = jobs.iter().map(|(q, j)| (q.clone(), j.id.clone())).collect();
        let groups = crate::group::group_by(jobs);
        let names: Vec<String> = groups.iter().map(|(q, _)| q.clone()).collect();
        let answers = futures::future::join_all(groups.into_iter().map(|(queue, js)| enqueuer.call(queue, js))).await;
        let mut flags = std::collections::HashMap::new();
        for (queue, a) in names.iter().zip(answers) {
            flags.insert(queue.as_str(), a?.into_iter());
        }
        let out: Vec<Value> = order
            .iter()
            .map(|(queue, id)| {
                let ok = flags.get_mut(queue.as_str()).and_then(Iterator::next).unwrap_or(false);
                json!({"id": id, "queue": queue, "status": if ok { "enqueued" } else { "duplicate" }})
            })
            .collect();
        let v = if single { out.into_iter().next().unwrap_or(Value::Null) } else { Value::Array(out) };
        Ok((StatusCode::OK, v))
    }

    async fn job(&self, broker: &Broker, id: &str, q: &[(String, String)]) -> Answer {
        let queue = queue_param(param(q, "queue"), "query parameter queue")?;
        let wait = duration_param(q, "wait")?.map(|d| d.min(MAX_WAIT));
        let deadline = Instant::now() + wait.unwrap_or_default();
        let mut poll = Duration::from_millis(20);
        loop {
            let mut found = broker.find_job(id, queue.as_deref()).await?;
            let job = match found.len() {
                0 => return Err(err(StatusCode::NOT_FOUND, "not_found", format!("job {id:?} not found"))),
                1 => found.remove(0),
                _ => {
                    let qs: Vec<&str> = found.iter().map(|j| j.queue.as_str()).collect();
                    return Err(err(
                        StatusCode::CONFLICT,
                        "ambiguous",
                        format!("job {id:?} is in several queues ({}); say which with ?queue=", qs.join(", ")),
                    ));
                }
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if job.is_finished() || left.is_zero() {
                return Ok((StatusCode::OK, serde_json::to_value(job).expect("jobs serialize")));
            }
            tokio::time::sleep(poll.min(left)).await;
            poll = (poll * 2).min(Duration::from_secs(1));
        }
    }

    async fn list(&self, broker: &Broker, queue: &str, q: &[(String, String)]) -> Answer {
        self.known(broker, queue).await?;
        let state: JobState = param(q, "state")
            .ok_or_else(|| invalid("query parameter state is required"))?
            .parse()
            .map_err(|e: String| invalid(format!("state: {e}")))?;
        let limit = match param(q, "limit") {
            None => PAGE.0,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|&n| (1..=PAGE.1).contains(&n))
                .ok_or_else(|| invalid(format!("limit: expected an integer from 1 to {}", PAGE.1)))?,
        };
        let cursor: Option<Cursor> =
            param(q, "cursor").map(|c| c.parse().map_err(|e: String| invalid(format!("cursor: {e}")))).transpose()?;
        let nonempty = |name: &str| param(q, name).filter(|v| !v.is_empty()).map(str::to_string);
        let filter = Filter { kind: nonempty("kind"), search: nonempty("search"), since: duration_param(q, "since")? };
        let page = broker.finished(queue, state, &filter, cursor.as_ref(), limit).await?;
        Ok((StatusCode::OK, json!({"jobs": page.jobs, "next_cursor": page.next.map(|c| c.to_string())})))
    }

    async fn act(&self, broker: &Broker, queue: &str, action: &str, body: &[u8]) -> Answer {
        self.known(broker, queue).await?;
        let k = broker.keys(queue);
        if action == "pause" || action == "resume" {
            let pause = action == "pause";
            let was = broker.is_paused(&k).await?;
            if was != pause {
                broker.set_paused(&k, pause).await?;
                if !pause {
                    let _: Result<i64, _> = fred::interfaces::ListInterface::lpush(broker.client(), &k.signal, 1).await;
                }
            }
            return Ok((StatusCode::OK, json!({"queue": queue, "paused": pause, "changed": was != pause})));
        }
        let v = if body.is_empty() { json!({}) } else { parse_json(body)? };
        let ids = v.get("ids");
        let all = v.get("all").and_then(Value::as_bool).unwrap_or(false);
        match (ids, all) {
            (Some(Value::Array(ids)), false) => {
                if ids.len() > MAX_ITEMS {
                    return Err(invalid(format!("{} ids in one request; at most {MAX_ITEMS}", ids.len())));
                }
                let ids: Vec<String> = ids
                    .iter()
                    .map(|i| i.as_str().map(str::to_string))
                    .collect::<Option<_>>()
                    .ok_or_else(|| ApiError { field: Some("ids".into()), ..invalid("ids must be strings") })?;
                let mut results = Vec::with_capacity(ids.len());
                let mut changed = 0;
                for id in &ids {
                    let outcome = match action {
                        "requeue" => match broker.requeue(&k, std::slice::from_ref(id), 1).await? {
                            1 => "requeued",
                            _ => "not_dead",
                        },
                        "cancel" => outcome(broker.cancel(&k, id).await?, "cancelled"),
                        _ => outcome(broker.delete_job(&k, id).await?, "deleted"),
                    };
                    changed += matches!(outcome, "requeued" | "cancelled" | "deleted") as u64;
                    results.push(json!({"id": id, "outcome": outcome}));
                }
                Ok((StatusCode::OK, json!({"queue": queue, "changed": changed, "results": results})))
            }
            (None, true) => {
                let state = v
                    .get("state")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError { field: Some("state".into()), ..invalid("\"all\" needs a \"state\"") })?;
                let allowed: &[&str] = match action {
                    "requeue" => &["dead"],
                    "cancel" => &["pending", "scheduled"],
                    _ => &["pending", "scheduled", "dead", "completed"],
                };
                if !allowed.contains(&state) {
                    return Err(ApiError {
                        field: Some("state".into()),
                        ..invalid(format!("{action} of all jobs works on state {}", allowed.join(" or ")))
                    });
                }
                let n = crate::cmd::admin::count(&broker.queue_stats(queue).await?, state);
                let changed = if action == "requeue" {
                    crate::cmd::admin::drain(n, |limit| broker.requeue(&k, &[], limit)).await?
                } else {
                    crate::cmd::admin::drain(n, |limit| broker.purge(&k, state, limit)).await?
                };
                Ok((StatusCode::OK, json!({"queue": queue, "changed": changed})))
            }
            _ => Err(invalid("the body is {\"ids\":[...]} or {\"all\":true,\"state\":S}")),
        }
    }
}

/// The word for a cancel or delete outcome; `done` when it happened.
fn outcome(c: Cancel, done: &'static str) -> &'static str {
    match c {
        Cancel::Cancelled => done,
        Cancel::Running => "running",
        Cancel::Dead => "dead",
        Cancel::Completed => "completed",
        Cancel::TooDeep => "too_deep",
        Cancel::NotFound => "not_found",
    }
}

/// The OpenAPI 3.1 document of every route.
pub const OPENAPI: &str = include_str!("serve/openapi.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        let t = Tokens(vec![
            (b"admin-token-123456".to_vec(), Role::Admin),
            (b"reader-token-123456".to_vec(), Role::ReadOnly),
        ]);
        assert_eq!(t.role(b"reader-token-123456"), Some(Role::ReadOnly));
        assert_eq!(t.role(b"admin-token-123456"), Some(Role::Admin));
        assert_eq!(t.role(b"admin-token-12345"), None);
    }

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
