//! `POST /admin/providers/{id}/tekton/install` (a job, 202; 409 naming the
//! running job), `GET /admin/providers/{id}/tekton/install/{job_id}` and
//! `GET /admin/providers/{id}/tekton/status`, for global Kubernetes
//! providers. The cluster work goes through the [`TektonOps`] seam.
//!
//! [`TektonOps`]: crate::tekton::TektonOps

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use imagefactory_domain::provider::{ProviderOwner, ProviderType};
use imagefactory_store::providers::{self, Owner, Provider};
use imagefactory_store::tekton_jobs::{self, InstallJob, JobOwner, StartError};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::auth::AdminAuth;
use crate::connection::ConnectionTarget;
use crate::error::{ApiError, ApiResult, OrNotFound, Problem};
use crate::extract::{PathIds, QueryParams};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start_install))
        .routes(routes!(get_install))
        .routes(routes!(tekton_status))
}

/// An install job.
#[derive(Debug, Serialize, ToSchema)]
pub struct InstallJobView {
    pub id: Uuid,
    pub provider_id: Uuid,
    /// `running`, `succeeded` or `failed`.
    pub status: String,
    pub namespace: Option<String>,
    pub dry_run: bool,
    /// The process running it (`host` and `pid`); a job whose process stops
    /// renewing its heartbeat is marked failed as abandoned.
    pub owner_host: String,
    pub owner_pid: i32,
    pub heartbeat_at: DateTime<Utc>,
    /// Per namespace: `{namespace, bundle_version, dry_run, objects: [{kind,
    /// namespace, name, before, action (created | unchanged | updated |
    /// drifted | failed), detail}]}`.
    #[schema(value_type = Vec<Object>)]
    pub results: Value,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<InstallJob> for InstallJobView {
    fn from(j: InstallJob) -> Self {
        Self {
            id: j.id,
            provider_id: j.provider_id,
            status: j.status,
            namespace: j.namespace,
            dry_run: j.dry_run,
            owner_host: j.owner_host,
            owner_pid: j.owner_pid,
            heartbeat_at: j.heartbeat_at,
            results: j.results,
            error: j.error,
            created_at: j.created_at,
            finished_at: j.finished_at,
        }
    }
}

async fn kubernetes_provider(state: &AppState, path: &PathIds) -> ApiResult<Provider> {
    let found = providers::get_owned(&state.pool, Owner::Global, path.id("provider_id")?)
        .await
        .or_not_found("provider")?;
    if found.provider_type != ProviderType::Kubernetes {
        return Err(ApiError::InvalidState(format!(
            "provider {:?} is of type {}; only kubernetes providers have Tekton Tasks",
            found.name, found.provider_type
        )));
    }
    Ok(found)
}

fn target(state: &AppState, provider: &Provider) -> ApiResult<ConnectionTarget> {
    let config = providers::open_config(&state.cipher, provider)
        .map_err(|e| ApiError::Internal(format!("opening provider {} config: {e}", provider.id)))?;
    Ok(ConnectionTarget {
        provider_id: provider.id,
        name: provider.name.clone(),
        tekton_enabled: provider.tekton_enabled,
        config_version: provider.config_version,
        config,
        owner: ProviderOwner::Global,
    })
}

fn ops(state: &AppState) -> ApiResult<std::sync::Arc<dyn crate::tekton::TektonOps>> {
    state.tekton_ops.clone().ok_or_else(|| {
        ApiError::Unavailable(
            "this server has no cluster support configured for Tekton Tasks".into(),
        )
    })
}

/// `namespace` (a DNS label) and `dry_run` from the query.
fn install_query(query: &QueryParams, allowed: &[&str]) -> ApiResult<(Option<String>, bool)> {
    query.only(allowed)?;
    let namespace: Option<String> = query.parse("namespace")?;
    if let Some(ns) = &namespace {
        let ok = !ns.is_empty()
            && ns.len() <= 63
            && ns
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !ok {
            return Err(ApiError::InvalidParameter {
                field: "namespace".into(),
                message: format!("{ns:?} is not a Kubernetes namespace name (DNS label)"),
            });
        }
    }
    let dry_run = query.parse::<bool>("dry_run")?.unwrap_or(false);
    Ok((namespace, dry_run))
}

/// Start installing Image Factory's Task bundle on the provider's cluster
/// (`namespace`: default the shared Tasks namespace, else every Image
/// Factory namespace; `dry_run`: validate only). One job per provider at a
/// time: 409 names the running job.
#[utoipa::path(post, path = "/admin/providers/{provider_id}/tekton/install", tag = "admin", security(("admin_token" = [])),
    params(("provider_id" = Uuid, Path), ("namespace" = Option<String>, Query, description = "a Kubernetes namespace name (DNS label)", min_length = 1, max_length = 63, pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"), ("dry_run" = Option<bool>, Query)),
    responses((status = 202, body = InstallJobView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn start_install(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
    query: QueryParams,
) -> ApiResult<(StatusCode, Json<InstallJobView>)> {
    let (namespace, dry_run) = install_query(&query, &["namespace", "dry_run"])?;
    let provider = kubernetes_provider(&state, &path).await?;
    let ops = ops(&state)?;
    let target = target(&state, &provider)?;
    let lease = state.tekton_job_lease;
    let job = match tekton_jobs::start(
        &state.pool,
        provider.id,
        namespace.as_deref(),
        dry_run,
        &JobOwner::this_process(),
        lease,
    )
    .await
    {
        Ok(job) => job,
        Err(StartError::Running(running)) => {
            return Err(ApiError::Conflict {
                detail: format!(
                    "install job {} is running for this provider (started {}); wait for it: GET /api/v1/admin/providers/{}/tekton/install/{}",
                    running.id, running.created_at, provider.id, running.id
                ),
                field: None,
            });
        }
        Err(StartError::Store(e)) => return Err(e.into()),
    };
    let pool = state.pool.clone();
    let id = job.id;
    tokio::spawn(async move {
        let work = ops.install(target, namespace, dry_run);
        tokio::pin!(work);
        // Renew the lease while the install runs, well within it.
        let mut beat = tokio::time::interval(lease / 3);
        beat.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = beat.tick() => {
                    if let Err(e) = tekton_jobs::heartbeat(&pool, id).await {
                        tracing::warn!(job = %id, error = %e, "renewing the install job's heartbeat failed");
                    }
                }
            }
        };
        let (succeeded, results, error) = match outcome {
            Ok(results) => {
                let failed = results.to_string().contains("\"action\":\"failed\"");
                (
                    !failed,
                    results,
                    failed.then(|| "some objects failed; see their results".to_string()),
                )
            }
            Err(e) => (false, Value::Array(Vec::new()), Some(e)),
        };
        if let Err(e) = tekton_jobs::finish(&pool, id, succeeded, &results, error.as_deref()).await
        {
            tracing::warn!(job = %id, error = %e, "recording the install job's end failed");
        }
    });
    Ok((StatusCode::ACCEPTED, Json(job.into())))
}

/// An install job of the provider (a running job whose process stopped is
/// shown failed as abandoned).
#[utoipa::path(get, path = "/admin/providers/{provider_id}/tekton/install/{job_id}", tag = "admin", security(("admin_token" = [])),
    params(("provider_id" = Uuid, Path), ("job_id" = Uuid, Path)),
    responses((status = 200, body = InstallJobView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn get_install(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<Json<InstallJobView>> {
    let provider_id = path.id("provider_id")?;
    let job = tekton_jobs::get(
        &state.pool,
        provider_id,
        path.id("job_id")?,
        state.tekton_job_lease,
    )
    .await
    .or_not_found("install job")?;
    Ok(Json(job.into()))
}

/// The cluster's readiness for builds: Tekton API versions served ("Tekton
/// Pipelines not installed" when none), and per namespace each Task present
/// / current / outdated / modified, the registry Secret and the service
/// account, plus the default StorageClass.
#[utoipa::path(get, path = "/admin/providers/{provider_id}/tekton/status", tag = "admin", security(("admin_token" = [])),
    params(("provider_id" = Uuid, Path), ("namespace" = Option<String>, Query, description = "a Kubernetes namespace name (DNS label)", min_length = 1, max_length = 63, pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")),
    responses((status = 200, body = Object), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn tekton_status(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
    query: QueryParams,
) -> ApiResult<Json<Value>> {
    let (namespace, _) = install_query(&query, &["namespace"])?;
    let provider = kubernetes_provider(&state, &path).await?;
    let ops = ops(&state)?;
    let report = ops
        .status(target(&state, &provider)?, namespace)
        .await
        .map_err(|e| ApiError::InvalidState(format!("checking the cluster failed: {e}")))?;
    Ok(Json(report))
}
