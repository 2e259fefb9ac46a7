//! Projects: a git repository a tenant builds from, with an optional git
//! credential whose password is sealed under [`GIT_PASSWORD_LABEL`].

use chrono::{DateTime, Utc};
use imagefactory_domain::{GitRef, GitUrl, Secret};
use sqlx::PgPool;
use uuid::Uuid;

use crate::crypto::Cipher;
use crate::decode::Text;
use crate::error::{StoreError, StoreResult, deleted};
use crate::page::{self, Page};

/// Associated-data label of `projects.git_password_enc`.
pub const GIT_PASSWORD_LABEL: &str = "projects.git_password";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Project {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    #[sqlx(try_from = "Text<GitUrl>")]
    pub git_url: GitUrl,
    #[sqlx(try_from = "Text<GitRef>")]
    pub default_branch: GitRef,
    pub git_username: Option<String>,
    /// Whether a git password is stored (its value never leaves the store
    /// except through [`git_credential`]).
    pub git_password_set: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct GitCredential {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: String,
    pub git_url: GitUrl,
    pub default_branch: GitRef,
    pub git_credential: Option<GitCredential>,
}

#[derive(Debug, Clone, Default)]
pub struct ProjectPatch {
    pub git_url: Option<GitUrl>,
    pub default_branch: Option<GitRef>,
    /// `Some(None)` removes the credential, `Some(Some(_))` replaces it.
    pub git_credential: Option<Option<GitCredential>>,
}

const COLUMNS: &str = "id, tenant_id, name, git_url, default_branch, git_username,
    git_password_enc IS NOT NULL AS git_password_set, created_at, updated_at";

pub async fn create(
    pool: &PgPool,
    cipher: &Cipher,
    tenant_id: Uuid,
    new: NewProject,
) -> StoreResult<Project> {
    let (username, password) = split_credential(cipher, new.git_credential.as_ref());
    let sql = format!(
        "INSERT INTO projects (id, tenant_id, name, git_url, default_branch, git_username, git_password_enc)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(&new.name)
        .bind(new.git_url.as_str())
        .bind(new.default_branch.as_str())
        .bind(username)
        .bind(password)
        .fetch_one(pool)
        .await?)
}

fn split_credential(
    cipher: &Cipher,
    credential: Option<&GitCredential>,
) -> (Option<String>, Option<Vec<u8>>) {
    match credential {
        Some(c) => (
            Some(c.username.clone()),
            Some(cipher.seal_secret(GIT_PASSWORD_LABEL, &c.password)),
        ),
        None => (None, None),
    }
}

pub async fn get(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> StoreResult<Project> {
    page::tenant_row(pool, ("projects", COLUMNS), tenant_id, id).await
}

/// A page of the tenant's projects by name.
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    page: Page,
) -> StoreResult<(Vec<Project>, Option<Uuid>)> {
    page::tenant_page(
        pool,
        ("projects", COLUMNS, "name"),
        tenant_id,
        page,
        |p: &Project| p.id,
    )
    .await
}

pub async fn update(
    pool: &PgPool,
    cipher: &Cipher,
    tenant_id: Uuid,
    id: Uuid,
    patch: ProjectPatch,
) -> StoreResult<Project> {
    let replace_credential = patch.git_credential.is_some();
    let (username, password) = split_credential(cipher, patch.git_credential.flatten().as_ref());
    let sql = format!(
        "UPDATE projects SET git_url = COALESCE($3, git_url),
                default_branch = COALESCE($4, default_branch),
                git_username = CASE WHEN $5 THEN $6 ELSE git_username END,
                git_password_enc = CASE WHEN $5 THEN $7 ELSE git_password_enc END,
                updated_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .bind(patch.git_url.as_ref().map(GitUrl::as_str))
        .bind(patch.default_branch.as_ref().map(GitRef::as_str))
        .bind(replace_credential)
        .bind(username)
        .bind(password)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)
}

/// Deletes the project and, by cascade, its builds.
pub async fn delete(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> StoreResult<()> {
    let done = sqlx::query("DELETE FROM projects WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(pool)
        .await;
    deleted(done)
}

/// The decrypted git credential of a project, for the one place that clones.
pub async fn git_credential(
    pool: &PgPool,
    cipher: &Cipher,
    tenant_id: Uuid,
    id: Uuid,
) -> StoreResult<Option<GitCredential>> {
    let row: Option<(Option<String>, Option<Vec<u8>>)> = sqlx::query_as(
        "SELECT git_username, git_password_enc FROM projects WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    match row.ok_or(StoreError::NotFound)? {
        (Some(username), Some(sealed)) => Ok(Some(GitCredential {
            username,
            password: cipher.open_secret(GIT_PASSWORD_LABEL, &sealed)?,
        })),
        _ => Ok(None),
    }
}
