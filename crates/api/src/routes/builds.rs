//! Builds: submit, list, get, cancel, retry, and what their attempts left
//! (executions, artifacts). Logs are in `logs`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use imagefactory_domain::{
    BuildMethod, BuildStatus, Destination, ExecutorKind, GitRef, GitUrl, ImageRef,
    InfrastructureType, MethodConfig, ProviderStatus, ProviderType, Role, Violations,
    validate_build_config,
};
use imagefactory_store::attempts::{self, ArtifactRecord, ExecutionRecord};
use imagefactory_store::builds::{self, Build, BuildFilter, CancelOutcome, NewBuild};
use imagefactory_store::{providers, tenants};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::auth::TenantAuth;
use crate::error::{ApiError, ApiResult, OrNotFound, Problem};
use crate::extract::{PathIds, QueryParams, ValidJson};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit_build, list_builds))
        .routes(routes!(get_build))
        .routes(routes!(cancel_build))
        .routes(routes!(retry_build))
        .routes(routes!(list_executions))
        .routes(routes!(list_artifacts))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitBuild {
    pub project_id: Uuid,
    pub method: BuildMethod,
    /// Default `kubernetes`.
    pub infrastructure_type: Option<InfrastructureType>,
    /// A provider of the tenant or a global one. Kubernetes builds without it
    /// get the global Kubernetes provider with a usable configuration.
    pub infrastructure_provider_id: Option<Uuid>,
    /// Credential used to push the image.
    pub registry_credential_id: Option<Uuid>,
    /// Branch, tag or commit; default: the project's default branch.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*(/[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*)*$"
    )]
    pub git_ref: Option<String>,
    /// Destination `registry/repository[:tag]`. Kaniko may give
    /// `config.metadata.registry_repo` instead; the other methods require it
    /// (422 when missing).
    #[schema(
        min_length = 1,
        max_length = 512,
        pattern = r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])|localhost)/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?$"
    )]
    pub image: Option<String>,
    /// Higher runs first, -1000..=1000 (default 0).
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: Option<i32>,
    /// 1..=86400 (default 3600).
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_seconds: Option<i32>,
    pub config: Option<MethodConfig>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BuildResponse {
    pub id: Uuid,
    pub project_id: Uuid,
    pub method: BuildMethod,
    pub infrastructure_type: InfrastructureType,
    pub infrastructure_provider_id: Option<Uuid>,
    pub registry_credential_id: Option<Uuid>,
    #[schema(value_type = String)]
    pub git_url: GitUrl,
    #[schema(value_type = String)]
    pub git_ref: GitRef,
    #[schema(value_type = String)]
    pub image: ImageRef,
    pub status: BuildStatus,
    pub priority: i32,
    pub timeout_seconds: i32,
    /// Attempts started so far.
    pub attempts: i32,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Present on single-build responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<MethodConfig>,
}

impl BuildResponse {
    fn new(b: Build, config: Option<MethodConfig>) -> ApiResult<Self> {
        Ok(Self {
            status: b.status,
            method: b.method,
            infrastructure_type: b.infrastructure_type,
            id: b.id,
            project_id: b.project_id,
            infrastructure_provider_id: b.infrastructure_provider_id,
            registry_credential_id: b.registry_credential_id,
            git_url: b.git_url,
            git_ref: b.git_ref,
            image: b.image,
            priority: b.priority,
            timeout_seconds: b.timeout_seconds,
            attempts: b.attempts,
            cancel_requested_at: b.cancel_requested_at,
            error_message: b.error_message,
            created_at: b.created_at,
            updated_at: b.updated_at,
            started_at: b.started_at,
            finished_at: b.finished_at,
            config,
        })
    }
}

/// `limit` of `GET /builds` when none is given.
pub const DEFAULT_LIMIT: i64 = 20;

super::page_of!(ExecutionPage, ExecutionResponse);
super::page_of!(ArtifactPage, ArtifactResponse);

#[derive(Debug, Serialize, ToSchema)]
pub struct BuildPage {
    pub items: Vec<BuildResponse>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

/// Query of `GET /builds` (documentation; parsed by hand to name bad fields).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ListBuildsQuery {
    project_id: Option<Uuid>,
    status: Option<BuildStatus>,
    /// 1..=100, default 20.
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page; an id that is no position in
    /// this list is refused (400), not an empty page.
    cursor: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionResponse {
    pub id: Uuid,
    pub attempt: i32,
    #[schema(value_type = String)]
    pub executor: ExecutorKind,
    pub provider_id: Option<Uuid>,
    pub cluster_namespace: Option<String>,
    pub pipeline_run_name: Option<String>,
    pub status: BuildStatus,
    pub message: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<ExecutionRecord> for ExecutionResponse {
    fn from(e: ExecutionRecord) -> Self {
        Self {
            id: e.id,
            attempt: e.attempt,
            executor: e.executor,
            provider_id: e.provider_id,
            cluster_namespace: e.cluster_namespace,
            pipeline_run_name: e.pipeline_run_name,
            status: e.status,
            message: e.message,
            started_at: e.started_at,
            finished_at: e.finished_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactResponse {
    pub id: Uuid,
    pub execution_id: Uuid,
    pub attempt: i32,
    /// `IMAGE_URL`, `IMAGE_DIGEST` or `<task>.<result>`.
    pub name: String,
    pub value: String,
    /// `image_url`, `image_digest` or `result`.
    pub kind: String,
    pub created_at: DateTime<Utc>,
}

impl From<ArtifactRecord> for ArtifactResponse {
    fn from(a: ArtifactRecord) -> Self {
        Self {
            id: a.id,
            execution_id: a.execution_id,
            attempt: a.attempt,
            name: a.name,
            value: a.value,
            kind: a.kind,
            created_at: a.created_at,
        }
    }
}

/// A local build runs on the dispatcher's host (git, the container CLI and
/// packer as its user; packer's `shell-local` runs any command): only tenants
/// the platform admin opted in may submit one, whatever provider they name.
async fn require_local_builds(state: &AppState, tenant_id: Uuid) -> ApiResult<()> {
    let tenant = tenants::get(&state.pool, tenant_id).await?;
    if tenant.allow_local_builds {
        return Ok(());
    }
    Err(ApiError::field(
        "infrastructure_type",
        "local builds run on the server's own host and are not enabled for this tenant; \
         the platform admin can allow them (tenant setting allow_local_builds)",
    ))
}

/// The provider of a build that names none: the global default Kubernetes
/// provider, or the dispatchers' own global cluster; none for local builds.
async fn default_provider(
    state: &AppState,
    infrastructure: InfrastructureType,
) -> ApiResult<Option<Uuid>> {
    match infrastructure {
        InfrastructureType::Kubernetes => match providers::default_kubernetes(&state.pool).await? {
            Some(p) => Ok(Some(p.id)),
            // The dispatchers' own global cluster.
            None if state.global_cluster => Ok(None),
            None => Err(ApiError::field(
                PROVIDER_FIELD,
                "no provider given, no usable global Kubernetes provider exists and no \
                 global cluster (IF_BUILD_TEKTON_KUBECONFIG or IF_BUILD_TEKTON_IN_CLUSTER) \
                 is configured; name a provider or ask the platform admin to configure a \
                 global one",
            )),
        },
        InfrastructureType::Local => Ok(None),
    }
}

const PROVIDER_FIELD: &str = "infrastructure_provider_id";

/// A named provider as the tenant sees it (`found`: its type and status,
/// `None` when it is not the tenant's nor global — "no such provider", so
/// other tenants' providers stay invisible) must suit the build.
fn check_named_provider(
    id: Uuid,
    infrastructure: InfrastructureType,
    found: Option<(ProviderType, ProviderStatus)>,
) -> ApiResult<()> {
    let Some((provider_type, status)) = found else {
        return Err(ApiError::field(PROVIDER_FIELD, format!("no provider {id}")));
    };
    let expected = infrastructure.provider_type();
    if provider_type != expected {
        return Err(ApiError::field(
            PROVIDER_FIELD,
            format!(
                "provider {id} is a {provider_type} provider; a {infrastructure} build needs a {expected} provider"
            ),
        ));
    }
    if status != ProviderStatus::Active {
        return Err(ApiError::field(
            PROVIDER_FIELD,
            format!("provider {id} is disabled"),
        ));
    }
    Ok(())
}

/// Why [`builds::submit`] refused a submission, from its references as the
/// tenant sees them; `Ok` if they all check out now.
fn explain_refusal(new: &NewBuild, refs: &builds::SubmissionRefs) -> ApiResult<()> {
    if refs.git_url.is_none() {
        return Err(ApiError::field(
            "project_id",
            format!("no project {}", new.project_id),
        ));
    }
    if let Some(id) = new.registry_credential_id
        && !refs.credential_found
    {
        return Err(ApiError::field(
            "registry_credential_id",
            format!("no registry credential {id}"),
        ));
    }
    if let Some(id) = new.infrastructure_provider_id {
        let found = refs.provider_type.zip(refs.provider_status);
        check_named_provider(id, new.infrastructure_type, found)?;
    }
    Ok(())
}

#[utoipa::path(post, path = "/builds", tag = "builds", security(("tenant_token" = [])),
    request_body = SubmitBuild,
    responses((status = 201, body = BuildResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn submit_build(
    auth: TenantAuth,
    State(state): State<AppState>,
    ValidJson(mut body): ValidJson<SubmitBuild>,
) -> ApiResult<(StatusCode, Json<BuildResponse>)> {
    auth.require(Role::Developer)?;
    let config = body.config.take().unwrap_or_default();
    let checked = check_submission(&body, &config)?;
    let infrastructure = body
        .infrastructure_type
        .unwrap_or(InfrastructureType::Kubernetes);
    if infrastructure == InfrastructureType::Local {
        require_local_builds(&state, auth.tenant_id).await?;
    }
    let provider_id = match body.infrastructure_provider_id {
        None => default_provider(&state, infrastructure).await?,
        Some(id) => Some(id),
    };
    let new = NewBuild {
        tenant_id: auth.tenant_id,
        project_id: body.project_id,
        method: body.method,
        infrastructure_type: infrastructure,
        infrastructure_provider_id: provider_id,
        registry_credential_id: body.registry_credential_id,
        git_ref: checked.git_ref,
        image: checked.destination.0,
        priority: checked.priority,
        timeout_seconds: checked.timeout_seconds,
        created_by_token_id: Some(auth.token_id),
        config,
    };
    // The insert checks the references itself (one round trip); only a
    // refused submission reads them again, to say which one is wrong. If
    // all check out by then, one changed in between: try once more.
    let mut build = None;
    for _ in 0..2 {
        build = state.build_submits.submit(new.clone()).await?;
        if build.is_some() {
            break;
        }
        let refs = builds::submission_refs(
            &state.pool,
            auth.tenant_id,
            new.project_id,
            new.infrastructure_provider_id,
            new.registry_credential_id,
        )
        .await?;
        explain_refusal(&new, &refs)?;
    }
    let Some(build) = build else {
        return Err(ApiError::Conflict {
            detail: "the build's project, provider or registry credential changed while it \
                     was submitted; submit it again"
                .into(),
            field: None,
        });
    };
    state.queue_waker.wake();
    tracing::info!(build.id = %build.id, tenant.id = %auth.tenant_id, method = %body.method, "build queued");
    Ok((
        StatusCode::CREATED,
        Json(BuildResponse::new(build, Some(new.config))?),
    ))
}

/// The parts of a submission that need no lookup, checked together so every
/// problem is reported at once.
struct CheckedSubmission {
    destination: Destination,
    /// The asked-for ref; `None`: the project's default branch.
    git_ref: Option<GitRef>,
    priority: i32,
    timeout_seconds: i32,
}

fn check_submission(body: &SubmitBuild, config: &MethodConfig) -> ApiResult<CheckedSubmission> {
    let mut v = Violations::new();
    let destination = match validate_build_config(body.method, body.image.as_deref(), config) {
        Ok(d) => Some(d),
        Err(problems) => {
            v.extend(problems);
            None
        }
    };
    let git_ref = body
        .git_ref
        .as_deref()
        .and_then(|r| v.check("git_ref", GitRef::parse(r)));
    let priority = body.priority.unwrap_or(0);
    if !(-1000..=1000).contains(&priority) {
        v.add("priority", "must be between -1000 and 1000");
    }
    let timeout_seconds = body.timeout_seconds.unwrap_or(3600);
    if !(1..=86_400).contains(&timeout_seconds) {
        v.add("timeout_seconds", "must be between 1 and 86400");
    }
    v.into_result()?;
    Ok(CheckedSubmission {
        destination: destination.expect("validated"),
        git_ref,
        priority,
        timeout_seconds,
    })
}

#[utoipa::path(get, path = "/builds", tag = "builds", security(("tenant_token" = [])),
    params(ListBuildsQuery),
    responses((status = 200, body = BuildPage), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_builds(
    auth: TenantAuth,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<BuildPage>> {
    query.only(&["project_id", "status", "limit", "cursor"])?;
    let filter = BuildFilter {
        project_id: query.parse::<Uuid>("project_id")?,
        status: query.parse::<BuildStatus>("status")?,
    };
    let page = super::page(&query, DEFAULT_LIMIT)?;
    let (rows, next_cursor) = builds::list(&state.pool, auth.tenant_id, &filter, page).await?;
    Ok(Json(BuildPage {
        items: rows
            .into_iter()
            .map(|b| BuildResponse::new(b, None))
            .collect::<ApiResult<_>>()?,
        next_cursor,
    }))
}

#[utoipa::path(get, path = "/builds/{build_id}", tag = "builds", security(("tenant_token" = [])),
    params(("build_id" = Uuid, Path)),
    responses((status = 200, body = BuildResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn get_build(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<Json<BuildResponse>> {
    let id = path.id("build_id")?;
    let (build, config) = state
        .build_reads
        .get_with_config(auth.tenant_id, id)
        .await
        .or_not_found("build")?;
    Ok(Json(BuildResponse::new(build, Some(config))?))
}

/// Queued builds are cancelled at once (200, status `cancelled`); running
/// builds get a cancel request (202) and end when the executor stops them.
#[utoipa::path(post, path = "/builds/{build_id}/cancel", tag = "builds", security(("tenant_token" = [])),
    params(("build_id" = Uuid, Path)),
    responses((status = 200, body = BuildResponse), (status = 202, body = BuildResponse),
        (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn cancel_build(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<(StatusCode, Json<BuildResponse>)> {
    auth.require(Role::Developer)?;
    let id = path.id("build_id")?;
    let (status, build) = match builds::cancel(&state.pool, auth.tenant_id, id)
        .await
        .or_not_found("build")?
    {
        CancelOutcome::Cancelled(b) => (StatusCode::OK, b),
        CancelOutcome::Requested(b) => (StatusCode::ACCEPTED, b),
    };
    tracing::info!(build.id = %id, tenant.id = %auth.tenant_id, "build cancel requested");
    Ok((status, Json(BuildResponse::new(build, None)?)))
}

/// A failed, cancelled or timed-out build is queued again as a new attempt.
#[utoipa::path(post, path = "/builds/{build_id}/retry", tag = "builds", security(("tenant_token" = [])),
    params(("build_id" = Uuid, Path)),
    responses((status = 200, body = BuildResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn retry_build(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<Json<BuildResponse>> {
    auth.require(Role::Developer)?;
    let id = path.id("build_id")?;
    let build = builds::retry(&state.pool, auth.tenant_id, id)
        .await
        .or_not_found("build")?;
    tracing::info!(build.id = %id, tenant.id = %auth.tenant_id, "build queued again");
    Ok(Json(BuildResponse::new(build, None)?))
}

#[utoipa::path(get, path = "/builds/{build_id}/executions", tag = "builds", security(("tenant_token" = [])),
    params(("build_id" = Uuid, Path), super::PageQuery),
    responses((status = 200, body = ExecutionPage), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_executions(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
    query: QueryParams,
) -> ApiResult<Json<ExecutionPage>> {
    let id = path.id("build_id")?;
    let page = super::list_page(&query)?;
    builds::get(&state.pool, auth.tenant_id, id)
        .await
        .or_not_found("build")?;
    let rows = attempts::executions(&state.pool, auth.tenant_id, id, page).await?;
    Ok(Json(ExecutionPage::new(rows, |e| Ok(e.into()))?))
}

#[utoipa::path(get, path = "/builds/{build_id}/artifacts", tag = "builds", security(("tenant_token" = [])),
    params(("build_id" = Uuid, Path), super::PageQuery),
    responses((status = 200, body = ArtifactPage), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_artifacts(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
    query: QueryParams,
) -> ApiResult<Json<ArtifactPage>> {
    let id = path.id("build_id")?;
    let page = super::list_page(&query)?;
    builds::get(&state.pool, auth.tenant_id, id)
        .await
        .or_not_found("build")?;
    let rows = attempts::artifacts(&state.pool, auth.tenant_id, id, page).await?;
    Ok(Json(ArtifactPage::new(rows, |a| Ok(a.into()))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_message(result: ApiResult<()>) -> String {
        match result {
            Err(ApiError::Validation(v)) => format!("{v:?}"),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn a_named_provider_must_be_visible_of_the_builds_kind_and_active() {
        let id = Uuid::nil();
        let k8s = InfrastructureType::Kubernetes;
        assert!(field_message(check_named_provider(id, k8s, None)).contains("no provider"));
        let local = Some((ProviderType::Local, ProviderStatus::Active));
        assert!(
            field_message(check_named_provider(id, k8s, local))
                .contains("needs a kubernetes provider")
        );
        let disabled = Some((ProviderType::Kubernetes, ProviderStatus::Disabled));
        assert!(field_message(check_named_provider(id, k8s, disabled)).contains("is disabled"));
        let good = Some((ProviderType::Kubernetes, ProviderStatus::Active));
        assert!(check_named_provider(id, k8s, good).is_ok());
    }
}
