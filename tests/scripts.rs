//! Each Lua script's transitions, driven through the library's `Broker`
//! against a real Redis: seed, call, and compare the resulting state.

mod common;

use common::Redis;
use dtq::broker::{
    connect::parse_target, Broker, Cancel, Completion, FailTo, Failure, LeaseRef, NewJob, Recovered, Start, StartCheck,
    TlsFiles,
};
use dtq::keys::QueueKeys;
use std::collections::BTreeMap;
use std::time::Duration;

fn done<'a>(lease: &'a LeaseRef, markers: &'a [String]) -> Completion<'a> {
    Completion { lease, markers, result: None }
}

fn failure<'a>(lease: &'a LeaseRef, to: FailTo, error: &'a str, attempt: u32) -> Failure<'a> {
    Failure { lease, to, error, attempt, timed_out: false }
}

/// A namespace unique to this test run.
fn unique(ns: &str) -> String {
    format!("{ns}-{}", std::process::id())
}

async fn broker(redis: &Redis, ns: &str) -> Broker {
    let target = parse_target(&redis.url, &TlsFiles::default()).unwrap();
    Broker::connect(target, ns, Some(Duration::from_secs(5))).await.unwrap()
}

fn job(id: &str) -> NewJob {
    NewJob {
        id: id.into(),
        body: format!(r#"{{"k":"noop","p":null,"r":1,"e":0,"x":"{id}"}}"#),
        delay_ms: 0,
        run_at_ms: 0,
        marker: None,
    }
}

/// Every key of the namespace with its members (scores and hash values that
/// hold tokens or times left out), for whole-state comparisons.
fn dump(redis: &Redis, ns: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for key in redis.lines(&["KEYS", &format!("{ns}:*")]) {
        let short = key.trim_start_matches(&format!("{ns}:")).to_string();
        let kind = redis.cli(&["TYPE", &key]).trim().to_string();
        let mut members = match kind.as_str() {
            "list" => redis.lines(&["LRANGE", &key, "0", "-1"]),
            "zset" => redis.lines(&["ZRANGE", &key, "0", "-1"]),
            "set" => redis.lines(&["SMEMBERS", &key]),
            "hash" if short.ends_with(":stats") || short.ends_with(":attempts") => {
                let kv = redis.lines(&["HGETALL", &key]);
                kv.chunks(2).map(|c| format!("{}={}", c[0], c[1])).collect()
            }
            "hash" => redis.lines(&["HKEYS", &key]),
            _ => vec![redis.cli(&["GET", &key]).trim().to_string()],
        };
        if kind != "list" {
            members.sort();
        }
        out.insert(short, members);
    }
    out
}

fn state(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    entries.iter().map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect())).collect()
}

fn lease(id: &str, token: &str) -> LeaseRef {
    LeaseRef { id: id.into(), token: token.into(), lock: None }
}

#[tokio::test]
async fn enqueue_puts_ready_jobs_in_pending_delayed_in_scheduled_and_reports_duplicates() {
    let redis = Redis::shared();
    let ns = &unique("t-enqueue");
    let b = broker(&redis, ns).await;
    let k = b.keys("q");
    let mut delayed = job("c");
    delayed.delay_ms = 60_000;
    let mut marked = job("d");
    marked.marker = Some(k.idem("d"));
    redis.cli(&["SET", &k.idem("d"), "d"]);
    // A key held by a running attempt is not a completion: no duplicate.
    let mut running = job("e");
    running.marker = Some(k.idem("e"));
    redis.cli(&["SET", &k.idem("e"), "r:w:1"]);
    let r = b.enqueue(&k, &[job("a"), job("b"), delayed, job("a"), marked, running]).await.unwrap();
    assert_eq!(r, [true, true, true, false, false, true]);
    assert_eq!(
        dump(&redis, ns),
        state(&[
            ("queues", &["q"]),
            ("{q}:pending", &["e", "b", "a"]),
            ("{q}:scheduled", &["c"]),
            ("{q}:jobs", &["a", "b", "c", "e"]),
            ("{q}:stats", &["enqueued=4"]),
            ("{q}:signal", &["1"]),
            ("{q}:idem:d", &["d"]),
            ("{q}:idem:e", &["r:w:1"]),
        ])
    );
}

#[tokio::test]
async fn dequeue_leases_in_fifo_order_with_tokens_and_charges_no_attempt() {
    let redis = Redis::shared();
    let ns = &unique("t-dequeue");
    let b = broker(&redis, ns).await;
    let k = b.keys("q");
    b.enqueue(&k, &[job("a"), job("b"), job("c")]).await.unwrap();
    let got = b.dequeue(&k, 2, Duration::from_secs(30), "w:1:", &[]).await.unwrap();
    let ids: Vec<_> = got.iter().map(|j| (j.id.as_str(), j.attempt, j.token.as_str())).collect();
    assert_eq!(ids, [("a", 1, "w:1:1"), ("b", 1, "w:1:2")]);
    assert!(String::from_utf8_lossy(got[0].body.as_deref().unwrap()).contains("\"x\":\"a\""));
    assert_eq!(redis.lines(&["HGETALL", &k.leases]), ["a", "w:1:1", "b", "w:1:2"]);
    let deadline: f64 = redis.cli(&["ZSCORE", &k.inflight, "a"]).trim().parse().unwrap();
    let now = dtq::job::now_ms() as f64;
    assert!((deadline - now - 30_000.0).abs() < 2_000.0, "deadline {deadline} vs now {now}");
    let mut s = dump(&redis, ns);
    s.remove("{q}:leases");
    assert_eq!(
        s,
        state(&[
            ("queues", &["q"]),
            ("{q}:pending", &["c"]),
            ("{q}:inflight", &["a", "b"]),
            ("{q}:jobs", &["a", "b", "c"]),
            ("{q}:stats", &["enqueued=3"]),
            ("{q}:signal", &["1"]),
            ("{q}:receipt:w:1:", &["a\nb"]),
        ])
    );
}

#[tokio::test]
async fn a_replayed_dequeue_returns_the_same_batch_and_orphans_nothing() {
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-replay")).await;
    let k = b.keys("q");
    b.enqueue(&k, &[job("a"), job("b"), job("c")]).await.unwrap();
    let first = b.dequeue(&k, 2, Duration::from_secs(30), "w:7:", &[]).await.unwrap();
    // The same call again (fred resends it when the reply was lost).
    let again = b.dequeue(&k, 2, Duration::from_secs(30), "w:7:", &[]).await.unwrap();
    let ids = |v: &[dtq::broker::Leased]| v.iter().map(|j| (j.id.clone(), j.token.clone())).collect::<Vec<_>>();
    assert_eq!(ids(&again), ids(&first));
    assert_eq!(redis.int(&["LLEN", &k.pending]), 1, "no second batch leased");
    assert_eq!(redis.int(&["ZCARD", &k.inflight]), 2);
    // A replay after one job was settled returns only what is still leased to it.
    b.ack(&k, &[done(&lease("a", "w:7:1"), &[])], Duration::from_secs(60)).await.unwrap();
    let later = b.dequeue(&k, 2, Duration::from_secs(30), "w:7:", &[]).await.unwrap();
    assert_eq!(ids(&later), [("b".to_string(), "w:7:2".to_string())]);
    // The next call deletes the receipts it is given.
    let next = b.dequeue(&k, 5, Duration::from_secs(30), "w:8:", &[k.receipt("w:7:")]).await.unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(redis.int(&["EXISTS", &k.receipt("w:7:")]), 0);
    assert_eq!(redis.int(&["EXISTS", &k.receipt("w:8:")]), 1);
}

#[tokio::test]
async fn a_dequeue_returns_at_most_its_byte_budget_and_puts_the_rest_back_in_order() {
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-bytes")).await;
    let k = b.keys("q");
    let big =
        |id: &str| NewJob { body: format!(r#"{{"k":"noop","p":"{}","r":1,"e":0}}"#, "x".repeat(1 << 20)), ..job(id) };
    let jobs: Vec<NewJob> = (0..10).map(|i| big(&format!("a{i}"))).collect();
    b.enqueue(&k, &jobs).await.unwrap();
    let vt = Duration::from_secs(30);
    let ids = |v: Vec<dtq::broker::Leased>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
    // 4 MiB a call: three bodies of just over 1 MiB fit, the fourth does not.
    assert_eq!(dtq::broker::MAX_DEQUEUE_BYTES, 4 << 20);
    assert_eq!(ids(b.dequeue(&k, 10, vt, "w1:", &[]).await.unwrap()), ["a0", "a1", "a2"]);
    assert_eq!(ids(b.dequeue(&k, 10, vt, "w2:", &[]).await.unwrap()), ["a3", "a4", "a5"]);
    assert_eq!(redis.int(&["ZCARD", &k.inflight]), 6);
    assert_eq!(redis.lines(&["LRANGE", &k.pending, "0", "-1"]), ["a9", "a8", "a7", "a6"]);
    // One body over the whole budget still comes, alone.
    let huge = NewJob { body: format!(r#"{{"k":"noop","p":"{}","r":1,"e":0}}"#, "x".repeat(5 << 20)), ..job("h") };
    let k2 = b.keys("q2");
    b.enqueue(&k2, &[huge, job("small")]).await.unwrap();
    assert_eq!(ids(b.dequeue(&k2, 10, vt, "w3:", &[]).await.unwrap()), ["h"]);
    assert_eq!(ids(b.dequeue(&k2, 10, vt, "w4:", &[]).await.unwrap()), ["small"]);
}

#[tokio::test]
async fn start_charges_the_attempt_and_guards_keys_in_order() {
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-start")).await;
    let k = b.keys("q");
    b.enqueue(&k, &[job("a"), job("b"), job("c"), job("d")]).await.unwrap();
    b.dequeue(&k, 4, Duration::from_secs(30), "w:", &[]).await.unwrap();
    let vt = Duration::from_secs(30);
    let check = |id: &str, token: &str, key: Option<&str>| StartCheck {
        id: id.into(),
        token: token.into(),
        key: key.map(|k2| k.idem(k2)),
        take: true,
        charge: true,
    };
    let r = b
        .start(
            &k,
            vt,
            "w",
            &[
                check("a", "w:1", None),
                check("b", "w:2", Some("key")),
                check("c", "w:3", Some("key")),
                check("d", "stale", Some("other")),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r, [Start::Run(1), Start::Run(1), Start::Held, Start::LeaseLost]);
    assert_eq!(redis.lines(&["HGETALL", &k.attempts]), ["a", "1", "b", "1"]);
    assert_eq!(redis.cli(&["GET", &k.idem("key")]).trim(), "r:w:2");
    let ttl = redis.int(&["PTTL", &k.idem("key")]);
    assert!(ttl > 25_000 && ttl <= 30_000, "the key lives as long as the lease: {ttl}");
    assert_eq!(redis.int(&["EXISTS", &k.idem("other")]), 0, "a lost lease takes no key");
    // The heartbeat renews the key with the lease; a release frees it.
    redis.cli(&["PEXPIRE", &k.idem("key"), "1000"]);
    let held = LeaseRef { id: "b".into(), token: "w:2".into(), lock: Some(k.idem("key")) };
    assert_eq!(b.heartbeat(&k, vt, &[&held]).await.unwrap(), [true]);
    assert!(redis.int(&["PTTL", &k.idem("key")]) > 25_000);
    // An ack marks the key completed (even with a stale lease: the effect happened).
    let stale = LeaseRef { id: "b".into(), token: "old".into(), lock: Some(k.idem("key")) };
    assert_eq!(b.ack(&k, &[done(&stale, &[k.idem("key")])], Duration::from_secs(60)).await.unwrap().done, [false]);
    assert_eq!(redis.cli(&["GET", &k.idem("key")]).trim(), "d");
    assert_eq!(b.start(&k, vt, "w", &[check("c", "w:3", Some("key"))]).await.unwrap(), [Start::Completed]);
    assert_eq!(redis.int(&["HEXISTS", &k.attempts, "c"]), 0, "a completed key costs no attempt");
    // Re-entrant for its holder.
    assert_eq!(b.start(&k, vt, "w", &[check("d", "w:4", Some("k4"))]).await.unwrap(), [Start::Run(1)]);
    assert_eq!(b.start(&k, vt, "w", &[check("d", "w:4", Some("k4"))]).await.unwrap(), [Start::Run(2)]);
}

#[tokio::test]
async fn the_guard_runs_ahead_without_charging_and_the_charge_comes_with_the_handler() {
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-ahead")).await;
    let k = b.keys("q");
    b.enqueue(&k, &[job("a"), job("b")]).await.unwrap();
    b.dequeue(&k, 2, Duration::from_secs(30), "w:", &[]).await.unwrap();
    let vt = Duration::from_secs(30);
    let check = |id: &str, token: &str, key: Option<&str>, charge: bool| StartCheck {
        id: id.into(),
        token: token.into(),
        key: key.map(|k2| k.idem(k2)),
        take: true,
        charge,
    };
    // Guard only: the key is taken, nothing charged; the number is the one
    // the attempt will get.
    let r =
        b.start(&k, vt, "w", &[check("a", "w:1", Some("ka"), false), check("b", "w:2", None, false)]).await.unwrap();
    assert_eq!(r, [Start::Run(1), Start::Run(1)]);
    assert_eq!(redis.int(&["HLEN", &k.attempts]), 0);
    assert_eq!(redis.cli(&["GET", &k.idem("ka")]).trim(), "r:w:1");
    // The charge, later, for both in one call (one HSET).
    let r = b.start(&k, vt, "w", &[check("a", "w:1", None, true), check("b", "w:2", None, true)]).await.unwrap();
    assert_eq!(r, [Start::Run(1), Start::Run(1)]);
    assert_eq!(redis.lines(&["HGETALL", &k.attempts]), ["a", "1", "b", "1"]);
    // A client id's key is only checked: completed or held elsewhere stops
    // the job, a free key is not taken.
    let only = |key: &str| StartCheck {
        id: "b".into(),
        token: "w:2".into(),
        key: Some(k.idem(key)),
        take: false,
        charge: false,
    };
    assert_eq!(b.start(&k, vt, "w", &[only("kb")]).await.unwrap(), [Start::Run(2)]);
    assert_eq!(redis.int(&["EXISTS", &k.idem("kb")]), 0);
    assert_eq!(b.start(&k, vt, "w", &[only("ka")]).await.unwrap(), [Start::Held]);
    redis.cli(&["SET", &k.idem("kb"), "d"]);
    assert_eq!(b.start(&k, vt, "w", &[only("kb")]).await.unwrap(), [Start::Completed]);
}

#[tokio::test]
async fn an_outcome_that_overtakes_its_charge_still_counts_the_attempt_once() {
    // The charge is sent as the handler starts and not waited for, so a fast
    // handler's outcome may reach Redis first (another connection).
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-overtake")).await;
    let k = b.keys("q");
    b.enqueue(&k, &[job("a"), job("b")]).await.unwrap();
    b.dequeue(&k, 2, Duration::from_secs(30), "w:", &[]).await.unwrap();
    let vt = Duration::from_secs(30);
    let charge =
        |id: &str, token: &str| StartCheck { id: id.into(), token: token.into(), key: None, take: false, charge: true };
    // "a" fails as attempt 1 before its charge arrives; "b" is handed back at
    // shutdown (attempt 1 refunded) before its charge arrives.
    b.fail(&k, &[failure(&lease("a", "w:1"), FailTo::RetryIn(0), "boom", 1)]).await.unwrap();
    b.release(&k, &[(&lease("b", "w:2"), 0, Some(1))]).await.unwrap();
    // The late charges find the leases gone and change nothing.
    assert_eq!(b.start(&k, vt, "w", &[charge("a", "w:1"), charge("b", "w:2")]).await.unwrap(), [Start::LeaseLost; 2]);
    assert_eq!(redis.lines(&["HGETALL", &k.attempts]), ["a", "1"]);
    // The retry of "a" is attempt 2; failing it after its charge leaves 2.
    let again = b.dequeue(&k, 2, vt, "x:", &[]).await.unwrap();
    let attempts: Vec<(&str, u32)> = again.iter().map(|j| (j.id.as_str(), j.attempt)).collect();
    assert!(attempts.contains(&("a", 2)) && attempts.contains(&("b", 1)), "{attempts:?}");
    let a = again.iter().find(|j| j.id == "a").unwrap();
    b.start(&k, vt, "w", &[charge("a", &a.token)]).await.unwrap();
    b.fail(&k, &[failure(&lease("a", &a.token), FailTo::Dead, "boom", 2)]).await.unwrap();
    assert_eq!(redis.cli(&["HGET", &k.attempts, "a"]).trim(), "2");
}

#[tokio::test]
async fn a_paused_queue_gives_nothing_until_resumed() {
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-pause")).await;
    let k = b.keys("q");
    b.enqueue(&k, &[job("a")]).await.unwrap();
    b.set_paused(&k, true).await.unwrap();
    assert!(b.dequeue(&k, 10, Duration::from_secs(5), "w:", &[]).await.unwrap().is_empty());
    b.set_paused(&k, false).await.unwrap();
    assert_eq!(b.dequeue(&k, 10, Duration::from_secs(5), "w:", &[]).await.unwrap().len(), 1);
}

#[tokio::test]
async fn ack_completes_the_job_and_a_stale_token_changes_nothing() {
    let redis = Redis::shared();
    let ns = &unique("t-ack");
    let b = broker(&redis, ns).await;
    let k = b.keys("q");
    b.enqueue(&k, &[job("a"), job("b")]).await.unwrap();
    b.dequeue(&k, 2, Duration::from_secs(30), "w:", &[]).await.unwrap();
    let before = dump(&redis, ns);
    let stale = b.ack(&k, &[done(&lease("a", "w:9"), &[])], Duration::from_secs(60)).await.unwrap();
    assert_eq!(stale.done, [false]);
    assert_eq!(dump(&redis, ns), before, "a stale ack must change nothing");
    let markers = vec![k.idem("a")];
    let r = b.ack(&k, &[done(&lease("a", "w:1"), &markers)], Duration::from_secs(60)).await.unwrap();
    assert_eq!(r.done, [true]);
    let mut s = dump(&redis, ns);
    s.remove("{q}:leases");
    assert_eq!(
        s,
        state(&[
            ("queues", &["q"]),
            ("{q}:inflight", &["b"]),
            // Kept as the completed record (retention's default), with its history.
            ("{q}:completed", &["a"]),
            ("{q}:history", &["a"]),
            ("{q}:jobs", &["a", "b"]),
            ("{q}:stats", &["enqueued=2", "processed=1"]),
            ("{q}:signal", &["1"]),
            ("{q}:idem:a", &["d"]),
            ("{q}:receipt:w:", &["a\nb"]),
        ])
    );
    let ttl = redis.int(&["PTTL", &k.idem("a")]);
    assert!(ttl > 50_000 && ttl <= 60_000, "marker ttl {ttl}");
}

#[tokio::test]
async fn fail_retries_with_delay_or_dead_letters_and_rejects_stale_tokens() {
    let redis = Redis::shared();
    let ns = &unique("t-fail");
    let b = broker(&redis, ns).await;
    let k = b.keys("q");
    b.enqueue(&k, &[job("a"), job("b")]).await.unwrap();
    b.dequeue(&k, 2, Duration::from_secs(30), "w:", &[]).await.unwrap();
    let starts = [("a", "w:1"), ("b", "w:2")].map(|(id, t)| StartCheck {
        id: id.into(),
        token: t.into(),
        key: None,
        take: false,
        charge: true,
    });
    b.start(&k, Duration::from_secs(30), "w", &starts).await.unwrap();
    assert_eq!(b.fail(&k, &[failure(&lease("a", "nope"), FailTo::Dead, "x", 1)]).await.unwrap().done, [false]);
    let r = b
        .fail(
            &k,
            &[
                failure(&lease("a", "w:1"), FailTo::RetryIn(60_000), "boom", 1),
                failure(&lease("b", "w:2"), FailTo::Dead, "fatal", 1),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.done, [true, true]);
    let mut s = dump(&redis, ns);
    s.remove("{q}:signal");
    s.remove("{q}:receipt:w:");
    assert_eq!(
        s,
        state(&[
            ("queues", &["q"]),
            ("{q}:scheduled", &["a"]),
            ("{q}:dead", &["b"]),
            ("{q}:jobs", &["a", "b"]),
            ("{q}:attempts", &["a=1", "b=1"]),
            ("{q}:errors", &["a", "b"]),
            ("{q}:history", &["a", "b"]),
            ("{q}:stats", &["dead_lettered=1", "enqueued=2", "failed=2", "retried=1"]),
        ])
    );
    assert_eq!(redis.cli(&["HGET", &k.errors, "b"]).trim(), "fatal");
    let due: f64 = redis.cli(&["ZSCORE", &k.scheduled, "a"]).trim().parse().unwrap();
    assert!(due > dtq::job::now_ms() as f64 + 55_000.0);
}

#[tokio::test]
async fn release_hands_a_job_back_without_spending_an_attempt_and_refunds_on_request() {
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-release")).await;
    let k = b.keys("q");
    b.enqueue(&k, &[job("a"), job("b"), job("c")]).await.unwrap();
    b.dequeue(&k, 2, Duration::from_secs(30), "w:", &[]).await.unwrap();
    let starts = [("a", "w:1"), ("b", "w:2")].map(|(id, t)| StartCheck {
        id: id.into(),
        token: t.into(),
        key: None,
        take: false,
        charge: true,
    });
    b.start(&k, Duration::from_secs(30), "w", &starts).await.unwrap();
    let r = b
        .release(
            &k,
            &[
                (&lease("a", "w:1"), 0, Some(1)),
                (&lease("b", "w:2"), 60_000, Some(1)),
                (&lease("c", "w:3"), 0, Some(1)),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r, [true, true, false]);
    // "a" goes to the head of the line: the next dequeue takes it first.
    assert_eq!(redis.lines(&["LRANGE", &k.pending, "0", "-1"]), ["c", "a"]);
    assert_eq!(redis.lines(&["ZRANGE", &k.scheduled, "0", "-1"]), ["b"]);
    assert_eq!(redis.int(&["HLEN", &k.attempts]), 0);
    assert_eq!(redis.int(&["ZCARD", &k.inflight]), 0);
    let next = b.dequeue(&k, 1, Duration::from_secs(30), "w2:", &[]).await.unwrap();
    assert_eq!((next[0].id.as_str(), next[0].attempt), ("a", 1));
}

#[tokio::test]
async fn heartbeat_extends_live_leases_only() {
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-heartbeat")).await;
    let k = b.keys("q");
    b.enqueue(&k, &[job("a")]).await.unwrap();
    b.dequeue(&k, 1, Duration::from_secs(1), "w:", &[]).await.unwrap();
    let r = b.heartbeat(&k, Duration::from_secs(100), &[&lease("a", "w:1"), &lease("a", "old")]).await.unwrap();
    assert_eq!(r, [true, false]);
    let deadline: f64 = redis.cli(&["ZSCORE", &k.inflight, "a"]).trim().parse().unwrap();
    assert!(deadline > dtq::job::now_ms() as f64 + 90_000.0);
}

#[tokio::test]
async fn recover_requeues_expired_leases_and_dead_letters_exhausted_jobs() {
    let redis = Redis::shared();
    let ns = &unique("t-recover");
    let b = broker(&redis, ns).await;
    let k = b.keys("q");
    b.enqueue(&k, &[job("a"), job("b"), job("c")]).await.unwrap();
    b.enqueue(&k, &[job("never-started")]).await.unwrap();
    b.dequeue(&k, 4, Duration::from_millis(300), "w:", &[]).await.unwrap();
    let starts = [("a", "w:1"), ("b", "w:2")].map(|(id, t)| StartCheck {
        id: id.into(),
        token: t.into(),
        key: None,
        take: false,
        charge: true,
    });
    b.start(&k, Duration::from_millis(300), "w", &starts).await.unwrap();
    b.heartbeat(&k, Duration::from_secs(60), &[&lease("c", "w:3")]).await.unwrap();
    // "b" already used its one retry: its lost attempt was its last.
    redis.cli(&["HSET", &k.attempts, "b", "2"]);
    assert_eq!(b.recover(&k, 100).await.unwrap(), Recovered { recovered: 0, dead: 0, more: false, trimmed: 0 });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.recover(&k, 100).await.unwrap(), Recovered { recovered: 2, dead: 1, more: false, trimmed: 0 });
    assert_eq!(redis.lines(&["LRANGE", &k.pending, "0", "-1"]), ["a", "never-started"]);
    assert_eq!(redis.int(&["HEXISTS", &k.attempts, "never-started"]), 0, "leased but never started: not charged");
    assert_eq!(redis.lines(&["ZRANGE", &k.dead, "0", "-1"]), ["b"]);
    assert_eq!(redis.lines(&["ZRANGE", &k.inflight, "0", "-1"]), ["c"]);
    assert!(redis.cli(&["HGET", &k.errors, "b"]).contains("lease expired"));
    // The old lease of "a" is fenced off.
    assert_eq!(b.ack(&k, &[done(&lease("a", "w:1"), &[])], Duration::from_secs(1)).await.unwrap().done, [false]);
    // The attempt counts: the next delivery is attempt 2.
    let again = b.dequeue(&k, 2, Duration::from_secs(30), "w2:", &[]).await.unwrap();
    let a = again.iter().find(|j| j.id == "a").unwrap();
    assert_eq!(a.attempt, 2);
    assert_eq!(redis.cli(&["HGET", &k.stats, "recovered"]).trim(), "2");
}

#[tokio::test]
async fn promote_moves_due_jobs_and_reports_the_next_due_time() {
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-promote")).await;
    let k = b.keys("q");
    let mut soon = job("soon");
    soon.delay_ms = 100;
    let mut later = job("later");
    later.delay_ms = 60_000;
    b.enqueue(&k, &[soon, later]).await.unwrap();
    let (moved, wait) = b.promote(&k, 10).await.unwrap();
    assert_eq!(moved, 0);
    assert!(wait.unwrap() <= 100);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let (moved, wait) = b.promote(&k, 10).await.unwrap();
    assert_eq!(moved, 1);
    assert!(wait.unwrap() > 50_000);
    assert_eq!(redis.lines(&["LRANGE", &k.pending, "0", "-1"]), ["soon"]);
}

#[tokio::test]
async fn requeue_purge_and_cancel() {
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-admin")).await;
    let k: QueueKeys = b.keys("q");
    b.enqueue(&k, &[job("a"), job("b"), job("c"), job("d")]).await.unwrap();
    b.dequeue(&k, 3, Duration::from_secs(30), "w:", &[]).await.unwrap();
    let starts = [("a", "w:1"), ("b", "w:2")].map(|(id, t)| StartCheck {
        id: id.into(),
        token: t.into(),
        key: None,
        take: false,
        charge: true,
    });
    b.start(&k, Duration::from_secs(30), "w", &starts).await.unwrap();
    b.fail(
        &k,
        &[failure(&lease("a", "w:1"), FailTo::Dead, "e1", 1), failure(&lease("b", "w:2"), FailTo::Dead, "e2", 1)],
    )
    .await
    .unwrap();
    assert_eq!(b.cancel(&k, "c").await.unwrap(), Cancel::Running);
    assert_eq!(b.cancel(&k, "a").await.unwrap(), Cancel::Dead);
    assert_eq!(b.cancel(&k, "zz").await.unwrap(), Cancel::NotFound);
    assert_eq!(b.cancel(&k, "d").await.unwrap(), Cancel::Cancelled);
    assert_eq!(redis.int(&["LLEN", &k.pending]), 0);
    assert_eq!(redis.int(&["HEXISTS", &k.jobs, "d"]), 0);
    assert_eq!(b.requeue(&k, &["a".to_string(), "zz".to_string()], 1).await.unwrap(), 1);
    assert_eq!(redis.lines(&["LRANGE", &k.pending, "0", "-1"]), ["a"]);
    assert_eq!(redis.int(&["HEXISTS", &k.attempts, "a"]), 0, "fresh retry budget");
    assert_eq!(b.purge(&k, "dead", 10).await.unwrap(), 1);
    assert_eq!(b.purge(&k, "pending", 10).await.unwrap(), 1);
    assert_eq!(redis.lines(&["HKEYS", &k.jobs]), ["c"]);
}

#[tokio::test]
async fn the_rate_limit_script_allows_n_per_window_then_staggers_the_denied() {
    let redis = Redis::shared();
    let ns = unique("t-ratelimit");
    let b = broker(&redis, &ns).await;
    let period = Duration::from_millis(800);
    assert_eq!(b.rate_limit("charge", 3, period, 1).await.unwrap(), [None]);
    // A batch is granted in order while the window has room (a burst of N).
    let r = b.rate_limit("charge", 3, period, 9).await.unwrap();
    assert_eq!(r[..2], [None, None]);
    let waits: Vec<u64> = r[2..].iter().map(|w| w.expect("over the limit")).collect();
    // Staggered: the denied come back one PERIOD/N apart from when the
    // oldest start leaves the window, never as one herd...
    assert!(waits[0] > 700 && waits[0] <= 850, "{waits:?}");
    for w in waits.windows(2) {
        assert!((260..=270).contains(&(w[1] - w[0])), "{waits:?}");
    }
    // ...and after those given to earlier calls (of any worker).
    let later = b.rate_limit("charge", 3, period, 1).await.unwrap()[0].expect("over the limit");
    assert!(later + 10 >= waits[6] + 266, "{later} vs {waits:?}");
    tokio::time::sleep(Duration::from_millis(waits[0] + 20)).await;
    assert_eq!(b.rate_limit("charge", 3, period, 1).await.unwrap(), [None]);
}

#[tokio::test]
async fn the_rate_limit_never_allows_more_than_n_in_any_window_and_its_memory_stays_bounded() {
    let redis = Redis::shared();
    let ns = unique("t-ratelimit-window");
    let b = broker(&redis, &ns).await;
    let (n, period) = (5, Duration::from_millis(300));
    let t0 = std::time::Instant::now();
    let mut allowed: Vec<Duration> = Vec::new();
    while t0.elapsed() < Duration::from_millis(1500) {
        let sent = t0.elapsed();
        let r = b.rate_limit("w", n, period, 2).await.unwrap();
        allowed.extend(r.iter().filter(|w| w.is_none()).map(|_| sent));
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // Any window a little shorter than the period (the round trip blurs
    // local times) holds at most N starts.
    let w = period - Duration::from_millis(10);
    for (i, &a) in allowed.iter().enumerate() {
        let inside = allowed[i..].iter().take_while(|&&x| x < a + w).count();
        assert!(inside <= n as usize, "{inside} starts within {w:?} from {a:?}: {allowed:?}");
    }
    // About N per period were granted: the limiter limits, it does not starve.
    assert!(allowed.len() >= 15, "{} starts in 1.5 s at 5 per 300 ms", allowed.len());
    let key = format!("{ns}:rate:{{w}}");
    assert!(redis.int(&["HLEN", &key]) <= 66, "one counter per bucket, not one entry per start");
}

#[tokio::test]
async fn denied_starts_come_back_spread_out_so_few_are_denied_twice() {
    // 300 jobs under 100/s, taken 8 at a time by 4 workers that defer each
    // denied job by the wait it was given. With one wait for every denied
    // start they came back as a herd and were mostly denied again (2,602
    // deferrals for 300 jobs at 20/s).
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-ratelimit-herd")).await;
    let period = Duration::from_secs(1);
    let t0 = tokio::time::Instant::now();
    // They arrive over 0.6 s, so the starts counted are spread too.
    let due: Vec<_> = (0..300).map(|i| t0 + Duration::from_millis(2 * i)).collect();
    let due = std::sync::Arc::new(std::sync::Mutex::new(due));
    let denied = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (b, due, denied) = (b.clone(), due.clone(), denied.clone());
            tokio::spawn(async move {
                loop {
                    let now = tokio::time::Instant::now();
                    let taken: Vec<_> = {
                        let mut d = due.lock().unwrap();
                        if d.is_empty() {
                            return;
                        }
                        d.sort();
                        let ready = d.iter().take_while(|&&t| t <= now).count().min(8);
                        d.drain(..ready).collect()
                    };
                    if taken.is_empty() {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    let r = b.rate_limit("herd", 100, period, taken.len()).await.unwrap();
                    let mut d = due.lock().unwrap();
                    for wait in r.into_iter().flatten() {
                        denied.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        d.push(now + Duration::from_millis(wait));
                    }
                }
            })
        })
        .collect();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(10), w).await.expect("all 300 started").unwrap();
    }
    let denied = denied.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("300 jobs at 100/s, 4 workers: {denied} deferrals in {:?}", t0.elapsed());
    assert!(denied <= 300, "{denied} deferrals for 300 jobs: the denied came back as a herd");
}

#[tokio::test]
async fn scripts_are_reloaded_after_a_script_flush() {
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-noscript")).await;
    let k = b.keys("q");
    redis.cli(&["SCRIPT", "FLUSH"]);
    assert_eq!(b.enqueue(&k, &[job("a")]).await.unwrap(), [true]);
}

#[tokio::test]
async fn a_dead_job_whose_body_is_not_utf8_is_listed_marked_corrupt() {
    // One such body made `inspect dead-letter --json` fail for the whole queue.
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-corrupt-read")).await;
    let k = b.keys("q");
    b.enqueue(&k, &[job("ok"), job("bad")]).await.unwrap();
    b.dequeue(&k, 2, Duration::from_secs(30), "w:", &[]).await.unwrap();
    b.fail(
        &k,
        &[failure(&lease("ok", "w:1"), FailTo::Dead, "e", 1), failure(&lease("bad", "w:2"), FailTo::Dead, "e", 1)],
    )
    .await
    .unwrap();
    let raw = fred::bytes::Bytes::from_static(&[0xff, 0xfe, b'{']);
    let _: i64 = fred::interfaces::HashesInterface::hset(b.client(), &k.jobs, ("bad", raw)).await.unwrap();
    let dead = b.dead_letters("q", 10).await.unwrap();
    assert_eq!(dead.len(), 2);
    let bad = dead.iter().find(|d| d.id == "bad").unwrap();
    let ok = dead.iter().find(|d| d.id == "ok").unwrap();
    assert!(bad.corrupt && bad.kind.is_none(), "{bad:?}");
    assert!(!ok.corrupt && ok.kind.as_deref() == Some("noop"), "{ok:?}");
    // Looked up alone, and filtered in Redis, it is shown, not fatal.
    let job = b.job_in("bad", "q").await.unwrap().unwrap();
    assert!(job.corrupt && job.state == "dead" && job.history.len() == 1, "{job:?}");
    let filter = dtq::broker::Filter { search: Some("BAD".into()), ..Default::default() };
    let found = b.finished_matching("q", dtq::broker::JobState::Dead, &filter, 10).await.unwrap();
    assert_eq!(found.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["bad"]);
    let filter = dtq::broker::Filter { kind: Some("noop".into()), ..Default::default() };
    let found = b.finished_matching("q", dtq::broker::JobState::Dead, &filter, 10).await.unwrap();
    assert_eq!(found.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["ok"]);
}

#[tokio::test]
async fn finished_jobs_page_by_cursor_through_ties_each_exactly_once() {
    let redis = Redis::shared();
    let b = broker(&redis, &unique("t-find-pages")).await;
    let k = b.keys("q");
    // 600 entries in 3 runs of equal scores (ties are the hard part of a
    // score cursor), plus bodies for a third of them.
    let mut args = vec!["ZADD".to_string(), k.dead.clone()];
    for i in 0..600 {
        args.push((1_000 + i / 200).to_string());
        args.push(format!("j{i:03}"));
    }
    redis.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = b.finished("q", dtq::broker::JobState::Dead, &Default::default(), cursor.as_ref(), 7).await.unwrap();
        assert!(page.jobs.len() <= 7);
        seen.extend(page.jobs.into_iter().map(|j| (j.at_ms, j.id)));
        pages += 1;
        match page.next {
            Some(c) => cursor = Some(c.to_string().parse::<dtq::broker::Cursor>().unwrap()),
            None => break,
        }
    }
    assert!(pages >= 600 / 7, "{pages} pages");
    let mut ids: Vec<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "newest first");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 600, "every entry exactly once");
    assert_eq!(seen.len(), 600);
}
