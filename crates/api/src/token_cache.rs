//! Verified tenant tokens, kept for a short time so a request costs no
//! database round trip for its token.
//!
//! A token leaves the cache when it is revoked (at once in the server that
//! revoked it; in the others when PostgreSQL delivers the
//! `tokens::REVOKED_CHANNEL` notification to [`listen`]), when its tenant is
//! deleted, when it expires (checked on every use), and in any case after
//! the TTL — the bound for a server that missed a notification. Only
//! successful checks are cached: a wrong token always reaches the database
//! (and the failed-authentication throttle).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use chrono::Utc;
use imagefactory_store::tokens::{REVOKED_CHANNEL, Revoked, TokenIdentity};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use sqlx::postgres::PgListener;

/// Default time a verified token is trusted without asking the database.
pub const DEFAULT_TTL: Duration = Duration::from_secs(5);

/// Entries at most; a full cache is emptied (then refilled by use) rather
/// than grown, so no client can make it take unbounded memory.
const CAPACITY: usize = 10_000;

/// Cheap to clone; clones share the entries.
#[derive(Clone)]
pub struct TokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    ttl: Duration,
    /// Keyed by the SHA-256 of the presented token: the plain token is not
    /// kept in memory longer than the request.
    entries: RwLock<HashMap<[u8; 32], Entry>>,
    /// Bumped by every invalidation: a lookup that started before one may
    /// have read the row before the revocation committed, so its result is
    /// not stored ([`TokenCache::insert`]).
    generation: AtomicU64,
}

struct Entry {
    identity: TokenIdentity,
    stored_at: Instant,
}

/// The key of a presented token, and the generation to store its lookup
/// under.
pub struct Ticket {
    key: [u8; 32],
    generation: u64,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(DEFAULT_TTL)
    }
}

impl TokenCache {
    /// `ttl` zero: nothing is cached, every request asks the database.
    pub fn new(ttl: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                ttl,
                entries: RwLock::new(HashMap::new()),
                generation: AtomicU64::new(0),
            }),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The cached identity of `token` if it is still fresh and unexpired;
    /// otherwise the ticket to store the database's answer with.
    pub fn get(&self, token: &str) -> Result<TokenIdentity, Ticket> {
        // Read before looking: an invalidation after this point makes the
        // ticket stale.
        let generation = self.inner.generation.load(Ordering::Acquire);
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if !self.inner.ttl.is_zero() {
            let entries = self.inner.entries.read().unwrap_or_else(|e| e.into_inner());
            if let Some(entry) = entries.get(&key)
                && entry.stored_at.elapsed() < self.inner.ttl
                && entry.identity.expires_at.is_none_or(|at| at > Utc::now())
            {
                return Ok(entry.identity.clone());
            }
        }
        Err(Ticket { key, generation })
    }

    /// Stores what the database said about the ticket's token, unless an
    /// invalidation happened since the ticket was issued.
    pub fn insert(&self, ticket: Ticket, identity: TokenIdentity) {
        if self.inner.ttl.is_zero() {
            return;
        }
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner());
        // Checked under the write lock: invalidations bump the generation
        // while holding it, so none can slip in between.
        if self.inner.generation.load(Ordering::Acquire) != ticket.generation {
            return;
        }
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            ticket.key,
            Entry {
                identity,
                stored_at: Instant::now(),
            },
        );
    }

    /// Drops what `revoked` names.
    pub fn forget(&self, revoked: Revoked) {
        self.invalidate(|identity| match revoked {
            Revoked::Token(id) => identity.token_id == id,
            Revoked::Tenant(id) => identity.tenant_id == id,
        });
    }

    /// Drops every entry (a notification may have been missed).
    pub fn clear(&self) {
        self.invalidate(|_| true);
    }

    fn invalidate(&self, drop: impl Fn(&TokenIdentity) -> bool) {
        let mut entries = self
            .inner
            .entries
            .write()
            .unwrap_or_else(|e| e.into_inner());
        self.inner.generation.fetch_add(1, Ordering::AcqRel);
        entries.retain(|_, entry| !drop(&entry.identity));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.entries.read().unwrap().len()
    }
}

/// Applies revocations other servers (or this one) commit, until the pool
/// is closed. Each lost connection empties the cache, since notifications
/// sent meanwhile are lost; while it cannot connect, the TTL is the bound.
pub async fn listen(pool: PgPool, cache: TokenCache) {
    loop {
        match listen_once(&pool, &cache).await {
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "token revocation listener: reconnecting");
                cache.clear();
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(()) => {}
        }
    }
}

async fn listen_once(pool: &PgPool, cache: &TokenCache) -> Result<(), sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(REVOKED_CHANNEL).await?;
    // Entries stored before LISTEN took effect may predate a revocation.
    cache.clear();
    loop {
        match listener.try_recv().await? {
            Some(n) => match Revoked::parse(n.payload()) {
                Some(revoked) => cache.forget(revoked),
                None => cache.clear(),
            },
            // The connection was lost (and is re-established on the next
            // call): whatever was sent meanwhile is gone.
            None => cache.clear(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn identity(tenant_id: Uuid, token_id: Uuid) -> TokenIdentity {
        TokenIdentity {
            token_id,
            tenant_id,
            role: imagefactory_domain::Role::Viewer,
            expires_at: None,
        }
    }

    fn cached(cache: &TokenCache, token: &str, identity: TokenIdentity) {
        let ticket = cache.get(token).expect_err("not cached yet");
        cache.insert(ticket, identity);
    }

    #[test]
    fn a_stored_identity_is_found_by_its_token_only() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let id = identity(Uuid::now_v7(), Uuid::now_v7());
        cached(&cache, "tok-a", id.clone());
        assert_eq!(cache.get("tok-a").ok(), Some(id));
        assert!(cache.get("tok-b").is_err());
    }

    #[test]
    fn revoking_a_token_or_deleting_its_tenant_drops_it_and_only_it() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let (t1, t2) = (Uuid::now_v7(), Uuid::now_v7());
        let a = identity(t1, Uuid::now_v7());
        let b = identity(t1, Uuid::now_v7());
        let c = identity(t2, Uuid::now_v7());
        cached(&cache, "a", a.clone());
        cached(&cache, "b", b);
        cached(&cache, "c", c);
        cache.forget(Revoked::Token(a.token_id));
        assert!(cache.get("a").is_err());
        assert!(cache.get("b").is_ok() && cache.get("c").is_ok());
        cache.forget(Revoked::Tenant(t1));
        assert!(cache.get("b").is_err());
        assert!(cache.get("c").is_ok());
        cache.clear();
        assert!(cache.get("c").is_err());
    }

    #[test]
    fn a_lookup_that_started_before_a_revocation_is_not_stored() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let id = identity(Uuid::now_v7(), Uuid::now_v7());
        let ticket = cache.get("tok").unwrap_err();
        // The database answered "valid", but a revocation committed meanwhile.
        cache.forget(Revoked::Token(id.token_id));
        cache.insert(ticket, id);
        assert!(cache.get("tok").is_err());
    }

    #[test]
    fn expired_and_stale_entries_are_not_served() {
        let cache = TokenCache::new(Duration::from_secs(60));
        let mut expiring = identity(Uuid::now_v7(), Uuid::now_v7());
        expiring.expires_at = Some(Utc::now() - chrono::Duration::milliseconds(1));
        cached(&cache, "expired", expiring);
        assert!(cache.get("expired").is_err());

        let short = TokenCache::new(Duration::from_millis(1));
        cached(&short, "old", identity(Uuid::now_v7(), Uuid::now_v7()));
        std::thread::sleep(Duration::from_millis(5));
        assert!(short.get("old").is_err());

        let off = TokenCache::new(Duration::ZERO);
        let ticket = off.get("t").unwrap_err();
        off.insert(ticket, identity(Uuid::now_v7(), Uuid::now_v7()));
        assert!(off.get("t").is_err());
    }

    #[test]
    fn a_full_cache_starts_over_instead_of_growing() {
        let cache = TokenCache::new(Duration::from_secs(60));
        for i in 0..CAPACITY + 1 {
            cached(&cache, &i.to_string(), identity(Uuid::nil(), Uuid::nil()));
        }
        assert_eq!(cache.len(), 1);
    }
}
