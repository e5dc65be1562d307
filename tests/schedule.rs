//! Periodic jobs end to end: real reapers enqueue each tick of a schedule
//! once, across `kill -9`ed leaders; catch-up after downtime follows each
//! policy; invalid definitions change nothing. (Daylight-saving rules are
//! tested on the tick computation itself, in src/schedule.rs.)

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The tick (Unix s) of a job id `cron:NAME:<RFC 3339>`.
fn tick_of(id: &str) -> i64 {
    let at = id.splitn(3, ':').nth(2).unwrap();
    chrono::DateTime::parse_from_rfc3339(at).unwrap_or_else(|e| panic!("{id}: {e}")).timestamp()
}

/// Every job id of `queue` in any state, by listing each state.
fn ids(d: &Dtq, queue: &str) -> Vec<String> {
    let mut out = Vec::new();
    for state in ["dead-letter", "completed"] {
        let v: Value =
            serde_json::from_str(&d.ok(&["inspect", state, "--queue", queue, "--limit", "100000", "--json"])).unwrap();
        out.extend(v.as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_string()));
    }
    out
}

fn reaper(d: &Dtq, port: u16) -> Proc {
    d.spawn(&["reap", "--lock-ttl", "2s", "--listen", &format!("127.0.0.1:{port}")])
}

#[test]
fn every_tick_is_enqueued_exactly_once_while_leaders_are_killed() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "sched-kill");
    d.ok(&["admin", "schedule", "add", "tick", "--every", "1s", "--kind", "tick", "--queue", "ticks"]);
    // A worker runs every tick's job and writes down each run.
    let ledger = Ledger::new();
    let _w = d.worker(&["--queues", "ticks", "--exec", &ledger.exec("exit 0")]);
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut reapers: Vec<Proc> = ports.iter().map(|&p| reaper(&d, p)).collect();
    let start = Instant::now();
    let mut kills = 0;
    std::thread::sleep(Duration::from_secs(3));
    while start.elapsed() < Duration::from_secs(60) {
        // The leader says so on /metrics.
        if let Some(i) = ports.iter().position(|&p| get(p, "/metrics").1.contains("dtq_reaper_leader 1")) {
            reapers[i].kill9();
            reapers[i] = reaper(&d, ports[i]);
            kills += 1;
        }
        std::thread::sleep(Duration::from_millis(3000 + fastrand::u64(0..1500)));
    }
    std::thread::sleep(Duration::from_secs(2));
    for r in &mut reapers {
        r.terminate(Duration::from_secs(10));
    }
    assert!(kills >= 10, "only {kills} leaders were killed");
    wait_until(Duration::from_secs(10), || d.stat("ticks", "pending") + d.stat("ticks", "inflight") == 0);
    // Every tick from the first to the last ran, each exactly once.
    let mut runs: BTreeMap<i64, usize> = BTreeMap::new();
    for (id, _) in ledger.entries() {
        *runs.entry(tick_of(&id)).or_default() += 1;
    }
    let (first, last) = (*runs.keys().next().unwrap(), *runs.keys().last().unwrap());
    let missing: Vec<i64> = (first..=last).filter(|t| !runs.contains_key(t)).collect();
    let twice: Vec<(&i64, &usize)> = runs.iter().filter(|(_, n)| **n != 1).collect();
    assert!(last - first >= 55, "ticks {first}..{last}");
    assert!(missing.is_empty(), "ticks never enqueued: {missing:?}");
    assert!(twice.is_empty(), "ticks run more than once: {twice:?}");
    assert_eq!(ids(&d, "ticks").len(), runs.len());
    let list: Value = serde_json::from_str(&d.ok(&["admin", "schedule", "list", "--json"])).unwrap();
    assert_eq!(list["schedules"][0]["last_job_id"].as_str().map(tick_of), Some(last));
    println!("{} ticks, {kills} leaders killed, none missing, none twice", runs.len());
}

/// More schedules due at once than one `run_due` call takes (1,000): a
/// cycle takes them all, tick after tick, each tick once.
#[test]
fn thousands_of_schedules_due_together_each_get_every_tick_once() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "sched-many");
    let defs: Vec<Value> = (0..2500)
        .map(|i| serde_json::json!({"name": format!("s{i:04}"), "every": "1s", "kind": "noop", "queue": format!("q{}", i % 3)}))
        .collect();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), serde_json::to_string(&defs).unwrap()).unwrap();
    d.ok(&["admin", "schedule", "apply", "--file", file.path().to_str().unwrap()]);
    let mut r = d.spawn(&["reap", "--lock-ttl", "1s", "--listen", "off"]);
    std::thread::sleep(Duration::from_secs(5));
    r.terminate(Duration::from_secs(10));
    // Per schedule, the ticks of its jobs (no worker runs: all pending).
    let mut ticks: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut total = 0;
    for q in 0..3 {
        for id in redis.lines(&["LRANGE", &format!("{}:{{q{q}}}:pending", d.ns), "0", "-1"]) {
            let name = id.split(':').nth(1).unwrap().to_string();
            ticks.entry(name).or_default().push(tick_of(&id));
            total += 1;
        }
    }
    assert_eq!(ticks.len(), 2500, "schedules that enqueued nothing: {}", 2500 - ticks.len());
    for (name, t) in &mut ticks {
        t.sort_unstable();
        let n = t.len();
        t.dedup();
        assert_eq!(t.len(), n, "{name}: a tick enqueued twice: {t:?}");
        assert_eq!((t[n - 1] - t[0] + 1) as usize, n, "{name}: a tick skipped: {t:?}");
    }
    // All in step: every schedule has every tick of the common span.
    let first = ticks.values().map(|t| t[0]).max().unwrap();
    let last = ticks.values().map(|t| *t.last().unwrap()).min().unwrap();
    assert!(last - first >= 2, "common ticks {first}..={last}");
    for (name, t) in &ticks {
        assert!((first..=last).all(|x| t.contains(&x)), "{name}: {t:?} lacks part of {first}..={last}");
    }
    println!("{total} ticks of 2,500 schedules, each tick once, all in step over {first}..={last}");
}

/// Runs a schedule (every 1 s) with one reaper for 3 s, stops every reaper
/// for 7 s (more than 5 ticks beyond the grace of 2 s, lock TTL 1 s), runs
/// one again for 3 s: each enqueued tick with how late it was enqueued (s).
fn outage(policy: &str) -> Vec<(i64, f64)> {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, &format!("sched-catch-{policy}"));
    d.ok(&["admin", "schedule", "add", "t", "--every", "1s", "--kind", "noop", "--queue", "q", "--catch-up", policy]);
    for pause in [Duration::from_secs(7), Duration::ZERO] {
        let mut r = d.spawn(&["reap", "--lock-ttl", "1s", "--listen", "off"]);
        std::thread::sleep(Duration::from_secs(3));
        r.terminate(Duration::from_secs(10));
        std::thread::sleep(pause);
    }
    let v: Value = serde_json::from_str(&d.ok(&["inspect", "stats", "--json"])).unwrap();
    assert!(v["queues"]["q"]["pending"].as_u64().unwrap() >= 4, "{v}");
    // Pending jobs, oldest first, with when each was enqueued.
    let mut out = Vec::new();
    for line in redis.lines(&["LRANGE", &format!("{}:{{q}}:pending", d.ns), "0", "-1"]) {
        let job: Value = serde_json::from_str(&d.ok(&["inspect", "job", &line, "--json"])).unwrap();
        let enqueued = chrono::DateTime::parse_from_rfc3339(job["enqueued_at"].as_str().unwrap()).unwrap();
        let tick = tick_of(&line);
        out.push((tick, (enqueued.timestamp_millis() - tick * 1000) as f64 / 1000.0));
    }
    out.sort_by_key(|(t, _)| *t);
    out
}

/// Ticks between the first and the last that were never enqueued.
fn missing(ticks: &[(i64, f64)]) -> Vec<i64> {
    let (first, last) = (ticks[0].0, ticks.last().unwrap().0);
    (first..=last).filter(|t| !ticks.iter().any(|(x, _)| x == t)).collect()
}

#[test]
fn after_downtime_catch_up_none_skips_the_missed_ticks() {
    let ticks = outage("none");
    assert!(missing(&ticks).len() >= 4, "{ticks:?}");
    assert!(ticks.iter().all(|(_, late)| *late < 2.5), "nothing enqueued late: {ticks:?}");
}

#[test]
fn after_downtime_catch_up_one_enqueues_only_the_latest_missed_tick() {
    let ticks = outage("one");
    let late: Vec<_> = ticks.iter().filter(|(_, l)| *l >= 2.0).collect();
    assert_eq!(late.len(), 1, "{ticks:?}");
    assert!(missing(&ticks).len() >= 3, "{ticks:?}");
    // It is the newest of the missed ones: right before the on-time ticks.
    let i = ticks.iter().position(|t| t.1 >= 2.0).unwrap();
    assert!(missing(&ticks).iter().all(|&m| m < ticks[i].0), "{ticks:?}");
}

#[test]
fn after_downtime_catch_up_all_enqueues_every_missed_tick() {
    let ticks = outage("all");
    assert!(missing(&ticks).is_empty(), "{ticks:?}");
    assert!(ticks.iter().filter(|(_, l)| *l >= 2.0).count() >= 5, "{ticks:?}");
}

#[test]
fn invalid_schedules_exit_2_naming_the_field_and_change_nothing() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "sched-invalid");
    let refused = |args: &[&str], needle: &str| {
        let o = d.run(&[&["admin", "schedule"], args].concat());
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    };
    refused(&["add", "a", "--cron", "61 * * * *", "--kind", "k"], "field \"cron\"");
    refused(&["add", "a", "--cron", "0 0 30 2 *", "--kind", "k"], "never matches");
    refused(
        &["add", "a", "--cron", "* * * * *", "--tz", "Mars/Olympus", "--kind", "k"],
        "unknown time zone \"Mars/Olympus\"",
    );
    refused(&["add", "a", "--every", "250ms", "--kind", "k"], "field \"every\"");
    refused(&["add", "a b", "--every", "1m", "--kind", "k"], "field \"name\"");
    refused(&["add", "a", "--every", "1m", "--kind", "k", "--catch-up", "some"], "one of none, one, all");
    d.ok(&["admin", "schedule", "add", "a", "--every", "1m", "--kind", "k"]);
    refused(&["add", "a", "--every", "5m", "--kind", "k"], "exists already");
    refused(&["remove", "nope"], "no schedule named \"nope\"");
    // A file with one bad entry: its line and field, and nothing applied.
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "[\n  {\"name\": \"b\", \"every\": \"10s\", \"kind\": \"k\"},\n  {\"name\": \"a\", \"cron\": \"@daily\", \"kind\": \"k\"},\n  {\"name\": \"c\",\n   \"cron\": \"0 3 * * *\", \"tz\": \"Europe/Nowhere\", \"kind\": \"k\"}\n]\n",
    )
    .unwrap();
    let path = file.path().to_str().unwrap();
    refused(&["apply", "--file", path], ":4: schedule \"c\": field \"tz\"");
    let list: Value = serde_json::from_str(&d.ok(&["admin", "schedule", "list", "--json"])).unwrap();
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["schedules"][0]["every"], "1m", "a unchanged");
    std::fs::write(file.path(), "[{\"name\": \"a\", \"every\": \"1m\", \"kind\": \"k\", \"colour\": 1}]").unwrap();
    refused(&["apply", "--file", path], "unknown field `colour`");
    std::fs::write(file.path(), "[{\"name\": \"a\", \"every\": \"1m\", \"kind\": \"k\"}, {\"name\": \"a\", \"every\": \"2m\", \"kind\": \"k\"}]").unwrap();
    refused(&["apply", "--file", path], "named twice");
    // A good file: upserts, and --prune removes what it does not name.
    std::fs::write(file.path(), "[{\"name\": \"b\", \"every\": \"10s\", \"kind\": \"k\"}, {\"name\": \"c\", \"cron\": \"0 3 * * *\", \"tz\": \"Europe/Berlin\", \"kind\": \"k\"}]").unwrap();
    assert_eq!(
        d.ok(&["admin", "schedule", "apply", "--file", path, "--prune"]).trim(),
        "2 added, 0 changed, 1 removed, 0 unchanged"
    );
    assert_eq!(
        d.ok(&["admin", "schedule", "apply", "--file", path]).trim(),
        "0 added, 0 changed, 0 removed, 2 unchanged"
    );
    let list: Value = serde_json::from_str(&d.ok(&["admin", "schedule", "list", "--json"])).unwrap();
    let names: Vec<&str> = list["schedules"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["b", "c"]);
    // Pause, resume, trigger.
    assert!(d.ok(&["admin", "schedule", "pause", "c"]).contains("paused schedule c"));
    assert!(d.ok(&["admin", "schedule", "pause", "c"]).contains("already paused"));
    let list: Value = serde_json::from_str(&d.ok(&["admin", "schedule", "list", "--json"])).unwrap();
    assert_eq!(
        (list["schedules"][1]["paused"].as_bool(), list["schedules"][1]["next_run"].is_null()),
        (Some(true), true)
    );
    d.ok(&["admin", "schedule", "resume", "c"]);
    let out = d.ok(&["admin", "schedule", "trigger", "c"]);
    assert!(out.contains("enqueued cron:c:manual:"), "{out}");
    assert_eq!(d.stat("default", "pending"), 1);
    let list: Value = serde_json::from_str(&d.ok(&["admin", "schedule", "list", "--json"])).unwrap();
    assert_eq!(list["schedules"][1]["last_state"], "pending");
}
