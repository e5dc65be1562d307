//! `dtq reap`: the standalone reaper (leader-elected) with its endpoint.

use crate::cli::{Global, ReapArgs};
use crate::http::{self, Status};
use crate::reaper::{self, ReaperConfig};
use anyhow::Result;
use std::sync::Arc;

pub async fn run(g: &Global, a: ReapArgs) -> Result<()> {
    let target = super::target(g)?;
    let shutdown = super::shutdown_signal();
    let status = Arc::new(Status::default());
    let metrics = crate::metrics::install();
    // The endpoint has its own stop token, cancelled last, so /ready answers
    // 503 (and /metrics stays scrapable) during the shutdown grace.
    let server_stop = tokio_util::sync::CancellationToken::new();
    let server = match a.listen.0 {
        Some(addr) => Some(
            http::serve(addr, status.clone(), metrics, server_stop.clone())
                .await
                .map_err(|e| anyhow::anyhow!("--listen {addr}: {e}"))?,
        ),
        None => None,
    };
    tracing::info!(redis = %target.redacted, namespace = %g.namespace, interval = ?a.interval, lock_ttl = ?a.lock_ttl, "starting reaper");
    let broker = tokio::select! {
        b = super::connect_forever(g) => b?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let cfg = ReaperConfig { interval: a.interval, lock_ttl: a.lock_ttl };
    reaper::run(broker, cfg, status.clone(), shutdown.clone()).await;
    status.set_shutting_down();
    server_stop.cancel();
    if let Some(s) = server {
        let _ = s.await;
    }
    tracing::info!("reaper stopped");
    Ok(())
}
