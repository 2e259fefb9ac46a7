//! `GET /metrics` (Prometheus text format) and the middleware counting HTTP
//! requests by method, route template and status, with their latency.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use imagefactory_metrics::{ActiveCount, HttpLabels, RouteLabels, metrics, render_with_active};
use imagefactory_store::builds;

use crate::AppState;
use crate::auth::MetricsAuth;
use crate::error::ApiResult;

/// The route label of a request no route matched: its raw path (which may
/// hold anything a client sends) never becomes a label.
pub const UNMATCHED: &str = "unmatched";

/// Counts every request under its route template (`/api/v1/builds/{id}`),
/// never the raw path; the latency is the time to the response head (a
/// followed log stream counts until it starts).
pub async fn track(request: Request, next: Next) -> Response {
    let began = Instant::now();
    let method = imagefactory_metrics::method_label(request.method().as_str());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    let m = metrics();
    m.http_duration
        .get_or_create(&RouteLabels {
            method,
            route: route.clone(),
        })
        .observe(began.elapsed().as_secs_f64());
    m.http_requests
        .get_or_create(&HttpLabels {
            method,
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// `GET /metrics`: every metric of the process, the build counts from one
/// aggregate query. Needs `IF_METRICS_TOKEN` as bearer token when set.
pub async fn scrape(_auth: MetricsAuth, State(state): State<AppState>) -> ApiResult<Response> {
    let rows: Vec<ActiveCount> = builds::active_counts(&state.pool)
        .await?
        .into_iter()
        .map(|r| ActiveCount {
            state: r.status,
            method: r.method,
            tenant_id: r.tenant_id.map(|t| t.to_string()),
            count: r.count,
        })
        .collect();
    let text = render_with_active(Some(&rows));
    Ok((
        [(header::CONTENT_TYPE, imagefactory_metrics::CONTENT_TYPE)],
        text,
    )
        .into_response())
}
