//! `dtq serve` over real HTTP: enqueue with produce's validation and
//! answers, batched script calls for bursts of requests, tokens (admin and
//! read-only), limits, every route, and Redis going away and coming back.

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::time::Duration;

struct Serve {
    port: u16,
    proc: Proc,
}

fn serve(d: &Dtq, extra: &[&str]) -> Serve {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let proc = d.spawn(&[&["serve", "--listen", &addr], extra].concat());
    // Ready: listening and connected to Redis.
    wait_until(Duration::from_secs(10), || get(port, "/ready").0 == 200);
    Serve { port, proc }
}

/// One request: (status, JSON body or Null).
fn call(port: u16, method: &str, path: &str, body: Option<&str>, token: Option<&str>) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("Authorization", a)).into_iter().collect();
    let (status, v, _) = call_with(port, method, path, body, &headers);
    (status, v)
}

/// One request with these headers: (status, JSON body or Null, the
/// response's headers as text).
fn call_with(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let body = body.unwrap_or("");
    let auth: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    // A server that refuses a body early closes the connection: the answer
    // is still there to read.
    let _ = write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let (head, text) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (status, serde_json::from_str(text).unwrap_or(Value::Null), head.to_string())
}

/// The `name=value` of the `Set-Cookie` header of a response's headers.
fn set_cookie(head: &str) -> String {
    let set = head.lines().find(|l| l.to_lowercase().starts_with("set-cookie:")).expect("a cookie");
    set.split_once(':').unwrap().1.trim().split(';').next().unwrap().to_string()
}

fn token_file(tokens: &[&str]) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), tokens.join("\n") + "\n").unwrap();
    f
}

#[test]
fn enqueue_validates_like_produce_and_answers_per_job() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "serve-enqueue");
    let s = serve(&d, &[]);
    let (code, one) = call(s.port, "POST", "/v1/jobs", Some(r#"{"kind":"echo","payload":{"a":1},"id":"j1"}"#), None);
    assert_eq!((code, one.clone()), (200, json!({"id":"j1","queue":"default","status":"enqueued"})));
    let (code, many) = call(
        s.port,
        "POST",
        "/v1/jobs?queue=other",
        Some(r#"[{"kind":"noop"},{"kind":"noop","id":"j1","queue":"default"}]"#),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(many[0]["queue"], "other");
    assert_eq!(many[0]["status"], "enqueued");
    assert_eq!(many[1], json!({"id":"j1","queue":"default","status":"duplicate"}));
    // An invalid item rejects the whole request: nothing is written.
    let before = d.stat("other", "pending");
    let (code, e) = call(
        s.port,
        "POST",
        "/v1/jobs?queue=other",
        Some(r#"[{"kind":"noop"},{"kind":"noop","max_retries":"x"}]"#),
        None,
    );
    assert_eq!(code, 400);
    assert_eq!(e["error"]["code"], "invalid_job");
    assert_eq!(e["error"]["field"], "max_retries");
    assert!(e["error"]["message"].as_str().unwrap().starts_with("item 2 (counting from 1)"), "{e}");
    assert_eq!(d.stat("other", "pending"), before);
    for (body, says) in [
        ("not json", "not valid JSON"),
        ("[]", "no job specs"),
        (r#"{"kind":"noop","bogus":1}"#, "unknown field"),
        (r#"{"kind":"noop","queue":"bad name"}"#, "queue"),
    ] {
        let (code, e) = call(s.port, "POST", "/v1/jobs", Some(body), None);
        assert_eq!(code, 400, "{body}");
        assert!(e["error"]["message"].as_str().unwrap().contains(says), "{body}: {e}");
    }
    let big = format!(r#"{{"kind":"noop","payload":"{}"}}"#, "x".repeat(9 << 20));
    let (code, e) = call(s.port, "POST", "/v1/jobs", Some(&big), None);
    assert_eq!((code, e["error"]["code"].as_str()), (413, Some("too_large")));
    let many: Vec<Value> = (0..1001).map(|_| json!({"kind":"noop"})).collect();
    let (code, _) = call(s.port, "POST", "/v1/jobs", Some(&Value::Array(many).to_string()), None);
    assert_eq!(code, 400, "at most 1,000 jobs a request");
}

#[test]
fn a_burst_of_single_job_requests_shares_script_calls() {
    let redis = Redis::start();
    let d = Dtq::new(&redis, "serve-burst");
    let s = serve(&d, &[]);
    call(s.port, "POST", "/v1/jobs", Some(r#"{"kind":"noop"}"#), None);
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let port = s.port;
    let threads: Vec<_> = (0..200)
        .map(|i| {
            std::thread::spawn(move || {
                call(port, "POST", "/v1/jobs", Some(&format!(r#"{{"kind":"noop","id":"b{i}"}}"#)), None).0
            })
        })
        .collect();
    assert!(threads.into_iter().all(|t| t.join().unwrap() == 200));
    assert_eq!(d.stat("default", "pending"), 201);
    let stats = redis.cli(&["INFO", "commandstats"]);
    let calls: u64 = stats
        .lines()
        .find(|l| l.starts_with("cmdstat_evalsha:"))
        .and_then(|l| l.split("calls=").nth(1)?.split(',').next()?.parse().ok())
        .unwrap_or(0);
    eprintln!("200 concurrent single-job requests: {calls} enqueue script calls");
    assert!((1..200).contains(&calls), "{calls} script calls for 200 requests: not batched");
}

#[test]
fn tokens_guard_every_route_and_read_only_tokens_only_read() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "serve-auth");
    let admin = token_file(&["old-admin-token-0001", "new-admin-token-0002"]);
    let reader = token_file(&["# the dashboards", "reader-token-00000001"]);
    let s = serve(
        &d,
        &["--token-file", admin.path().to_str().unwrap(), "--read-only-token-file", reader.path().to_str().unwrap()],
    );
    let job = Some(r#"{"kind":"noop","id":"a1"}"#);
    assert_eq!(call(s.port, "POST", "/v1/jobs", job, None).0, 401);
    assert_eq!(call(s.port, "POST", "/v1/jobs", job, Some("wrong-token-but-long-enough")).0, 401);
    let (code, e) = call(s.port, "POST", "/v1/jobs", job, Some("reader-token-00000001"));
    assert_eq!((code, e["error"]["code"].as_str()), (403, Some("forbidden")));
    // Both admin tokens work (rotation).
    assert_eq!(call(s.port, "POST", "/v1/jobs", job, Some("old-admin-token-0001")).0, 200);
    assert_eq!(call(s.port, "POST", "/v1/queues/default/pause", None, Some("new-admin-token-0002")).0, 200);
    assert_eq!(call(s.port, "GET", "/v1/queues", None, Some("reader-token-00000001")).0, 200);
    assert_eq!(call(s.port, "GET", "/v1/queues", None, None).0, 401);
    assert_eq!(get(s.port, "/health").0, 200, "ops routes need no token");
    assert_eq!(call(s.port, "GET", "/v1/openapi.json", None, None).0, 200);
    let log = s.proc.log_text();
    assert!(!log.contains("admin-token") && !log.contains("reader-token"), "a token in the log: {log}");
    assert!(log.contains("route=\"/v1/jobs\"") && log.contains("code=401"), "{log}");
    let (_, m) = get(s.port, "/metrics");
    assert!(m.contains(r#"dtq_http_requests_total{route="/v1/jobs",code="403"} 1"#), "{m}");
    assert!(m.contains("dtq_http_request_duration_seconds_bucket"), "{m}");

    // Rotation without a restart: the old token leaves the file, a new one
    // comes; within a few seconds the server follows, and the old token's
    // sessions end with it.
    let json = [("Content-Type", "application/json")];
    let (_, _, head) = call_with(s.port, "POST", "/v1/session", Some(r#"{"token":"old-admin-token-0001"}"#), &json);
    let cookie = set_cookie(&head);
    assert_eq!(call_with(s.port, "GET", "/v1/queues", None, &[("Cookie", &cookie)]).0, 200);
    std::fs::write(admin.path(), "new-admin-token-0002\nthird-admin-token-03\n").unwrap();
    wait_until(Duration::from_secs(5), || {
        call(s.port, "GET", "/v1/queues", None, Some("old-admin-token-0001")).0 == 401
    });
    assert_eq!(call_with(s.port, "GET", "/v1/queues", None, &[("Cookie", &cookie)]).0, 401, "its session ended");
    assert_eq!(call(s.port, "POST", "/v1/queues/default/resume", None, Some("third-admin-token-03")).0, 200);
    assert_eq!(call(s.port, "GET", "/v1/queues", None, Some("new-admin-token-0002")).0, 200);
    // A change that leaves a file without a token is refused: the tokens
    // read before stay, and the log says why.
    std::fs::write(admin.path(), "# emptied by mistake\n").unwrap();
    s.proc.wait_log("still accepting the tokens read before", Duration::from_secs(5));
    assert_eq!(call(s.port, "GET", "/v1/queues", None, Some("third-admin-token-03")).0, 200);
    assert_eq!(call(s.port, "GET", "/v1/queues", None, Some("reader-token-00000001")).0, 200);
    assert!(s.proc.log_text().contains("holds no token"), "{}", s.proc.log_text());
}

#[test]
fn serve_refuses_an_open_non_loopback_address_and_bad_token_files() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "serve-refuse");
    let addr = format!("0.0.0.0:{}", free_port());
    let o = d.run(&["serve", "--listen", &addr]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("without authentication"), "{}", stderr(&o));
    let short = token_file(&["short"]);
    let o = d.run(&["serve", "--token-file", short.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("shorter than 16"), "{}", stderr(&o));
    let o = d.run(&["serve", "--token-file", "/no/such/file"]);
    assert_eq!(o.status.code(), Some(2));
    let mut open = d.spawn(&["serve", "--listen", &addr, "--insecure-no-auth"]);
    let port: u16 = addr.rsplit(':').next().unwrap().parse().unwrap();
    wait_until(Duration::from_secs(10), || get(port, "/health").0 == 200);
    open.terminate(Duration::from_secs(10));
}

#[test]
fn every_route_answers_what_it_changed() {
    let redis = Redis::shared();
    every_route(&Dtq::new(&redis, "serve-routes"));
}

#[test]
fn every_route_answers_what_it_changed_on_a_cluster() {
    let c = Cluster::shared();
    let d = c.dtq("serve-routes-cluster");
    every_route(&d);
    // One request with jobs for queues on different nodes: each queue's jobs
    // go to its own node, answered in order.
    let s = serve(&d, &[]);
    let queues = ["emails", "billing", "reports", "thumbs"];
    let nodes: std::collections::HashSet<u16> =
        queues.iter().map(|q| c.node_of(&format!("x:{{{q}}}:pending"))).collect();
    assert!(nodes.len() >= 2, "{nodes:?}");
    let jobs: Vec<Value> = (0..40).map(|i| json!({"kind":"noop","queue":queues[i % 4],"id":format!("c{i}")})).collect();
    let (code, answers) = call(s.port, "POST", "/v1/jobs", Some(&Value::from(jobs).to_string()), None);
    assert_eq!(code, 200, "{answers}");
    for (i, a) in answers.as_array().unwrap().iter().enumerate() {
        assert_eq!((a["id"].as_str(), a["queue"].as_str()), (Some(&*format!("c{i}")), Some(queues[i % 4])));
    }
    let (_, q) = call(s.port, "GET", "/v1/queues", None, None);
    for queue in queues {
        assert_eq!(q["queues"][queue]["pending"], 10, "{q}");
    }
}

/// Every route of the API, on the Redis `d` points at.
fn every_route(d: &Dtq) {
    let s = serve(d, &[]);
    let p = s.port;
    let post = |path: &str, body: &str| call(p, "POST", path, Some(body), None);
    for i in 0..5 {
        post("/v1/jobs", &format!(r#"{{"kind":"nope","id":"d{i}"}}"#));
    }
    post("/v1/jobs", r#"{"kind":"noop","id":"later","delay":"1h"}"#);
    post("/v1/jobs", r#"{"kind":"echo","payload":"hi","id":"ok1"}"#);
    let mut w = d.worker(&[]);
    wait_until(Duration::from_secs(10), || d.stat("default", "dead") == 5 && d.stat("default", "completed") == 1);
    w.terminate(Duration::from_secs(10));
    let (code, q) = call(p, "GET", "/v1/queues", None, None);
    assert_eq!(code, 200);
    assert_eq!(q["queues"]["default"]["dead"], 5);
    // Pages of 2 through the dead set, by cursor.
    let mut ids = Vec::new();
    let mut path = "/v1/queues/default/jobs?state=dead&limit=2".to_string();
    loop {
        let (code, page) = call(p, "GET", &path, None, None);
        assert_eq!(code, 200, "{page}");
        ids.extend(page["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/queues/default/jobs?state=dead&limit=2&cursor={c}"),
            None => break,
        }
    }
    ids.sort();
    assert_eq!(ids, ["d0", "d1", "d2", "d3", "d4"]);
    let (_, page) = call(p, "GET", "/v1/queues/default/jobs?state=completed&kind=echo", None, None);
    assert_eq!(page["jobs"][0]["result"], "hi");
    let (_, page) = call(p, "GET", "/v1/queues/default/jobs?state=scheduled", None, None);
    assert_eq!(page["jobs"][0]["id"], "later");
    assert!(page["jobs"][0]["run_at"].is_string());
    assert_eq!(call(p, "GET", "/v1/queues/default/jobs?state=bogus", None, None).0, 400);
    assert_eq!(call(p, "GET", "/v1/queues/nosuch/jobs?state=dead", None, None).0, 404);
    // One job, with its history; unknown → 404.
    let (code, j) = call(p, "GET", "/v1/jobs/ok1?queue=default", None, None);
    assert_eq!((code, j["state"].as_str(), j["history"][0]["outcome"].as_str()), (200, Some("completed"), Some("ok")));
    assert_eq!(call(p, "GET", "/v1/jobs/nope", None, None).0, 404);
    // Actions.
    let (_, r) = post("/v1/queues/default/requeue", r#"{"ids":["d0","ok1"]}"#);
    assert_eq!(r["changed"], 1);
    assert_eq!(r["results"][1]["outcome"], "not_dead");
    let (_, r) = post("/v1/queues/default/cancel", r#"{"ids":["later","d1"]}"#);
    assert_eq!(r["results"], json!([{"id":"later","outcome":"cancelled"},{"id":"d1","outcome":"dead"}]));
    let (_, r) = post("/v1/queues/default/delete", r#"{"ids":["d1","ok1"]}"#);
    assert_eq!(r["changed"], 2);
    let (_, r) = post("/v1/queues/default/requeue", r#"{"all":true,"state":"dead"}"#);
    assert_eq!(r["changed"], 3);
    let (code, r) = post("/v1/queues/default/cancel", r#"{"all":true,"state":"dead"}"#);
    assert_eq!((code, r["error"]["field"].as_str()), (400, Some("state")));
    let (_, r) = post("/v1/queues/default/delete", r#"{"all":true,"state":"pending"}"#);
    assert_eq!(r["changed"], 4, "d0 and the three requeued");
    assert_eq!(d.stat("default", "pending"), 0);
    let (_, r) = post("/v1/queues/default/pause", "");
    assert_eq!(r, json!({"queue":"default","paused":true,"changed":true}));
    let (_, r) = post("/v1/queues/default/pause", "");
    assert_eq!(r["changed"], false);
    let (_, r) = post("/v1/queues/default/resume", "");
    assert_eq!(r["paused"], false);
    assert_eq!(call(p, "DELETE", "/v1/queues", None, None).0, 405, "a known path, another method");
    assert_eq!(call(p, "GET", "/v1/nothing", None, None).0, 404);
    // Waiting for a job's end.
    post("/v1/jobs", r#"{"kind":"sleep","payload":{"ms":300},"id":"waited"}"#);
    let _w = d.worker(&[]);
    let (code, j) = call(p, "GET", "/v1/jobs/waited?wait=10s", None, None);
    assert_eq!((code, j["state"].as_str()), (200, Some("completed")));
}

#[test]
fn serve_answers_503_while_redis_is_away_and_recovers() {
    let mut redis = Redis::start();
    let d = Dtq::new(&redis, "serve-redis-away");
    let s = serve(&d, &[]);
    assert_eq!(call(s.port, "POST", "/v1/jobs", Some(r#"{"kind":"noop"}"#), None).0, 200);
    wait_until(Duration::from_secs(5), || get(s.port, "/ready").0 == 200);
    redis.kill();
    let (code, e) = call(s.port, "POST", "/v1/jobs", Some(r#"{"kind":"noop"}"#), None);
    assert_eq!((code, e["error"]["code"].as_str()), (503, Some("redis_unavailable")), "{e}");
    wait_until(Duration::from_secs(10), || get(s.port, "/ready").0 == 503);
    assert_eq!(get(s.port, "/health").0, 200, "still alive");
    redis.restart();
    wait_until(Duration::from_secs(20), || call(s.port, "POST", "/v1/jobs", Some(r#"{"kind":"noop"}"#), None).0 == 200);
    wait_until(Duration::from_secs(10), || get(s.port, "/ready").0 == 200);
}

/// Whether `v` conforms to `schema` (the subset of JSON Schema that
/// openapi.json uses: $ref, type, required, properties,
/// additionalProperties, items, enum, const, oneOf); the reason if not.
fn conforms(v: &Value, schema: &Value, doc: &Value) -> Result<(), String> {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap();
        return conforms(v, &doc["components"]["schemas"][name], doc).map_err(|e| format!("{name}: {e}"));
    }
    if let Some(options) = schema["oneOf"].as_array() {
        let ok = options.iter().filter(|o| conforms(v, o, doc).is_ok()).count();
        return if ok == 1 { Ok(()) } else { Err(format!("{ok} of oneOf match {v}")) };
    }
    if let Some(values) = schema["enum"].as_array() {
        if !values.contains(v) {
            return Err(format!("{v} not in {values:?}"));
        }
    }
    if !schema["const"].is_null() && &schema["const"] != v {
        return Err(format!("{v} is not {}", schema["const"]));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let type_of = match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fits = types.is_empty() || types.contains(&type_of) || (type_of == "integer" && types.contains(&"number"));
    if !fits {
        return Err(format!("{v} is {type_of}, not {types:?}"));
    }
    if let Value::Object(o) = v {
        for r in schema["required"].as_array().into_iter().flatten() {
            if !o.contains_key(r.as_str().unwrap()) {
                return Err(format!("missing {r} in {v}"));
            }
        }
        for (k, field) in o {
            match &schema["properties"][k] {
                Value::Null => match &schema["additionalProperties"] {
                    Value::Bool(false) => return Err(format!("unexpected field {k}")),
                    Value::Object(_) => conforms(field, &schema["additionalProperties"], doc)?,
                    _ => {}
                },
                s => conforms(field, s, doc).map_err(|e| format!("{k}: {e}"))?,
            }
        }
    }
    if let (Value::Array(items), Value::Object(_)) = (v, &schema["items"]) {
        for i in items {
            conforms(i, &schema["items"], doc)?;
        }
    }
    Ok(())
}

/// The answer to one request, checked against the document's schema for
/// that route, method and status.
fn checked(doc: &Value, port: u16, method: &str, path: &str, route: &str, body: Option<&str>) -> (u16, Value) {
    let (code, v) = call(port, method, path, body, None);
    let op = &doc["paths"][route][method.to_lowercase()];
    assert!(op.is_object(), "{method} {route} is not documented");
    let schema = &op["responses"][code.to_string()]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {route} answered {code}, which is not documented");
    if let Err(e) = conforms(&v, schema, doc) {
        panic!("{method} {path} ({code}) does not conform: {e}");
    }
    (code, v)
}

#[test]
fn responses_conform_to_the_openapi_document() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "serve-conform");
    let s = serve(&d, &[]);
    let doc = call(s.port, "GET", "/v1/openapi.json", None, None).1;
    let p = s.port;
    // The checker itself rejects what does not fit.
    let enqueued = json!({"$ref": "#/components/schemas/Enqueued"});
    assert!(conforms(&json!({"id": "a", "queue": "q", "status": "maybe"}), &enqueued, &doc).is_err());
    assert!(conforms(&json!({"id": "a", "queue": "q"}), &enqueued, &doc).is_err());
    assert!(conforms(&json!({"id": "a", "queue": "q", "status": "duplicate"}), &enqueued, &doc).is_ok());
    let c = |m: &str, path: &str, route: &str, body: Option<&str>| checked(&doc, p, m, path, route, body);
    c("POST", "/v1/jobs", "/v1/jobs", Some(r#"{"kind":"echo","payload":[1],"id":"c1"}"#));
    c("POST", "/v1/jobs", "/v1/jobs", Some(r#"[{"kind":"nope","id":"c2"},{"kind":"noop","id":"c3","delay":"1h"}]"#));
    c("POST", "/v1/jobs", "/v1/jobs", Some(r#"{"kind":""}"#));
    c("GET", "/v1/jobs/c1", "/v1/jobs/{id}", None);
    let mut w = d.worker(&[]);
    wait_until(Duration::from_secs(10), || d.stat("default", "dead") == 1 && d.stat("default", "completed") == 1);
    wait_until(Duration::from_secs(10), || call(p, "GET", "/v1/workers", None, None).1["workers"][0].is_object());
    c("GET", "/v1/workers", "/v1/workers", None);
    c("GET", "/v1/overview", "/v1/overview", None);
    w.terminate(Duration::from_secs(10));
    for id in ["c1", "c2", "c3", "none"] {
        c("GET", &format!("/v1/jobs/{id}"), "/v1/jobs/{id}", None);
    }
    c("GET", "/v1/queues", "/v1/queues", None);
    for state in ["pending", "scheduled", "inflight", "dead", "completed", "bogus"] {
        c("GET", &format!("/v1/queues/default/jobs?state={state}&limit=1"), "/v1/queues/{queue}/jobs", None);
    }
    c("POST", "/v1/queues/default/requeue", "/v1/queues/{queue}/requeue", Some(r#"{"ids":["c2","c1"]}"#));
    c("POST", "/v1/queues/default/cancel", "/v1/queues/{queue}/cancel", Some(r#"{"ids":["c3"]}"#));
    c("POST", "/v1/queues/default/delete", "/v1/queues/{queue}/delete", Some(r#"{"all":true,"state":"completed"}"#));
    c("POST", "/v1/queues/default/delete", "/v1/queues/{queue}/delete", Some(r#"{"oops":1}"#));
    c("POST", "/v1/queues/default/pause", "/v1/queues/{queue}/pause", None);
    c("POST", "/v1/queues/default/resume", "/v1/queues/{queue}/resume", None);
    c("POST", "/v1/queues/nosuch/pause", "/v1/queues/{queue}/pause", None);
    c("GET", "/v1/session", "/v1/session", None);
}

#[test]
fn the_overview_counts_rates_and_alerts_and_is_read_once_a_second_for_everyone() {
    let redis = Redis::start_with(&["--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"]);
    let d = Dtq::new(&redis, "serve-overview");
    let s = serve(&d, &[]);
    let p = s.port;
    let jobs: Vec<Value> =
        (0..200).map(|i| json!({"kind": if i < 150 { "noop" } else { "nope" }, "max_retries": 0})).collect();
    call(p, "POST", "/v1/jobs", Some(&Value::from(jobs).to_string()), None);
    let (code, o) = call(p, "GET", "/v1/overview", None, None);
    assert_eq!(code, 200, "{o}");
    assert_eq!(o["queues"]["default"]["pending"], 200);
    assert_eq!(o["redis"]["maxmemory"], 100 * 1024 * 1024);
    assert_eq!(o["redis"]["mode"], "standalone");
    let alerts = o["alerts"].to_string();
    assert!(alerts.contains("maxmemory-policy is allkeys-lru"), "{alerts}");
    // Work happens; the next samples show rates and the chart gets points.
    let mut w = d.worker(&[]);
    wait_until(Duration::from_secs(10), || d.stat("default", "pending") == 0);
    w.terminate(Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(1100));
    let (_, o) = call(p, "GET", "/v1/overview", None, None);
    assert_eq!(
        (o["queues"]["default"]["processed"].as_u64(), o["queues"]["default"]["dead"].as_u64()),
        (Some(150), Some(50))
    );
    assert!(!o["series"].as_array().unwrap().is_empty(), "{o}");
    let rate = o["queues"]["default"]["processed_per_s"].as_f64().unwrap();
    assert!(rate > 0.0, "processed per second after 150 jobs: {o}");
    // However many ask within a second, Redis is read once.
    let calls = |r: &Redis| {
        r.cli(&["INFO", "commandstats"]).lines().find(|l| l.starts_with("cmdstat_info:")).map(str::to_string)
    };
    std::thread::sleep(Duration::from_millis(1100));
    let before = calls(&redis);
    let first = call(p, "GET", "/v1/overview", None, None).1;
    for _ in 0..50 {
        assert_eq!(call(p, "GET", "/v1/overview", None, None).1["sampled_at"], first["sampled_at"]);
    }
    let after = calls(&redis);
    let n = |l: Option<String>| {
        l.and_then(|l| l.split("calls=").nth(1)?.split(',').next()?.parse::<u64>().ok()).unwrap_or(0)
    };
    // (The INFO that read `before` is counted in `after` too.)
    assert_eq!(n(after) - n(before) - 1, 1, "one INFO for 51 overviews");
}

#[test]
fn the_panel_is_served_from_the_binary_with_a_strict_content_security_policy() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "serve-panel");
    let tokens = token_file(&["panel-token-0123456789"]);
    let s = serve(&d, &["--token-file", tokens.path().to_str().unwrap()]);
    // The page and its assets need no token (they hold no data); the API does.
    for (path, kind) in [
        ("/", "text/html"),
        ("/assets/app.js", "text/javascript"),
        ("/assets/app.css", "text/css"),
        ("/assets/uplot.iife.min.js", "text/javascript"),
        ("/assets/uplot.min.css", "text/css"),
    ] {
        let (code, _, head) = call_with(s.port, "GET", path, None, &[]);
        let head = head.to_lowercase();
        assert_eq!(code, 200, "{path}");
        assert!(head.contains(&format!("content-type: {kind}")), "{path}: {head}");
        assert!(
            head.contains("content-security-policy: default-src 'none'; script-src 'self'; style-src 'self'"),
            "{head}"
        );
        assert!(head.contains("x-frame-options: deny") && head.contains("x-content-type-options: nosniff"), "{head}");
    }
    let (_, _, head) = call_with(s.port, "GET", "/", None, &[]);
    assert!(!head.contains("unsafe-inline"));
    // No inline script or style in the page itself.
    let page = get(s.port, "/").1;
    assert!(page.contains("<script src=\"/assets/app.js\" defer></script>"), "{page}");
    for inline in ["<script>", "style=", "onclick", "onload"] {
        assert!(!page.contains(inline), "the page has {inline}");
    }
    assert_eq!(call(s.port, "GET", "/v1/overview", None, None).0, 401);
    assert_eq!(get(s.port, "/assets/nothing.js").0, 404);
}

#[test]
fn the_openapi_document_names_every_route() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "serve-openapi");
    let s = serve(&d, &[]);
    let (code, doc) = call(s.port, "GET", "/v1/openapi.json", None, None);
    assert_eq!(code, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    // The routes the server knows (the ROUTES table of src/serve/mod.rs),
    // each documented with its method, and nothing documented that is not
    // routed.
    let src = include_str!("../src/serve/mod.rs");
    let routed: Vec<(String, &str)> = src
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("(Method::")?;
            let (method, rest) = rest.split_once(',')?;
            Some((method.to_lowercase(), rest.split('"').nth(1)?))
        })
        .collect();
    assert!(routed.len() >= 13, "{routed:?}");
    for (method, path) in &routed {
        assert!(doc["paths"][path][method].is_object(), "route {method} {path} is not in openapi.json");
    }
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            assert!(
                routed.contains(&(method.clone(), path.as_str())),
                "openapi.json documents {method} {path}, which is not routed"
            );
        }
    }
}

#[test]
fn shutdown_lets_requests_in_progress_finish() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "serve-shutdown");
    let mut s = serve(&d, &[]);
    call(s.port, "POST", "/v1/jobs", Some(r#"{"kind":"noop","id":"w1"}"#), None);
    let port = s.port;
    let waiting = std::thread::spawn(move || call(port, "GET", "/v1/jobs/w1?wait=2s", None, None));
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    let status = s.proc.terminate(Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    let (code, job) = waiting.join().unwrap();
    assert_eq!((code, job["state"].as_str()), (200, Some("pending")), "answered, not cut");
    assert!(started.elapsed() >= Duration::from_millis(1200), "the wait ran its course: {:?}", started.elapsed());
}

#[test]
fn the_readme_snippets_enqueue_and_wait_for_a_result_in_curl_python_and_node() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "serve-snippets");
    let tokens = token_file(&["snippet-token-0123456789"]);
    let s = serve(&d, &["--token-file", tokens.path().to_str().unwrap()]);
    let _w = d.worker(&[]);
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/http");
    for (program, file, greeting) in [
        ("sh", "enqueue.sh", "hello from curl"),
        ("python3", "enqueue.py", "hello from Python"),
        ("node", "enqueue.mjs", "hello from Node"),
    ] {
        let out = std::process::Command::new(program)
            .arg(format!("{dir}/{file}"))
            .env("DTQ_URL", format!("http://127.0.0.1:{}", s.port))
            .env("DTQ_TOKEN", "snippet-token-0123456789")
            .output()
            .unwrap_or_else(|e| panic!("{program} {file}: {e} (the suite needs {program})"));
        let text = stdout(&out);
        assert!(out.status.success(), "{file}: {}{}", text, stderr(&out));
        assert!(text.contains("completed") && text.contains(greeting), "{file} printed: {text}");
    }
    // A wrong token: the snippets fail loudly with the API's message.
    let out = std::process::Command::new("python3")
        .arg(format!("{dir}/enqueue.py"))
        .env("DTQ_URL", format!("http://127.0.0.1:{}", s.port))
        .env("DTQ_TOKEN", "wrong")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("401"), "{}", stderr(&out));
}

/// Seconds until the server closes a connection that sends `head` and then
/// one more byte of a header every 500 ms (or, with a body announced, one
/// byte of the body); what the server answered before closing.
fn trickle(port: u16, head: &str) -> (Duration, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let start = std::time::Instant::now();
    s.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(30) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                if s.write_all(b"a").is_err() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    (start.elapsed(), String::from_utf8_lossy(&got).into_owned())
}

#[test]
fn slow_clients_are_cut_off_and_others_are_still_served() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "serve-slow");
    let s = serve(&d, &[]);
    let port = s.port;
    // Headers a byte at a time: cut off after the 5 s header timeout.
    let headers = std::thread::spawn(move || trickle(port, "GET /v1/queues HTTP/1.1\r\nHost: x\r\nX-Slow: "));
    // A body a byte at a time: 408 after the 10 s body timeout.
    let body = std::thread::spawn(move || {
        trickle(
            port,
            "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n[",
        )
    });
    // Meanwhile others are answered at once.
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..20 {
        assert_eq!(call(port, "GET", "/v1/queues", None, None).0, 200);
    }
    let (took, answer) = headers.join().unwrap();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "headers cut off after {took:?}: {answer}"
    );
    let (took, answer) = body.join().unwrap();
    assert!(took >= Duration::from_secs(9) && took < Duration::from_secs(15), "body cut off after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(d.stat("default", "pending"), 0, "nothing of the cut-off body was enqueued");
}

#[test]
fn a_browser_signs_in_once_and_its_session_needs_the_csrf_token_to_change_anything() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "serve-session");
    let admin = token_file(&["admin-token-0123456789"]);
    let reader = token_file(&["reader-token-0123456789"]);
    let s = serve(
        &d,
        &["--token-file", admin.path().to_str().unwrap(), "--read-only-token-file", reader.path().to_str().unwrap()],
    );
    let p = s.port;
    let json = [("Content-Type", "application/json")];
    // Wrong token: 401 and no cookie.
    let (code, e, head) = call_with(p, "POST", "/v1/session", Some(r#"{"token":"wrong-token-0123456789"}"#), &json);
    assert_eq!((code, e["error"]["code"].as_str()), (401, Some("unauthorized")));
    assert!(!head.to_lowercase().contains("set-cookie"));
    assert_eq!(call_with(p, "GET", "/v1/session", None, &[]).0, 401);
    // Signing in sets an HttpOnly, SameSite=Strict cookie.
    let (code, who, head) = call_with(p, "POST", "/v1/session", Some(r#"{"token":"admin-token-0123456789"}"#), &json);
    assert_eq!((code, who["role"].as_str()), (200, Some("admin")), "{who}");
    let set = head.lines().find(|l| l.to_lowercase().starts_with("set-cookie:")).expect("a cookie").to_string();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Path=/"), "{set}");
    let cookie = set_cookie(&head);
    let csrf = who["csrf"].as_str().unwrap().to_string();
    assert!(csrf.len() >= 32);
    let (code, again, _) = call_with(p, "GET", "/v1/session", None, &[("Cookie", &cookie)]);
    assert_eq!((code, again["csrf"].as_str()), (200, Some(csrf.as_str())));
    // Reading with the cookie alone works; changing needs the CSRF token.
    assert_eq!(call_with(p, "GET", "/v1/queues", None, &[("Cookie", &cookie)]).0, 200);
    let job = Some(r#"{"kind":"noop","id":"s1"}"#);
    let (code, e, _) = call_with(p, "POST", "/v1/jobs", job, &[("Cookie", &cookie)]);
    assert_eq!((code, e["error"]["code"].as_str()), (403, Some("forbidden")), "{e}");
    let (code, _, _) =
        call_with(p, "POST", "/v1/jobs", job, &[("Cookie", &cookie), ("X-CSRF-Token", "0".repeat(32).as_str())]);
    assert_eq!(code, 403, "a wrong CSRF token");
    assert_eq!(d.stat("default", "pending"), 0, "nothing was enqueued");
    let (code, _, _) = call_with(p, "POST", "/v1/jobs", job, &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)]);
    assert_eq!(code, 200);
    assert_eq!(d.stat("default", "pending"), 1);
    // A forged or tampered cookie is refused.
    let forged = format!("{}0", cookie);
    assert_eq!(call_with(p, "GET", "/v1/queues", None, &[("Cookie", &forged)]).0, 401);
    // Another origin may change nothing, whatever it holds.
    let (code, _, _) = call_with(
        p,
        "POST",
        "/v1/jobs",
        job,
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf), ("Origin", "http://evil.example"), ("Host", "127.0.0.1")],
    );
    assert_eq!(code, 403);
    let (code, _, _) = call_with(
        p,
        "POST",
        "/v1/jobs",
        job,
        &[("Authorization", "Bearer admin-token-0123456789"), ("Sec-Fetch-Site", "cross-site")],
    );
    assert_eq!(code, 403);
    // A read-only session reads and may not change anything.
    let (_, who, head) = call_with(p, "POST", "/v1/session", Some(r#"{"token":"reader-token-0123456789"}"#), &json);
    assert_eq!(who["role"], "read-only");
    let reader_cookie = set_cookie(&head);
    let reader_csrf = who["csrf"].as_str().unwrap();
    assert_eq!(call_with(p, "GET", "/v1/queues", None, &[("Cookie", &reader_cookie)]).0, 200);
    let (code, _, _) = call_with(
        p,
        "POST",
        "/v1/queues/default/pause",
        None,
        &[("Cookie", &reader_cookie), ("X-CSRF-Token", reader_csrf)],
    );
    assert_eq!(code, 403);
    // Signing out clears the cookie.
    let (code, _, head) = call_with(p, "DELETE", "/v1/session", None, &[("Cookie", &cookie)]);
    assert_eq!(code, 204);
    assert!(head.contains("Max-Age=0"), "{head}");
}

#[test]
fn an_action_on_all_jobs_matching_a_filter_changes_exactly_those() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "serve-filtered-all");
    let s = serve(&d, &[]);
    let p = s.port;
    let mut jobs = Vec::new();
    for i in 0..30 {
        let kind = if i % 3 == 0 { "sms" } else { "email" };
        jobs.push(json!({"kind": kind, "id": format!("j{i}"), "payload": {"n": i}, "delay": "1h"}));
    }
    assert_eq!(call(p, "POST", "/v1/jobs", Some(&Value::from(jobs).to_string()), None).0, 200);
    let (code, r) =
        call(p, "POST", "/v1/queues/default/delete", Some(r#"{"all":true,"state":"scheduled","kind":"sms"}"#), None);
    assert_eq!((code, r["changed"].as_u64(), r["matched"].as_u64()), (200, Some(10), Some(10)), "{r}");
    let (_, page) = call(p, "GET", "/v1/queues/default/jobs?state=scheduled&limit=100", None, None);
    let left: Vec<&str> = page["jobs"].as_array().unwrap().iter().map(|j| j["kind"].as_str().unwrap()).collect();
    assert_eq!(left.len(), 20);
    assert!(left.iter().all(|k| *k == "email"), "{left:?}");
    // Text search, then cancel: only the one whose payload matches.
    let (_, r) = call(
        p,
        "POST",
        "/v1/queues/default/cancel",
        Some(r#"{"all":true,"state":"scheduled","search":"\"n\":29"}"#),
        None,
    );
    assert_eq!(r["changed"], 1, "{r}");
    assert_eq!(d.stat("default", "scheduled"), 19);
    let (code, r) =
        call(p, "POST", "/v1/queues/default/cancel", Some(r#"{"all":true,"state":"scheduled","kind":7}"#), None);
    assert_eq!((code, r["error"]["field"].as_str()), (400, Some("kind")));
}

#[test]
fn schedules_are_managed_over_the_api_with_the_cli_s_validation() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "serve-schedules");
    let s = serve(&d, &[]);
    let p = s.port;
    let doc = call(p, "GET", "/v1/openapi.json", None, None).1;
    let c = |m: &str, path: &str, route: &str, body: Option<&str>| checked(&doc, p, m, path, route, body);
    let (code, r) = c(
        "PUT",
        "/v1/schedules/nightly",
        "/v1/schedules/{name}",
        Some(r#"{"cron":"0 3 * * *","tz":"Europe/Berlin","kind":"report"}"#),
    );
    assert_eq!((code, r["created"].as_bool()), (200, Some(true)), "{r}");
    let (code, r) = c(
        "PUT",
        "/v1/schedules/nightly",
        "/v1/schedules/{name}",
        Some(r#"{"cron":"0 3 * * *","tz":"Europe/Berlin","kind":"report"}"#),
    );
    assert_eq!((code, r["changed"].as_bool()), (200, Some(false)));
    let (code, e) = c(
        "PUT",
        "/v1/schedules/bad",
        "/v1/schedules/{name}",
        Some(r#"{"cron":"0 3 * * *","tz":"Nowhere/City","kind":"report"}"#),
    );
    assert_eq!((code, e["error"]["field"].as_str()), (400, Some("tz")), "{e}");
    let (code, _) =
        c("PUT", "/v1/schedules/bad", "/v1/schedules/{name}", Some(r#"{"name":"other","every":"1m","kind":"k"}"#));
    assert_eq!(code, 400);
    let (_, list) = c("GET", "/v1/schedules", "/v1/schedules", None);
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1, "nothing of the refused ones written: {list}");
    assert!(list["schedules"][0]["next_run"].is_string());
    let (_, r) = c("POST", "/v1/schedules/nightly/trigger", "/v1/schedules/{name}/trigger", None);
    assert!(r["id"].as_str().unwrap().starts_with("cron:nightly:manual:"), "{r}");
    assert_eq!(d.stat("default", "pending"), 1);
    let (_, r) = c("POST", "/v1/schedules/nightly/pause", "/v1/schedules/{name}/pause", None);
    assert_eq!((r["paused"].as_bool(), r["changed"].as_bool()), (Some(true), Some(true)));
    let (_, list) = c("GET", "/v1/schedules", "/v1/schedules", None);
    assert_eq!(
        (list["schedules"][0]["paused"].as_bool(), list["schedules"][0]["last_state"].as_str()),
        (Some(true), Some("pending"))
    );
    c("POST", "/v1/schedules/nightly/resume", "/v1/schedules/{name}/resume", None);
    assert_eq!(c("POST", "/v1/schedules/none/trigger", "/v1/schedules/{name}/trigger", None).0, 404);
    assert_eq!(c("DELETE", "/v1/schedules/nightly", "/v1/schedules/{name}", None).0, 200);
    assert_eq!(c("DELETE", "/v1/schedules/nightly", "/v1/schedules/{name}", None).0, 404);
}
