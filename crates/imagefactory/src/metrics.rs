//! Metrics settings, and the standalone dispatcher's own `/metrics` listener
//! (`serve` exposes `/metrics` on its API address, see `imagefactory_api`).

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Args;
use imagefactory_domain::Secret;
use imagefactory_store::tokens::constant_time_eq;
use tokio_util::sync::CancellationToken;

use crate::settings::parse_secret;

/// `IF_METRICS_TOKEN`: who may scrape.
#[derive(Debug, Args, Clone)]
pub struct MetricsSettings {
    /// Bearer token `GET /metrics` requires. Unset: the endpoint is open
    /// (it holds no secrets; tenant ids and counts only), so set it when the
    /// address is reachable by more than the Prometheus server.
    #[arg(long, env = "IF_METRICS_TOKEN", hide_env_values = true, value_parser = parse_secret)]
    pub metrics_token: Option<Secret>,
}

/// The standalone dispatcher's metrics: an address of their own, since it
/// serves no API.
#[derive(Debug, Args, Clone)]
pub struct DispatcherMetricsSettings {
    #[command(flatten)]
    pub auth: MetricsSettings,
    /// Where the dispatcher serves `GET /metrics`, e.g. `0.0.0.0:9464`.
    /// Unset: no metrics listener.
    #[arg(long, env = "IF_METRICS_LISTEN_ADDR")]
    pub metrics_listen_addr: Option<SocketAddr>,
}

/// Serves the process's metrics (without the database aggregates, which
/// `serve` exposes) at `/metrics` on the configured address until
/// `shutdown`; `None` when no address is set.
pub async fn serve_dispatcher_metrics(
    settings: &DispatcherMetricsSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = settings.metrics_listen_addr else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (IF_METRICS_LISTEN_ADDR)"))?;
    tracing::info!(addr = %listener.local_addr()?, "serving metrics at /metrics");
    let token = settings.auth.metrics_token.clone();
    let app = Router::new().route(
        "/metrics",
        get(move |headers: HeaderMap| {
            let token = token.clone();
            async move { scrape(token.as_ref(), &headers) }
        }),
    );
    Ok(Some(tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "metrics listener failed");
        }
    })))
}

fn scrape(token: Option<&Secret>, headers: &HeaderMap) -> Response {
    if let Some(expected) = token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !constant_time_eq(presented.as_bytes(), expected.expose().as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "GET /metrics needs the IF_METRICS_TOKEN bearer token\n",
            )
                .into_response();
        }
    }
    let text = imagefactory_metrics::render_with_active(None);
    (
        [(header::CONTENT_TYPE, imagefactory_metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}
