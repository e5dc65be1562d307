//! `--exec CMD`: one child process per job. The command is split like a shell
//! would (no shell runs it); the payload goes to its stdin and the job to its
//! environment; its exit status decides the outcome.

use super::handler::{Handler, HandlerError, HandlerFuture, JobContext};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Exit status that asks for a retry (EX_TEMPFAIL).
pub const EXIT_RETRY: i32 = 75;
/// Exit status for a permanent failure (EX_DATAERR).
pub const EXIT_PERMANENT: i32 = 65;

/// Runs each job as a process.
#[derive(Debug, Clone)]
pub struct ExecHandler {
    argv: Vec<String>,
}

impl ExecHandler {
    /// Splits `cmd` into argv; an empty or unbalanced command is an error.
    pub fn new(cmd: &str) -> Result<Self, String> {
        let argv = shlex::split(cmd).ok_or_else(|| format!("--exec {cmd:?}: unbalanced quotes"))?;
        if argv.is_empty() {
            return Err("--exec: empty command".to_string());
        }
        Ok(ExecHandler { argv })
    }
}

/// The last line of a process' stderr, trimmed to 500 bytes.
fn last_line(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim();
    let mut end = line.len().min(500);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    line[..end].to_string()
}

impl Handler for ExecHandler {
    fn handle<'a>(&'a self, job: &'a JobContext) -> HandlerFuture<'a> {
        Box::pin(async move {
            let mut child = Command::new(&self.argv[0])
                .args(&self.argv[1..])
                .env("DTQ_JOB_ID", &job.id)
                .env("DTQ_QUEUE", &*job.queue)
                .env("DTQ_KIND", &job.kind)
                .env("DTQ_ATTEMPT", job.attempt.to_string())
                .env("DTQ_IDEMPOTENCY_KEY", job.idempotency_key.as_deref().unwrap_or(&job.id))
                .stdin(Stdio::piped())
                .stdout(Stdio::inherit())
                .stderr(Stdio::piped())
                // A job cancelled by its timeout or by shutdown kills its process.
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| HandlerError::retry(format!("exec {:?}: {e}", self.argv[0])))?;
            if let Some(mut stdin) = child.stdin.take() {
                // A child that exits without reading its stdin is not an error.
                let _ = stdin.write_all(job.payload.get().as_bytes()).await;
            }
            let out = child
                .wait_with_output()
                .await
                .map_err(|e| HandlerError::retry(format!("exec {:?}: {e}", self.argv[0])))?;
            let why = |status: &dyn std::fmt::Display| {
                let tail = last_line(&out.stderr);
                if tail.is_empty() {
                    format!("{} {status}", self.argv[0])
                } else {
                    format!("{} {status}: {tail}", self.argv[0])
                }
            };
            match out.status.code() {
                Some(0) => Ok(()),
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
        assert_eq!(ExecHandler::new("sh -c 'exit 3'").unwrap().argv, ["sh", "-c", "exit 3"]);
        assert!(ExecHandler::new("  ").is_err());
        assert!(ExecHandler::new("sh 'x").is_err());
    }

    #[test]
    fn last_stderr_line_is_kept() {
        assert_eq!(last_line(b"a\nboom\n\n"), "boom");
    }
}
