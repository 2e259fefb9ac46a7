//! `GET /admin/dispatchers`: live, stale and stopped dispatchers with their
//! figures, and queue depth per tenant and status (read from the store; the
//! API never talks to a dispatcher).

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use imagefactory_store::dispatchers;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::auth::AdminAuth;
use crate::error::{ApiError, ApiResult, Problem};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_dispatchers))
}

#[derive(Serialize, ToSchema)]
pub struct DispatcherResponse {
    pub id: String,
    /// `embedded` (inside `serve`) or `standalone`.
    pub mode: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// Executions it follows, as of its last heartbeat.
    pub in_flight: i32,
    pub stopped_at: Option<DateTime<Utc>>,
    /// `live`, `stale` (not seen within the stale window; its leases are
    /// being taken over) or `stopped` (shut down cleanly).
    pub state: String,
    /// Running builds whose lease it holds now.
    pub leases_held: i64,
}

#[derive(Serialize, ToSchema)]
pub struct QueueDepthResponse {
    pub tenant_id: Uuid,
    pub tenant_name: String,
    /// `queued` or `running`.
    pub status: String,
    pub builds: i64,
    /// Queued builds waiting out a retry backoff.
    pub in_backoff: i64,
    pub oldest_created_at: DateTime<Utc>,
    pub max_concurrent_builds: i32,
}

#[derive(Serialize, ToSchema)]
pub struct DispatchersResponse {
    /// Seconds without a heartbeat after which a dispatcher counts as stale.
    pub stale_after_seconds: f64,
    pub dispatchers: Vec<DispatcherResponse>,
    pub queue: Vec<QueueDepthResponse>,
}

/// Dispatchers (live first) and queue depth per tenant and status.
#[utoipa::path(get, path = "/admin/dispatchers", tag = "admin", security(("admin_token" = [])),
    responses((status = 200, body = DispatchersResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_dispatchers(
    _admin: AdminAuth,
    State(state): State<AppState>,
) -> ApiResult<Json<DispatchersResponse>> {
    let overview = dispatchers::overview(&state.pool, state.dispatcher_stale_after)
        .await
        .map_err(|e| ApiError::Internal(format!("reading dispatchers: {e}")))?;
    Ok(Json(DispatchersResponse {
        stale_after_seconds: state.dispatcher_stale_after.as_secs_f64(),
        dispatchers: overview
            .dispatchers
            .into_iter()
            .map(|d| DispatcherResponse {
                id: d.id,
                mode: d.mode,
                host: d.host,
                started_at: d.started_at,
                last_seen_at: d.last_seen_at,
                in_flight: d.in_flight,
                stopped_at: d.stopped_at,
                state: d.state,
                leases_held: d.leases_held,
            })
            .collect(),
        queue: overview
            .queue
            .into_iter()
            .map(|q| QueueDepthResponse {
                tenant_id: q.tenant_id,
                tenant_name: q.tenant_name,
                status: q.status,
                builds: q.builds,
                in_backoff: q.in_backoff,
                oldest_created_at: q.oldest_created_at,
                max_concurrent_builds: q.max_concurrent_builds,
            })
            .collect(),
    }))
}
