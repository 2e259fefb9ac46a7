//! Infrastructure providers: tenant-owned (`/providers`, tenant admins) and
//! global (`/admin/providers`, platform admin). Tenants also read global
//! providers but cannot change them. Configs are validated here, sealed by
//! the store, and shown redacted (`{"set": true}` for each secret).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use imagefactory_domain::provider::{ProviderOwner, SECRET_FIELDS, validate_provider_config};
use imagefactory_domain::{ProviderStatus, ProviderType, ResourceName, Role, Violations};
use imagefactory_store::crypto::{envelope, redact_fields};
use imagefactory_store::providers::{self, NewProvider, Owner, Provider, ProviderPatch};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::auth::{AdminAuth, TenantAuth};
use crate::connection::{ConnectionReport, ConnectionTarget};
use crate::error::{ApiError, ApiResult, OrNotFound, Problem};
use crate::extract::{PathIds, QueryParams, ValidJson};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_provider, list_providers))
        .routes(routes!(get_provider, update_provider, delete_provider))
        .routes(routes!(create_global_provider, list_global_providers))
        .routes(routes!(
            get_global_provider,
            update_global_provider,
            delete_global_provider
        ))
        .routes(routes!(test_connection))
        .routes(routes!(test_global_connection))
}

/// Connect to the provider's cluster with its credentials: reachability,
/// authentication, Tekton API versions, or what failed as a category and a
/// short cause (never a response body).
#[utoipa::path(post, path = "/providers/{provider_id}/test-connection", tag = "providers", security(("tenant_token" = [])),
    params(("provider_id" = Uuid, Path)),
    responses((status = 200, body = ConnectionReport), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn test_connection(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<Json<ConnectionReport>> {
    auth.require(Role::Admin)?;
    let found = providers::get_owned(
        &state.pool,
        Owner::Tenant(auth.tenant_id),
        path.id("provider_id")?,
    )
    .await
    .or_not_found("provider")?;
    run_connection_test(&state, found).await
}

#[utoipa::path(post, path = "/admin/providers/{provider_id}/test-connection", tag = "admin", security(("admin_token" = [])),
    params(("provider_id" = Uuid, Path)),
    responses((status = 200, body = ConnectionReport), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn test_global_connection(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<Json<ConnectionReport>> {
    let found = providers::get_owned(&state.pool, Owner::Global, path.id("provider_id")?)
        .await
        .or_not_found("provider")?;
    run_connection_test(&state, found).await
}

async fn run_connection_test(
    state: &AppState,
    provider: Provider,
) -> ApiResult<Json<ConnectionReport>> {
    if provider.provider_type != ProviderType::Kubernetes {
        return Err(ApiError::InvalidState(format!(
            "provider {:?} is of type {}; only kubernetes providers have a connection to test",
            provider.name, provider.provider_type
        )));
    }
    let Some(tester) = state.connection_tester.clone() else {
        return Err(ApiError::Unavailable(
            "this server has no cluster support configured to test connections".into(),
        ));
    };
    let config = providers::open_config(&state.cipher, &provider)
        .map_err(|e| ApiError::Internal(format!("opening provider {} config: {e}", provider.id)))?;
    let owner = if provider.is_global {
        ProviderOwner::Global
    } else {
        ProviderOwner::Tenant
    };
    let report = tester
        .test(ConnectionTarget {
            owner,
            provider_id: provider.id,
            name: provider.name,
            tekton_enabled: provider.tekton_enabled,
            config_version: provider.config_version,
            config,
        })
        .await;
    Ok(Json(report))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub name: String,
    pub provider_type: ProviderType,
    /// Kubernetes: `auth_method` (`token` | `client-cert` | `kubeconfig`),
    /// `endpoint`/`apiServer`, `token`, `ca_cert`, `client_cert`, `client_key`,
    /// `kubeconfig`, `kubeconfig_path` (global only), `context`,
    /// `insecure_skip_tls_verify`, `namespace` (tenant only), `storage_class`,
    /// `service_account`, `workspace_size`, `tekton_api_version`, `retention`
    /// {keep_last, ttl_seconds}, `tasks`, `tasks_namespace`, `repair_drift`,
    /// `builder_images`, `registry_tls_verify` (README "Provider config keys").
    /// Local: no keys.
    /// Secret fields are write-only.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub config: Value,
    /// Default true.
    pub tekton_enabled: Option<bool>,
    /// Default `active`.
    pub status: Option<ProviderStatus>,
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrent_builds: Option<i32>,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProvider {
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub name: Option<String>,
    /// Replaces the whole config. Secret fields left out keep their stored
    /// value while `auth_method` stays the same.
    #[schema(value_type = Option<Object>)]
    pub config: Option<Value>,
    pub tekton_enabled: Option<bool>,
    pub status: Option<ProviderStatus>,
    /// `null` removes the limit.
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(nullable, minimum = 1, maximum = 10000)]
    pub max_concurrent_builds: Option<Option<i32>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderResponse {
    pub id: Uuid,
    /// Null for global providers.
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub is_global: bool,
    pub provider_type: ProviderType,
    /// The config with every secret replaced by `{"set": true}`.
    #[schema(value_type = Object)]
    pub config: Value,
    pub config_version: i64,
    pub tekton_enabled: bool,
    pub status: ProviderStatus,
    pub max_concurrent_builds: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl TryFrom<Provider> for ProviderResponse {
    type Error = ApiError;

    fn try_from(p: Provider) -> ApiResult<Self> {
        Ok(Self {
            config: redact_fields(&p.config),
            provider_type: p.provider_type,
            status: p.status,
            id: p.id,
            tenant_id: p.tenant_id,
            name: p.name,
            is_global: p.is_global,
            config_version: p.config_version,
            tekton_enabled: p.tekton_enabled,
            max_concurrent_builds: p.max_concurrent_builds,
            created_at: p.created_at,
            updated_at: p.updated_at,
        })
    }
}

/// A new config that leaves out a secret field keeps its stored (sealed)
/// value when the auth method is unchanged, so changing an endpoint or a
/// namespace does not require sending the token again. Returns the fields kept.
fn carry_over_secrets(new: &mut Value, stored: &Value) -> Vec<&'static str> {
    let same_auth =
        new.get("auth_method").is_some() && new.get("auth_method") == stored.get("auth_method");
    let (Some(new_map), Some(stored_map)) = (new.as_object_mut(), stored.as_object()) else {
        return Vec::new();
    };
    if !same_auth {
        return Vec::new();
    }
    let mut kept = Vec::new();
    for field in SECRET_FIELDS {
        if new_map.contains_key(*field) {
            continue;
        }
        if let Some(sealed) = stored_map.get(*field).filter(|v| envelope(v).is_some()) {
            new_map.insert((*field).to_owned(), sealed.clone());
            kept.push(*field);
        }
    }
    kept
}

fn config_owner(owner: Owner) -> ProviderOwner {
    match owner {
        Owner::Global => ProviderOwner::Global,
        Owner::Tenant(_) => ProviderOwner::Tenant,
    }
}

fn check_limit(v: &mut Violations, limit: Option<i32>) {
    if let Some(n) = limit
        && !(1..=10_000).contains(&n)
    {
        v.add("max_concurrent_builds", "must be between 1 and 10000");
    }
}

async fn create(
    state: &AppState,
    owner: Owner,
    body: CreateProvider,
) -> ApiResult<(StatusCode, Json<ProviderResponse>)> {
    let mut v = Violations::new();
    let name = v.check("name", ResourceName::parse(&body.name));
    if let Err(problems) = validate_provider_config(
        body.provider_type,
        &body.config,
        config_owner(owner),
        &state.provider_address_policy,
    ) {
        v.extend(problems);
    }
    check_limit(&mut v, body.max_concurrent_builds);
    v.into_result()?;
    let provider = providers::create(
        &state.pool,
        &state.cipher,
        owner,
        NewProvider {
            name: name.expect("validated").into_string(),
            provider_type: body.provider_type,
            config: body.config,
            tekton_enabled: body.tekton_enabled.unwrap_or(true),
            status: body.status.unwrap_or(ProviderStatus::Active),
            max_concurrent_builds: body.max_concurrent_builds,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(provider.try_into()?)))
}

async fn update(
    state: &AppState,
    owner: Owner,
    id: Uuid,
    body: UpdateProvider,
) -> ApiResult<Json<ProviderResponse>> {
    let current = providers::get_owned(&state.pool, owner, id)
        .await
        .or_not_found("provider")?;
    let mut v = Violations::new();
    let name = match &body.name {
        Some(n) => v
            .check("name", ResourceName::parse(n))
            .map(ResourceName::into_string),
        None => None,
    };
    let mut config = body.config;
    if let Some(new) = &mut config {
        let provider_type = current.provider_type;
        let kept = carry_over_secrets(new, &current.config);
        // Validate as if the kept secrets had been sent again: a kept
        // kubeconfig is checked like a new one (a row stored before the
        // checks existed cannot be carried forward unchecked).
        let mut as_sent = new.clone();
        if !kept.is_empty() {
            let stored = providers::open_config(&state.cipher, &current).map_err(|e| {
                ApiError::Internal(format!("opening provider {} config: {e}", current.id))
            })?;
            for field in &kept {
                as_sent[*field] = stored[*field].clone();
            }
        }
        if let Err(problems) = validate_provider_config(
            provider_type,
            &as_sent,
            config_owner(owner),
            &state.provider_address_policy,
        ) {
            v.extend(problems);
        }
    }
    check_limit(&mut v, body.max_concurrent_builds.flatten());
    v.into_result()?;
    let patch = ProviderPatch {
        name,
        config,
        tekton_enabled: body.tekton_enabled,
        status: body.status,
        max_concurrent_builds: body.max_concurrent_builds,
    };
    let updated = providers::update(&state.pool, &state.cipher, owner, id, patch)
        .await
        .or_not_found("provider")?;
    Ok(Json(updated.try_into()?))
}

#[utoipa::path(post, path = "/providers", tag = "providers", security(("tenant_token" = [])),
    request_body = CreateProvider,
    responses((status = 201, body = ProviderResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn create_provider(
    auth: TenantAuth,
    State(state): State<AppState>,
    ValidJson(body): ValidJson<CreateProvider>,
) -> ApiResult<(StatusCode, Json<ProviderResponse>)> {
    auth.require(Role::Admin)?;
    if body.provider_type == ProviderType::Local {
        // A local provider stands for the server's own host: only the platform
        // admin offers one, and only its per-tenant opt-in grants local builds.
        return Err(ApiError::field(
            "provider_type",
            "local providers are managed by the platform admin; a tenant's local builds \
             are enabled by the platform admin (tenant setting allow_local_builds)",
        ));
    }
    create(&state, Owner::Tenant(auth.tenant_id), body).await
}

/// The tenant's own providers and the global ones.
#[utoipa::path(get, path = "/providers", tag = "providers", security(("tenant_token" = [])),
    params(super::PageQuery),
    responses((status = 200, body = ProviderPage), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_providers(
    auth: TenantAuth,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<ProviderPage>> {
    let page = super::list_page(&query)?;
    let rows = providers::list_visible(&state.pool, auth.tenant_id, page).await?;
    Ok(Json(ProviderPage::new(rows, ProviderResponse::try_from)?))
}

super::page_of!(ProviderPage, ProviderResponse);

#[utoipa::path(get, path = "/providers/{provider_id}", tag = "providers", security(("tenant_token" = [])),
    params(("provider_id" = Uuid, Path)),
    responses((status = 200, body = ProviderResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn get_provider(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<Json<ProviderResponse>> {
    let id = path.id("provider_id")?;
    let found = providers::get_visible(&state.pool, auth.tenant_id, id)
        .await
        .or_not_found("provider")?;
    Ok(Json(found.try_into()?))
}

/// Global providers answer 404 here: only the platform admin changes them.
#[utoipa::path(patch, path = "/providers/{provider_id}", tag = "providers", security(("tenant_token" = [])),
    params(("provider_id" = Uuid, Path)), request_body = UpdateProvider,
    responses((status = 200, body = ProviderResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn update_provider(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
    ValidJson(body): ValidJson<UpdateProvider>,
) -> ApiResult<Json<ProviderResponse>> {
    auth.require(Role::Admin)?;
    update(
        &state,
        Owner::Tenant(auth.tenant_id),
        path.id("provider_id")?,
        body,
    )
    .await
}

#[utoipa::path(delete, path = "/providers/{provider_id}", tag = "providers", security(("tenant_token" = [])),
    params(("provider_id" = Uuid, Path)),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn delete_provider(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<StatusCode> {
    auth.require(Role::Admin)?;
    let id = path.id("provider_id")?;
    providers::delete(&state.pool, Owner::Tenant(auth.tenant_id), id)
        .await
        .or_not_found("provider")?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/admin/providers", tag = "admin", security(("admin_token" = [])),
    request_body = CreateProvider,
    responses((status = 201, body = ProviderResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn create_global_provider(
    _: AdminAuth,
    State(state): State<AppState>,
    ValidJson(body): ValidJson<CreateProvider>,
) -> ApiResult<(StatusCode, Json<ProviderResponse>)> {
    create(&state, Owner::Global, body).await
}

#[utoipa::path(get, path = "/admin/providers", tag = "admin", security(("admin_token" = [])),
    params(super::PageQuery),
    responses((status = 200, body = ProviderPage), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_global_providers(
    _: AdminAuth,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<ProviderPage>> {
    let page = super::list_page(&query)?;
    let rows = providers::list_owned(&state.pool, Owner::Global, page).await?;
    Ok(Json(ProviderPage::new(rows, ProviderResponse::try_from)?))
}

#[utoipa::path(get, path = "/admin/providers/{provider_id}", tag = "admin", security(("admin_token" = [])),
    params(("provider_id" = Uuid, Path)),
    responses((status = 200, body = ProviderResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn get_global_provider(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<Json<ProviderResponse>> {
    let id = path.id("provider_id")?;
    let found = providers::get_owned(&state.pool, Owner::Global, id)
        .await
        .or_not_found("provider")?;
    Ok(Json(found.try_into()?))
}

#[utoipa::path(patch, path = "/admin/providers/{provider_id}", tag = "admin", security(("admin_token" = [])),
    params(("provider_id" = Uuid, Path)), request_body = UpdateProvider,
    responses((status = 200, body = ProviderResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn update_global_provider(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
    ValidJson(body): ValidJson<UpdateProvider>,
) -> ApiResult<Json<ProviderResponse>> {
    update(&state, Owner::Global, path.id("provider_id")?, body).await
}

#[utoipa::path(delete, path = "/admin/providers/{provider_id}", tag = "admin", security(("admin_token" = [])),
    params(("provider_id" = Uuid, Path)),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn delete_global_provider(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<StatusCode> {
    let id = path.id("provider_id")?;
    providers::delete(&state.pool, Owner::Global, id)
        .await
        .or_not_found("provider")?;
    Ok(StatusCode::NO_CONTENT)
}
