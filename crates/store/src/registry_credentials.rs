//! Registry credentials: where a build pushes, with the password sealed
//! under [`SECRET_LABEL`]. `version` is bumped on every secret change.

use chrono::{DateTime, Utc};
use imagefactory_domain::Secret;
use sqlx::PgPool;
use uuid::Uuid;

use crate::crypto::Cipher;
use crate::error::{StoreError, StoreResult, deleted};
use crate::page::{self, Page};

/// Associated-data label of `registry_credentials.secret_enc`.
pub const SECRET_LABEL: &str = "registry_credentials.secret";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RegistryCredential {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub registry: String,
    pub username: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewRegistryCredential {
    pub name: String,
    pub registry: String,
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone, Default)]
pub struct RegistryCredentialPatch {
    pub registry: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

const COLUMNS: &str = "id, tenant_id, name, registry, username, version, created_at, updated_at";

pub async fn create(
    pool: &PgPool,
    cipher: &Cipher,
    tenant_id: Uuid,
    new: NewRegistryCredential,
) -> StoreResult<RegistryCredential> {
    let sql = format!(
        "INSERT INTO registry_credentials (id, tenant_id, name, registry, username, secret_enc)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(&new.name)
        .bind(&new.registry)
        .bind(&new.username)
        .bind(cipher.seal_secret(SECRET_LABEL, &new.password))
        .fetch_one(pool)
        .await?)
}

pub async fn get(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> StoreResult<RegistryCredential> {
    page::tenant_row(pool, ("registry_credentials", COLUMNS), tenant_id, id).await
}

/// A page of the tenant's registry credentials by name.
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    page: Page,
) -> StoreResult<(Vec<RegistryCredential>, Option<Uuid>)> {
    page::tenant_page(
        pool,
        ("registry_credentials", COLUMNS, "name"),
        tenant_id,
        page,
        |c: &RegistryCredential| c.id,
    )
    .await
}

pub async fn update(
    pool: &PgPool,
    cipher: &Cipher,
    tenant_id: Uuid,
    id: Uuid,
    patch: RegistryCredentialPatch,
) -> StoreResult<RegistryCredential> {
    let sealed = patch
        .password
        .as_ref()
        .map(|p| cipher.seal_secret(SECRET_LABEL, p));
    let sql = format!(
        "UPDATE registry_credentials SET registry = COALESCE($3, registry),
                username = COALESCE($4, username),
                secret_enc = COALESCE($5, secret_enc),
                version = version + CASE WHEN $3 IS NOT NULL OR $4 IS NOT NULL OR $5 IS NOT NULL THEN 1 ELSE 0 END,
                updated_at = now()
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .bind(patch.registry)
        .bind(patch.username)
        .bind(sealed)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)
}

/// Refused with [`StoreError::InUse`] while builds refer to the credential.
pub async fn delete(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> StoreResult<()> {
    let done = sqlx::query("DELETE FROM registry_credentials WHERE tenant_id = $1 AND id = $2")
        .bind(tenant_id)
        .bind(id)
        .execute(pool)
        .await;
    deleted(done)
}

/// The decrypted password, for the one place that writes a docker config.
pub async fn password(
    pool: &PgPool,
    cipher: &Cipher,
    tenant_id: Uuid,
    id: Uuid,
) -> StoreResult<Secret> {
    let sealed: Vec<u8> = sqlx::query_scalar(
        "SELECT secret_enc FROM registry_credentials WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok(cipher.open_secret(SECRET_LABEL, &sealed)?)
}
