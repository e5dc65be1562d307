//! The command line (clap derive). Flags are parsed and validated here into
//! typed values before any work starts; a bad flag exits 2.

use crate::config;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "dtq",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("DTQ_COMMIT"), ")"),
    about = "A distributed task queue on Redis",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every subcommand takes, before or after it.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Redis and global options")]
pub struct Global {
    /// Redis URL: redis://, rediss:// (TLS), redis://user:pass@host:port/db, redis-cluster://host:port
    #[arg(
        long = "redis",
        env = "DTQ_REDIS_URL",
        default_value = "redis://127.0.0.1:6379",
        global = true,
        hide_env_values = true
    )]
    pub redis: String,
    /// Prefix of every key
    #[arg(long, env = "DTQ_NAMESPACE", default_value = "dtq", global = true, hide_env_values = true, value_parser = config::namespace)]
    pub namespace: String,
    /// Log format on stderr (RUST_LOG filters)
    #[arg(long, env = "DTQ_LOG_FORMAT", default_value = "text", global = true, hide_env_values = true, value_parser = ["text", "json"])]
    pub log_format: String,
    /// How long produce, inspect, admin and bench try to reach Redis
    #[arg(long, env = "DTQ_CONNECT_TIMEOUT", default_value = "10s", global = true, hide_env_values = true, value_parser = config::duration)]
    pub connect_timeout: Duration,
    /// Extra CA certificate(s) (PEM) trusted for rediss://
    #[arg(long, env = "DTQ_TLS_CA_FILE", global = true, hide_env_values = true)]
    pub tls_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for rediss://
    #[arg(long, env = "DTQ_TLS_CERT_FILE", global = true, hide_env_values = true)]
    pub tls_cert_file: Option<PathBuf>,
    /// Client key (PEM) for rediss://
    #[arg(long, env = "DTQ_TLS_KEY_FILE", global = true, hide_env_values = true)]
    pub tls_key_file: Option<PathBuf>,
    /// How long completed ids and idempotency keys are remembered
    #[arg(long, env = "DTQ_IDEMPOTENCY_WINDOW", default_value = "24h", global = true, hide_env_values = true, value_parser = config::positive_duration)]
    pub idempotency_window: Duration,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enqueue jobs from a file, stdin, or the command line
    Produce(ProduceArgs),
    /// Run jobs until SIGTERM/SIGINT
    Work(Box<WorkArgs>),
    /// Recover expired leases and promote scheduled jobs (leader-elected)
    Reap(ReapArgs),
    /// Look at queues, dead letters and jobs
    #[command(subcommand)]
    Inspect(InspectCommand),
    /// Change queues and jobs
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Serve the HTTP API (/v1) for any language
    Serve(ServeArgs),
    /// Measure throughput and latency against this Redis
    Bench(BenchArgs),
    /// Print a shell completion script (e.g. dtq completions bash > /etc/bash_completion.d/dtq)
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page, or write one per command into a directory
    Man {
        /// Write dtq.1 and dtq-COMMAND.1 pages here instead
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Add a schedule (refused if the name exists: change it with apply)
    ///
    /// Each tick is enqueued once, as the job `cron:NAME:<tick, RFC 3339 UTC>`,
    /// by whichever reaper leads (`dtq reap`, or the one inside `dtq work`).
    Add {
        /// Its name: A-Z a-z 0-9 _ . -, 1 to 128 characters
        name: String,
        /// Cron expression: 5 fields (minute hour day month weekday), 6 with
        /// seconds first, or @hourly, @daily, @weekly, @monthly, @yearly
        #[arg(long, conflicts_with = "every", required_unless_present = "every")]
        cron: Option<String>,
        /// IANA time zone the cron fields are read in (default UTC). A local
        /// time that occurs twice runs at its first occurrence; one that does
        /// not exist runs when the gap ends
        #[arg(long, requires = "cron")]
        tz: Option<String>,
        /// A fixed interval instead (whole seconds, at least 1s), aligned to
        /// the Unix epoch
        #[arg(long)]
        every: Option<String>,
        /// Kind of the jobs it enqueues
        #[arg(long)]
        kind: String,
        /// Their payload (JSON; default {})
        #[arg(long)]
        payload: Option<String>,
        /// Their queue
        #[arg(long, default_value = "default", value_parser = config::queue_name)]
        queue: String,
        /// Their retry limit
        #[arg(long)]
        max_retries: Option<u32>,
        /// Their timeout (e.g. 5m)
        #[arg(long)]
        timeout: Option<String>,
        /// Ticks missed while no reaper ran: none (skip), one (the latest),
        /// all (at most 100)
        #[arg(long, default_value = "none")]
        catch_up: String,
    },
    /// Add or change every schedule of a JSON file (an array of objects with
    /// the fields of `list --json`): all are checked first, and one invalid
    /// entry changes nothing
    Apply {
        #[arg(long)]
        file: std::path::PathBuf,
        /// Also remove the schedules the file does not name
        #[arg(long)]
        prune: bool,
    },
    /// Every schedule with its next run, last run, last job and its state
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a schedule (the jobs it enqueued stay)
    Remove { name: String },
    /// Stop enqueueing its ticks (they are skipped, not caught up)
    Pause { name: String },
    /// Start again from the next tick
    Resume { name: String },
    /// Enqueue one of its jobs now (id cron:NAME:manual:<time>)
    Trigger { name: String },
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Queue for jobs that do not name one
    #[arg(long, default_value = "default", value_parser = config::queue_name)]
    pub queue: String,
    /// NDJSON or JSON-array file of job specs ("-" = stdin)
    #[arg(long, conflicts_with_all = ["kind", "payload", "count"])]
    pub file: Option<PathBuf>,
    /// Kind of the job(s) to enqueue
    #[arg(long, required_unless_present = "file")]
    pub kind: Option<String>,
    /// Payload JSON
    #[arg(long)]
    pub payload: Option<String>,
    /// Id of the job (one job only; an id that exists is a duplicate)
    #[arg(long, conflicts_with = "file")]
    pub id: Option<String>,
    /// Number of identical jobs
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    pub count: u64,
    /// Delay before jobs without their own delay/run_at may run
    #[arg(long, value_parser = config::duration, allow_hyphen_values = true)]
    pub delay: Option<Duration>,
    /// Failures allowed before dead-letter, for jobs without their own
    #[arg(long, default_value_t = 3)]
    pub max_retries: u32,
    /// Idempotency key for jobs without their own
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Print one JSON line per job
    #[arg(long)]
    pub json: bool,
    /// Wait until each job is completed or dead, and print its result (exit
    /// 1 if any ended dead or the wait timed out; at most 10,000 jobs)
    #[arg(long)]
    pub wait: bool,
    /// Longest --wait
    #[arg(long, default_value = "5m", value_parser = config::positive_duration, requires = "wait")]
    pub wait_timeout: Duration,
    /// Jobs per enqueue script call
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=5000))]
    pub batch_size: u64,
}

#[derive(Debug, Args)]
pub struct WorkArgs {
    /// Queues and weights, e.g. high:6,default:3,low:1
    #[arg(long, env = "DTQ_QUEUES", default_value = "default", value_parser = config::weighted_queues)]
    pub queues: config::QueueWeights,
    /// Jobs run at once by this process
    #[arg(help_heading = "Throughput", long, env = "DTQ_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,
    /// Run each job as this command (payload on stdin)
    ///
    /// CMD is split like a shell would, but no shell runs it; one process
    /// (group) per job. Its stdin is the payload JSON; its environment holds
    /// DTQ_JOB_ID, DTQ_QUEUE, DTQ_KIND, DTQ_ATTEMPT (1-based) and
    /// DTQ_IDEMPOTENCY_KEY, plus PATH, HOME, LANG, LC_ALL, TZ, TMPDIR and
    /// what --exec-env names. Exit 0 = success; 65 = permanent failure
    /// (dead-letter now); 75 or any other code = retry later. The last lines
    /// of stderr become the job's error; its stdout is the worker's stdout.
    /// A result (at most 64 KiB) is written to the file named in
    /// DTQ_RESULT_FILE.
    #[arg(help_heading = "Handler", long, conflicts_with = "http")]
    pub exec: Option<String>,
    /// POST each job's payload to this URL
    ///
    /// Headers X-Dtq-Job-Id, X-Dtq-Queue, X-Dtq-Kind, X-Dtq-Attempt and
    /// Idempotency-Key. 2xx = success (its body is the job's result);
    /// 429 and 5xx = retry (Retry-After:
    /// `<seconds>` sets the delay, at most --backoff-max); any other status =
    /// permanent failure (dead-letter now).
    #[arg(help_heading = "Handler", long)]
    pub http: Option<String>,
    /// Header added to every --http request: NAME=VALUE, NAME=@env:VAR or
    /// NAME=@file:PATH (keeps a token off the command line; never logged)
    #[arg(help_heading = "Handler", long, requires = "http", value_name = "NAME=VALUE")]
    pub http_header: Vec<String>,
    /// Lease length; a dead worker's jobs come back after it
    #[arg(help_heading = "Leases and timeouts", long, default_value = "30s", value_parser = config::positive_duration)]
    pub visibility_timeout: Duration,
    /// Default handler timeout
    #[arg(help_heading = "Leases and timeouts", long, default_value = "5m", value_parser = config::positive_duration)]
    pub job_timeout: Duration,
    /// Longest timeout a job may set for itself (longer ones are clamped)
    #[arg(help_heading = "Leases and timeouts", long, default_value = "24h", value_parser = config::positive_duration)]
    pub max_job_timeout: Duration,
    /// Variable of this process' environment passed on to --exec handlers
    /// (besides PATH, HOME, LANG, LC_ALL, TZ, TMPDIR and the job's DTQ_*); repeatable
    #[arg(help_heading = "Handler", long = "exec-env", value_name = "NAME")]
    pub exec_env: Vec<String>,
    /// Time in-flight jobs get to finish after SIGTERM
    #[arg(help_heading = "Leases and timeouts", long, default_value = "30s", value_parser = config::duration)]
    pub shutdown_grace: Duration,
    /// Retry backoff base
    #[arg(help_heading = "Retries", long, default_value = "1s", value_parser = config::duration)]
    pub backoff_base: Duration,
    /// Retry backoff cap
    #[arg(help_heading = "Retries", long, default_value = "1h", value_parser = config::duration)]
    pub backoff_max: Duration,
    /// Address of /health, /ready, /metrics ("off" disables)
    #[arg(help_heading = "Ops endpoint", long, default_value = "0.0.0.0:9090", value_parser = config::listen)]
    pub listen: config::Listen,
    /// Do not run the reaper loop in this process
    #[arg(help_heading = "Reaper", long)]
    pub no_reaper: bool,
    /// KIND=N/PERIOD: at most N starts of KIND per PERIOD across all workers
    #[arg(help_heading = "Rate limiter and circuit breaker", long, value_parser = config::rate_limit)]
    pub rate_limit: Vec<(String, crate::worker::RateLimit)>,
    /// Failure rate that opens a kind's circuit breaker
    #[arg(help_heading = "Rate limiter and circuit breaker", long, default_value_t = 0.5)]
    pub breaker_failure_rate: f64,
    /// Rolling window of the circuit breaker
    #[arg(help_heading = "Rate limiter and circuit breaker", long, default_value = "30s", value_parser = config::positive_duration)]
    pub breaker_window: Duration,
    /// Calls in the window before the breaker may open
    #[arg(help_heading = "Rate limiter and circuit breaker", long, default_value_t = 20)]
    pub breaker_min_calls: u32,
    /// How long an open breaker defers jobs before probing
    #[arg(help_heading = "Rate limiter and circuit breaker", long, default_value = "10s", value_parser = config::positive_duration)]
    pub breaker_cooldown: Duration,
    /// Most jobs leased by one dequeue call
    #[arg(help_heading = "Throughput", long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub max_batch: u64,
    /// Jobs leased ahead of free slots [default: adaptive, ~50 ms worth of short jobs, 1 to 1000]
    #[arg(help_heading = "Throughput", long, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub prefetch: Option<u64>,
    /// How often an info line sums up what the worker did ("off": never)
    #[arg(long, default_value = "60s", value_parser = config::optional_duration)]
    pub log_summary_every: config::Optional<Duration>,
    /// Reaper: longest sleep between cycles
    #[arg(help_heading = "Reaper", long, default_value = "500ms", value_parser = config::positive_duration)]
    pub reap_interval: Duration,
    /// Reaper: leader lock TTL (at least 1s)
    #[arg(help_heading = "Reaper", long, default_value = "10s", value_parser = config::lock_ttl)]
    pub lock_ttl: Duration,
}

#[derive(Debug, Args)]
pub struct ReapArgs {
    /// Longest sleep between cycles
    #[arg(long, default_value = "500ms", value_parser = config::positive_duration)]
    pub interval: Duration,
    /// Leader lock TTL (renewed every third of it; at least 1s)
    #[arg(long, default_value = "10s", value_parser = config::lock_ttl)]
    pub lock_ttl: Duration,
    /// Address of /health, /ready, /metrics ("off" disables)
    #[arg(long, default_value = "0.0.0.0:9091", value_parser = config::listen)]
    pub listen: config::Listen,
}

#[derive(Debug, Subcommand)]
pub enum InspectCommand {
    /// Sizes and counters of every queue
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Queue names
    Queues,
    /// Dead-lettered jobs, newest first
    DeadLetter(FinishedArgs),
    /// Completed jobs kept by retention, newest first
    Completed(FinishedArgs),
    /// Running workers (from the registry each keeps in Redis): host, pid,
    /// version, queues, concurrency, busy jobs, last report
    Workers {
        #[arg(long)]
        json: bool,
    },
    /// One job
    Job {
        id: String,
        #[arg(long, value_parser = config::queue_name)]
        queue: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// A listing of finished jobs: filtered in Redis, never loaded whole.
#[derive(Debug, Args)]
pub struct FinishedArgs {
    /// Only this queue (default: every queue)
    #[arg(long, value_parser = config::queue_name)]
    pub queue: Option<String>,
    /// Most jobs shown
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub limit: u64,
    /// Only jobs of this kind
    #[arg(long)]
    pub kind: Option<String>,
    /// Only jobs with this text (any case) in their id, error or payload
    #[arg(long)]
    pub search: Option<String>,
    /// Only jobs that finished within this long (e.g. 1h)
    #[arg(long, value_parser = config::positive_duration)]
    pub since: Option<Duration>,
    /// Print a JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Show or change how many finished jobs a queue keeps, and how long
    ///
    /// Stored in Redis and applied by every worker and reaper at their next
    /// write; lowering a limit trims at once. Defaults: 10,000 dead jobs for
    /// 90 days, 1,000 completed jobs for 24 hours.
    Retention {
        /// The queue (or --queue)
        #[arg(value_parser = config::queue_name, required_unless_present = "queue", conflicts_with = "queue")]
        name: Option<String>,
        #[arg(long, value_parser = config::queue_name)]
        queue: Option<String>,
        /// Most dead-lettered jobs kept (at least 1; the oldest go first)
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
        dead_max: Option<u64>,
        /// Dead-lettered jobs older than this go
        #[arg(long, value_parser = config::positive_duration)]
        dead_ttl: Option<Duration>,
        /// Most completed jobs kept (0 keeps none)
        #[arg(long, value_parser = clap::value_parser!(u64).range(0..=100_000_000))]
        completed_max: Option<u64>,
        /// Completed jobs older than this go
        #[arg(long, value_parser = config::positive_duration)]
        completed_ttl: Option<Duration>,
        /// Set it for a queue that has had no job yet
        #[arg(long)]
        create: bool,
        /// Print the settings as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Put dead jobs back in pending with a fresh retry budget
    Requeue {
        /// The dead job to requeue, looked for in every queue (or in --queue)
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Every job that is dead when the command starts (jobs that die
        /// again meanwhile are left alone), in --queue or in every queue
        #[arg(long)]
        all: bool,
        /// Only this queue
        #[arg(long, value_parser = config::queue_name)]
        queue: Option<String>,
        /// Say what would be requeued; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the outcome as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Delete the jobs of a queue in some states (never jobs in flight)
    #[command(group(clap::ArgGroup::new("states").required(true).multiple(true).args(["dead", "pending", "scheduled", "completed", "all"])))]
    Purge {
        #[arg(long, value_parser = config::queue_name)]
        queue: String,
        /// Dead-lettered jobs
        #[arg(long)]
        dead: bool,
        /// Jobs waiting to run
        #[arg(long)]
        pending: bool,
        /// Delayed jobs and jobs waiting for a retry
        #[arg(long)]
        scheduled: bool,
        /// Completed jobs kept by retention
        #[arg(long)]
        completed: bool,
        /// Pending, scheduled, dead and completed
        #[arg(long)]
        all: bool,
        /// Say how many would be deleted; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the outcome as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Remove a job that has not started (pending or scheduled)
    Cancel {
        /// The job, looked for in every queue (or in --queue)
        #[arg(long)]
        id: String,
        /// Only this queue
        #[arg(long, value_parser = config::queue_name)]
        queue: Option<String>,
        /// Print the outcome as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Stop workers taking jobs from a queue (jobs in flight finish)
    Pause {
        /// The queue (or --queue)
        #[arg(value_parser = config::queue_name, required_unless_present = "queue", conflicts_with = "queue")]
        name: Option<String>,
        #[arg(long, value_parser = config::queue_name)]
        queue: Option<String>,
        /// Pause a queue that does not exist yet (to hold jobs produced later)
        #[arg(long)]
        create: bool,
        /// Print the outcome as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Let workers take jobs from a paused queue again
    Resume {
        /// The queue (or --queue)
        #[arg(value_parser = config::queue_name, required_unless_present = "queue", conflicts_with = "queue")]
        name: Option<String>,
        #[arg(long, value_parser = config::queue_name)]
        queue: Option<String>,
        /// Print the outcome as one JSON object
        #[arg(long)]
        json: bool,
    },
    /// Periodic jobs: schedules kept in Redis, enqueued by the reaper leader
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Delete a queue: refused while it holds jobs, unless --force
    DeleteQueue {
        #[arg(long, value_parser = config::queue_name)]
        queue: String,
        /// Delete it with every job it holds (jobs in flight included: their
        /// workers' results are discarded)
        #[arg(long)]
        force: bool,
        /// Say what would be deleted; change nothing
        #[arg(long)]
        dry_run: bool,
        /// Print the outcome as one JSON object
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on; a non-loopback one needs --token-file (or
    /// --insecure-no-auth)
    #[arg(long, env = "DTQ_SERVE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// File of admin tokens, one a line (several allow rotation); every /v1
    /// request then needs `Authorization: Bearer TOKEN`
    #[arg(long, env = "DTQ_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// File of read-only tokens (GET only)
    #[arg(long, env = "DTQ_READ_ONLY_TOKEN_FILE")]
    pub read_only_token_file: Option<PathBuf>,
    /// Serve without tokens on a non-loopback address (anyone who can reach
    /// it can change every queue)
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Most connections served at once (more are closed at once)
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_connections: u64,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Open-loop enqueue rate (jobs/s) for --duration
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub rps: u64,
    /// How long the open-loop load runs
    #[arg(long, default_value = "10s", value_parser = config::positive_duration)]
    pub duration: Duration,
    /// Drain mode: pre-fill this many jobs, then time the drain
    #[arg(long)]
    pub jobs: Option<u64>,
    /// In-process worker concurrency
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub concurrency: u64,
    /// In-process worker prefetch, as `work --prefetch` [default: adaptive]
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub prefetch: Option<u64>,
    /// Measure an external fleet: enqueue only, no in-process worker
    #[arg(long)]
    pub no_workers: bool,
    /// Bytes of payload per job
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub payload_bytes: u64,
    /// Queue to use (cleaned up afterwards)
    #[arg(long, default_value = "bench", value_parser = config::queue_name)]
    pub queue: String,
    /// Completed jobs the bench queue keeps (as `admin retention
    /// --completed-max`; 0 keeps none) [default: retention's default, 1000]
    #[arg(long, conflicts_with = "no_workers")]
    pub completed_max: Option<u64>,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}
