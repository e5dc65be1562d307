//! One module per subcommand; [`run`] dispatches. Shared here: connecting
//! with the global flags, the error types of exit codes 2 and 3, and stdout
//! writing.

pub(crate) mod admin;
mod bench;
mod inspect;
pub mod produce;
mod reap;
mod schedule;
mod serve;
mod table;
mod work;

use crate::broker::{connect::parse_target, Broker, TlsFiles};
use crate::cli::{Cli, Command, Global};
use anyhow::Result;
use std::io::Write;

/// Bad usage or bad input: the binary exits 2, and nothing was written to Redis.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The command found what it was pointed at but changed nothing (a job in
/// flight for `cancel`, a queue holding jobs for `delete-queue`, ...): the
/// binary exits 3 and says why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unchanged(pub String);

/// Shorthand for an exit-2 error.
pub fn usage<T>(msg: impl Into<String>) -> Result<T> {
    Err(UsageError(msg.into()).into())
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Produce(a) => produce::run(&g, a).await,
        Command::Work(a) => work::run(&g, *a).await,
        Command::Reap(a) => reap::run(&g, a).await,
        Command::Inspect(c) => inspect::run(&g, c).await,
        Command::Admin(c) => admin::run(&g, c).await,
        Command::Serve(a) => serve::run(&g, a).await,
        Command::Bench(a) => bench::run(&g, a).await,
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "dtq", &mut script);
            std::io::stdout().lock().write_all(&script).map_err(Into::into)
        }
        Command::Man { out_dir } => man(out_dir.as_deref()),
    }
}

/// The man page of dtq on stdout, or one page per command in `dir`.
fn man(dir: Option<&std::path::Path>) -> Result<()> {
    let cmd = <Cli as clap::CommandFactory>::command();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut page)?;
        return std::io::stdout().lock().write_all(&page).map_err(Into::into);
    };
    std::fs::create_dir_all(dir)?;
    let mut pages = vec![("dtq".to_string(), cmd.clone())];
    pages.extend(cmd.get_subcommands().map(|s| (format!("dtq-{}", s.get_name()), s.clone())));
    for (name, page) in pages {
        let mut file = std::fs::File::create(dir.join(format!("{name}.1")))?;
        clap_mangen::Man::new(page).render(&mut file)?;
    }
    out(format!("wrote man pages to {}", dir.display()))
}

fn target(g: &Global) -> Result<crate::broker::RedisTarget> {
    let tls = TlsFiles {
        ca_file: g.tls_ca_file.clone(),
        cert_file: g.tls_cert_file.clone(),
        key_file: g.tls_key_file.clone(),
    };
    parse_target(&g.redis, &tls).map_err(|e| UsageError(e).into())
}

/// Connects for a one-shot command: gives up after `--connect-timeout` (exit 1).
pub async fn connect(g: &Global) -> Result<Broker> {
    let target = target(g)?;
    Broker::connect(target, &g.namespace, Some(g.connect_timeout)).await.map_err(anyhow::Error::msg)
}

/// Connects for a long-running command: retries until Redis answers.
pub async fn connect_forever(g: &Global) -> Result<Broker> {
    let target = target(g)?;
    Broker::connect(target, &g.namespace, None).await.map_err(anyhow::Error::msg)
}

/// Writes one line to stdout (a closed pipe surfaces as an io error that
/// `main` treats as success).
pub fn out(line: impl std::fmt::Display) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")?;
    Ok(())
}

/// Cancelled on SIGTERM or SIGINT.
pub fn shutdown_signal() -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        t.cancel();
    });
    token
}
