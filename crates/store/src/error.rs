//! The store's error: database failures classified so callers can answer a
//! user precisely (not found, which constraint, database unreachable).

use crate::crypto::CryptoError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A unique constraint refused the write (e.g. a duplicate name).
    #[error("unique constraint {constraint} violated")]
    Unique { constraint: String },
    /// A foreign key refused the write: it points at a row that does not exist.
    #[error("foreign key {constraint} violated")]
    ForeignKey { constraint: String },
    /// A CHECK constraint refused the value.
    #[error("check constraint {constraint} violated")]
    Check { constraint: String },
    /// A delete refused because other rows still refer to this one.
    #[error("still referenced ({constraint})")]
    InUse { constraint: String },
    /// A list's `cursor` names no row of that list.
    #[error("the cursor is not a position in this list")]
    UnknownCursor,
    /// The row is in a state that does not allow the operation.
    #[error("{0}")]
    State(String),
    /// The database cannot be reached or is shutting down: the caller's
    /// problem is availability, not the request.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => StoreError::Unavailable(err),
            sqlx::Error::Database(db) => {
                let constraint = db.constraint().unwrap_or_default().to_owned();
                match db.code().as_deref() {
                    Some("23505") => StoreError::Unique { constraint },
                    Some("23503") => StoreError::ForeignKey { constraint },
                    Some("23514") => StoreError::Check { constraint },
                    // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
                    Some("57P01" | "57P02" | "57P03" | "53300") => StoreError::Unavailable(err),
                    _ => StoreError::Database(err),
                }
            }
            _ => StoreError::Database(err),
        }
    }
}

/// The outcome of a `DELETE` of one row: a foreign key violation means the
/// row is still in use, and no row deleted means it was not there (or is
/// another tenant's).
pub(crate) fn deleted(
    result: Result<sqlx::postgres::PgQueryResult, sqlx::Error>,
) -> StoreResult<()> {
    let done = result.map_err(|e| match StoreError::from(e) {
        StoreError::ForeignKey { constraint } => StoreError::InUse { constraint },
        other => other,
    })?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}

pub type StoreResult<T> = Result<T, StoreError>;
