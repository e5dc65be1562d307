//! `dtq work`: the worker, plus the reaper loop unless `--no-reaper`, plus
//! the `/health`, `/ready`, `/metrics` endpoint.

use super::usage;
use crate::cli::{Global, WorkArgs};
use crate::http::{self, Status};
use crate::reaper::{self, ReaperConfig};
use crate::worker::breaker::BreakerConfig;
use crate::worker::{self, exec::ExecHandler, Builtin, Handler, WorkerConfig};
use anyhow::Result;
use std::sync::Arc;

pub async fn run(g: &Global, a: WorkArgs) -> Result<()> {
    let mut cfg = WorkerConfig::new(a.queues.0.clone());
    cfg.concurrency = a.concurrency as usize;
    cfg.visibility_timeout = a.visibility_timeout;
    cfg.job_timeout = a.job_timeout;
    cfg.max_job_timeout = a.max_job_timeout;
    cfg.shutdown_grace = a.shutdown_grace;
    cfg.backoff_base = a.backoff_base;
    cfg.backoff_max = a.backoff_max;
    cfg.idempotency_window = g.idempotency_window;
    cfg.max_batch = a.max_batch as usize;
    cfg.prefetch = a.prefetch.map(|p| p as usize);
    cfg.summary_every = a.log_summary_every.0;
    cfg.rate_limits = crate::config::rate_limits(&a.rate_limit).map_err(super::UsageError)?;
    if !(a.breaker_failure_rate > 0.0 && a.breaker_failure_rate <= 1.0) {
        return usage("--breaker-failure-rate must be in (0, 1]");
    }
    cfg.breaker = BreakerConfig {
        failure_rate: a.breaker_failure_rate,
        window: a.breaker_window,
        min_calls: a.breaker_min_calls.max(1),
        cooldown: a.breaker_cooldown,
        ..BreakerConfig::default()
    };
    cfg.validate().map_err(super::UsageError)?;
    let handler: Arc<dyn Handler> = match (&a.exec, &a.http) {
        (Some(cmd), _) => Arc::new(ExecHandler::new(cmd, &a.exec_env).map_err(super::UsageError)?),
        (None, Some(url)) => {
            let headers = crate::worker::http::parse_headers(&a.http_header).map_err(super::UsageError)?;
            Arc::new(crate::worker::http::HttpHandler::with_headers(url, headers).map_err(super::UsageError)?)
        }
        (None, None) => Arc::new(Builtin),
    };
    let target = super::target(g)?;
    let reaper_cfg = ReaperConfig { interval: a.reap_interval, lock_ttl: a.lock_ttl };

    let shutdown = super::shutdown_signal();
    let status = Arc::new(Status::default());
    let endpoint = http::Endpoint::start(a.listen.0, status.clone()).await?;
    tracing::info!(
        redis = %target.redacted,
        namespace = %g.namespace,
        queues = %a.queues.0.iter().map(|(q, w)| format!("{q}:{w}")).collect::<Vec<_>>().join(","),
        concurrency = cfg.concurrency,
        handler = if a.exec.is_some() { "exec" } else if a.http.is_some() { "http" } else { "builtin" },
        visibility_timeout = %humantime::format_duration(cfg.visibility_timeout),
        job_timeout = %humantime::format_duration(cfg.job_timeout),
        shutdown_grace = %humantime::format_duration(cfg.shutdown_grace),
        reaper = !a.no_reaper,
        rate_limits = %a.rate_limit.iter().map(|(k, l)| format!("{k}={}/{}", l.limit, humantime::format_duration(l.period))).collect::<Vec<_>>().join(","),
        "starting worker"
    );

    let broker = tokio::select! {
        b = super::connect_forever(g) => b?,
        _ = shutdown.cancelled() => return Ok(()),
    };
    tracing::info!(redis = %broker.redacted_url(), "connected to Redis");
    let reaper = (!a.no_reaper)
        .then(|| tokio::spawn(reaper::run(broker.clone(), reaper_cfg, Arc::new(Status::default()), shutdown.clone())));
    worker::run(broker, cfg, handler, status, shutdown.clone()).await.map_err(super::UsageError)?;
    if let Some(r) = reaper {
        let _ = r.await;
    }
    endpoint.close().await;
    tracing::info!("worker stopped");
    Ok(())
}
