//! Operability: /health, /ready and /metrics of a real worker, every metric
//! of the contract with its labels, the dashboard's and alert rules' metric
//! names against a real scrape, and JSON logs.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::time::Duration;

/// Metric names (without histogram suffixes) in a Prometheus text scrape.
fn names(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if l.starts_with('#') || l.is_empty() => None,
            None => l.split(['{', ' ']).next(),
        })
        .map(str::to_string)
        .map(|n| n.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count").to_string())
        .collect()
}

/// The series lines of one metric.
fn series<'a>(scrape: &'a str, name: &str) -> Vec<&'a str> {
    scrape.lines().filter(|l| l.starts_with(name) && !l.starts_with('#')).collect()
}

/// Every `dtq_*` metric name mentioned in a file.
fn referenced(path: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("dtq_") {
        let name: String = text[i..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect();
        let name = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
        out.insert(name.to_string());
    }
    out
}

const CONTRACT: &[&str] = &[
    "dtq_tasks_processed_total",
    "dtq_tasks_failed_total",
    "dtq_tasks_retried_total",
    "dtq_tasks_dead_lettered_total",
    "dtq_tasks_recovered_total",
    "dtq_active_processing",
    "dtq_task_duration_seconds",
    "dtq_queue_depth",
    "dtq_rate_limited_total",
    "dtq_circuit_state",
    "dtq_reaper_leader",
];

#[test]
fn metrics_endpoints_and_every_contract_metric_with_its_labels() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "metrics");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let w = d.spawn(&[
        "work",
        "--listen",
        &listen,
        "--queues",
        "mq",
        "--rate-limit",
        "limited=1/1h",
        "--backoff-base",
        "10ms",
        "--backoff-max",
        "20ms",
        "--reap-interval",
        "100ms",
        "--visibility-timeout",
        "1s",
    ]);
    wait_until(Duration::from_secs(10), || get(port, "/ready").0 == 200);
    // Before any job: HELP and TYPE of every metric are there.
    let (_, first) = get(port, "/metrics");
    for m in CONTRACT {
        assert!(first.contains(&format!("# TYPE {m} ")), "no # TYPE for {m} at start-up:\n{first}");
    }
    assert_eq!(get(port, "/health").0, 200);
    assert_eq!(get(port, "/nope").0, 404);
    let f = ndjson(&[
        r#"{"kind":"noop","queue":"mq"}"#.into(),
        r#"{"kind":"fail","queue":"mq","max_retries":1,"payload":{"p":1}}"#.into(),
        r#"{"kind":"echo","queue":"mq"}"#.into(),
        r#"{"kind":"echo","queue":"mq"}"#.into(),
        r#"{"kind":"noop","queue":"mq","id":"stuck"}"#.into(),
    ]);
    // A lease that expired in another worker's hands is recovered by this one's reaper.
    d.ok(&["produce", "--file", f.path().to_str().unwrap()]);
    let ok = eventually(Duration::from_secs(20), || d.stat("mq", "processed") >= 3 && d.stat("mq", "dead") == 1);
    assert!(ok, "{}\n{}", d.stats("mq"), w.log_text());
    redis.cli(&["HSET", &format!("{}:{{mq}}:jobs", d.ns), "lost", r#"{"k":"noop","p":null,"r":3}"#]);
    redis.cli(&["ZADD", &format!("{}:{{mq}}:inflight", d.ns), "1", "lost"]);
    wait_until(Duration::from_secs(10), || d.stat("mq", "processed") >= 4);
    // Queue depth is sampled by the reaper leader every 5 s.
    wait_until(Duration::from_secs(15), || {
        series(&get(port, "/metrics").1, "dtq_queue_depth")
            .iter()
            .any(|l| l.contains("queue=\"mq\"") && l.contains("dead") && l.ends_with(" 1"))
    });
    let (status, m) = get(port, "/metrics");
    assert_eq!(status, 200);
    let has = |name: &str, labels: &[&str]| {
        let found = series(&m, name).into_iter().any(|l| labels.iter().all(|x| l.contains(x)));
        assert!(found, "no {name} series with {labels:?} in:\n{m}");
    };
    let q = r#"queue="mq""#;
    has("dtq_tasks_processed_total", &[q, r#"kind="noop""#]);
    has("dtq_tasks_failed_total", &[q, r#"kind="fail""#]);
    has("dtq_tasks_retried_total", &[q, r#"kind="fail""#]);
    has("dtq_tasks_dead_lettered_total", &[q, r#"kind="fail""#]);
    has("dtq_tasks_recovered_total", &[q]);
    has("dtq_active_processing", &[q]);
    has("dtq_task_duration_seconds_bucket", &[q, r#"kind="noop""#, r#"le="0.001""#]);
    has("dtq_task_duration_seconds_bucket", &[q, r#"le="60""#]);
    has("dtq_task_duration_seconds_count", &[q, r#"kind="noop""#]);
    for state in ["pending", "inflight", "scheduled", "dead"] {
        has("dtq_queue_depth", &[q, &format!(r#"state="{state}""#)]);
    }
    has("dtq_rate_limited_total", &[q, r#"kind="echo""#]);
    has("dtq_circuit_state", &[r#"kind="noop""#]);
    has("dtq_reaper_leader", &[" 1"]);
    let value = |line: &str| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap();
    let processed: f64 =
        series(&m, "dtq_tasks_processed_total").iter().filter(|l| l.contains(q)).map(|l| value(l)).sum();
    assert!(processed >= 3.0, "{processed}");
    let dead_depth = series(&m, "dtq_queue_depth").into_iter().find(|l| l.contains(q) && l.contains("dead")).unwrap();
    assert_eq!(value(dead_depth), 1.0);
    drop(w);
}

#[test]
fn ready_is_503_while_redis_is_down_and_200_when_it_is_back() {
    let mut redis = Redis::start();
    let d = Dtq::new(&redis, "ready");
    let port = free_port();
    let mut w = d.spawn(&["work", "--listen", &format!("127.0.0.1:{port}")]);
    wait_until(Duration::from_secs(10), || get(port, "/ready").0 == 200);
    redis.kill();
    wait_until(Duration::from_secs(10), || get(port, "/ready").0 == 503);
    assert_eq!(get(port, "/health").0, 200, "liveness holds while Redis is away");
    redis.restart();
    wait_until(Duration::from_secs(20), || get(port, "/ready").0 == 200);
    d.ok(&["produce", "--kind", "noop", "--count", "5"]);
    wait_until(Duration::from_secs(10), || d.stat("default", "processed") == 5);
    // During the shutdown grace /ready says 503 rather than going away.
    d.ok(&["produce", "--kind", "sleep", "--payload", r#"{"ms":3000}"#]);
    wait_until(Duration::from_secs(10), || d.stat("default", "inflight") == 1);
    w.signal("TERM");
    wait_until(Duration::from_secs(2), || get(port, "/ready").0 == 503);
    assert_eq!(w.terminate(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn the_dashboard_and_alert_rules_use_only_metrics_that_exist() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "dash");
    let port = free_port();
    let _w = d.spawn(&["work", "--listen", &format!("127.0.0.1:{port}")]);
    wait_until(Duration::from_secs(10), || get(port, "/ready").0 == 200);
    let scraped = names(&get(port, "/metrics").1);
    let root = env!("CARGO_MANIFEST_DIR");
    for file in ["monitoring/grafana-dashboard.json", "monitoring/alerts.yml"] {
        let used = referenced(&format!("{root}/{file}"));
        assert!(!used.is_empty(), "{file} references no dtq metric");
        let missing: Vec<_> = used.difference(&scraped).collect();
        assert!(missing.is_empty(), "{file} uses metrics /metrics does not have: {missing:?}");
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{root}/monitoring/grafana-dashboard.json")).unwrap())
            .unwrap();
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() >= 10));
}

#[test]
fn json_logs_are_one_object_a_line_with_the_job_in_every_line() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "jsonlogs");
    d.ok(&["produce", "--kind", "echo", "--payload", r#"{"hello":"world"}"#, "--queue", "logs"]);
    let w = d.spawn(&[
        "work",
        "--listen",
        "off",
        "--queues",
        "logs",
        "--log-format",
        "json",
        "--redis",
        &format!("redis://user:pw-secret@127.0.0.1:{}", redis.port),
    ]);
    let _ = &w;
    let w2 = d.spawn(&["work", "--listen", "off", "--queues", "logs", "--log-format", "json"]);
    wait_until(Duration::from_secs(10), || d.stat("logs", "processed") == 1);
    std::thread::sleep(Duration::from_millis(200));
    let text = w2.log_text() + &w.log_text();
    let lines: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    let echo = lines.iter().find(|l| l["fields"]["message"] == "echo").expect("the echo line");
    let span = &echo["span"];
    assert_eq!(span["queue"], "logs");
    assert_eq!(span["kind"], "echo");
    assert_eq!(span["id"].as_str().unwrap().len(), 26);
    assert_eq!(span["attempt"], 1);
    let start = lines.iter().find(|l| l["fields"]["message"] == "starting worker").expect("start-up line");
    assert!(start["fields"]["concurrency"].is_number(), "{start}");
    assert!(!text.contains("pw-secret"), "password in logs");
    assert!(text.contains("user:***@"), "the redacted URL is logged");
}

#[test]
fn the_ops_endpoint_cuts_off_slow_headers_and_caps_connections() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "opsbounds");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _w = d.spawn(&["work", "--listen", &listen]);
    wait_until(Duration::from_secs(10), || get(port, "/ready").0 == 200);
    // Slow loris: a request line and no end of headers.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    let n = slow.read(&mut buf).unwrap_or(0);
    let cut = started.elapsed();
    assert!(cut < Duration::from_secs(10), "slow headers held the connection for {cut:?}");
    assert!(n == 0 || String::from_utf8_lossy(&buf[..n]).contains("408"), "{:?}", &buf[..n]);
    // Past the connection cap, new connections are closed at once.
    let idle: Vec<_> = (0..64).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut over = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    over.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = over.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(over.read(&mut buf).unwrap_or(0), 0, "the 65th connection was served");
    drop(idle);
    wait_until(Duration::from_secs(5), || get(port, "/health").0 == 200);
}

#[test]
fn a_working_worker_says_so_in_a_summary_line_and_logs_its_settings_readably() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "summary");
    d.ok(&["produce", "--kind", "noop", "--count", "50"]);
    let w = d.worker(&["--log-summary-every", "1s", "--rate-limit", "noop=1000/5m"]);
    w.wait_log("summary processed=", Duration::from_secs(10));
    let log = w.log_text();
    let line = log.lines().find(|l| l.contains("summary processed=")).unwrap();
    assert!(line.contains("processed=50") && line.contains("failed_attempts=0"), "{line}");
    assert!(log.contains("rate_limits=noop=1000/5m"), "settings in plain words: {log}");
    assert!(!log.contains("RateLimit {"), "no Rust debug text: {log}");
    assert!(!log.contains('\u{1b}'), "no ANSI colour codes when stderr is a file: {log}");
}

#[test]
fn a_worker_whose_queues_are_all_paused_says_so() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "all-paused");
    d.ok(&["produce", "--kind", "noop", "--queue", "a"]);
    d.ok(&["produce", "--kind", "noop", "--queue", "b"]);
    d.ok(&["admin", "pause", "a"]);
    d.ok(&["admin", "pause", "b"]);
    let w = d.worker(&["--queues", "a,b"]);
    w.wait_log("every queue this worker takes from is paused", Duration::from_secs(5));
    assert_eq!(d.stat("a", "pending") + d.stat("b", "pending"), 2, "nothing taken");
    // One paused queue of two is not reported.
    d.ok(&["admin", "resume", "b"]);
    wait_until(Duration::from_secs(5), || d.stat("b", "processed") == 1);
    let p = Dtq::new(&redis, "one-paused");
    p.ok(&["produce", "--kind", "noop", "--queue", "a"]);
    p.ok(&["admin", "pause", "a"]);
    p.ok(&["produce", "--kind", "noop", "--queue", "b"]);
    let w2 = p.worker(&["--queues", "a,b"]);
    wait_until(Duration::from_secs(5), || p.stat("b", "processed") == 1);
    assert!(!w2.log_text().contains("is paused"), "{}", w2.log_text());
}

#[test]
fn every_running_worker_is_listed_with_its_busy_jobs_and_leaves_the_list_when_it_stops() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "registry");
    assert!(d.ok(&["inspect", "workers"]).contains("no workers running"));
    d.ok(&["produce", "--kind", "sleep", "--payload", r#"{"ms":8000}"#, "--queue", "slow", "--count", "3"]);
    let a = d.worker(&["--queues", "slow:5,other", "--concurrency", "4"]);
    let _b = d.worker(&["--queues", "other"]);
    let listed = || -> serde_json::Value { serde_json::from_str(&d.ok(&["inspect", "workers", "--json"])).unwrap() };
    wait_until(Duration::from_secs(10), || {
        let w = listed();
        w["workers"].as_array().unwrap().len() == 2
            && w["workers"].as_array().unwrap().iter().any(|w| w["busy_count"] == 3)
    });
    let all = listed();
    let busy = all["workers"].as_array().unwrap().iter().find(|w| w["busy_count"] == 3).unwrap().clone();
    assert_eq!(busy["pid"], a.pid());
    assert_eq!(busy["concurrency"], 4);
    assert_eq!(busy["queues"], serde_json::json!([{"name":"slow","weight":5},{"name":"other","weight":1}]));
    assert_eq!(busy["busy"].as_array().unwrap().len(), 3);
    assert_eq!(busy["busy"][0]["queue"], "slow");
    assert_eq!(busy["version"], env!("CARGO_PKG_VERSION"));
    // The entry expires by itself if the worker dies without a word.
    let key = format!("{}:worker:{}", d.ns, busy["id"].as_str().unwrap());
    let ttl = redis.int(&["PTTL", &key]);
    assert!(ttl > 20_000 && ttl <= 30_000, "PTTL {ttl}");
    let table = d.ok(&["inspect", "workers"]);
    assert!(table.contains("slow (5), other (1)"), "{table}");
    // A worker that stops removes its entry at once.
    a.signal("TERM");
    wait_until(Duration::from_secs(30), || listed()["workers"].as_array().unwrap().len() == 1);
    assert_eq!(redis.int(&["EXISTS", &key]), 0);
}
