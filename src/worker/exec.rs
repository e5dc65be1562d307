//! `--exec CMD`: one child process per job. The command is split like a shell
//! would (no shell runs it); the payload goes to its stdin and the job to its
//! environment; its exit status decides the outcome.
//!
//! Each child leads a process group of its own, so everything it starts
//! (`sh -c 'python charge.py'`) stops with it: when the attempt must stop
//! (lease lost, timeout, shutdown) the group gets SIGTERM, then SIGKILL after
//! the grace, and whatever is left of the group is killed when the attempt
//! ends. The child's environment is an allow-list, never the worker's own
//! (which holds `DTQ_REDIS_URL` and its password).
//!
//! A child returns a result by writing it to the file named in
//! `DTQ_RESULT_FILE` (its stdout stays the child's own, for logs): the file
//! is in a directory private to the worker (mode 0700), read after a
//! successful exit and removed however the attempt ends.

use super::handler::{CancelReason, Handler, HandlerError, HandlerFuture, JobContext, JobResult};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// Exit status that asks for a retry (EX_TEMPFAIL).
pub const EXIT_RETRY: i32 = 75;
/// Exit status for a permanent failure (EX_DATAERR).
pub const EXIT_PERMANENT: i32 = 65;
/// Variables of the worker's environment a child sees by default.
pub const DEFAULT_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];
/// Bytes of the end of stderr kept for the error message.
const TAIL: usize = 4096;

/// Runs each job as a process.
#[derive(Debug, Clone)]
pub struct ExecHandler {
    argv: Vec<String>,
    /// Inherited variables (name, value), read once at start.
    env: Vec<(String, String)>,
    results: Arc<ResultDir>,
}

/// The worker's private directory of result files, removed with the handler.
#[derive(Debug)]
struct ResultDir {
    path: PathBuf,
    next: AtomicU64,
}

impl ResultDir {
    fn create() -> Result<Self, String> {
        use std::os::unix::fs::DirBuilderExt;
        let path = std::env::temp_dir().join(format!("dtq-results-{}-{:08x}", std::process::id(), fastrand::u32(..)));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| format!("cannot create the directory for --exec results {}: {e}", path.display()))?;
        Ok(ResultDir { path, next: AtomicU64::new(0) })
    }

    /// A fresh file name for one attempt; the file is removed when the
    /// returned guard drops.
    fn file(&self) -> ResultFile {
        ResultFile(self.path.join(format!("result-{}", self.next.fetch_add(1, Ordering::Relaxed))))
    }
}

impl Drop for ResultDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

struct ResultFile(PathBuf);

impl ResultFile {
    /// What the child wrote, if anything: at most one byte more than a
    /// result may have, so a larger one is seen as such.
    fn read(&self) -> JobResult {
        use std::io::Read;
        let mut out = Vec::new();
        let f = std::fs::File::open(&self.0).ok()?;
        f.take(crate::retention::MAX_RESULT as u64 + 1).read_to_end(&mut out).ok()?;
        (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
    }
}

impl Drop for ResultFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl ExecHandler {
    /// Splits `cmd` into argv; an empty or unbalanced command, or a program
    /// that cannot be found or run, is an error. `pass_env` names variables
    /// passed on beside [`DEFAULT_ENV`].
    pub fn new(cmd: &str, pass_env: &[String]) -> Result<Self, String> {
        let argv = shlex::split(cmd).ok_or_else(|| format!("--exec {cmd:?}: unbalanced quotes"))?;
        if argv.is_empty() {
            return Err("--exec: empty command".to_string());
        }
        check_program(&argv[0]).map_err(|e| format!("--exec {cmd:?}: {e}"))?;
        let env = DEFAULT_ENV
            .iter()
            .map(|s| s.to_string())
            .chain(pass_env.iter().cloned())
            .filter_map(|name| std::env::var(&name).ok().map(|v| (name, v)))
            .collect();
        Ok(ExecHandler { argv, env, results: Arc::new(ResultDir::create()?) })
    }
}

/// The program must exist and be executable: a typo in a deploy must not
/// dead-letter a whole queue.
fn check_program(program: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &std::path::Path| {
        std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
    };
    if program.contains('/') {
        let p = std::path::Path::new(program);
        if !p.exists() {
            return Err(format!("{program}: no such file"));
        }
        if !executable(p) {
            return Err(format!("{program}: not an executable file (chmod +x?)"));
        }
        return Ok(());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| executable(&dir.join(program))) {
        Ok(())
    } else {
        Err(format!("{program}: command not found in PATH"))
    }
}

/// The last `TAIL` bytes written to a stream.
#[derive(Default)]
struct Tail(Vec<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend_from_slice(bytes);
        if self.0.len() > TAIL {
            self.0.drain(..self.0.len() - TAIL);
        }
    }

    /// The last non-empty line, trimmed to 500 bytes.
    fn last_line(&self) -> String {
        let text = String::from_utf8_lossy(&self.0);
        let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
        let mut end = line.len().min(500);
        while !line.is_char_boundary(end) {
            end -= 1;
        }
        line[..end].chars().map(|c| if c.is_control() { '?' } else { c }).collect()
    }
}

/// A child's process group; killed (SIGKILL) when dropped, so no member
/// outlives its attempt, however the attempt ends.
struct Group(i32);

impl Group {
    fn signal(&self, sig: i32) {
        // SAFETY: killpg has no memory effects; a group that is gone is ESRCH.
        unsafe {
            libc::killpg(self.0, sig);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
    }
}

impl Handler for ExecHandler {
    fn handle<'a>(&'a self, job: &'a JobContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let program = &self.argv[0];
            let result = self.results.file();
            let mut child = Command::new(program)
                .args(&self.argv[1..])
                .env_clear()
                .envs(self.env.iter().map(|(k, v)| (k, v)))
                .env("DTQ_JOB_ID", &job.id)
                .env("DTQ_QUEUE", &*job.queue)
                .env("DTQ_KIND", &job.kind)
                .env("DTQ_ATTEMPT", job.attempt.to_string())
                .env("DTQ_IDEMPOTENCY_KEY", job.idempotency_key.as_deref().unwrap_or(&job.id))
                .env("DTQ_RESULT_FILE", &result.0)
                .stdin(Stdio::piped())
                .stdout(Stdio::inherit())
                .stderr(Stdio::piped())
                .process_group(0)
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => {
                        HandlerError::Unavailable { message: format!("exec {program:?}: {e}") }
                    }
                    _ => HandlerError::retry(format!("exec {program:?}: {e}")),
                })?;
            let group = Group(child.id().map(|p| p as i32).unwrap_or(0));
            let mut stdin = child.stdin.take();
            let mut stderr = child.stderr.take().expect("stderr is piped");
            // Stdin is written while stderr is read: a child that fills its
            // stderr before reading its input must not deadlock against us.
            let payload = job.payload.get().as_bytes();
            let write = async {
                if let Some(s) = stdin.as_mut() {
                    // A child that exits without reading its stdin is not an error.
                    let _ = s.write_all(payload).await;
                }
                drop(stdin.take());
            };
            tokio::pin!(write);
            let mut written = false;
            let mut tail = Tail::default();
            let mut buf = [0u8; 4096];
            let mut stderr_open = true;
            let ended = loop {
                tokio::select! {
                    _ = &mut write, if !written => written = true,
                    n = stderr.read(&mut buf), if stderr_open => match n {
                        Ok(0) | Err(_) => stderr_open = false,
                        Ok(n) => tail.push(&buf[..n]),
                    },
                    status = child.wait() => break Ok(status),
                    reason = job.cancel.cancelled() => break Err(reason),
                }
            };
            let status = match ended {
                Ok(status) => status.map_err(|e| HandlerError::retry(format!("exec {program:?}: {e}")))?,
                Err(reason) => {
                    group.signal(libc::SIGTERM);
                    if tokio::time::timeout(job.grace, child.wait()).await.is_err() {
                        group.signal(libc::SIGKILL);
                        let _ = child.wait().await;
                    }
                    let why = match reason {
                        CancelReason::Timeout => {
                            format!("timed out after {}", humantime::format_duration(job.timeout))
                        }
                        CancelReason::LeaseLost => "stopped: lease lost".to_string(),
                        _ => "stopped: worker shutting down".to_string(),
                    };
                    return Err(HandlerError::retry(why));
                }
            };
            // What the child wrote last, if it is still coming (a grandchild
            // may hold stderr open: do not wait for it).
            while stderr_open {
                match tokio::time::timeout(Duration::from_millis(50), stderr.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => tail.push(&buf[..n]),
                    _ => stderr_open = false,
                }
            }
            drop(group);
            let why = |status: &dyn std::fmt::Display| {
                let line = tail.last_line();
                if line.is_empty() {
                    format!("{program} {status}")
                } else {
                    format!("{program} {status}: {line}")
                }
            };
            match status.code() {
                Some(0) => Ok(result.read()),
                Some(EXIT_PERMANENT) => Err(HandlerError::permanent(why(&"exited with 65 (permanent failure)"))),
                Some(code) => Err(HandlerError::retry(why(&format!("exited with {code}")))),
                None => Err(HandlerError::retry(why(&"was killed by a signal"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_split_like_a_shell() {
        assert_eq!(ExecHandler::new("sh -c 'exit 3'", &[]).unwrap().argv, ["sh", "-c", "exit 3"]);
        assert!(ExecHandler::new("  ", &[]).is_err());
        assert!(ExecHandler::new("sh 'x", &[]).is_err());
    }

    #[test]
    fn missing_or_unrunnable_programs_are_refused() {
        assert!(ExecHandler::new("./no-such-cmd", &[]).unwrap_err().contains("no such file"));
        assert!(ExecHandler::new("no-such-cmd-dtq", &[]).unwrap_err().contains("not found in PATH"));
        let plain = tempfile::NamedTempFile::new().unwrap();
        let cmd = plain.path().display().to_string();
        assert!(ExecHandler::new(&cmd, &[]).unwrap_err().contains("not an executable"));
    }

    #[test]
    fn the_stderr_tail_is_bounded_and_keeps_the_last_line() {
        let mut t = Tail::default();
        t.push(b"a\nboom\n\n");
        assert_eq!(t.last_line(), "boom");
        t.push(&vec![b'x'; 10 * TAIL]);
        t.push(b"\n\x1b[31mlast\n");
        assert_eq!(t.0.len(), TAIL);
        assert_eq!(t.last_line(), "?[31mlast");
    }
}
