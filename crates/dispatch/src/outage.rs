//! Riding out a database outage (a restart, a failover): a write the
//! dispatcher cannot do without — an execution's log lines, artifacts,
//! progress, reference, its outcome — is retried with backoff while the
//! database is unavailable, instead of failing the attempt (which would run
//! the build a second time) or losing log lines. Other errors are returned
//! at once. Every such write is idempotent (upserts, `ON CONFLICT DO
//! NOTHING`, lease-checked updates), so a retry after a lost reply is safe.

use std::future::Future;
use std::time::Duration;

use imagefactory_store::error::StoreError;
use tokio::time::Instant;

use crate::policy::backoff;

/// How long a write waits for the database to come back before it gives up
/// (and the loss is reported): longer than a restart or a failover takes.
pub const OUTAGE_PATIENCE: Duration = Duration::from_secs(300);
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// `op`, again while it fails with [`StoreError::Unavailable`] and less than
/// `patience` has passed since the first try.
pub async fn retry_unavailable<T, E, F, Fut>(
    what: &str,
    patience: Duration,
    mut op: F,
) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    StoreError: From<E>,
{
    let started = Instant::now();
    let mut attempt = 1;
    loop {
        match op().await.map_err(StoreError::from) {
            Err(StoreError::Unavailable(cause)) if started.elapsed() < patience => {
                if attempt == 1 {
                    tracing::warn!(error = %cause, "{what}: the database is unavailable; retrying until it is back");
                }
                let pause = backoff(attempt, RETRY_BASE, RETRY_MAX, rand::random());
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(StoreError::Unavailable(cause)) => {
                return Err(StoreError::Unavailable(cause));
            }
            done => {
                if attempt > 1 {
                    tracing::info!(attempts = attempt, "{what}: the database is back");
                }
                return done;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn unavailable() -> sqlx::Error {
        sqlx::Error::PoolTimedOut
    }

    #[tokio::test]
    async fn an_outage_is_waited_out_and_other_errors_are_not_retried() {
        let calls = AtomicU32::new(0);
        let done = retry_unavailable("write", OUTAGE_PATIENCE, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move { if n < 3 { Err(unavailable()) } else { Ok(n) } }
        })
        .await;
        assert_eq!(done.unwrap(), 3);

        let calls = AtomicU32::new(0);
        let refused = retry_unavailable("write", OUTAGE_PATIENCE, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), _>(sqlx::Error::RowNotFound) }
        })
        .await;
        assert!(matches!(refused, Err(StoreError::NotFound)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_outage_longer_than_the_patience_is_reported() {
        let patience = Duration::from_millis(300);
        let started = Instant::now();
        let result =
            retry_unavailable("write", patience, || async { Err::<(), _>(unavailable()) }).await;
        assert!(matches!(result, Err(StoreError::Unavailable(_))));
        // Retried up to the patience, not given up at the first failure.
        assert!(started.elapsed() >= patience);
    }
}
