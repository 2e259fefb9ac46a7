//! Admin: tenants and their tokens.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use imagefactory_domain::names::check_display_name;
use imagefactory_domain::{ResourceName, Violations};
use imagefactory_store::tenants::{self, NewTenant, Tenant, TenantPatch};
use imagefactory_store::tokens::{self, Revoked};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::tokens::{CreateToken, CreatedToken, TokenPage, validate_create_token};
use crate::AppState;
use crate::auth::AdminAuth;
use crate::error::{ApiResult, OrNotFound, Problem};
use crate::extract::{PathIds, QueryParams, ValidJson};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant, list_tenants))
        .routes(routes!(get_tenant, update_tenant, delete_tenant))
        .routes(routes!(create_tenant_token, list_tenant_tokens))
        .routes(routes!(revoke_tenant_token))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Lowercase letters, digits and '-', at most 63 characters; unique.
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub name: String,
    /// Defaults to `name`.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub display_name: Option<String>,
    /// Builds of this tenant running at once (default 10).
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrent_builds: Option<i32>,
    /// Builds of this tenant may run on the dispatcher's host
    /// (`infrastructure_type: local`; default false). A local build runs git,
    /// the container CLI and packer there as the dispatcher's user, and a
    /// packer template from the tenant's repository can run any command
    /// (`shell-local`): grant it only to tenants trusted with the host.
    pub allow_local_builds: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub display_name: Option<String>,
    #[schema(minimum = 1, maximum = 10000)]
    pub max_concurrent_builds: Option<i32>,
    /// See `CreateTenant.allow_local_builds`; `false` also stops queued
    /// local builds of the tenant from starting (they fail saying why).
    pub allow_local_builds: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TenantResponse {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    pub max_concurrent_builds: i32,
    /// Whether this tenant's builds may run on the dispatcher's host.
    pub allow_local_builds: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Tenant> for TenantResponse {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            display_name: t.display_name,
            max_concurrent_builds: t.max_concurrent_builds,
            allow_local_builds: t.allow_local_builds,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

fn check_limit(v: &mut Violations, limit: Option<i32>) {
    if let Some(n) = limit
        && !(1..=10_000).contains(&n)
    {
        v.add("max_concurrent_builds", "must be between 1 and 10000");
    }
}

#[utoipa::path(post, path = "/tenants", tag = "admin", security(("admin_token" = [])),
    request_body = CreateTenant,
    responses((status = 201, body = TenantResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn create_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    ValidJson(body): ValidJson<CreateTenant>,
) -> ApiResult<(StatusCode, Json<TenantResponse>)> {
    let mut v = Violations::new();
    let name = v.check("name", ResourceName::parse(&body.name));
    if let Some(d) = &body.display_name {
        v.check("display_name", check_display_name(d));
    }
    check_limit(&mut v, body.max_concurrent_builds);
    v.into_result()?;
    let name = name.expect("validated").into_string();
    let tenant = tenants::create(
        &state.pool,
        NewTenant {
            display_name: body.display_name.unwrap_or_else(|| name.clone()),
            name,
            max_concurrent_builds: body.max_concurrent_builds,
            allow_local_builds: body.allow_local_builds.unwrap_or(false),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(tenant.into())))
}

#[utoipa::path(get, path = "/tenants", tag = "admin", security(("admin_token" = [])),
    params(super::PageQuery),
    responses((status = 200, body = TenantPage), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_tenants(
    _: AdminAuth,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<TenantPage>> {
    let page = super::list_page(&query)?;
    let rows = tenants::list(&state.pool, page).await?;
    Ok(Json(TenantPage::new(rows, |t| Ok(t.into()))?))
}

super::page_of!(TenantPage, TenantResponse);

#[utoipa::path(get, path = "/tenants/{tenant_id}", tag = "admin", security(("admin_token" = [])),
    params(("tenant_id" = Uuid, Path)),
    responses((status = 200, body = TenantResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn get_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<Json<TenantResponse>> {
    let id = path.id("tenant_id")?;
    Ok(Json(
        tenants::get(&state.pool, id)
            .await
            .or_not_found("tenant")?
            .into(),
    ))
}

#[utoipa::path(patch, path = "/tenants/{tenant_id}", tag = "admin", security(("admin_token" = [])),
    params(("tenant_id" = Uuid, Path)), request_body = UpdateTenant,
    responses((status = 200, body = TenantResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn update_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
    ValidJson(body): ValidJson<UpdateTenant>,
) -> ApiResult<Json<TenantResponse>> {
    let id = path.id("tenant_id")?;
    let mut v = Violations::new();
    if let Some(d) = &body.display_name {
        v.check("display_name", check_display_name(d));
    }
    check_limit(&mut v, body.max_concurrent_builds);
    v.into_result()?;
    if let Some(allowed) = body.allow_local_builds {
        // Host access granted or withdrawn: worth a line in the audit trail.
        tracing::info!(tenant.id = %id, allow_local_builds = allowed, "tenant's local builds set");
    }
    let patch = TenantPatch {
        display_name: body.display_name,
        max_concurrent_builds: body.max_concurrent_builds,
        allow_local_builds: body.allow_local_builds,
    };
    Ok(Json(
        tenants::update(&state.pool, id, patch)
            .await
            .or_not_found("tenant")?
            .into(),
    ))
}

/// Deletes the tenant and everything it owns.
#[utoipa::path(delete, path = "/tenants/{tenant_id}", tag = "admin", security(("admin_token" = [])),
    params(("tenant_id" = Uuid, Path)),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn delete_tenant(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<StatusCode> {
    let id = path.id("tenant_id")?;
    tenants::delete(&state.pool, id)
        .await
        .or_not_found("tenant")?;
    state.token_cache.forget(Revoked::Tenant(id));
    Ok(StatusCode::NO_CONTENT)
}

/// Create a tenant token. The token is in this response only.
#[utoipa::path(post, path = "/tenants/{tenant_id}/tokens", tag = "admin", security(("admin_token" = [])),
    params(("tenant_id" = Uuid, Path)), request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn create_tenant_token(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
    ValidJson(body): ValidJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    let tenant_id = path.id("tenant_id")?;
    let role = validate_create_token(&body)?;
    tenants::get(&state.pool, tenant_id)
        .await
        .or_not_found("tenant")?;
    let (row, token) =
        tokens::create(&state.pool, tenant_id, &body.name, role, body.expires_at).await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            info: row.into(),
        }),
    ))
}

#[utoipa::path(get, path = "/tenants/{tenant_id}/tokens", tag = "admin", security(("admin_token" = [])),
    params(("tenant_id" = Uuid, Path), super::PageQuery),
    responses((status = 200, body = TokenPage), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_tenant_tokens(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
    query: QueryParams,
) -> ApiResult<Json<TokenPage>> {
    let tenant_id = path.id("tenant_id")?;
    let page = super::list_page(&query)?;
    tenants::get(&state.pool, tenant_id)
        .await
        .or_not_found("tenant")?;
    let rows = tokens::list(&state.pool, tenant_id, page).await?;
    Ok(Json(TokenPage::new(rows, |t| Ok(t.into()))?))
}

#[utoipa::path(delete, path = "/tenants/{tenant_id}/tokens/{token_id}", tag = "admin", security(("admin_token" = [])),
    params(("tenant_id" = Uuid, Path), ("token_id" = Uuid, Path)),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn revoke_tenant_token(
    _: AdminAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<StatusCode> {
    let tenant_id = path.id("tenant_id")?;
    let token_id = path.id("token_id")?;
    tokens::revoke(&state.pool, tenant_id, token_id)
        .await
        .or_not_found("token")?;
    state.token_cache.forget(Revoked::Token(token_id));
    Ok(StatusCode::NO_CONTENT)
}
