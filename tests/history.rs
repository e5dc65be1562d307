//! History, results and retention, end to end: exact trims by count and by
//! age with everything of a trimmed job gone, settings shared by workers,
//! `inspect job` in every state, filters read in Redis, `produce --wait`
//! and the attempt history's outcomes.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const FAST: &[&str] = &["--backoff-base", "50ms", "--backoff-max", "100ms"];

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn key(d: &Dtq, queue: &str, suffix: &str) -> String {
    format!("{}:{{{queue}}}:{suffix}", d.ns)
}

/// Runs a worker until `done` holds, then stops it.
fn work_until(d: &Dtq, args: &[&str], done: impl FnMut() -> bool) {
    let mut w = d.worker(args);
    wait_until(Duration::from_secs(60), done);
    w.terminate(Duration::from_secs(10));
}

#[test]
fn the_dead_letter_set_keeps_exactly_its_limit_and_the_oldest_goes_with_everything_it_had() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "trim-dead");
    let dead = key(&d, "default", "dead");
    // The first two die alone, so the oldest and the next are known.
    d.ok(&["produce", "--kind", "nope", "--count", "1"]);
    work_until(&d, &["--concurrency", "1"], || d.stat("default", "dead") == 1);
    let oldest = redis.cli(&["ZRANGE", &dead, "0", "0"]).trim().to_string();
    d.ok(&["produce", "--kind", "rare", "--payload", r#"{"find":"the needle"}"#]);
    work_until(&d, &["--concurrency", "1"], || d.stat("default", "dead") == 2);
    d.ok(&["produce", "--kind", "nope", "--count", "9998"]);
    work_until(&d, &["--concurrency", "64"], || d.stat("default", "dead") == 10_000);
    for suffix in ["jobs", "attempts", "errors", "history"] {
        assert_eq!(redis.int(&["HEXISTS", &key(&d, "default", suffix), &oldest]), 1, "{suffix} before the trim");
    }
    // One more death: the default limit (10,000) holds exactly.
    d.ok(&["produce", "--kind", "nope", "--id", "the-last"]);
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let mut w = d.spawn(&["work", "--listen", &addr]);
    wait_until(Duration::from_secs(30), || d.stat("default", "pending") == 0 && d.stat("default", "inflight") == 0);
    assert_eq!(redis.int(&["ZCARD", &dead]), 10_000);
    assert!(redis.cli(&["ZSCORE", &dead, "the-last"]).trim().parse::<f64>().is_ok(), "the newest is kept");
    assert!(redis.cli(&["ZSCORE", &dead, &oldest]).trim().is_empty(), "the oldest went");
    for suffix in ["jobs", "attempts", "errors", "history", "results"] {
        assert_eq!(redis.int(&["HEXISTS", &key(&d, "default", suffix), &oldest]), 0, "{suffix} of the trimmed job");
    }
    assert_eq!(redis.int(&["HLEN", &key(&d, "default", "jobs")]), 10_000, "no body is left behind");
    let metrics = get(port.parse().unwrap(), "/metrics").1;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("dtq_jobs_trimmed_total{") && l.contains("state=\"dead\"") && l.ends_with(" 1")),
        "{}",
        metrics.lines().filter(|l| l.contains("trimmed")).collect::<Vec<_>>().join("\n")
    );
    w.terminate(Duration::from_secs(10));
    // The filters read the whole set in Redis, in bounded calls: the one
    // "rare" job is now the oldest of 10,000.
    let found = json(&d.ok(&["inspect", "dead-letter", "--kind", "rare", "--json"]));
    assert_eq!(found.as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found[0]["payload"]["find"], "the needle");
    let found = json(&d.ok(&["inspect", "dead-letter", "--search", "NEEDLE", "--json"]));
    assert_eq!(found.as_array().unwrap().len(), 1, "search is case-insensitive and looks in payloads");
    let text = d.ok(&["inspect", "dead-letter"]);
    assert!(text.contains("showing 20 of 10,000 dead-lettered jobs"), "{text}");
}

#[test]
fn completed_jobs_are_kept_to_their_limit_and_the_setting_is_shared_by_every_worker() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "trim-completed");
    d.ok(&["produce", "--kind", "noop"]);
    let set = json(&d.ok(&["admin", "retention", "default", "--completed-max", "5", "--json"]));
    assert_eq!(set["retention"]["completed_max"], 5);
    assert_eq!(set["retention"]["dead_max"], 10_000, "the others keep their defaults");
    let _a = d.worker(&["--concurrency", "4"]);
    let _b = d.worker(&["--concurrency", "4"]);
    d.ok(&["produce", "--kind", "echo", "--payload", "7", "--count", "200"]);
    wait_until(Duration::from_secs(30), || d.stat("default", "processed") == 201);
    assert_eq!(d.stat("default", "completed"), 5);
    for suffix in ["jobs", "history", "results", "attempts"] {
        assert_eq!(redis.int(&["HLEN", &key(&d, "default", suffix)]), 5, "{suffix}: exactly the kept jobs");
    }
    let kept = json(&d.ok(&["inspect", "completed", "--json"]));
    assert_eq!(kept.as_array().unwrap().len(), 5);
    assert_eq!(kept[0]["result"], 7, "echo's result is its payload");
    // Another process sees the setting; 0 keeps none from now on.
    assert!(d.ok(&["admin", "retention", "default"]).contains("at most 5 jobs"));
    let set = json(&d.ok(&["admin", "retention", "default", "--completed-max", "0", "--json"]));
    assert_eq!(set["trimmed"]["completed"], 5, "lowering a limit trims at once");
    d.ok(&["produce", "--kind", "noop", "--count", "10"]);
    wait_until(Duration::from_secs(30), || d.stat("default", "processed") == 211);
    assert_eq!(d.stat("default", "completed"), 0);
    assert_eq!(redis.int(&["HLEN", &key(&d, "default", "jobs")]), 0, "nothing kept: bodies deleted at ack");
    assert_eq!(redis.int(&["EXISTS", &key(&d, "default", "history")]), 0);
    assert!(d.ok(&["inspect", "completed"]).contains("(no completed jobs)"));
}

#[test]
fn finished_jobs_older_than_their_age_limit_are_trimmed_by_the_reaper() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "trim-age");
    d.ok(&["produce", "--kind", "noop", "--count", "3"]);
    d.ok(&["produce", "--kind", "nope", "--count", "2"]);
    d.ok(&["admin", "retention", "default", "--dead-ttl", "1s", "--completed-ttl", "1s"]);
    let _w = d.worker(&[]);
    wait_until(Duration::from_secs(10), || d.stat("default", "processed") == 3 && d.stat("default", "dead") == 2);
    // Quiet queue: the reaper's regular pass (every 5 s) applies the ages.
    wait_until(Duration::from_secs(15), || d.stat("default", "dead") == 0 && d.stat("default", "completed") == 0);
    for suffix in ["jobs", "attempts", "errors", "history"] {
        assert_eq!(redis.int(&["HLEN", &key(&d, "default", suffix)]), 0, "{suffix} of the trimmed jobs");
    }
}

#[test]
fn retention_settings_are_checked() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "retention-usage");
    let o = d.run(&["admin", "retention", "nosuch"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no queue named"), "{}", stderr(&o));
    let o = d.run(&["admin", "retention", "nosuch", "--dead-max", "0", "--create"]);
    assert_eq!(o.status.code(), Some(2), "the dead set keeps at least one: {}", stderr(&o));
    d.ok(&["admin", "retention", "fresh", "--dead-max", "50", "--create"]);
    let text = d.ok(&["admin", "retention", "fresh"]);
    assert!(text.contains("at most 50 jobs, for 90 days"), "{text}");
    assert!(text.contains("at most 1,000 jobs, for 1 day  (default)"), "{text}");
}

#[test]
fn inspect_job_shows_every_state_with_its_history() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "job-states");
    let state = |id: &str| json(&d.ok(&["inspect", "job", id, "--json"]));
    d.ok(&["produce", "--kind", "noop", "--id", "p"]);
    d.ok(&["produce", "--kind", "noop", "--id", "s", "--delay", "1h"]);
    assert_eq!(state("p")["state"], "pending");
    std::thread::sleep(Duration::from_millis(50));
    assert!(d.stats("default")["oldest_pending_age_ms"].as_u64().unwrap() >= 50);
    let table = d.ok(&["inspect", "stats"]);
    assert!(table.contains("FAILED ATTEMPTS") && table.contains("OLDEST PENDING"), "{table}");
    let s = state("s");
    assert_eq!(s["state"], "scheduled");
    assert!(s["run_at"].is_string());
    d.ok(&["admin", "cancel", "--id", "p"]);
    d.ok(&["produce", "--kind", "sleep", "--payload", r#"{"ms":60000}"#, "--id", "i"]);
    d.ok(&["produce", "--kind", "echo", "--payload", r#"{"hello":"world"}"#, "--id", "c"]);
    let _w = d.worker(&["--concurrency", "4"]);
    wait_until(Duration::from_secs(10), || state("i")["state"] == "inflight" && state("c")["state"] == "completed");
    let i = state("i");
    assert!(i["lease_until"].is_string());
    assert_eq!(i["history"][0]["outcome"], "running");
    // Each attempt names the worker that ran it, as the registry lists it.
    let workers = json(&d.ok(&["inspect", "workers", "--json"]));
    let worker = workers["workers"][0]["id"].as_str().expect("the worker is registered").to_string();
    assert_eq!(i["history"][0]["worker"], worker.as_str());
    assert!(d.ok(&["inspect", "job", "i"]).contains(&worker), "the table shows the worker");
    let c = state("c");
    assert_eq!(c["result"]["hello"], "world");
    assert_eq!(c["history"][0]["outcome"], "ok");
    assert!(c["finished_at"].is_string() && c["enqueued_at"].is_string());
    d.ok(&["produce", "--kind", "fail", "--max-retries", "1", "--id", "x"]);
    wait_until(Duration::from_secs(20), || state("x")["state"] == "dead");
    let x = state("x");
    let outcomes: Vec<&str> = x["history"].as_array().unwrap().iter().map(|h| h["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["retry", "dead"]);
    assert_eq!(x["history"][1]["error"], "fail: injected failure (p=1)");
    assert_eq!(x["attempts"], 2);
    let text = d.ok(&["inspect", "job", "x"]);
    assert!(text.contains("died at") && text.contains("history"), "{text}");
    let o = d.run(&["inspect", "job", "no-such-job"]);
    assert_eq!(o.status.code(), Some(1), "an unknown id exits 1: {}", stderr(&o));
    assert!(stderr(&o).contains("not found in any queue"), "{}", stderr(&o));
}

#[test]
fn dead_letter_and_completed_filter_by_kind_text_and_time() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "filters");
    d.ok(&["produce", "--kind", "alpha", "--payload", r#"{"order":"A-17"}"#, "--id", "old-alpha"]);
    d.ok(&["produce", "--kind", "beta", "--id", "old-beta"]);
    d.ok(&["produce", "--kind", "echo", "--payload", r#""fine""#, "--id", "done-1"]);
    work_until(&d, &[], || d.stat("default", "dead") == 2 && d.stat("default", "processed") == 1);
    std::thread::sleep(Duration::from_millis(1500));
    d.ok(&["produce", "--kind", "alpha", "--id", "new-alpha"]);
    work_until(&d, &[], || d.stat("default", "dead") == 3);
    let ids = |args: &[&str]| -> Vec<String> {
        let v = json(&d.ok(&[args, &["--json"]].concat()));
        v.as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(ids(&["inspect", "dead-letter", "--kind", "alpha"]), ["new-alpha", "old-alpha"], "newest first");
    assert_eq!(ids(&["inspect", "dead-letter", "--search", "a-17"]), ["old-alpha"]);
    assert_eq!(ids(&["inspect", "dead-letter", "--search", "handler for kind \"beta"]), ["old-beta"], "errors too");
    assert_eq!(ids(&["inspect", "dead-letter", "--since", "1s"]), ["new-alpha"]);
    assert_eq!(ids(&["inspect", "dead-letter", "--kind", "alpha", "--since", "1h", "--limit", "1"]), ["new-alpha"]);
    assert_eq!(ids(&["inspect", "completed", "--kind", "echo"]), ["done-1"]);
    assert!(ids(&["inspect", "completed", "--kind", "alpha"]).is_empty());
    let text = d.ok(&["inspect", "dead-letter", "--kind", "nothing-like-it"]);
    assert!(text.contains("(no dead-lettered jobs match)"), "{text}");
    let text = d.ok(&["inspect", "dead-letter", "--kind", "alpha"]);
    assert!(text.contains("showing 2 match(es) of 3 dead-lettered jobs"), "{text}");
}

#[test]
fn produce_wait_prints_results_and_exits_1_for_dead_jobs_and_timeouts() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "wait");
    let _w = d.worker(&[&["--concurrency", "4"], FAST].concat());
    let o = d.run(&["produce", "--kind", "echo", "--payload", r#"{"n":1}"#, "--wait", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let end = json(stdout(&o).trim());
    assert_eq!((end["state"].as_str(), end["status"].as_str()), (Some("completed"), Some("enqueued")));
    assert_eq!(end["result"]["n"], 1);
    let o = d.run(&["produce", "--kind", "fail", "--max-retries", "1", "--wait"]);
    assert_eq!(o.status.code(), Some(1), "a dead job: {}", stderr(&o));
    assert!(stdout(&o).contains("dead: fail: injected failure"), "{}", stdout(&o));
    assert!(stderr(&o).contains("1 job(s) ended dead-lettered"), "{}", stderr(&o));
    let o = d.run(&["produce", "--kind", "sleep", "--payload", r#"{"ms":5000}"#, "--wait", "--wait-timeout", "500ms"]);
    assert_eq!(o.status.code(), Some(1), "a timeout: {}", stderr(&o));
    assert!(stdout(&o).contains("still"), "{}", stdout(&o));
    assert!(stderr(&o).contains("not finished within --wait-timeout 500ms"), "{}", stderr(&o));
    // Several jobs from a file, each reported once it ends.
    let f = ndjson(&[r#"{"kind":"echo","payload":"a"}"#.into(), r#"{"kind":"noop"}"#.into()]);
    let o = d.run(&["produce", "--file", f.path().to_str().unwrap(), "--wait", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let ends: Vec<Value> = stdout(&o).lines().map(json).collect();
    assert_eq!(ends.len(), 2);
    assert!(ends.iter().all(|e| e["state"] == "completed"));
    let o = d.run(&["produce", "--kind", "noop", "--count", "10001", "--wait"]);
    assert_eq!(o.status.code(), Some(2), "bounded: {}", stderr(&o));
}

#[test]
fn the_history_records_timeouts_and_attempts_lost_with_their_worker() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "history-outcomes");
    let state = |id: &str| json(&d.ok(&["inspect", "job", id, "--json"]));
    let outcomes = |j: &Value| -> Vec<String> {
        j["history"].as_array().unwrap().iter().map(|h| h["outcome"].as_str().unwrap().to_string()).collect()
    };
    d.ok(&["produce", "--kind", "sleep", "--payload", r#"{"ms":5000}"#, "--id", "slow", "--max-retries", "0"]);
    work_until(&d, &["--job-timeout", "300ms"], || state("slow")["state"] == "dead");
    assert_eq!(outcomes(&state("slow")), ["timeout"]);
    // A worker killed mid-attempt: the lost attempt is recorded as such.
    d.ok(&["produce", "--kind", "sleep", "--payload", r#"{"ms":1500}"#, "--id", "lost"]);
    let mut w = d.worker(&["--visibility-timeout", "2s", "--no-reaper"]);
    wait_until(Duration::from_secs(10), || state("lost")["state"] == "inflight");
    std::thread::sleep(Duration::from_millis(200));
    w.kill9();
    work_until(&d, &["--visibility-timeout", "2s"], || state("lost")["state"] == "completed");
    let lost = state("lost");
    assert_eq!(outcomes(&lost), ["lost", "ok"], "{lost}");
    assert_eq!(lost["history"][0]["error"], "lease expired (worker lost)");
    assert_eq!(lost["history"][1]["attempt"], 2);
}
