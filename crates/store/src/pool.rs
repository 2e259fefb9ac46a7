//! How every pool of the service connects: the server's, the dispatcher's
//! and the tests' (so tests exercise the same connection checks).

use std::time::Duration;

use sqlx::Connection;
use sqlx::postgres::PgPoolOptions;

/// A connection idle this long is pinged before it is handed out: it may
/// have outlived a PostgreSQL restart. One in steady use is not.
pub const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// sqlx pings every connection when it returns to the pool, and by default
/// again when it is taken: two extra round trips beside a request's one
/// query, each a wake-up of both processes. Taking a connection pings it
/// only after [`CHECK_IDLE_AFTER`] of rest; a connection that broke within
/// that second fails its query (a 503 the client retries) and is closed on
/// release.
pub fn options() -> PgPoolOptions {
    PgPoolOptions::new()
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
}
