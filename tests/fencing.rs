//! Fenced execution: a worker that cannot renew a lease stops that attempt
//! before the lease can run out (its `--exec` process group included), so a
//! recovered job never runs beside its previous attempt; a dead worker's
//! jobs, keyed or not, come back within about the visibility timeout; a
//! panicking handler fails its attempt; a replayed dequeue leases nothing
//! twice; a full Redis makes nothing run twice.

mod common;

use common::*;
use dtq::broker::{connect::parse_target, Broker, NewJob, TlsFiles};
use dtq::worker::{self, Handler, HandlerFuture, JobContext, WorkerConfig};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const FAST: &[&str] = &["--backoff-base", "50ms", "--backoff-max", "200ms", "--reap-interval", "100ms"];

fn keyed_jobs_of_a_killed_worker_run_again_within_seconds(d: &Dtq) {
    let ledger = Ledger::new();
    let exec = ledger.exec("sleep 2");
    let lines: Vec<String> = (0..16).map(|i| format!(r#"{{"kind":"pay","id":"order-{i}"}}"#)).collect();
    let f = ndjson(&lines);
    d.ok(&["produce", "--file", f.path().to_str().unwrap()]);
    let args = ["--exec", &exec, "--concurrency", "16", "--visibility-timeout", "3s"];
    let mut victim = d.worker(&[&args[..], &["--no-reaper"]].concat());
    wait_until(Duration::from_secs(10), || ledger.entries().len() == 16);
    victim.kill9();
    let killed = Instant::now();
    let _survivor = d.worker(&[&args[..], FAST].concat());
    wait_until(Duration::from_secs(15), || d.stat("default", "processed") == 16);
    let took = killed.elapsed();
    // Each ran on attempt 1 (killed), then once more on attempt 2.
    let mut runs: HashMap<String, Vec<u32>> = HashMap::new();
    for (id, attempt) in ledger.entries() {
        runs.entry(id).or_default().push(attempt);
    }
    assert!(runs.values().all(|a| a == &[1, 2]), "{runs:?}");
    // Lease 3 s + reaper + the 2 s job: well inside 10 s (was: after the
    // 5 min idempotency lock).
    assert!(took < Duration::from_secs(10), "keyed jobs came back after {took:?}");
    eprintln!("kill -9 to 16 keyed jobs done again: {took:?}");
}

#[test]
fn a_killed_workers_keyed_jobs_run_again_within_seconds() {
    keyed_jobs_of_a_killed_worker_run_again_within_seconds(&Dtq::new(&Redis::shared(), "keyed-kill"));
}

#[test]
fn a_killed_workers_keyed_jobs_run_again_within_seconds_on_a_cluster() {
    keyed_jobs_of_a_killed_worker_run_again_within_seconds(&Cluster::shared().dtq("keyed-kill"));
}

#[test]
fn a_worker_cut_off_from_redis_stops_its_attempt_and_its_grandchildren_before_the_lease_runs_out() {
    // Its own server: the pause stops every client of it.
    let redis = Redis::start();
    let d = Dtq::new(&redis, "fence");
    let ledger = Ledger::new();
    let effects = ledger.dir.path().join("effects");
    // The handler starts a grandchild that writes the effect 3 s later.
    let exec = ledger.exec(&format!("sh -c 'sleep 3; echo \"$DTQ_ATTEMPT\" >> {}' &\nwait", effects.display()));
    let f = ndjson(&[r#"{"kind":"charge","id":"charge-1"}"#.into()]);
    d.ok(&["produce", "--file", f.path().to_str().unwrap()]);
    let w = d.worker(&[&["--exec", exec.as_str(), "--visibility-timeout", "2s"], FAST].concat());
    wait_until(Duration::from_secs(10), || ledger.entries().len() == 1);
    // Redis stops answering for longer than the lease.
    redis.cli(&["CLIENT", "PAUSE", "4000", "ALL"]);
    w.wait_log("stopping their attempts", Duration::from_secs(4));
    wait_until(Duration::from_secs(20), || d.stat("default", "processed") == 1);
    std::thread::sleep(Duration::from_secs(1));
    let attempts: Vec<u32> = ledger.entries().into_iter().map(|(_, a)| a).collect();
    assert_eq!(attempts, [1, 2], "{}", w.log_text());
    assert_eq!(read_lines(&effects), ["2"], "the first attempt's grandchild must die with it");
    assert!(w.log_text().contains("attempt stopped"), "{}", w.log_text());
}

/// A handler that panics for kind `boom` and succeeds otherwise.
struct Panicky;

impl Handler for Panicky {
    fn handle<'a>(&'a self, job: &'a JobContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            if job.kind == "boom" {
                panic!("boom on attempt {}", job.attempt);
            }
            Ok(None)
        })
    }
}

async fn broker(url: &str, ns: &str) -> Broker {
    Broker::connect(parse_target(url, &TlsFiles::default()).unwrap(), ns, Some(Duration::from_secs(5))).await.unwrap()
}

#[tokio::test]
async fn a_panicking_library_handler_is_retried_then_dead_lettered() {
    let redis = Redis::shared();
    let d = Dtq::new(&redis, "panic");
    d.ok(&["produce", "--kind", "boom", "--max-retries", "1", "--queue", "p"]);
    d.ok(&["produce", "--kind", "fine", "--queue", "p"]);
    let b = broker(&redis.url, &d.ns).await;
    let mut cfg = WorkerConfig::new(vec![("p".into(), 1)]);
    cfg.backoff_base = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(20);
    let stop = tokio_util::sync::CancellationToken::new();
    let status = Arc::new(dtq::http::Status::default());
    let w = tokio::spawn(worker::run(b.clone(), cfg, Arc::new(Panicky), status, stop.clone()));
    let reaper = tokio::spawn(dtq::reaper::run(
        b.clone(),
        dtq::reaper::ReaperConfig { interval: Duration::from_millis(50), ..Default::default() },
        Arc::new(dtq::http::Status::default()),
        stop.clone(),
    ));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let s = b.queue_stats("p").await.unwrap();
        if s.dead == 1 && s.processed == 1 {
            assert_eq!((s.inflight, s.pending, s.scheduled, s.failed), (0, 0, 0, 2));
            break;
        }
        assert!(Instant::now() < deadline, "{s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = b.dead_letters("p", 10).await.unwrap();
    assert_eq!(dead[0].attempts, 2);
    assert!(dead[0].error.as_deref().unwrap().contains("handler panicked: boom on attempt 2"), "{dead:?}");
    stop.cancel();
    w.await.unwrap().unwrap();
    reaper.await.unwrap();
}

/// A TCP proxy in front of Redis that, when armed, forwards one request
/// and cuts both connections instead of relaying its reply.
fn lossy_proxy(upstream: u16) -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let armed = Arc::new(AtomicBool::new(false));
    let a = armed.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let server = TcpStream::connect(("127.0.0.1", upstream)).unwrap();
            let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = c_read.read(&mut buf) {
                    if n == 0 || s_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
            let a = a.clone();
            std::thread::spawn(move || {
                let (mut s_read, mut c_write) = (server, client);
                let mut buf = [0u8; 65536];
                while let Ok(n) = s_read.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if a.swap(false, Ordering::SeqCst) {
                        // The reply is lost: the command ran, its caller never hears.
                        let _ = c_write.shutdown(std::net::Shutdown::Both);
                        let _ = s_read.shutdown(std::net::Shutdown::Both);
                        break;
                    }
                    if c_write.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    (port, armed)
}

#[tokio::test]
async fn a_dequeue_whose_reply_is_lost_orphans_nothing_and_charges_nothing() {
    let redis = Redis::shared();
    let ns = format!("t-lostreply-{}", std::process::id());
    let (port, armed) = lossy_proxy(redis.port);
    let b = broker(&format!("redis://127.0.0.1:{port}"), &ns).await;
    let k = b.keys("q");
    let jobs: Vec<NewJob> = (0..5)
        .map(|i| NewJob {
            id: format!("j{i}"),
            body: r#"{"r":0,"k":"noop","p":null}"#.into(),
            delay_ms: 0,
            run_at_ms: 0,
            marker: None,
        })
        .collect();
    b.enqueue(&k, &jobs).await.unwrap();
    armed.store(true, Ordering::SeqCst);
    // fred resends the call after reconnecting; the receipt answers it.
    let got = b.dequeue(&k, 5, Duration::from_secs(60), "w:1:", &[]).await.unwrap();
    assert!(!armed.load(Ordering::SeqCst), "the proxy never cut a reply");
    assert_eq!(got.len(), 5, "the replay returns the batch the lost reply carried");
    assert_eq!(redis.int(&["LLEN", &k.pending]), 0);
    assert_eq!(redis.int(&["ZCARD", &k.inflight]), 5);
    let tokens: Vec<String> = got.iter().map(|j| j.token.clone()).collect();
    let leases = redis.lines(&["HVALS", &k.leases]);
    assert!(leases.iter().all(|t| tokens.contains(t)), "every lease belongs to the batch we hold: {leases:?}");
    assert_eq!(redis.int(&["HLEN", &k.attempts]), 0, "leased is not started: no attempt charged");
}

#[test]
fn a_full_redis_refuses_new_work_but_never_runs_a_long_job_twice() {
    let redis = Redis::start_with(&["--maxmemory-policy", "noeviction"]);
    let d = Dtq::new(&redis, "oom");
    let ledger = Ledger::new();
    let exec = ledger.exec(r#"[ "$DTQ_KIND" = long ] && sleep 8; exit 0"#);
    let f = ndjson(&[r#"{"kind":"long","id":"long-1"}"#.into()]);
    d.ok(&["produce", "--file", f.path().to_str().unwrap()]);
    let w = d.worker(&[&["--exec", exec.as_str(), "--visibility-timeout", "2s"], FAST].concat());
    wait_until(Duration::from_secs(10), || ledger.entries().len() == 1);
    // Redis over maxmemory: 8 MiB of other data, then the limit set below it.
    redis.cli(&["EVAL", "for i = 1, 8 do redis.call('SET', 'junk:' .. i, string.rep('x', 1048576)) end", "0"]);
    redis.cli(&["CONFIG", "SET", "maxmemory", "4mb"]);
    assert!(redis.cli(&["SET", "probe", "1"]).contains("OOM"), "Redis is not full");
    let refused = d.run(&["produce", "--kind", "noop"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(stderr(&refused).contains("OOM") || stderr(&refused).contains("maxmemory"), "{}", stderr(&refused));
    // The 8 s job outlives four leases while Redis is full: renewed, acked, once.
    wait_until(Duration::from_secs(20), || d.stat("default", "processed") == 1);
    assert_eq!(ledger.entries().len(), 1, "{}", w.log_text());
    assert_eq!(redis.cli(&["HGET", &format!("{}:{{default}}:stats", d.ns), "recovered"]).trim(), "");
    redis.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    d.ok(&["produce", "--kind", "noop"]);
    let resumed = eventually(Duration::from_secs(10), || d.stat("default", "processed") == 2);
    assert!(resumed, "work did not resume: {}\n{}", d.stats("default"), w.log_text());
}
