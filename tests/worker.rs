//! Workers and reapers as processes against a real Redis: retries, delays,
//! kill -9 recovery, leader election, weights, shutdown, Redis outages.

mod common;

use common::*;
use std::collections::HashMap;
use std::time::{Duration, Instant};

const FAST: &[&str] = &["--backoff-base", "50ms", "--backoff-max", "200ms", "--reap-interval", "100ms"];

#[test]
fn jobs_run_once_each_and_the_counters_add_up() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "basic");
    d.ok(&["produce", "--kind", "noop", "--count", "500"]);
    d.ok(&["produce", "--kind", "nope"]);
    let _w = d.worker(&["--concurrency", "16"]);
    wait_until(Duration::from_secs(20), || d.stat("default", "processed") == 500 && d.stat("default", "dead") == 1);
    let s = d.stats("default");
    assert_eq!((s["pending"].as_u64(), s["inflight"].as_u64(), s["failed"].as_u64()), (Some(0), Some(0), Some(1)));
    let dead: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "dead-letter", "--json"])).unwrap();
    assert_eq!(dead[0]["error"], "no handler for kind \"nope\"");
    assert_eq!(dead[0]["kind"], "nope");
    assert_eq!(dead[0]["attempts"], 1);
    // Completed jobs are kept as records (retention's default is 1,000), the
    // dead one as well.
    assert_eq!(redis.int(&["HLEN", &format!("{}:{{default}}:jobs", d.ns)]), 501);
    assert_eq!(d.stat("default", "completed"), 500);
}

#[test]
fn a_job_failing_twice_then_succeeding_ends_processed_on_attempt_3() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "retry");
    let ledger = Ledger::new();
    let exec = ledger.exec(r#"[ "$DTQ_ATTEMPT" -ge 3 ] || exit 75"#);
    d.ok(&["produce", "--kind", "flaky", "--max-retries", "3"]);
    let _w = d.worker(&[&["--exec", &exec], FAST].concat());
    wait_until(Duration::from_secs(20), || d.stat("default", "processed") == 1);
    let attempts: Vec<u32> = ledger.entries().iter().map(|(_, a)| *a).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert_eq!(d.stat("default", "failed"), 2);
}

#[test]
fn a_job_that_always_fails_is_dead_lettered_with_its_error_and_requeue_brings_it_back() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "dead");
    let ledger = Ledger::new();
    let exec = ledger.exec("echo 'card declined' >&2; exit 1");
    d.ok(&["produce", "--kind", "charge", "--max-retries", "2"]);
    let mut w = d.worker(&[&["--exec", &exec], FAST].concat());
    wait_until(Duration::from_secs(20), || d.stat("default", "dead") == 1);
    assert_eq!(ledger.entries().len(), 3, "max_retries 2 = 3 attempts");
    let dead: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "dead-letter", "--json"])).unwrap();
    assert!(dead[0]["error"].as_str().unwrap().contains("card declined"), "{dead}");
    assert_eq!(dead[0]["attempts"], 3);
    w.kill9();
    assert!(d.ok(&["admin", "requeue", "--all", "--queue", "default"]).contains("requeued 1"));
    assert_eq!(d.stat("default", "pending"), 1);
    let _w = d.worker(&[&["--exec", &exec], FAST].concat());
    wait_until(Duration::from_secs(20), || d.stat("default", "dead") == 1 && ledger.entries().len() == 6);
    let attempts: Vec<u32> = ledger.entries().iter().map(|(_, a)| *a).collect();
    assert_eq!(attempts, [1, 2, 3, 1, 2, 3], "a requeued job gets a fresh retry budget");
}

#[test]
fn exit_65_is_a_permanent_failure_dead_lettered_at_once() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "permanent");
    let ledger = Ledger::new();
    let exec = ledger.exec("exit 65");
    d.ok(&["produce", "--kind", "bad", "--max-retries", "5"]);
    let _w = d.worker(&[&["--exec", &exec], FAST].concat());
    wait_until(Duration::from_secs(20), || d.stat("default", "dead") == 1);
    assert_eq!(ledger.entries().len(), 1);
}

#[test]
fn a_delayed_job_does_not_run_before_its_time_and_runs_soon_after() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "delay");
    let ledger = Ledger::new();
    let exec = ledger.exec("date +%s%3N >> $(dirname $0)/times");
    let _w = d.worker(&[&["--exec", &exec], FAST].concat());
    std::thread::sleep(Duration::from_millis(300));
    let enqueued = dtq::job::now_ms();
    d.ok(&["produce", "--kind", "later", "--delay", "2s"]);
    let times = ledger.dir.path().join("times");
    wait_until(Duration::from_secs(10), || !read_lines(&times).is_empty());
    let ran: u64 = read_lines(&times)[0].trim().parse().unwrap();
    let waited = ran - enqueued;
    assert!(waited >= 2000, "ran after {waited} ms, before its delay");
    assert!(waited < 3500, "ran {waited} ms after enqueue; expected soon after 2 s");
}

#[test]
fn a_killed_workers_jobs_run_again_elsewhere_after_the_visibility_timeout() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "kill9");
    let ledger = Ledger::new();
    let exec = ledger.exec("sleep 1");
    d.ok(&["produce", "--kind", "slow", "--count", "8"]);
    let mut victim = d.worker(&["--exec", &exec, "--concurrency", "8", "--visibility-timeout", "2s", "--no-reaper"]);
    wait_until(Duration::from_secs(10), || ledger.entries().len() == 8);
    victim.kill9();
    let killed_at = Instant::now();
    assert_eq!(d.stat("default", "inflight"), 8);
    let _survivor = d.worker(&[&["--exec", &exec, "--concurrency", "8", "--visibility-timeout", "2s"], FAST].concat());
    wait_until(Duration::from_secs(20), || d.stat("default", "processed") == 8);
    let recovered_in = killed_at.elapsed();
    let mut runs: HashMap<String, Vec<u32>> = HashMap::new();
    for (id, attempt) in ledger.entries() {
        runs.entry(id).or_default().push(attempt);
    }
    assert_eq!(runs.len(), 8);
    assert!(runs.values().all(|a| a == &[1, 2]), "each job ran on attempt 1, then again on 2: {runs:?}");
    assert!(recovered_in >= Duration::from_secs(1), "recovered before the lease expired");
    eprintln!("kill -9 to all 8 jobs completed: {recovered_in:?}");
}

#[test]
fn slow_jobs_are_not_hoarded_by_one_worker() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "hoard");
    let ledger = Ledger::new();
    let exec = ledger.exec("sleep 0.3");
    d.ok(&["produce", "--kind", "slow", "--count", "40"]);
    let _w = d.worker(&["--exec", &exec, "--concurrency", "8"]);
    // The adaptive prefetch counts only jobs that finish within 50 ms of
    // their start; these take 0.3 s, so it stays at its floor of 1: the
    // worker leases little beyond its 8 slots, leaving the rest to other
    // workers. A prefetch of one per slot would show 16.
    let mut most = 0;
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        most = most.max(d.stat("default", "inflight"));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ledger.entries().len() >= 16, "the worker ran its slots");
    assert!((8..=10).contains(&most), "8 running + a prefetch of 1 (at most 2 in passing), saw {most}");
}

#[test]
fn long_jobs_keep_their_lease_by_heartbeat() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "heartbeat");
    let ledger = Ledger::new();
    let exec = ledger.exec("sleep 3");
    d.ok(&["produce", "--kind", "long"]);
    let _a = d.worker(&[&["--exec", &exec, "--visibility-timeout", "1s"], FAST].concat());
    let _b = d.worker(&[&["--exec", &exec, "--visibility-timeout", "1s"], FAST].concat());
    wait_until(Duration::from_secs(15), || d.stat("default", "processed") == 1);
    assert_eq!(ledger.entries().len(), 1, "a heartbeating job must not be recovered");
}

#[test]
fn two_reapers_one_leads_and_the_other_takes_over_when_it_dies() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "reapers");
    let lock = format!("{}:reaper:lock", d.ns);
    let mut a = d.spawn(&["reap", "--lock-ttl", "1s", "--listen", "off"]);
    a.wait_log("became the reaper leader", Duration::from_secs(5));
    let mut b = d.spawn(&["reap", "--lock-ttl", "1s", "--listen", "off"]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!b.log_text().contains("became the reaper leader"), "two leaders at once");
    let holder = redis.cli(&["GET", &lock]);
    a.kill9();
    let killed = Instant::now();
    b.wait_log("became the reaper leader", Duration::from_secs(5));
    let took = killed.elapsed();
    assert!(took <= Duration::from_millis(1600), "takeover took {took:?}, over one lock TTL");
    assert_ne!(redis.cli(&["GET", &lock]), holder);
    // A delayed job proves the new leader works.
    d.ok(&["produce", "--kind", "noop", "--delay", "200ms"]);
    wait_until(Duration::from_secs(5), || d.stat("default", "pending") == 1);
    assert_eq!(b.terminate(Duration::from_secs(5)).code(), Some(0));
    assert_eq!(redis.int(&["EXISTS", &lock]), 0, "the lock is released on shutdown");
}

#[test]
fn a_reaper_keeps_its_lock_through_a_pass_longer_than_the_lock_ttl() {
    // 10,000 known queues: one pass (recover, promote, depth samples) takes
    // longer than the 1 s lock. Renewing only between passes let the lock
    // expire mid-pass and the second reaper lead beside the first.
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "reaper-long-pass");
    let set = format!("{}:queues", d.ns);
    for chunk in (0..10_000).collect::<Vec<_>>().chunks(1000) {
        let names: Vec<String> = chunk.iter().map(|i| format!("q{i}")).collect();
        let mut args = vec!["SADD", set.as_str()];
        args.extend(names.iter().map(String::as_str));
        redis.cli(&args);
    }
    let lock = format!("{}:reaper:lock", d.ns);
    let a = d.spawn(&["reap", "--lock-ttl", "1s", "--listen", "off"]);
    a.wait_log("became the reaper leader", Duration::from_secs(5));
    let holder = redis.cli(&["GET", &lock]);
    let b = d.spawn(&["reap", "--lock-ttl", "1s", "--listen", "off"]);
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(7) {
        assert_eq!(redis.cli(&["GET", &lock]), holder, "the lock changed hands after {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!b.log_text().contains("became the reaper leader"), "two leaders");
    assert!(!a.log_text().contains("lost the reaper lock"), "{}", a.log_text());
}

#[test]
fn weighted_queues_share_jobs_by_weight_while_all_have_work() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "weights");
    for q in ["high", "default", "low"] {
        d.ok(&["produce", "--kind", "noop", "--count", "3000", "--queue", q]);
    }
    d.ok(&["admin", "pause", "high"]);
    d.ok(&["admin", "pause", "default"]);
    d.ok(&["admin", "pause", "low"]);
    let _w = d.worker(&["--queues", "high:6,default:3,low:1", "--concurrency", "4", "--max-batch", "4"]);
    std::thread::sleep(Duration::from_millis(500));
    // Resume all three at once (one command), so no queue gets a head start.
    let queues = ["high", "default", "low"];
    let [hp, dp, lp] = queues.map(|q| format!("{}:{{{q}}}:paused", d.ns));
    redis.cli(&[
        "EVAL",
        "redis.call('DEL', KEYS[1], KEYS[2], KEYS[3]) redis.call('LPUSH', KEYS[4], 1)",
        "4",
        &hp,
        &dp,
        &lp,
        &format!("{}:{{high}}:signal", d.ns),
    ]);
    // Sample while every queue still has work.
    wait_until(Duration::from_secs(30), || d.processed(&queues)[0] >= 2000.0);
    let got = d.processed(&queues);
    let total: f64 = got.iter().sum();
    for (share, want) in got.iter().map(|g| g / total).zip([0.6, 0.3, 0.1]) {
        assert!((share - want).abs() < 0.03, "shares {:?} vs 6:3:1", got);
    }
    assert!(d.stat("low", "pending") > 0, "low must still have had work");
}

#[test]
fn sigterm_finishes_or_hands_back_in_flight_jobs_and_exits_0() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "shutdown");
    let ledger = Ledger::new();
    let f = ndjson(&[
        r#"{"kind":"sleep","payload":{"ms":300},"id":"short"}"#.into(),
        r#"{"kind":"sleep","payload":{"ms":20000},"id":"long"}"#.into(),
    ]);
    d.ok(&["produce", "--file", f.path().to_str().unwrap()]);
    let _ = &ledger;
    let mut w = d.worker(&["--shutdown-grace", "1s", "--concurrency", "4"]);
    wait_until(Duration::from_secs(10), || d.stat("default", "inflight") == 2);
    let status = w.terminate(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{}", w.log_text());
    assert_eq!(d.stat("default", "processed"), 1, "the short job finished within the grace");
    let s = d.stats("default");
    assert_eq!((s["pending"].as_u64(), s["inflight"].as_u64()), (Some(1), Some(0)), "the long job was handed back");
    let job: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "job", "long", "--json"])).unwrap();
    assert_eq!(job["attempts"], 0, "a handed-back attempt is not counted");
}

#[test]
fn a_worker_started_before_redis_processes_once_redis_comes_up() {
    let mut redis = Redis::start();
    let d = Dtq::new(&redis, "late");
    redis.kill();
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    let w = d.spawn(&["work", "--listen", &metrics]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(w.log_text().contains("Redis unreachable"), "{}", w.log_text());
    redis.restart();
    d.ok(&["produce", "--kind", "noop", "--count", "20"]);
    wait_until(Duration::from_secs(20), || d.stat("default", "processed") == 20);
}

#[test]
fn a_worker_survives_a_redis_restart_with_aof_and_loses_nothing() {
    let mut redis = Redis::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let d = Dtq::new(&redis, "restart");
    let ledger = Ledger::new();
    let exec = ledger.exec("sleep 0.05");
    d.ok(&["produce", "--kind", "x", "--count", "60"]);
    let _w = d.worker(&[&["--exec", &exec, "--concurrency", "4", "--visibility-timeout", "2s"], FAST].concat());
    wait_until(Duration::from_secs(10), || ledger.entries().len() >= 10);
    redis.restart();
    wait_until(Duration::from_secs(40), || d.stat("default", "processed") == 60);
    let mut ids: Vec<String> = ledger.entries().into_iter().map(|(id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 60, "every job ran");
}

#[test]
fn a_corrupt_job_body_is_dead_lettered_and_the_worker_carries_on() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "corrupt");
    let f = ndjson(&[r#"{"kind":"noop","id":"bad"}"#.into(), r#"{"kind":"noop","id":"good"}"#.into()]);
    d.ok(&["produce", "--file", f.path().to_str().unwrap()]);
    redis.cli(&["HSET", &format!("{}:{{default}}:jobs", d.ns), "bad", "{{{garbage"]);
    let _w = d.worker(&[]);
    wait_until(Duration::from_secs(10), || d.stat("default", "processed") == 1 && d.stat("default", "dead") == 1);
    let dead: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "dead-letter", "--json"])).unwrap();
    assert!(dead[0]["error"].as_str().unwrap().starts_with("corrupt job body: "), "{dead}");
    assert_eq!(dead[0]["payload"], serde_json::Value::Null);
}

#[test]
fn an_exec_child_that_fills_stderr_before_reading_a_big_payload_does_not_deadlock() {
    // The child writes 200 KiB to stderr before it reads its 100 KiB stdin:
    // written one after the other, both pipes filled and neither side moved.
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "exec-pipes");
    let ledger = Ledger::new();
    let exec = ledger.exec("head -c 200000 /dev/zero | tr '\\0' x >&2; cat > /dev/null");
    let payload = format!("\"{}\"", "p".repeat(100 * 1024));
    d.ok(&["produce", "--kind", "big", "--payload", &payload]);
    let _w = d.worker(&["--exec", &exec]);
    wait_until(Duration::from_secs(10), || d.stat("default", "processed") == 1);
    assert_eq!(ledger.entries().len(), 1);
}

#[test]
fn sigterm_stops_a_worker_whose_stderr_is_a_closed_pipe() {
    // `dtq work 2>&1 | head -1`: once the reader is gone every log write
    // fails; shutdown must still happen, and exit 0.
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "closed-stderr");
    let mut child = d
        .cmd()
        .args(["work", "--listen", "off"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    d.ok(&["produce", "--kind", "noop", "--count", "20"]);
    wait_until(Duration::from_secs(10), || d.stat("default", "processed") == 20);
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "still running 15 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn an_exec_command_gone_at_run_time_hands_jobs_back_instead_of_dead_lettering_them() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "exec-gone");
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("handler.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&script).status().unwrap();
    let w = d.worker(&["--exec", script.to_str().unwrap()]);
    // Checked at start (a missing command is exit 2), then gone.
    w.wait_log("connected to Redis", Duration::from_secs(10));
    std::fs::remove_file(&script).unwrap();
    d.ok(&["produce", "--kind", "k", "--id", "gone-1"]);
    w.wait_log("the handler cannot run", Duration::from_secs(10));
    let job: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "job", "gone-1", "--json"])).unwrap();
    assert_ne!(job["state"], "dead", "{job}");
    assert_eq!(job["attempts"], 0, "the attempt is given back: {job}");
    assert_eq!(d.stat("default", "dead"), 0);
}
