//! Tenant API tokens. A token is `ift_<prefix>_<secret>`; the row keeps the
//! public `ift_<prefix>` (to find it and to show in listings) and the SHA-256
//! of the whole token. The plain token exists only in the create response.

use chrono::{DateTime, Utc};
use imagefactory_domain::Role;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::decode::Text;
use crate::error::{StoreError, StoreResult};
use crate::page::{self, Page};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ApiToken {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub name: String,
    pub prefix: String,
    #[sqlx(try_from = "Text<Role>")]
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Who a valid bearer token speaks for, and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIdentity {
    pub token_id: Uuid,
    pub tenant_id: Uuid,
    pub role: Role,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Notified (on commit) when a token stops being valid before its expiry:
/// payload `token:<id>` when it is revoked, `tenant:<id>` when its tenant
/// (and so every token of it) is deleted. API servers that cache verified
/// tokens listen on it.
pub const REVOKED_CHANNEL: &str = "if_token_revoked";

/// What a [`REVOKED_CHANNEL`] payload says stopped being valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    Token(Uuid),
    Tenant(Uuid),
}

impl Revoked {
    pub fn payload(self) -> String {
        match self {
            Revoked::Token(id) => format!("token:{id}"),
            Revoked::Tenant(id) => format!("tenant:{id}"),
        }
    }

    /// `None` for a payload this version does not know (the listener then
    /// forgets everything, the safe reading).
    pub fn parse(payload: &str) -> Option<Self> {
        let (kind, id) = payload.split_once(':')?;
        let id = Uuid::parse_str(id).ok()?;
        match kind {
            "token" => Some(Revoked::Token(id)),
            "tenant" => Some(Revoked::Tenant(id)),
            _ => None,
        }
    }
}

/// `pg_notify` on [`REVOKED_CHANNEL`] inside `tx` (delivered on commit).
pub(crate) async fn notify_revoked(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    revoked: Revoked,
) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(REVOKED_CHANNEL)
        .bind(revoked.payload())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct StoredToken {
    id: Uuid,
    tenant_id: Uuid,
    #[sqlx(try_from = "Text<Role>")]
    role: Role,
    token_hash: Vec<u8>,
    last_used_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, tenant_id, name, prefix, role, created_at, last_used_at, expires_at, revoked_at";
const TOKEN_PREFIX: &str = "ift_";

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// The public prefix of a presented token, if it has the token shape.
fn prefix_of(token: &str) -> Option<&str> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 12 || secret.len() != 48 {
        return None;
    }
    Some(&token[..TOKEN_PREFIX.len() + id.len()])
}

/// Create a token; returns the row and the plain token (shown once).
pub async fn create(
    pool: &PgPool,
    tenant_id: Uuid,
    name: &str,
    role: Role,
    expires_at: Option<DateTime<Utc>>,
) -> StoreResult<(ApiToken, String)> {
    let prefix = format!("{TOKEN_PREFIX}{}", random_hex(6));
    let plain = format!("{prefix}_{}", random_hex(24));
    let sql = format!(
        "INSERT INTO api_tokens (id, tenant_id, name, prefix, token_hash, role, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}"
    );
    let row = sqlx::query_as(&sql)
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(name)
        .bind(&prefix)
        .bind(hash(&plain))
        .bind(role.as_str())
        .bind(expires_at)
        .fetch_one(pool)
        .await?;
    Ok((row, plain))
}

/// A page of the tenant's tokens, oldest first.
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    page: Page,
) -> StoreResult<(Vec<ApiToken>, Option<Uuid>)> {
    page::tenant_page(
        pool,
        ("api_tokens", COLUMNS, "created_at"),
        tenant_id,
        page,
        |t: &ApiToken| t.id,
    )
    .await
}

/// Revoke (not delete: builds keep pointing at the token that made them),
/// and tell every API server's token cache ([`REVOKED_CHANNEL`]).
pub async fn revoke(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> StoreResult<ApiToken> {
    let sql = format!(
        "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, now())
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    );
    let mut tx = pool.begin().await?;
    let token: ApiToken = sqlx::query_as(&sql)
        .bind(tenant_id)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    notify_revoked(&mut tx, Revoked::Token(token.id)).await?;
    tx.commit().await?;
    Ok(token)
}

/// The identity of a presented bearer token if it is known, unrevoked and
/// unexpired. Compares hashes in constant time.
pub async fn authenticate(pool: &PgPool, token: &str) -> StoreResult<Option<TokenIdentity>> {
    let Some(prefix) = prefix_of(token) else {
        return Ok(None);
    };
    let row: Option<StoredToken> = sqlx::query_as(
        "SELECT id, tenant_id, role, token_hash, last_used_at, expires_at FROM api_tokens
         WHERE prefix = $1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(prefix)
    .fetch_optional(pool)
    .await?;
    let Some(StoredToken {
        id: token_id,
        tenant_id,
        role,
        token_hash,
        last_used_at,
        expires_at,
    }) = row
    else {
        return Ok(None);
    };
    if !constant_time_eq(&token_hash, &hash(token)) {
        return Ok(None);
    }
    // Record use at most once a minute: a read-heavy client must not turn
    // every request into a write.
    if last_used_at.is_none_or(|t| Utc::now() - t > chrono::Duration::seconds(60)) {
        sqlx::query("UPDATE api_tokens SET last_used_at = now() WHERE id = $1")
            .bind(token_id)
            .execute(pool)
            .await?;
    }
    Ok(Some(TokenIdentity {
        token_id,
        tenant_id,
        role,
        expires_at,
    }))
}

/// Equality whose time does not depend on where the bytes differ (`subtle`);
/// a length mismatch is answered at once, lengths are not secret here.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_is_found_only_in_token_shaped_text() {
        let token = format!("ift_{}_{}", "a".repeat(12), "b".repeat(48));
        assert_eq!(prefix_of(&token), Some(&token[..16]));
        assert_eq!(prefix_of("ift_short_x"), None);
        assert_eq!(prefix_of("Bearer"), None);
        assert!(constant_time_eq(b"ab", b"ab"));
        assert!(!constant_time_eq(b"ab", b"ac"));
        assert!(!constant_time_eq(b"ab", b"abc"));
    }

    #[test]
    fn revocation_payloads_round_trip_and_unknown_ones_are_none() {
        let id = Uuid::now_v7();
        for r in [Revoked::Token(id), Revoked::Tenant(id)] {
            assert_eq!(Revoked::parse(&r.payload()), Some(r));
        }
        assert_eq!(Revoked::parse(&format!("project:{id}")), None);
        assert_eq!(Revoked::parse("token:not-a-uuid"), None);
        assert_eq!(Revoked::parse("token"), None);
    }
}
