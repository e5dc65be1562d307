//! `dtq serve`: the HTTP API, bound before Redis answers (503 until then),
//! with `/ready` following Redis.

use crate::cli::{Global, ServeArgs};
use crate::http::{Ops, Status};
use crate::serve::{Api, TokenFiles};
use anyhow::Result;
use std::sync::Arc;
use std::time::Duration;

pub async fn run(g: &Global, a: ServeArgs) -> Result<()> {
    let tokens =
        TokenFiles::load(a.token_file.as_deref(), a.read_only_token_file.as_deref()).map_err(super::UsageError)?;
    if tokens.current().is_empty() && !a.listen.ip().is_loopback() && !a.insecure_no_auth {
        return super::usage(format!(
            "refusing to serve {} without authentication: give --token-file (and --read-only-token-file), or --insecure-no-auth",
            a.listen
        ));
    }
    if a.token_file.is_none() && a.read_only_token_file.is_some() {
        return super::usage("--read-only-token-file needs --token-file too (someone must be able to change things)");
    }
    let target = super::target(g)?;
    let shutdown = super::shutdown_signal();
    let status = Arc::new(Status::default());
    let metrics = crate::metrics::install();
    let listener = tokio::net::TcpListener::bind(a.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (--listen): {e}", a.listen))?;
    let authenticated = !tokens.current().is_empty();
    let api = Arc::new(Api::new(Ops { status: status.clone(), metrics }, tokens));
    let watcher = api.clone();
    let stop = shutdown.clone();
    tokio::spawn(async move { watcher.watch_tokens(stop).await });
    let server = crate::http::serve_on(listener, api.clone(), a.max_connections as usize, shutdown.clone());
    tracing::info!(addr = %a.listen, redis = %target.redacted, namespace = %g.namespace, authenticated, "serving the HTTP API");
    let broker = tokio::select! {
        b = super::connect_forever(g) => b?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    api.connected(broker.clone());
    // /ready follows Redis.
    loop {
        status.set_redis_ok(broker.ping().await);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    status.set_shutting_down();
    let _ = server.await;
    tracing::info!("serve stopped");
    Ok(())
}
