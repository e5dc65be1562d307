//! The command line as users meet it: produce, inspect, admin, exit codes,
//! and bad input rejected whole with the line and field named.

mod common;

use common::*;
use std::time::Duration;

fn keys_of(redis: &Redis, ns: &str) -> Vec<String> {
    redis.lines(&["KEYS", &format!("{ns}:*")])
}

#[test]
fn produce_from_flags_file_and_stdin_with_json_output() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "produce");
    assert_eq!(d.ok(&["produce", "--kind", "noop", "--count", "3"]).trim(), "enqueued 3 job(s), 0 duplicate(s)");
    let f = ndjson(&[
        r#"{"kind":"noop","id":"j1"}"#.into(),
        r#"{"kind":"noop","id":"j1"}"#.into(),
        r#"{"kind":"echo","queue":"other","payload":{"a":[1,2]}}"#.into(),
    ]);
    let out = d.ok(&["produce", "--file", f.path().to_str().unwrap(), "--json"]);
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], serde_json::json!({"id":"j1","queue":"default","status":"enqueued"}));
    assert_eq!(lines[1], serde_json::json!({"id":"j1","queue":"default","status":"duplicate"}));
    assert_eq!(lines[2]["queue"], "other");
    assert_eq!(lines[2]["id"].as_str().unwrap().len(), 26);
    let o = d.run_stdin(&["produce", "--file", "-", "--queue", "fromstdin"], r#"[{"kind":"noop"},{"kind":"noop"}]"#);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(d.stat("default", "pending"), 4);
    assert_eq!(d.stat("other", "pending"), 1);
    assert_eq!(d.stat("fromstdin", "pending"), 2);
    let q = d.ok(&["inspect", "queues"]);
    assert_eq!(q.lines().collect::<Vec<_>>(), ["default", "fromstdin", "other"]);
}

#[test]
fn invalid_input_exits_2_names_line_and_field_and_writes_nothing() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "badinput");
    let good = r#"{"kind":"noop"}"#.to_string();
    let big = format!(r#"{{"kind":"noop","payload":"{}"}}"#, "x".repeat(1 << 20));
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![good.clone(), "{not json".into()], "line 2: invalid JSON"),
        (vec![good.clone(), good.clone(), r#"{"payload":1}"#.into()], "line 3: field \"kind\": missing"),
        (vec![r#"{"kind":"a","max_retries":"x"}"#.into()], "line 1: field \"max_retries\": expected an integer"),
        (vec![r#"{"kind":"a","delay":5}"#.into()], "line 1: field \"delay\""),
        (vec![r#"{"kind":"a","surprise":5}"#.into()], "line 1: field \"surprise\": unknown field"),
        (vec![r#"{"kind":"a","queue":"has space"}"#.into()], "line 1: field \"queue\""),
        (vec![good.clone(), big], "line 2: job spec is"),
        (
            vec![r#"[{"kind":"a"},{"kind":""}]"#.into()],
            "array item 2 (counting from 1): field \"kind\": must not be empty",
        ),
        (vec![format!("{good},"), good.clone()], "line 1: invalid JSON"),
        (vec![format!("{good},"), good.clone()], "NDJSON lines end without a comma"),
        (vec!["{".into(), r#"  "kind": "noop""#.into(), "}".into()], "looks like pretty-printed JSON"),
        (vec!["{".into(), r#"  "kind": "noop""#.into(), "}".into()], "jq -c"),
        (vec![r#"[{"kind":"a"},]"#.into()], "remove the comma after the last item"),
    ];
    for (lines, want) in cases {
        let f = ndjson(&lines);
        let o = d.run(&["produce", "--file", f.path().to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "{want}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "want {want:?} in {:?}", stderr(&o));
        assert!(stderr(&o).starts_with("dtq: "), "{}", stderr(&o));
    }
    for args in [
        vec!["produce", "--kind", "noop", "--payload", "{bad"],
        vec!["produce", "--kind", "noop", "--bogus-flag"],
        vec!["produce", "--file", "/nonexistent/jobs.ndjson"],
        vec!["produce", "--kind", "noop", "--queue", "a{b}"],
        vec!["produce", "--kind", "noop", "--delay", "-5s"],
        vec!["work", "--queues", "a:0"],
        vec!["work", "--rate-limit", "x=0/s"],
    ] {
        let o = d.run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    assert!(keys_of(&redis, &d.ns).is_empty(), "bad input must write nothing");
}

#[test]
fn a_missing_redis_is_exit_1_with_the_url_and_no_password() {
    let port = free_port();
    let d = Dtq { url: format!("redis://user:hunter2@127.0.0.1:{port}"), ns: "t".into() };
    for args in [vec!["produce", "--kind", "noop"], vec!["inspect", "stats"], vec!["admin", "pause", "q"]] {
        let started = std::time::Instant::now();
        let o = d.run(&[args.as_slice(), &["--connect-timeout", "1s"]].concat());
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert!(err.contains(&format!("redis://user:***@127.0.0.1:{port}")), "{err}");
        assert!(!err.contains("hunter2"), "password leaked: {err}");
        assert!(started.elapsed() < Duration::from_secs(8));
    }
}

#[test]
fn a_produce_cut_short_by_redis_reports_what_was_acknowledged() {
    // Redis refuses writes once over maxmemory (noeviction): the produce
    // runs into it part way through the file.
    let redis = Redis::start();
    let base: i64 = redis
        .cli(&["INFO", "memory"])
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    redis.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    redis.cli(&["CONFIG", "SET", "maxmemory", &(base + 3_000_000).to_string()]);
    let d = Dtq::new(&redis, "partial");
    let lines: Vec<String> = (0..50_000).map(|i| format!(r#"{{"kind":"noop","id":"p{i}"}}"#)).collect();
    let f = ndjson(&lines);
    let o = d.run(&["produce", "--file", f.path().to_str().unwrap(), "--json", "--batch-size", "500"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let printed: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let stored = redis.int(&["HLEN", &format!("{}:{{default}}:jobs", d.ns)]) as usize;
    assert!(stored > 0 && stored < 50_000, "Redis should have taken part of the file: {stored}");
    assert_eq!(printed.len(), stored, "every stored job is reported, no other");
    assert!(printed.iter().all(|l| l["status"] == "enqueued"));
    for l in printed.iter().step_by(97) {
        let id = l["id"].as_str().unwrap();
        assert_eq!(
            redis.int(&["HEXISTS", &format!("{}:{{default}}:jobs", d.ns), id]),
            1,
            "{id} reported but not stored"
        );
    }
    assert!(err.contains(&format!("{stored} of 50000 job(s) acknowledged")), "{err}");
    assert!(err.contains("OOM"), "the cause is shown: {err}");
    // Without --json the summary still comes out before the error.
    let o = d.run(&["produce", "--kind", "noop", "--count", "10000", "--queue", "more"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).starts_with("enqueued "), "{}", stdout(&o));
    assert!(stderr(&o).contains("of 10000 job(s) acknowledged"), "{}", stderr(&o));
}

#[test]
fn admin_pause_resume_cancel_and_purge() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "admin");
    let f = ndjson(&[r#"{"kind":"noop","id":"x1"}"#.into(), r#"{"kind":"noop","id":"x2","delay":"1h"}"#.into()]);
    d.ok(&["produce", "--file", f.path().to_str().unwrap()]);
    assert!(d.ok(&["admin", "pause", "default"]).contains("paused"));
    assert_eq!(d.stats("default")["paused"], true);
    d.ok(&["admin", "resume", "default"]);
    assert_eq!(d.stats("default")["paused"], false);
    assert!(d.ok(&["admin", "cancel", "--id", "x2"]).contains("cancelled job x2"));
    assert_eq!(d.stat("default", "scheduled"), 0);
    let o = d.run(&["admin", "cancel", "--id", "x2"]);
    assert_eq!(o.status.code(), Some(2), "a job that is gone is not found: {}", stderr(&o));
    let job: serde_json::Value = serde_json::from_str(&d.ok(&["inspect", "job", "x1", "--json"])).unwrap();
    assert_eq!(job["state"], "pending");
    assert_eq!(job["kind"], "noop");
    assert!(d.ok(&["admin", "purge", "--queue", "default", "--pending"]).contains("purged 1 pending"));
    assert_eq!(d.stat("default", "pending"), 0);
}

#[test]
fn hostile_input_is_rejected_whole_and_writes_nothing() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "hostile");
    let good = r#"{"kind":"noop"}"#;
    // 100k lines with one bad line at the very end.
    let mut lines: Vec<String> = vec![good.to_string(); 100_000];
    lines.push(r#"{"kind":"noop","max_retries":-1}"#.into());
    let big = ndjson(&lines);
    let o = d.run(&["produce", "--file", big.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("line 100001: field \"max_retries\""), "{}", stderr(&o));
    // Exactly 1 MiB + 1 byte.
    let pad = (1 << 20) + 1 - r#"{"kind":"noop","payload":""}"#.len();
    let over = ndjson(&[format!(r#"{{"kind":"noop","payload":"{}"}}"#, "x".repeat(pad))]);
    let o = d.run(&["produce", "--file", over.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("1048577 bytes"), "{}", stderr(&o));
    // A deeply nested payload.
    let nested = ndjson(&[format!(r#"{{"kind":"noop","payload":{}{}}}"#, "[".repeat(10_000), "]".repeat(10_000))]);
    let o = d.run(&["produce", "--file", nested.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("line 1: invalid JSON"), "{}", stderr(&o));
    // Invalid UTF-8.
    let bad_utf8 = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad_utf8.path(), b"{\"kind\":\"no\xffop\"}\n").unwrap();
    let o = d.run(&["produce", "--file", bad_utf8.path().to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("line 1: invalid UTF-8"), "{}", stderr(&o));
    // Queue names that could break the key layout, in a file and as a flag.
    for name in ["a{b}", "a:b", "a b", "", &"q".repeat(10_000)] {
        let spec = ndjson(&[serde_json::json!({"kind": "noop", "queue": name}).to_string()]);
        let o = d.run(&["produce", "--file", spec.path().to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(2), "queue {name:.20}");
        assert!(stderr(&o).contains("field \"queue\""));
        let o = d.run(&["produce", "--kind", "noop", "--queue", name]);
        assert_eq!(o.status.code(), Some(2), "--queue {name:.20}");
    }
    // Absurd counts and durations.
    for args in [
        vec!["produce", "--kind", "noop", "--count", "100000001"],
        vec!["produce", "--kind", "noop", "--count", "-1"],
        vec!["produce", "--kind", "noop", "--delay", "1000000y"],
        vec!["work", "--visibility-timeout", "0s"],
        vec!["work", "--job-timeout", "-3s"],
        vec!["work", "--concurrency", "0"],
    ] {
        let o = d.run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    let delay = ndjson(&[r#"{"kind":"noop","delay":"99999999999h"}"#.into()]);
    assert_eq!(d.run(&["produce", "--file", delay.path().to_str().unwrap()]).status.code(), Some(2));
    assert!(redis.lines(&["KEYS", &format!("{}:*", d.ns)]).is_empty(), "hostile input wrote to Redis");
}

#[test]
fn connect_timeout_holds_against_a_server_that_accepts_but_never_answers() {
    let redis = Redis::start();
    redis.cli(&["CLIENT", "PAUSE", "20000", "ALL"]);
    let d = Dtq::new(&redis, "paused");
    let started = std::time::Instant::now();
    let o = d.run(&["inspect", "stats", "--connect-timeout", "1s"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(started.elapsed() < Duration::from_millis(2500), "took {:?}", started.elapsed());
    // (No CLIENT UNPAUSE: it would wait out the pause too; the server is killed on drop.)
}

#[test]
fn admin_commands_find_jobs_in_every_queue_refuse_ambiguity_and_exit_3_when_nothing_changed() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "admin-rules");
    let f = ndjson(&[
        r#"{"kind":"noop","id":"same","queue":"a","delay":"1h"}"#.into(),
        r#"{"kind":"noop","id":"same","queue":"b","delay":"1h"}"#.into(),
        r#"{"kind":"nosuch","id":"doomed","queue":"other"}"#.into(),
    ]);
    d.ok(&["produce", "--file", f.path().to_str().unwrap()]);
    // One id in two queues: refused, naming both; --queue narrows.
    for args in [vec!["admin", "cancel", "--id", "same"], vec!["inspect", "job", "same"]] {
        let o = d.run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains("several queues: a (scheduled), b (scheduled)"), "{}", stderr(&o));
    }
    assert_eq!(d.stat("a", "scheduled") + d.stat("b", "scheduled"), 2, "nothing changed");
    let o = d.ok(&["admin", "cancel", "--id", "same", "--queue", "a", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!((v["outcome"].as_str(), v["queue"].as_str()), (Some("cancelled"), Some("a")));
    // A dead job in a queue other than "default" is found without --queue.
    let _w = d.worker(&["--queues", "other"]);
    wait_until(Duration::from_secs(10), || d.stat("other", "dead") == 1);
    let o = d.run(&["admin", "cancel", "--id", "doomed", "--json"]);
    assert_eq!(o.status.code(), Some(3), "found but nothing changed");
    assert!(stderr(&o).contains("dead-lettered; nothing changed"), "{}", stderr(&o));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout(&o)).unwrap()["outcome"], "dead");
    let o = d.run(&["admin", "requeue", "--id", "same"]);
    assert_eq!(o.status.code(), Some(3), "a scheduled job is not requeued: {}", stderr(&o));
    assert!(stderr(&o).contains("job same in queue b is scheduled, not dead-lettered"), "{}", stderr(&o));
    assert!(d.ok(&["admin", "requeue", "--id", "doomed"]).contains("requeued job doomed in queue other"));
    let o = d.run(&["admin", "requeue", "--id", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not found in any queue"), "{}", stderr(&o));
    // Pausing: an unknown queue is an error unless --create; twice says so.
    let o = d.run(&["admin", "pause", "nosuch"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no queue named \"nosuch\""), "{}", stderr(&o));
    assert!(!d.ok(&["inspect", "stats", "--json"]).contains("nosuch"), "an error creates nothing");
    assert!(d.ok(&["admin", "pause", "--queue", "nosuch", "--create"]).contains("paused queue nosuch"));
    assert!(d.ok(&["admin", "pause", "nosuch"]).contains("queue nosuch was already paused"));
    assert!(d.ok(&["admin", "resume", "nosuch"]).contains("resumed queue nosuch"));
    assert!(d.ok(&["admin", "resume", "nosuch"]).contains("was not paused"));
    // Purge: the selector's message lists every choice; --dry-run changes nothing.
    let o = d.run(&["admin", "purge", "--queue", "b"]);
    assert_eq!(o.status.code(), Some(2));
    for flag in ["--dead", "--pending", "--scheduled", "--all"] {
        assert!(stderr(&o).contains(flag), "{flag}: {}", stderr(&o));
    }
    assert!(d.ok(&["admin", "purge", "--queue", "b", "--scheduled", "--dry-run"]).contains("would purge 1 scheduled"));
    assert_eq!(d.stat("b", "scheduled"), 1);
    // delete-queue: refused while the queue holds jobs, unless --force.
    let o = d.run(&["admin", "delete-queue", "--queue", "b"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("holds 1 job(s) (0 pending, 0 in flight, 1 scheduled, 0 dead)"), "{}", stderr(&o));
    assert_eq!(d.stat("b", "scheduled"), 1, "nothing deleted");
    assert!(d.ok(&["admin", "purge", "--queue", "b", "--scheduled"]).contains("purged 1 scheduled"));
    assert!(d.ok(&["admin", "delete-queue", "--queue", "b"]).contains("deleted queue b and its 0 job(s)"));
    let f = ndjson(&[r#"{"kind":"noop","queue":"c"}"#.into()]);
    d.ok(&["produce", "--file", f.path().to_str().unwrap()]);
    assert!(d.ok(&["admin", "delete-queue", "--queue", "c", "--force"]).contains("deleted queue c and its 1 job(s)"));
    let stats = d.ok(&["inspect", "stats", "--json"]);
    assert!(!stats.contains("\"b\"") && !stats.contains("\"c\""), "{stats}");
    assert!(keys_of(&redis, &d.ns).iter().all(|k| !k.contains("{c}")), "every key of c is gone");
}

#[test]
fn requeue_all_ends_while_its_jobs_keep_dying() {
    // A worker runs: each requeued job dies again at once. Looping until a
    // round finds nothing never ended; requeue --all moves what was dead
    // when it started, once.
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "requeue-bound");
    d.ok(&["produce", "--kind", "nosuch", "--count", "3000", "--queue", "loop"]);
    let _w = d.worker(&["--queues", "loop", "--concurrency", "64"]);
    wait_until(Duration::from_secs(20), || d.stat("loop", "dead") == 3000);
    let started = std::time::Instant::now();
    let o = d.ok(&["admin", "requeue", "--all", "--queue", "loop"]);
    assert!(o.contains("requeued 3000 job(s) in queue loop"), "{o}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn cancel_looks_at_a_bounded_part_of_a_long_queue() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "cancel-bound");
    let lines: Vec<String> = (0..25_000).map(|i| format!(r#"{{"kind":"noop","id":"j{i}"}}"#)).collect();
    let f = ndjson(&lines);
    d.ok(&["produce", "--file", f.path().to_str().unwrap()]);
    // The oldest and the newest are found; one in the middle is refused
    // with the reason, not looked for through the whole list.
    assert!(d.ok(&["admin", "cancel", "--id", "j0"]).contains("cancelled job j0"));
    assert!(d.ok(&["admin", "cancel", "--id", "j24999"]).contains("cancelled job j24999"));
    let o = d.run(&["admin", "cancel", "--id", "j12500"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stderr(&o).contains("beyond the 10000 oldest and newest"), "{}", stderr(&o));
    assert_eq!(d.stat("default", "pending"), 24_998);
}

#[test]
fn connection_errors_read_as_sentences_and_honour_the_timeout() {
    // Nothing listening: one line, the cause in words, after the whole timeout.
    let port = free_port();
    let d = Dtq { url: format!("redis://127.0.0.1:{port}"), ns: "t".into() };
    let started = std::time::Instant::now();
    let o = d.run(&["inspect", "stats", "--connect-timeout", "2s"]);
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("connection refused (is Redis running there? set --redis or DTQ_REDIS_URL)"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "retries are quiet: {err}");
    assert!(!err.contains("Os {") && !err.contains("kind:"), "no debug structs: {err}");
    assert!(took >= Duration::from_millis(1900) && took < Duration::from_secs(5), "{took:?} for a 2s timeout");
    // Something that is not Redis (an HTTP server) on the port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            use std::io::Write;
            let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let d = Dtq { url: format!("redis://{addr}"), ns: "t".into() };
    let o = d.run(&["inspect", "stats", "--connect-timeout", "1s"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not speak the Redis protocol"), "{}", stderr(&o));
    // rediss:// to a plain Redis port.
    let redis = Redis::shared();
    let plain = redis.url.replace("redis://", "rediss://");
    let d = Dtq { url: plain, ns: "t".into() };
    let o = d.run(&["inspect", "stats", "--connect-timeout", "1s"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("TLS handshake failed"), "{}", stderr(&o));
}

#[test]
fn mistakes_in_flags_get_messages_that_say_the_rule() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "flag-mistakes");
    for (args, says) in [
        (vec!["work", "--queues", "a:99999999999"], "weight must be 1 to 1000"),
        (vec!["work", "--queues", "a:x"], "is not a whole number 1 to 1000"),
        (vec!["produce", "--kind", "noop", "--delay", "-5s"], "durations cannot be negative"),
        (vec!["produce", "--kind", "noop", "--count", "3", "--idempotency-key", "k1"], "only the first could ever run"),
        (vec!["reap", "--lock-ttl", "10ms"], "must be at least 1s"),
    ] {
        let o = d.run(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }
    assert!(keys_of(&redis, &d.ns).is_empty(), "nothing written");
    // One job made: its id is printed, ready for `inspect job`.
    let o = d.ok(&["produce", "--kind", "noop"]);
    let id = o.trim().strip_prefix("enqueued job ").and_then(|r| r.strip_suffix(" (queue default)")).expect(&o);
    assert!(d.ok(&["inspect", "job", id]).contains("pending"));
}

#[test]
fn a_second_worker_on_the_same_port_is_told_how_to_choose_one() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "listen-in-use");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = d.run(&["work", "--listen", &addr]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains(&format!("cannot listen on {addr}: the port is in use")), "{err}");
    assert!(err.contains("--listen ADDR:PORT, or --listen off"), "{err}");
}

#[test]
fn the_five_minute_tour_in_the_readme_works() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let tour = readme.split("## Five minutes with dtq").nth(1).unwrap();
    let block = tour.split("```sh\n").nth(1).unwrap().split("\n```").next().unwrap();
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "tour");
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = std::path::Path::new(DTQ).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let o = std::process::Command::new("bash")
        .args(["-e", "-c", block])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("DTQ_REDIS_URL", &d.url)
        .env("DTQ_NAMESPACE", &d.ns)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("enqueued job "), "{out}");
    assert!(out.contains("cannot do"), "the dead letter shows its error: {out}");
    assert!(out.contains("requeued 1 job(s) in queue default"), "{out}");
    assert_eq!(d.stat("default", "processed"), 1);
    // The requeued job waits, or failed again if the worker took it first.
    assert_eq!(d.stat("default", "pending") + d.stat("default", "dead"), 1);
}

#[test]
fn help_groups_flags_under_headings_and_carries_the_handler_contract() {
    let d = Dtq { url: "redis://127.0.0.1:1".into(), ns: "t".into() };
    let long = d.ok(&["work", "--help"]);
    let short = d.ok(&["work", "-h"]);
    let headings: Vec<&str> = long.lines().filter(|l| !l.starts_with(' ') && l.ends_with(':')).collect();
    for h in [
        "Options:",
        "Throughput:",
        "Handler:",
        "Leases and timeouts:",
        "Retries:",
        "Rate limiter and circuit breaker:",
        "Reaper:",
        "Ops endpoint:",
        "Redis and global options:",
    ] {
        assert!(headings.contains(&h), "{h} missing from {headings:?}");
    }
    // Global flags sit under their own heading, after the command's own.
    let globals = long.find("Redis and global options:").unwrap();
    assert!(long.find("--redis").unwrap() > globals && long.find("--exec").unwrap() < globals, "{long}");
    assert!(!long.contains("DTQ_NAMESPACE="), "an env var reads as set to empty: {long}");
    // The handler contract is in the long help, not only in the README.
    for needle in ["65 = permanent failure", "DTQ_ATTEMPT", "429 and 5xx = retry"] {
        assert!(long.contains(needle), "{needle}");
    }
    assert!(short.len() < long.len() && !short.contains("DTQ_ATTEMPT"), "-h is the short help");
}

#[test]
fn completions_man_pages_and_version_come_from_the_flag_definitions() {
    let d = Dtq { url: "redis://127.0.0.1:1".into(), ns: "t".into() };
    let bash = d.ok(&["completions", "bash"]);
    assert!(bash.contains("_dtq()") && bash.contains("--visibility-timeout"), "bash completion knows work's flags");
    let zsh = d.ok(&["completions", "zsh"]);
    assert!(zsh.contains("#compdef dtq"));
    let man = d.ok(&["man"]);
    assert!(man.contains(".TH dtq 1") && man.contains("distributed task queue"));
    let dir = tempfile::tempdir().unwrap();
    d.ok(&["man", "--out-dir", dir.path().to_str().unwrap()]);
    let work = std::fs::read_to_string(dir.path().join("dtq-work.1")).unwrap();
    assert!(work.contains("visibility\\-timeout"), "one page per command");
    let version = d.ok(&["--version"]);
    assert!(version.starts_with("dtq 0.") && version.contains('('), "version with the commit: {version}");
    // A closed pipe ends the output quietly.
    let mut c = d.cmd().args(["completions", "bash"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
    drop(c.stdout.take());
    let status = c.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn bench_against_a_fleet_only_adds_to_an_existing_queue_and_deletes_nothing() {
    // `bench --no-workers --queue prod` once deleted `prod` after its wait:
    // 50 pending and 50 scheduled jobs that were there before, with their
    // counters. It must only add its jobs, which the fleet consumes.
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "bench-fleet");
    d.ok(&["produce", "--kind", "noop", "--count", "50", "--queue", "prod", "--delay", "1h"]);
    d.ok(&["produce", "--kind", "noop", "--count", "50", "--queue", "prod"]);
    let _fleet = d.worker(&["--queues", "prod"]);
    let o = d.ok(&["bench", "--no-workers", "--queue", "prod", "--jobs", "200", "--json"]);
    let report: serde_json::Value = serde_json::from_str(o.trim().lines().last().unwrap()).unwrap();
    assert_eq!(report["completed"], 200, "{report}");
    assert!(d.ok(&["inspect", "queues"]).contains("prod"), "the queue is still there");
    assert_eq!(d.stat("prod", "scheduled"), 50, "the delayed jobs that were there are untouched");
    let s = d.stats("prod");
    assert_eq!(s["processed"].as_u64(), Some(250), "the counters kept counting: {s}");
}

#[test]
fn inspect_job_shows_who_and_where_first_and_names_each_time() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "inspect-layout");
    let f = ndjson(&[r#"{"kind":"noop","id":"later","delay":"1h","max_retries":2}"#.into()]);
    d.ok(&["produce", "--file", f.path().to_str().unwrap()]);
    let o = d.ok(&["inspect", "job", "later"]);
    let labels: Vec<&str> = o.lines().map(|l| l.split("  ").next().unwrap().trim()).collect();
    assert_eq!(labels[..4], ["id", "queue", "state", "kind"], "{o}");
    assert!(o.contains("state            scheduled"), "{o}");
    assert!(o.contains("runs at "), "the time says what it is: {o}");
    assert!(o.contains("attempts         0 started, 3 allowed"), "{o}");
}

#[test]
fn a_job_file_with_a_byte_order_mark_is_read() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "bom");
    let f = ndjson(&["\u{feff}{\"kind\":\"noop\"}".into(), r#"{"kind":"noop"}"#.into()]);
    assert!(d.ok(&["produce", "--file", f.path().to_str().unwrap()]).contains("enqueued 2 job(s)"));
}
