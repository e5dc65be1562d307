//! Test support: real `redis-server`s on free loopback ports, the real `dtq`
//! binary, and helpers to seed and read Redis state.
//!
//! A test gets its own Redis (`Redis::start`) when it stops or restarts it;
//! otherwise `Redis::shared()` reuses the server `scripts/test` started
//! (`DTQ_TEST_REDIS_URL`), or starts one. Every test uses its own namespace.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const DTQ: &str = env!("CARGO_BIN_EXE_dtq");

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A redis-server for a test.
pub struct Redis {
    pub port: u16,
    pub url: String,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
}

impl Redis {
    /// A server of this test's own.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// A server of this test's own with extra redis-server arguments.
    pub fn start_with(extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut r = Redis {
            port,
            url: format!("redis://127.0.0.1:{port}"),
            child: None,
            dir,
            args: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.launch();
        r
    }

    /// The suite's shared server if `scripts/test` started one, else our own.
    pub fn shared() -> Redis {
        match std::env::var("DTQ_TEST_REDIS_URL") {
            Ok(url) => {
                let port = url.rsplit(':').next().unwrap().trim_end_matches('/').parse().unwrap();
                Redis { port, url, child: None, dir: tempfile::tempdir().unwrap(), args: vec![] }
            }
            Err(_) => Redis::start(),
        }
    }

    fn launch(&mut self) {
        // scripts/test runs the suite a second time with Valkey's valkey-server here.
        let server = std::env::var("DTQ_TEST_REDIS_SERVER").unwrap_or_else(|_| "redis-server".to_string());
        let mut cmd = Command::new(&server);
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"])
            .arg(self.dir.path())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot run {server} ({e}): install it (scripts/test does) or set DTQ_TEST_REDIS_SERVER")
        }));
        // Any reply (PONG, or NOAUTH when the default user is off) means it is up.
        wait_until(Duration::from_secs(10), || !self.cli(&["PING"]).trim().is_empty());
    }

    /// Stops the server abruptly (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and directory (AOF, if on, is replayed).
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// Runs redis-cli against this server; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out =
            Command::new("redis-cli").args(["-p", &self.port.to_string()]).args(args).output().expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// An integer reply.
    pub fn int(&self, args: &[&str]) -> i64 {
        let s = self.cli(args);
        s.trim().parse().unwrap_or_else(|_| panic!("{args:?} -> {s:?}"))
    }

    /// Lines of a multi-bulk reply.
    pub fn lines(&self, args: &[&str]) -> Vec<String> {
        self.cli(args).lines().filter(|l| !l.is_empty()).map(str::to_string).collect()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` until it is true or `limit` passes (then panics).
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "condition not met within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `f` until it is true or `limit` passes; returns whether it became true.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A dtq invocation against one Redis and namespace.
#[derive(Clone)]
pub struct Dtq {
    pub url: String,
    pub ns: String,
}

impl Dtq {
    pub fn new(redis: &Redis, ns: &str) -> Dtq {
        Dtq { url: redis.url.clone(), ns: format!("t-{ns}-{}", std::process::id()) }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(DTQ);
        c.env("DTQ_REDIS_URL", &self.url).env("DTQ_NAMESPACE", &self.ns).env("RUST_LOG", "info");
        c
    }

    /// Runs to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs with `stdin` as input.
    pub fn run_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child =
            self.cmd().args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    /// Runs and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "dtq {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// `inspect stats --json` for one queue.
    pub fn stats(&self, queue: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", "stats", "--json"])).unwrap();
        v["queues"][queue].clone()
    }

    /// `processed` of each queue, read in one `inspect stats` call (so the
    /// counters are taken together).
    pub fn processed(&self, queues: &[&str]) -> Vec<f64> {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", "stats", "--json"])).unwrap();
        queues.iter().map(|q| v["queues"][q]["processed"].as_f64().unwrap_or(0.0)).collect()
    }

    pub fn stat(&self, queue: &str, field: &str) -> u64 {
        self.stats(queue)[field].as_u64().unwrap_or(0)
    }

    /// Starts a worker process; its stderr goes to a log file.
    pub fn worker(&self, args: &[&str]) -> Proc {
        self.spawn(&[&["work", "--listen", "off"], args].concat())
    }

    /// Starts any long-running dtq process.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = self.cmd().args(args).stdout(Stdio::null()).stderr(log.reopen().unwrap()).spawn().unwrap();
        Proc { child: Some(child), log }
    }
}

/// A running dtq process.
pub struct Proc {
    pub child: Option<Child>,
    pub log: tempfile::NamedTempFile,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// kill -9.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal by name (TERM, STOP, CONT...).
    pub fn signal(&self, sig: &str) {
        Command::new("kill").arg(format!("-{sig}")).arg(self.pid().to_string()).status().unwrap();
    }

    /// SIGTERM, then waits up to `limit` for the exit status.
    pub fn terminate(&mut self, limit: Duration) -> std::process::ExitStatus {
        self.signal("TERM");
        let mut c = self.child.take().unwrap();
        let start = Instant::now();
        loop {
            if let Some(s) = c.try_wait().unwrap() {
                return s;
            }
            if start.elapsed() > limit {
                let _ = c.kill();
                panic!("process did not exit within {limit:?} of SIGTERM; log:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, limit: Duration) {
        let ok = eventually(limit, || self.log_text().contains(needle));
        assert!(ok, "log never showed {needle:?}:\n{}", self.log_text());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A file that `--exec` handlers append a line to per execution.
pub struct Ledger {
    pub dir: tempfile::TempDir,
}

impl Ledger {
    pub fn new() -> Ledger {
        Ledger { dir: tempfile::tempdir().unwrap() }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("ledger")
    }

    /// An `--exec` command that records "<id> <attempt>" then runs `then` (a
    /// shell snippet, e.g. `sleep 1` or `exit 75`).
    pub fn exec(&self, then: &str) -> String {
        let script = self.dir.path().join("handler.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$DTQ_JOB_ID $DTQ_ATTEMPT\" >> {}\n{then}\n", self.path().display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        script.display().to_string()
    }

    /// Every recorded (id, attempt).
    pub fn entries(&self) -> Vec<(String, u32)> {
        read_lines(&self.path())
            .into_iter()
            .filter_map(|l| {
                let (id, a) = l.split_once(' ')?;
                Some((id.to_string(), a.parse().ok()?))
            })
            .collect()
    }
}

pub fn read_lines(path: &Path) -> Vec<String> {
    match std::fs::File::open(path) {
        Ok(f) => BufReader::new(f).lines().map_while(Result::ok).collect(),
        Err(_) => vec![],
    }
}

/// A fresh NDJSON file of specs.
pub fn ndjson(lines: &[String]) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), lines.join("\n")).unwrap();
    f
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// A local 3-master Redis Cluster: the suite's (`DTQ_TEST_CLUSTER_URL`, set
/// by `scripts/test`) or one started for this test.
pub struct Cluster {
    pub url: String,
    pub ports: Vec<u16>,
    _nodes: Vec<Redis>,
}

impl Cluster {
    pub fn shared() -> Cluster {
        if let Ok(url) = std::env::var("DTQ_TEST_CLUSTER_URL") {
            let ports = url.split([':', '?', '&']).filter_map(|p| p.parse::<u16>().ok()).collect();
            return Cluster { url, ports, _nodes: vec![] };
        }
        let ports: Vec<u16> = loop {
            let p: Vec<u16> = (0..3).map(|_| fastrand::u16(20000..30000)).collect();
            let free = p.iter().all(|&x| {
                TcpListener::bind(("127.0.0.1", x)).is_ok() && TcpListener::bind(("127.0.0.1", x + 10000)).is_ok()
            });
            if free && p[0] != p[1] && p[1] != p[2] && p[0] != p[2] {
                break p;
            }
        };
        let nodes: Vec<Redis> = ports
            .iter()
            .map(|&port| {
                let dir = tempfile::tempdir().unwrap();
                let mut r = Redis {
                    port,
                    url: format!("redis://127.0.0.1:{port}"),
                    child: None,
                    dir,
                    args: ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                };
                r.launch();
                r
            })
            .collect();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let st = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        wait_until(Duration::from_secs(20), || nodes[0].cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
        let url =
            format!("redis-cluster://127.0.0.1:{}?node=127.0.0.1:{}&node=127.0.0.1:{}", ports[0], ports[1], ports[2]);
        Cluster { url, ports, _nodes: nodes }
    }

    /// redis-cli in cluster mode (follows redirects).
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli").args(["-c", "-p", &self.ports[0].to_string()]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The node port serving `key`.
    pub fn node_of(&self, key: &str) -> u16 {
        let slot: u16 = self.cli(&["CLUSTER", "KEYSLOT", key]).trim().parse().unwrap();
        let shards = self.cli(&["CLUSTER", "SLOTS"]);
        let lines: Vec<&str> = shards.lines().collect();
        // CLUSTER SLOTS in redis-cli's flat form: start, end, ip, port, id, ...
        for w in lines.windows(4) {
            if let (Ok(start), Ok(end), Ok(port)) = (w[0].parse::<u16>(), w[1].parse::<u16>(), w[3].parse::<u16>()) {
                if w[2] == "127.0.0.1" && (start..=end).contains(&slot) {
                    return port;
                }
            }
        }
        panic!("no node for slot {slot}: {shards}");
    }

    pub fn dtq(&self, ns: &str) -> Dtq {
        Dtq { url: self.url.clone(), ns: format!("t-{ns}-{}", std::process::id()) }
    }
}

/// A plain HTTP GET: (status, body); status 0 if the connection failed.
pub fn get(port: u16, path: &str) -> (u16, String) {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return (0, String::new()) };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    std::io::Write::write_fmt(&mut s, format_args!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        .unwrap();
    let mut out = String::new();
    let _ = std::io::Read::read_to_string(&mut s, &mut out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}
