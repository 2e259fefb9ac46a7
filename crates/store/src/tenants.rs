//! Tenants: the walls between users (DESIGN.md decision 9).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{StoreError, StoreResult, deleted};
use crate::page::{self, Page};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    pub max_concurrent_builds: i32,
    /// Whether builds of this tenant may run on the dispatcher's host
    /// (`infrastructure_type: local`); only the platform admin sets it.
    pub allow_local_builds: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: String,
    pub display_name: String,
    pub max_concurrent_builds: Option<i32>,
    pub allow_local_builds: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    pub display_name: Option<String>,
    pub max_concurrent_builds: Option<i32>,
    pub allow_local_builds: Option<bool>,
}

const COLUMNS: &str =
    "id, name, display_name, max_concurrent_builds, allow_local_builds, created_at, updated_at";

pub async fn create(pool: &PgPool, new: NewTenant) -> StoreResult<Tenant> {
    let sql = format!(
        "INSERT INTO tenants (id, name, display_name, max_concurrent_builds, allow_local_builds)
         VALUES ($1, $2, $3, COALESCE($4, 10), $5) RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        // Random, not time-ordered: a tenant's Kubernetes namespace is named
        // after the first 8 hex digits of its id, which in a v7 id are the
        // creation time to ~65 s, so tenants created together would share a
        // namespace name (and the second one's builds be refused).
        .bind(Uuid::new_v4())
        .bind(&new.name)
        .bind(&new.display_name)
        .bind(new.max_concurrent_builds)
        .bind(new.allow_local_builds)
        .fetch_one(pool)
        .await?)
}

pub async fn get(pool: &PgPool, id: Uuid) -> StoreResult<Tenant> {
    let sql = format!("SELECT {COLUMNS} FROM tenants WHERE id = $1");
    sqlx::query_as(&sql)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)
}

/// A page of all tenants by name.
pub async fn list(pool: &PgPool, page: Page) -> StoreResult<(Vec<Tenant>, Option<Uuid>)> {
    let sql = format!(
        "SELECT {COLUMNS} FROM tenants
         WHERE $1::uuid IS NULL OR (name, id) > (SELECT name, id FROM tenants WHERE id = $1)
         ORDER BY name, id LIMIT $2"
    );
    let rows: Vec<Tenant> = sqlx::query_as(&sql)
        .bind(page.after)
        .bind(page.fetch())
        .fetch_all(pool)
        .await?;
    let known = "SELECT EXISTS (SELECT 1 FROM tenants WHERE id = $1)";
    page::finish(pool, rows, page, |t| t.id, known, &[]).await
}

pub async fn update(pool: &PgPool, id: Uuid, patch: TenantPatch) -> StoreResult<Tenant> {
    let sql = format!(
        "UPDATE tenants SET display_name = COALESCE($2, display_name),
                max_concurrent_builds = COALESCE($3, max_concurrent_builds),
                allow_local_builds = COALESCE($4, allow_local_builds), updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(id)
        .bind(patch.display_name)
        .bind(patch.max_concurrent_builds)
        .bind(patch.allow_local_builds)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)
}

/// Deletes the tenant and, by cascade, everything it owns; its tokens with
/// it, which API servers' token caches hear about (`tokens::REVOKED_CHANNEL`).
pub async fn delete(pool: &PgPool, id: Uuid) -> StoreResult<()> {
    let mut tx = pool.begin().await?;
    let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await;
    deleted(done)?;
    crate::tokens::notify_revoked(&mut tx, crate::tokens::Revoked::Tenant(id)).await?;
    tx.commit().await?;
    Ok(())
}
