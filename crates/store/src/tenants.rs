//! Tenants: the walls between users (DESIGN.md decision 9).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::page::{List, Page, Paged};

use crate::error::{StoreError, StoreResult, deleted};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    pub max_concurrent_builds: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewTenant {
    pub name: String,
    pub display_name: String,
    pub max_concurrent_builds: Option<i32>,
}

#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    pub display_name: Option<String>,
    pub max_concurrent_builds: Option<i32>,
}

const COLUMNS: &str = "id, name, display_name, max_concurrent_builds, created_at, updated_at";

pub async fn create(pool: &PgPool, new: NewTenant) -> StoreResult<Tenant> {
    let sql = format!(
        "INSERT INTO tenants (id, name, display_name, max_concurrent_builds)
         VALUES ($1, $2, $3, COALESCE($4, 10)) RETURNING {COLUMNS}"
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

/// Every tenant by name, a page at a time.
pub async fn list(pool: &PgPool, page: Page) -> StoreResult<Paged<Tenant>> {
    let list = List {
        columns: COLUMNS,
        table: "tenants",
        // `$1` is always NULL here; the cast gives it a type.
        scope: "$1::uuid IS NULL",
        order: "name",
    };
    list.page(pool, None, page, |t: &Tenant| t.id).await
}

pub async fn update(pool: &PgPool, id: Uuid, patch: TenantPatch) -> StoreResult<Tenant> {
    let sql = format!(
        "UPDATE tenants SET display_name = COALESCE($2, display_name),
                max_concurrent_builds = COALESCE($3, max_concurrent_builds), updated_at = now()
         WHERE id = $1 RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(id)
        .bind(patch.display_name)
        .bind(patch.max_concurrent_builds)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)
}

/// Deletes the tenant and, by cascade, everything it owns.
pub async fn delete(pool: &PgPool, id: Uuid) -> StoreResult<()> {
    let done = sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await;
    deleted(done)
}
