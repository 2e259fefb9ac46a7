//! Tenant tokens managed by the tenant's own admins (`/tokens`); the
//! platform admin's variant lives under `/tenants/{id}/tokens`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use imagefactory_domain::names::check_display_name;
use imagefactory_domain::{Role, Violations};
use imagefactory_store::tokens::{self, ApiToken, Revoked};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::AppState;
use crate::auth::TenantAuth;
use crate::error::{ApiResult, OrNotFound, Problem};
use crate::extract::{PathIds, QueryParams, ValidJson};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_token, list_tokens))
        .routes(routes!(revoke_token))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    /// What the token is for, e.g. `ci`.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$"
    )]
    pub name: String,
    pub role: Role,
    /// Must be in the future (422 otherwise).
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenResponse {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    /// The token's public start, to recognise it; not usable alone.
    pub prefix: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiToken> for TokenResponse {
    fn from(t: ApiToken) -> Self {
        Self {
            id: t.id,
            tenant_id: t.tenant_id,
            name: t.name,
            prefix: t.prefix,
            role: t.role,
            created_at: t.created_at,
            last_used_at: t.last_used_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// The one response that carries a token in clear.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The bearer token. Shown once; only its hash is stored.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenResponse,
}

pub(crate) fn validate_create_token(body: &CreateToken) -> ApiResult<Role> {
    let mut v = Violations::new();
    v.check("name", check_display_name(&body.name));
    if let Some(at) = body.expires_at
        && at <= Utc::now()
    {
        v.add("expires_at", "must be in the future");
    }
    v.into_result()?;
    Ok(body.role)
}

#[utoipa::path(post, path = "/tokens", tag = "tokens", security(("tenant_token" = [])),
    request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn create_token(
    auth: TenantAuth,
    State(state): State<AppState>,
    ValidJson(body): ValidJson<CreateToken>,
) -> ApiResult<(StatusCode, Json<CreatedToken>)> {
    auth.require(Role::Admin)?;
    let role = validate_create_token(&body)?;
    let (row, token) = tokens::create(
        &state.pool,
        auth.tenant_id,
        &body.name,
        role,
        body.expires_at,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            token,
            info: row.into(),
        }),
    ))
}

#[utoipa::path(get, path = "/tokens", tag = "tokens", security(("tenant_token" = [])),
    params(super::PageQuery),
    responses((status = 200, body = TokenPage), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_tokens(
    auth: TenantAuth,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<TokenPage>> {
    auth.require(Role::Admin)?;
    let page = super::list_page(&query)?;
    let rows = tokens::list(&state.pool, auth.tenant_id, page).await?;
    Ok(Json(TokenPage::new(rows, |t| Ok(t.into()))?))
}

super::page_of!(TokenPage, TokenResponse);

#[utoipa::path(delete, path = "/tokens/{token_id}", tag = "tokens", security(("tenant_token" = [])),
    params(("token_id" = Uuid, Path)),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn revoke_token(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<StatusCode> {
    auth.require(Role::Admin)?;
    let id = path.id("token_id")?;
    tokens::revoke(&state.pool, auth.tenant_id, id)
        .await
        .or_not_found("token")?;
    // At once here; other servers hear it from PostgreSQL.
    state.token_cache.forget(Revoked::Token(id));
    Ok(StatusCode::NO_CONTENT)
}
