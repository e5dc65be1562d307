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
    let endpoint = http::Endpoint::start(a.listen.0, status.clone()).await?;
    tracing::info!(redis = %target.redacted, namespace = %g.namespace, interval = ?a.interval, lock_ttl = ?a.lock_ttl, "starting reaper");
    let broker = tokio::select! {
        b = super::connect_forever(g) => b?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    let cfg = ReaperConfig { interval: a.interval, lock_ttl: a.lock_ttl };
    reaper::run(broker, cfg, status.clone(), shutdown.clone()).await;
    status.set_shutting_down();
    endpoint.close().await;
    tracing::info!("reaper stopped");
    Ok(())
}
