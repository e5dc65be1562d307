//! `dtq bench`: a load generator against the configured Redis.
//!
//! * Drain mode (`--jobs N`): enqueue N jobs in bulk (timed: the bulk
//!   enqueue rate), then time an in-process worker draining them.
//! * Open-loop mode (`--rps R --duration D`): jobs are sent on a fixed
//!   schedule, each carrying its *intended* send time; latency runs from that
//!   time, so a producer that falls behind shows up as latency instead of
//!   hiding it (no coordinated omission). Enqueue → start is taken when the
//!   handler starts; enqueue → done when the job's ack is in Redis.
//!
//! The bench uses a fresh queue of its own and deletes it afterwards.

use super::out;
use crate::broker::{Broker, NewJob};
use crate::cli::{BenchArgs, Global};
use crate::worker::{self, handler::HandlerFuture, Handler, JobContext, WorkerConfig};
use anyhow::Result;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Records, per job, the latency from its intended send time.
struct Recorder {
    epoch: Instant,
    started: Mutex<Histogram<u64>>,
    done: Mutex<Histogram<u64>>,
    /// Intended send time of each started job, until its ack lands.
    running: Mutex<std::collections::HashMap<String, u64>>,
    completed: AtomicU64,
}

impl Recorder {
    fn new() -> Arc<Self> {
        let h = || Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds"));
        Arc::new(Recorder {
            epoch: Instant::now(),
            started: h(),
            done: h(),
            running: Mutex::new(std::collections::HashMap::new()),
            completed: AtomicU64::new(0),
        })
    }

    fn since(&self, intended_us: u64) -> u64 {
        (self.epoch.elapsed().as_micros() as u64).saturating_sub(intended_us).max(1)
    }

    /// The ack of job `id` is in Redis: it is done.
    fn acked(&self, id: &str) {
        if let Some(t) = self.running.lock().unwrap_or_else(|p| p.into_inner()).remove(id) {
            let _ = self.done.lock().unwrap_or_else(|p| p.into_inner()).record(self.since(t));
        }
        self.completed.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(serde::Deserialize)]
struct BenchPayload {
    t: u64,
}

struct BenchHandler(Arc<Recorder>);

impl Handler for BenchHandler {
    fn handle<'a>(&'a self, job: &'a JobContext) -> HandlerFuture<'a> {
        let r = &self.0;
        let t = serde_json::from_str::<BenchPayload>(job.payload.get()).map(|p| p.t).ok();
        if let Some(t) = t {
            let _ = r.started.lock().unwrap_or_else(|p| p.into_inner()).record(r.since(t));
            r.running.lock().unwrap_or_else(|p| p.into_inner()).insert(job.id.clone(), t);
        }
        Box::pin(async { Ok(None) })
    }
}

#[derive(Debug, Serialize)]
struct Latency {
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

fn latency(h: &Histogram<u64>) -> Option<Latency> {
    if h.is_empty() {
        return None;
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Some(Latency {
        p50_ms: ms(0.5),
        p90_ms: ms(0.9),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: h.max() as f64 / 1000.0,
    })
}

#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    jobs: u64,
    concurrency: u64,
    payload_bytes: u64,
    enqueue_rate: f64,
    completion_rate: Option<f64>,
    completed: u64,
    seconds: f64,
    start_latency: Option<Latency>,
    done_latency: Option<Latency>,
}

pub async fn run(g: &Global, a: BenchArgs) -> Result<()> {
    crate::metrics::install();
    let broker = super::connect(g).await?;
    // In-process workers get a fresh queue; an external fleet works the
    // queue it was told, so --no-workers uses --queue as given.
    let queue = if a.no_workers {
        a.queue.clone()
    } else {
        format!("{}-{}", a.queue, &crate::job::new_id()[16..]).to_ascii_lowercase()
    };
    // Bench deletes only what it created: a queue that existed before (an
    // external fleet's) only gets bench jobs added, which the fleet consumes.
    let existed = broker.queue_exists(&queue).await?;
    if existed && !a.no_workers {
        return super::usage(format!(
            "queue {queue:?} already exists; bench with in-process workers needs a new queue"
        ));
    }
    if let Some(n) = a.completed_max {
        let update = crate::retention::RetentionUpdate { completed_max: Some(n), ..Default::default() };
        broker.set_retention(&broker.keys(&queue), &update).await?;
    }
    let result = match a.jobs {
        Some(n) => drain(&broker, &queue, n, &a).await,
        None => open_loop(&broker, &queue, &a).await,
    };
    if !existed {
        broker.delete_queue(&queue).await?;
    }
    let report = result?;
    if a.json {
        return out(serde_json::to_string(&report)?);
    }
    out(format!(
        "{} on {}: {} jobs, concurrency {}, payload {} B",
        report.mode,
        broker.redacted_url(),
        report.jobs,
        report.concurrency,
        report.payload_bytes
    ))?;
    out(format!("  enqueue     {:>10.0} jobs/s", report.enqueue_rate))?;
    if let Some(c) = report.completion_rate {
        out(format!("  completion  {:>10.0} jobs/s ({} completed in {:.2} s)", c, report.completed, report.seconds))?;
    }
    for (name, l) in [("enqueue→start", &report.start_latency), ("enqueue→done ", &report.done_latency)] {
        if let Some(l) = l {
            out(format!(
                "  {name}  p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
            ))?;
        }
    }
    Ok(())
}

fn payload(t_us: u64, pad: &str) -> String {
    if pad.is_empty() {
        format!("{{\"t\":{t_us}}}")
    } else {
        format!("{{\"t\":{t_us},\"pad\":\"{pad}\"}}")
    }
}

/// A `noop` job whose payload carries its intended send time `t_us`.
fn new_job(t_us: u64, pad: &str) -> NewJob {
    let body = format!("{{\"k\":\"noop\",\"p\":{},\"r\":0,\"e\":0}}", payload(t_us, pad));
    NewJob { id: crate::job::new_id(), body, delay_ms: 0, run_at_ms: 0, marker: None }
}

fn start_worker(
    broker: &Broker,
    queue: &str,
    a: &BenchArgs,
    rec: &Arc<Recorder>,
) -> (CancellationToken, tokio::task::JoinHandle<Result<(), String>>) {
    let mut cfg = WorkerConfig::new(vec![(queue.to_string(), 1)]);
    cfg.concurrency = a.concurrency as usize;
    cfg.prefetch = a.prefetch.map(|p| p as usize);
    cfg.shutdown_grace = Duration::from_secs(5);
    let hook = rec.clone();
    cfg.on_ack = Some(worker::AckHook(Arc::new(move |id: &str| hook.acked(id))));
    let stop = CancellationToken::new();
    let status = Arc::new(crate::http::Status::default());
    let handle =
        tokio::spawn(worker::run(broker.clone(), cfg, Arc::new(BenchHandler(rec.clone())), status, stop.clone()));
    (stop, handle)
}

/// A progress display: a spinner line on a terminal, a plain line a second otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_plain: Instant,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Progress { bar, last_plain: Instant::now() }
    }

    fn show(&mut self, msg: String) {
        match &self.bar {
            Some(b) => b.set_message(msg),
            None if self.last_plain.elapsed() >= Duration::from_secs(1) => {
                self.last_plain = Instant::now();
                eprintln!("{msg}");
            }
            None => {}
        }
    }

    fn finish(self) {
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}

async fn drain(broker: &Broker, queue: &str, n: u64, a: &BenchArgs) -> Result<Report> {
    let rec = Recorder::new();
    let pad = "x".repeat(a.payload_bytes as usize);
    let processed_before = broker.queue_stats(queue).await?.processed;
    let enqueue_started = Instant::now();
    let jobs = (0..n).map(|_| new_job(rec.epoch.elapsed().as_micros() as u64, &pad));
    super::produce::enqueue_all(broker, queue, jobs, 1000, |_, _| {}).await?;
    let enqueue_secs = enqueue_started.elapsed().as_secs_f64();
    let mut progress = Progress::new();
    if a.no_workers {
        let (completed, secs) = wait_for_fleet(broker, queue, processed_before, n, &mut progress).await?;
        progress.finish();
        let rate = Some(completed as f64 / secs);
        return Ok(report("drain", n, a, n as f64 / enqueue_secs, rate, completed, secs, &rec));
    }
    let started = Instant::now();
    let (stop, handle) = start_worker(broker, queue, a, &rec);
    while rec.completed.load(Ordering::Relaxed) < n {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let done = rec.completed.load(Ordering::Relaxed);
        if std::env::var_os("DTQ_T").is_some() {
            eprintln!("{:?} {done}", started.elapsed());
        }
        progress.show(format!("drained {done}/{n} ({:.0} jobs/s)", done as f64 / started.elapsed().as_secs_f64()));
    }
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let _ = handle.await;
    progress.finish();
    Ok(report("drain", n, a, n as f64 / enqueue_secs, Some(n as f64 / secs), n, secs, &rec))
}

async fn open_loop(broker: &Broker, queue: &str, a: &BenchArgs) -> Result<Report> {
    let rec = Recorder::new();
    let pad = "x".repeat(a.payload_bytes as usize);
    let total = (a.rps as f64 * a.duration.as_secs_f64()).round() as u64;
    broker.register_queue(queue).await?;
    let processed_before = broker.queue_stats(queue).await?.processed;
    let keys = broker.keys(queue);
    let worker = (!a.no_workers).then(|| start_worker(broker, queue, a, &rec));
    let mut progress = Progress::new();
    let interval = Duration::from_secs_f64(1.0 / a.rps as f64);
    let started = Instant::now();
    let base_us = rec.epoch.elapsed().as_micros() as u64;
    let mut sent: u64 = 0;
    let mut in_flight = futures::stream::FuturesUnordered::new();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    use futures::StreamExt;
    while sent < total || !in_flight.is_empty() {
        tokio::select! {
            _ = tick.tick(), if sent < total => {
                // Every job whose intended time has come goes out now, in one call.
                let due = ((started.elapsed().as_secs_f64() / interval.as_secs_f64()) as u64 + 1).min(total);
                if due > sent {
                    let batch: Vec<NewJob> = (sent..due)
                        .map(|i| new_job(base_us + (i as f64 * interval.as_secs_f64() * 1e6) as u64, &pad))
                        .collect();
                    sent = due;
                    let keys = &keys;
                    in_flight.push(async move { broker.enqueue(keys, &batch).await });
                }
                let done = rec.completed.load(Ordering::Relaxed);
                let p99 = rec.started.lock().unwrap_or_else(|p| p.into_inner()).value_at_quantile(0.99) as f64 / 1000.0;
                progress.show(format!("sent {sent}/{total}  done {done}  backlog {}  p99 start {p99:.2} ms", sent - done.min(sent)));
            }
            Some(r) = in_flight.next() => { r?; }
        }
    }
    let enqueue_secs = started.elapsed().as_secs_f64();
    let mut completion = None;
    if let Some((stop, handle)) = worker {
        // Give the fleet up to 30 s to catch up with what was sent.
        let deadline = Instant::now() + Duration::from_secs(30);
        while rec.completed.load(Ordering::Relaxed) < total && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        completion = Some(rec.completed.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64());
        stop.cancel();
        let _ = handle.await;
    }
    let mut completed = rec.completed.load(Ordering::Relaxed);
    if a.no_workers {
        let (done, secs) = wait_for_fleet(broker, queue, processed_before, total, &mut progress).await?;
        completed = done;
        completion = Some(done as f64 / (enqueue_secs + secs));
    }
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    Ok(report("open-loop", total, a, total as f64 / enqueue_secs, completion, completed, secs, &rec))
}

/// Waits (at most 60 s) for an external fleet to complete the `sent` bench
/// jobs (counted by the queue's processed counter, so other jobs of the
/// queue, delayed ones included, neither hold it up nor count); returns the
/// jobs it completed and the seconds waited.
async fn wait_for_fleet(
    broker: &Broker,
    queue: &str,
    processed_before: u64,
    sent: u64,
    progress: &mut Progress,
) -> Result<(u64, f64)> {
    const LIMIT: Duration = Duration::from_secs(60);
    let started = Instant::now();
    loop {
        let s = broker.queue_stats(queue).await?;
        let done = s.processed.saturating_sub(processed_before).min(sent);
        progress.show(format!(
            "waiting for workers on queue {queue:?} to complete the {sent} bench jobs: {done} done ({} pending, {} in flight)",
            s.pending, s.inflight
        ));
        if done >= sent {
            return Ok((done, started.elapsed().as_secs_f64()));
        }
        if started.elapsed() > LIMIT {
            tracing::warn!(
                queue,
                done,
                sent,
                "gave up waiting for the fleet after 60s: is a worker running on this queue and namespace?"
            );
            return Ok((done, started.elapsed().as_secs_f64()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    mode: &'static str,
    jobs: u64,
    a: &BenchArgs,
    enqueue_rate: f64,
    completion_rate: Option<f64>,
    completed: u64,
    seconds: f64,
    rec: &Recorder,
) -> Report {
    let started = rec.started.lock().unwrap_or_else(|p| p.into_inner());
    let done = rec.done.lock().unwrap_or_else(|p| p.into_inner());
    let open = mode == "open-loop";
    Report {
        mode,
        jobs,
        concurrency: a.concurrency,
        payload_bytes: a.payload_bytes,
        enqueue_rate,
        completion_rate,
        completed,
        seconds,
        start_latency: if open { latency(&started) } else { None },
        done_latency: if open { latency(&done) } else { None },
    }
}
