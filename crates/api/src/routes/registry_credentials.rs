//! Registry credentials: where builds push. The password is write-only.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use imagefactory_domain::image::is_host_port;
use imagefactory_domain::{ResourceName, Role, Secret, Violations};
use imagefactory_store::registry_credentials::{
    self, NewRegistryCredential, RegistryCredential, RegistryCredentialPatch,
};
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
        .routes(routes!(create_credential, list_credentials))
        .routes(routes!(
            get_credential,
            update_credential,
            delete_credential
        ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRegistryCredential {
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub name: String,
    /// Registry host[:port], e.g. `ghcr.io` or `127.0.0.1:5000`.
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$"
    )]
    pub registry: String,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
    )]
    pub username: String,
    #[schema(value_type = String, format = Password, write_only, min_length = 1, max_length = 4096)]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRegistryCredential {
    #[schema(
        min_length = 1,
        max_length = 253,
        pattern = r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$"
    )]
    pub registry: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]+$"
    )]
    pub username: Option<String>,
    #[schema(value_type = Option<String>, format = Password, write_only, min_length = 1, max_length = 4096)]
    pub password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RegistryCredentialResponse {
    pub id: Uuid,
    pub name: String,
    pub registry: String,
    pub username: String,
    /// Always true: the password is stored, never shown.
    pub password_set: bool,
    /// Bumped on every change.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<RegistryCredential> for RegistryCredentialResponse {
    fn from(c: RegistryCredential) -> Self {
        Self {
            id: c.id,
            name: c.name,
            registry: c.registry,
            username: c.username,
            password_set: true,
            version: c.version,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

fn check_fields(
    v: &mut Violations,
    registry: Option<&str>,
    username: Option<&str>,
    password: Option<&str>,
) {
    if let Some(r) = registry
        && !is_host_port(r)
    {
        v.add(
            "registry",
            "must be a registry host[:port], e.g. ghcr.io or 127.0.0.1:5000",
        );
    }
    if let Some(u) = username
        && (u.is_empty() || u.chars().count() > 255 || u.chars().any(char::is_control))
    {
        v.add(
            "username",
            "must be 1-255 characters without control characters",
        );
    }
    if let Some(p) = password
        && (p.is_empty() || p.chars().count() > 4096)
    {
        v.add("password", "must be 1-4096 characters");
    }
}

#[utoipa::path(post, path = "/registry-credentials", tag = "registry-credentials", security(("tenant_token" = [])),
    request_body = CreateRegistryCredential,
    responses((status = 201, body = RegistryCredentialResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn create_credential(
    auth: TenantAuth,
    State(state): State<AppState>,
    ValidJson(body): ValidJson<CreateRegistryCredential>,
) -> ApiResult<(StatusCode, Json<RegistryCredentialResponse>)> {
    auth.require(Role::Admin)?;
    let mut v = Violations::new();
    let name = v.check("name", ResourceName::parse(&body.name));
    check_fields(
        &mut v,
        Some(&body.registry),
        Some(&body.username),
        Some(&body.password),
    );
    v.into_result()?;
    let created = registry_credentials::create(
        &state.pool,
        &state.cipher,
        auth.tenant_id,
        NewRegistryCredential {
            name: name.expect("validated").into_string(),
            registry: body.registry,
            username: body.username,
            password: Secret::new(body.password),
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(created.into())))
}

#[utoipa::path(get, path = "/registry-credentials", tag = "registry-credentials", security(("tenant_token" = [])),
    params(super::PageQuery),
    responses((status = 200, body = RegistryCredentialPage), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_credentials(
    auth: TenantAuth,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<RegistryCredentialPage>> {
    let page = super::list_page(&query)?;
    let rows = registry_credentials::list(&state.pool, auth.tenant_id, page).await?;
    Ok(Json(RegistryCredentialPage::new(rows, |c| Ok(c.into()))?))
}

super::page_of!(RegistryCredentialPage, RegistryCredentialResponse);

#[utoipa::path(get, path = "/registry-credentials/{credential_id}", tag = "registry-credentials", security(("tenant_token" = [])),
    params(("credential_id" = Uuid, Path)),
    responses((status = 200, body = RegistryCredentialResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn get_credential(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<Json<RegistryCredentialResponse>> {
    let id = path.id("credential_id")?;
    let found = registry_credentials::get(&state.pool, auth.tenant_id, id)
        .await
        .or_not_found("registry credential")?;
    Ok(Json(found.into()))
}

#[utoipa::path(patch, path = "/registry-credentials/{credential_id}", tag = "registry-credentials", security(("tenant_token" = [])),
    params(("credential_id" = Uuid, Path)), request_body = UpdateRegistryCredential,
    responses((status = 200, body = RegistryCredentialResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn update_credential(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
    ValidJson(body): ValidJson<UpdateRegistryCredential>,
) -> ApiResult<Json<RegistryCredentialResponse>> {
    auth.require(Role::Admin)?;
    let id = path.id("credential_id")?;
    let mut v = Violations::new();
    check_fields(
        &mut v,
        body.registry.as_deref(),
        body.username.as_deref(),
        body.password.as_deref(),
    );
    v.into_result()?;
    let patch = RegistryCredentialPatch {
        registry: body.registry,
        username: body.username,
        password: body.password.map(Secret::new),
    };
    let updated =
        registry_credentials::update(&state.pool, &state.cipher, auth.tenant_id, id, patch)
            .await
            .or_not_found("registry credential")?;
    Ok(Json(updated.into()))
}

/// Refused with 409 while builds refer to the credential.
#[utoipa::path(delete, path = "/registry-credentials/{credential_id}", tag = "registry-credentials", security(("tenant_token" = [])),
    params(("credential_id" = Uuid, Path)),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn delete_credential(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<StatusCode> {
    auth.require(Role::Admin)?;
    let id = path.id("credential_id")?;
    registry_credentials::delete(&state.pool, auth.tenant_id, id)
        .await
        .or_not_found("registry credential")?;
    Ok(StatusCode::NO_CONTENT)
}
