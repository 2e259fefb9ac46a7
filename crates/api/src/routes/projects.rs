//! Projects: a tenant's git repositories.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use imagefactory_domain::{GitRef, GitUrl, ResourceName, Role, Secret, Violations};
use imagefactory_store::projects::{self, GitCredential, NewProject, Project, ProjectPatch};
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
        .routes(routes!(create_project, list_projects))
        .routes(routes!(get_project, update_project, delete_project))
}

/// HTTPS basic-auth credential for cloning. The password is write-only.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GitCredentialInput {
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
pub struct CreateProject {
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
    )]
    pub name: String,
    /// https://, http://, ssh://, git://, file:// or user@host:path; no
    /// password in the URL (use `git_credential`).
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = r"^((https?|ssh|git)://([A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?/[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*|file:///[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*|[A-Za-z0-9_][A-Za-z0-9._-]*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*:[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*)$"
    )]
    pub git_url: String,
    /// Defaults to `main`. A git branch, tag or commit (`git check-ref-format`).
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*(/[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*)*$"
    )]
    pub default_branch: Option<String>,
    pub git_credential: Option<GitCredentialInput>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    #[schema(
        min_length = 1,
        max_length = 2048,
        pattern = r"^((https?|ssh|git)://([A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?/[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*|file:///[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*|[A-Za-z0-9_][A-Za-z0-9._-]*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*:[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*)$"
    )]
    pub git_url: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = r"^[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*(/[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*)*$"
    )]
    pub default_branch: Option<String>,
    /// An object replaces the credential; `null` removes it; absent keeps it.
    #[serde(default, deserialize_with = "super::double_option")]
    #[schema(nullable)]
    pub git_credential: Option<Option<GitCredentialInput>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct GitCredentialInfo {
    pub username: String,
    /// Always true when present: the password is stored, never shown.
    pub password_set: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectResponse {
    pub id: Uuid,
    pub name: String,
    #[schema(value_type = String)]
    pub git_url: GitUrl,
    #[schema(value_type = String)]
    pub default_branch: GitRef,
    pub git_credential: Option<GitCredentialInfo>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Project> for ProjectResponse {
    fn from(p: Project) -> Self {
        Self {
            id: p.id,
            name: p.name,
            git_url: p.git_url,
            default_branch: p.default_branch,
            git_credential: p.git_username.map(|username| GitCredentialInfo {
                username,
                password_set: p.git_password_set,
            }),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

fn check_credential(
    v: &mut Violations,
    input: Option<GitCredentialInput>,
) -> Option<GitCredential> {
    let c = input?;
    let chars = c.username.chars().count();
    if chars == 0 || chars > 255 || c.username.chars().any(char::is_control) {
        v.add(
            "git_credential.username",
            "must be 1-255 characters without control characters",
        );
    }
    if c.password.is_empty() || c.password.chars().count() > 4096 {
        v.add("git_credential.password", "must be 1-4096 characters");
    }
    Some(GitCredential {
        username: c.username,
        password: Secret::new(c.password),
    })
}

#[utoipa::path(post, path = "/projects", tag = "projects", security(("tenant_token" = [])),
    request_body = CreateProject,
    responses((status = 201, body = ProjectResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn create_project(
    auth: TenantAuth,
    State(state): State<AppState>,
    ValidJson(body): ValidJson<CreateProject>,
) -> ApiResult<(StatusCode, Json<ProjectResponse>)> {
    auth.require(Role::Admin)?;
    let mut v = Violations::new();
    let name = v.check("name", ResourceName::parse(&body.name));
    let git_url = v.check("git_url", GitUrl::parse(&body.git_url));
    let branch = v.check(
        "default_branch",
        GitRef::parse(body.default_branch.as_deref().unwrap_or("main")),
    );
    let credential = check_credential(&mut v, body.git_credential);
    v.into_result()?;
    let project = projects::create(
        &state.pool,
        &state.cipher,
        auth.tenant_id,
        NewProject {
            name: name.expect("validated").into_string(),
            git_url: git_url.expect("validated"),
            default_branch: branch.expect("validated"),
            git_credential: credential,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(project.into())))
}

#[utoipa::path(get, path = "/projects", tag = "projects", security(("tenant_token" = [])),
    params(super::PageQuery),
    responses((status = 200, body = ProjectPage), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn list_projects(
    auth: TenantAuth,
    State(state): State<AppState>,
    query: QueryParams,
) -> ApiResult<Json<ProjectPage>> {
    let page = super::list_page(&query)?;
    let rows = projects::list(&state.pool, auth.tenant_id, page).await?;
    Ok(Json(ProjectPage::new(rows, |p| Ok(p.into()))?))
}

super::page_of!(ProjectPage, ProjectResponse);

#[utoipa::path(get, path = "/projects/{project_id}", tag = "projects", security(("tenant_token" = [])),
    params(("project_id" = Uuid, Path)),
    responses((status = 200, body = ProjectResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn get_project(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<Json<ProjectResponse>> {
    let id = path.id("project_id")?;
    Ok(Json(
        projects::get(&state.pool, auth.tenant_id, id)
            .await
            .or_not_found("project")?
            .into(),
    ))
}

#[utoipa::path(patch, path = "/projects/{project_id}", tag = "projects", security(("tenant_token" = [])),
    params(("project_id" = Uuid, Path)), request_body = UpdateProject,
    responses((status = 200, body = ProjectResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn update_project(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
    ValidJson(body): ValidJson<UpdateProject>,
) -> ApiResult<Json<ProjectResponse>> {
    auth.require(Role::Admin)?;
    let id = path.id("project_id")?;
    let mut v = Violations::new();
    let git_url = body
        .git_url
        .as_deref()
        .and_then(|url| v.check("git_url", GitUrl::parse(url)));
    let default_branch = body
        .default_branch
        .as_deref()
        .and_then(|branch| v.check("default_branch", GitRef::parse(branch)));
    let git_credential = body.git_credential.map(|c| check_credential(&mut v, c));
    v.into_result()?;
    let patch = ProjectPatch {
        git_url,
        default_branch,
        git_credential,
    };
    let project = projects::update(&state.pool, &state.cipher, auth.tenant_id, id, patch)
        .await
        .or_not_found("project")?;
    Ok(Json(project.into()))
}

/// Deletes the project and its builds.
#[utoipa::path(delete, path = "/projects/{project_id}", tag = "projects", security(("tenant_token" = [])),
    params(("project_id" = Uuid, Path)),
    responses((status = 204), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
async fn delete_project(
    auth: TenantAuth,
    State(state): State<AppState>,
    path: PathIds,
) -> ApiResult<StatusCode> {
    auth.require(Role::Admin)?;
    let id = path.id("project_id")?;
    projects::delete(&state.pool, auth.tenant_id, id)
        .await
        .or_not_found("project")?;
    Ok(StatusCode::NO_CONTENT)
}
