//! Build submissions (`POST /builds`), stored together under load
//! ([`crate::coalesce`]): the submissions waiting at one moment share one
//! [`builds::submit_many`] statement and one commit. Each is checked and
//! stored or refused on its own, as by [`builds::submit`]; an answer is
//! given only after the commit that made it durable.

use sqlx::PgPool;

use crate::builds::{self, Build, NewBuild};
use crate::coalesce::{Batch, Coalescer};
use crate::error::StoreResult;

/// Shared statements running at once, by default (as for reads, fewer
/// statements gather more submissions each).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2;

/// Requests per statement at most.
const MAX_BATCH: usize = 64;

/// Cheap to clone; clones share the queue.
#[derive(Clone)]
pub struct BuildSubmits {
    submits: Coalescer<Submits>,
}

impl BuildSubmits {
    pub fn new(pool: PgPool) -> Self {
        Self::with_max_in_flight(pool, DEFAULT_MAX_IN_FLIGHT)
    }

    pub fn with_max_in_flight(pool: PgPool, max_in_flight: usize) -> Self {
        Self {
            submits: Coalescer::new(Submits { pool }, max_in_flight, MAX_BATCH),
        }
    }

    /// [`builds::submit`]: the stored build, or `None` when a reference
    /// did not check out and nothing was stored.
    pub async fn submit(&self, new: NewBuild) -> StoreResult<Option<Build>> {
        self.submits.call(new).await
    }

    /// Shared statements started so far.
    pub fn statements(&self) -> u64 {
        self.submits.statements()
    }
}

struct Submits {
    pool: PgPool,
}

impl Batch for Submits {
    type Request = NewBuild;
    type Answer = Option<Build>;
    /// A submission run twice would be two builds.
    const IDEMPOTENT: bool = false;

    async fn together(&self, requests: &[NewBuild]) -> StoreResult<Vec<Option<Build>>> {
        builds::submit_many(&self.pool, requests).await
    }

    async fn alone(&self, request: NewBuild) -> StoreResult<Option<Build>> {
        builds::submit(&self.pool, &request).await
    }
}
