//! The `dtq` binary: parses flags, sets up logging, runs the command and maps
//! the outcome to an exit code (0 ok, 1 runtime failure, 2 bad usage/input,
//! 3 nothing changed).

use clap::Parser;
use dtq::cli::Cli;
use dtq::cmd::{Unchanged, UsageError};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    // clap exits 2 on bad usage by itself.
    let cli = Cli::parse();
    let json = cli.global.log_format == "json";
    // The Redis client's own lines are for debugging it: shown only when
    // asked for by name (RUST_LOG=fred=debug); dtq says what failed itself.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = if std::env::var("RUST_LOG").is_ok_and(|v| v.contains("fred")) {
        filter
    } else {
        filter.add_directive("fred=error".parse().expect("a valid directive"))
    };
    // Colour only on a terminal, and never with NO_COLOR set. A log line that
    // cannot be written (stderr a closed pipe) is dropped, never reported by
    // a panicking eprintln: logging must not stop shutdown.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .log_internal_errors(false);
    if json {
        builder.json().with_current_span(true).with_span_list(false).init();
    } else {
        builder.init();
    }
    // One thread: Redis is the bottleneck, and a single-threaded runtime
    // measured faster here than a multi-threaded one (less cross-core traffic).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "dtq: starting the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dtq::cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe) {
                return ExitCode::SUCCESS;
            }
            if json {
                // Keep stderr ingestible: the last word is a JSON line too.
                tracing::error!(error = %format!("{e:#}"), "dtq: command failed");
            } else {
                let _ = writeln!(std::io::stderr(), "dtq: {e:#}");
            }
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else if e.downcast_ref::<Unchanged>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
