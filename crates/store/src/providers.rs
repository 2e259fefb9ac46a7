//! Infrastructure providers. `config` is stored with its credential fields
//! ([`imagefactory_domain::provider::SECRET_FIELDS`]) sealed under
//! [`CONFIG_LABEL`]; `config_version` is bumped iff the config's plaintext
//! changes ([`update`]).
//!
//! Visibility: a tenant sees its own providers and the global ones; global
//! providers are changed only by the platform admin.

use chrono::{DateTime, Utc};
use imagefactory_domain::provider::{SECRET_FIELDS, is_usable_kubernetes_config};
use imagefactory_domain::{ProviderStatus, ProviderType};
use serde_json::Value;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::crypto::Cipher;
use crate::decode::Text;
use crate::error::{StoreError, StoreResult, deleted};
use crate::page::{self, Page};

/// Associated-data label prefix of the sealed config fields
/// (`Cipher::seal_fields` appends `.<field>`).
pub const CONFIG_LABEL: &str = "infrastructure_providers.config";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Provider {
    pub id: Uuid,
    pub tenant_id: Option<Uuid>,
    pub name: String,
    pub is_global: bool,
    #[sqlx(try_from = "Text<ProviderType>")]
    pub provider_type: ProviderType,
    /// Stored form: secret fields are `{"$encrypted": ...}` envelopes.
    pub config: Value,
    pub config_version: i64,
    pub tekton_enabled: bool,
    #[sqlx(try_from = "Text<ProviderStatus>")]
    pub status: ProviderStatus,
    pub max_concurrent_builds: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Who owns a provider: the platform (global) or one tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Global,
    Tenant(Uuid),
}

impl Owner {
    fn tenant_id(self) -> Option<Uuid> {
        match self {
            Owner::Global => None,
            Owner::Tenant(id) => Some(id),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewProvider {
    pub name: String,
    pub provider_type: ProviderType,
    /// Plain config as validated at the edge; sealed here.
    pub config: Value,
    pub tekton_enabled: bool,
    pub status: ProviderStatus,
    pub max_concurrent_builds: Option<i32>,
}

#[derive(Debug, Clone, Default)]
pub struct ProviderPatch {
    pub name: Option<String>,
    /// Replaces the whole config; string secret fields are sealed, already
    /// sealed envelopes (kept from the stored config) are stored as they are.
    pub config: Option<Value>,
    pub tekton_enabled: Option<bool>,
    pub status: Option<ProviderStatus>,
    /// `Some(None)` removes the limit.
    pub max_concurrent_builds: Option<Option<i32>>,
}

const COLUMNS: &str = "id, tenant_id, name, is_global, provider_type, config, config_version,
    tekton_enabled, status, max_concurrent_builds, created_at, updated_at";

/// `owner` filter: global rows, or the tenant's own rows.
const OWNER_FILTER: &str = "(CASE WHEN $1::uuid IS NULL THEN is_global ELSE tenant_id = $1 END)";

fn seal(cipher: &Cipher, mut config: Value) -> Value {
    cipher.seal_fields(CONFIG_LABEL, &mut config, SECRET_FIELDS);
    config
}

pub async fn create(
    pool: &PgPool,
    cipher: &Cipher,
    owner: Owner,
    new: NewProvider,
) -> StoreResult<Provider> {
    let sql = format!(
        "INSERT INTO infrastructure_providers
            (id, tenant_id, name, is_global, provider_type, config, tekton_enabled, status, max_concurrent_builds)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {COLUMNS}"
    );
    Ok(sqlx::query_as(&sql)
        .bind(Uuid::now_v7())
        .bind(owner.tenant_id())
        .bind(&new.name)
        .bind(owner == Owner::Global)
        .bind(new.provider_type.as_str())
        .bind(seal(cipher, new.config))
        .bind(new.tekton_enabled)
        .bind(new.status.as_str())
        .bind(new.max_concurrent_builds)
        .fetch_one(pool)
        .await?)
}

/// A provider the owner may change.
pub async fn get_owned(pool: &PgPool, owner: Owner, id: Uuid) -> StoreResult<Provider> {
    let sql =
        format!("SELECT {COLUMNS} FROM infrastructure_providers WHERE {OWNER_FILTER} AND id = $2");
    sqlx::query_as(&sql)
        .bind(owner.tenant_id())
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)
}

/// A provider a tenant may read and build on: its own or a global one.
pub async fn get_visible(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> StoreResult<Provider> {
    let sql = format!(
        "SELECT {COLUMNS} FROM infrastructure_providers WHERE id = $2 AND (tenant_id = $1 OR is_global)"
    );
    sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)
}

/// A page of the owner's providers by name.
pub async fn list_owned(
    pool: &PgPool,
    owner: Owner,
    page: Page,
) -> StoreResult<(Vec<Provider>, Option<Uuid>)> {
    let sql = format!(
        "SELECT {COLUMNS} FROM infrastructure_providers WHERE {OWNER_FILTER}
           AND ($2::uuid IS NULL OR (name, id) > (
                SELECT name, id FROM infrastructure_providers WHERE {OWNER_FILTER} AND id = $2))
         ORDER BY name, id LIMIT $3"
    );
    let rows: Vec<Provider> = sqlx::query_as(&sql)
        .bind(owner.tenant_id())
        .bind(page.after)
        .bind(page.fetch())
        .fetch_all(pool)
        .await?;
    let (known, scope) = match owner {
        Owner::Global => (
            "SELECT EXISTS (SELECT 1 FROM infrastructure_providers WHERE id = $1 AND is_global)",
            Vec::new(),
        ),
        Owner::Tenant(t) => (
            "SELECT EXISTS (SELECT 1 FROM infrastructure_providers WHERE id = $1 AND tenant_id = $2)",
            vec![t],
        ),
    };
    page::finish(pool, rows, page, |p| p.id, known, &scope).await
}

/// A page of the tenant's own providers, then the global ones, by name.
pub async fn list_visible(
    pool: &PgPool,
    tenant_id: Uuid,
    page: Page,
) -> StoreResult<(Vec<Provider>, Option<Uuid>)> {
    let visible = "(tenant_id = $1 OR is_global)";
    let sql = format!(
        "SELECT {COLUMNS} FROM infrastructure_providers WHERE {visible}
           AND ($2::uuid IS NULL OR (is_global, name, id) > (
                SELECT is_global, name, id FROM infrastructure_providers WHERE {visible} AND id = $2))
         ORDER BY is_global, name, id LIMIT $3"
    );
    let rows: Vec<Provider> = sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(page.after)
        .bind(page.fetch())
        .fetch_all(pool)
        .await?;
    let known = "SELECT EXISTS (SELECT 1 FROM infrastructure_providers \
                 WHERE id = $1 AND (tenant_id = $2 OR is_global))";
    page::finish(pool, rows, page, |p| p.id, known, &[tenant_id]).await
}

/// Apply the patch. `config_version` goes up iff the config's plaintext
/// changes: a patch repeating the stored config (kept secrets as their
/// envelopes, or the same secret sent again) leaves it as it is.
pub async fn update(
    pool: &PgPool,
    cipher: &Cipher,
    owner: Owner,
    id: Uuid,
    patch: ProviderPatch,
) -> StoreResult<Provider> {
    let mut tx = pool.begin().await?;
    let config = match patch.config {
        Some(new) => changed_config(&mut tx, cipher, owner, id, new).await?,
        None => None,
    };
    let sql = format!(
        "UPDATE infrastructure_providers SET name = COALESCE($3, name),
                config = COALESCE($4, config),
                config_version = config_version + CASE WHEN $4 IS NULL THEN 0 ELSE 1 END,
                tekton_enabled = COALESCE($5, tekton_enabled),
                status = COALESCE($6, status),
                max_concurrent_builds = CASE WHEN $7 THEN $8 ELSE max_concurrent_builds END,
                updated_at = now()
         WHERE {OWNER_FILTER} AND id = $2 RETURNING {COLUMNS}"
    );
    let updated = sqlx::query_as(&sql)
        .bind(owner.tenant_id())
        .bind(id)
        .bind(patch.name)
        .bind(config)
        .bind(patch.tekton_enabled)
        .bind(patch.status.map(ProviderStatus::as_str))
        .bind(patch.max_concurrent_builds.is_some())
        .bind(patch.max_concurrent_builds.flatten())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    tx.commit().await?;
    Ok(updated)
}

/// The sealed config to store, or `None` when `new` says what the stored
/// config says. Sealing draws a fresh nonce, so only the plaintexts compare;
/// the row stays locked until the update commits.
async fn changed_config(
    tx: &mut Transaction<'_, Postgres>,
    cipher: &Cipher,
    owner: Owner,
    id: Uuid,
    new: Value,
) -> StoreResult<Option<Value>> {
    let sql = format!(
        "SELECT config FROM infrastructure_providers WHERE {OWNER_FILTER} AND id = $2 FOR UPDATE"
    );
    let stored: Value = sqlx::query_scalar(&sql)
        .bind(owner.tenant_id())
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    let same =
        cipher.open_fields(CONFIG_LABEL, &stored)? == cipher.open_fields(CONFIG_LABEL, &new)?;
    Ok((!same).then(|| seal(cipher, new)))
}

/// Refused with [`StoreError::InUse`] while builds refer to the provider.
pub async fn delete(pool: &PgPool, owner: Owner, id: Uuid) -> StoreResult<()> {
    let sql = format!("DELETE FROM infrastructure_providers WHERE {OWNER_FILTER} AND id = $2");
    let done = sqlx::query(&sql)
        .bind(owner.tenant_id())
        .bind(id)
        .execute(pool)
        .await;
    deleted(done)
}

/// The default for a Kubernetes build that names no provider: the oldest
/// active global Kubernetes provider whose config has what its auth method needs.
pub async fn default_kubernetes(pool: &PgPool) -> StoreResult<Option<Provider>> {
    let sql = format!(
        "SELECT {COLUMNS} FROM infrastructure_providers
         WHERE is_global AND provider_type = 'kubernetes' AND status = 'active'
         ORDER BY created_at, id"
    );
    let candidates: Vec<Provider> = sqlx::query_as(&sql).fetch_all(pool).await?;
    Ok(candidates
        .into_iter()
        .find(|p| is_usable_kubernetes_config(&p.config)))
}

/// The config with its secret fields decrypted, for the one place that
/// connects to the cluster. Never log the result.
pub fn open_config(cipher: &Cipher, provider: &Provider) -> StoreResult<Value> {
    Ok(cipher.open_fields(CONFIG_LABEL, &provider.config)?)
}
