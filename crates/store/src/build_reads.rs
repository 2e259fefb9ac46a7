//! Single-build reads (`GET /builds/{id}`) coalesced into shared queries.
//!
//! Under load a read's cost is not its query but its round trips: the pool
//! pings a connection when it hands it out and again when it takes it back,
//! and every message wakes a PostgreSQL backend and the server in turn. So
//! the reads waiting at one moment are answered together, by one
//! `id = ANY($1)` query, up to `max_in_flight` such queries at once. An idle
//! server answers a lone read at once (a batch of one); a busy one answers
//! many per query.
//!
//! A batch is taken from the queue only when a query is about to start, so
//! a read never sees data older than its own arrival (a client reads its
//! own writes). Each row is given only to a read of the tenant that owns
//! it; the rest get `NotFound`, as with [`builds::get_with_config`]. When
//! the shared query fails, each read runs alone, so each caller gets its own
//! error with its cause (503 while the database is away).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use imagefactory_domain::MethodConfig;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::builds::{self, Build};
use crate::error::{StoreError, StoreResult};

/// Shared queries running at once, by default. Fewer queries gather more
/// reads each: on two cores with the dispatcher running, 4 gave batches of
/// 2.8 reads and 7,800 GET/s, 2 gave 5.4 and 10,800 GET/s (imagefactory-load).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2;
/// Ids per query at most (bounds the array and the reply's size).
const MAX_BATCH: usize = 64;

/// Cheap to clone; clones share the queue.
#[derive(Clone)]
pub struct BuildReads {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    max_in_flight: usize,
    state: Mutex<State>,
    /// Shared queries started (for tests and figures).
    queries: AtomicU64,
}

#[derive(Default)]
struct State {
    waiting: VecDeque<Waiter>,
    /// Runner tasks alive (each runs one query at a time).
    running: usize,
}

struct Waiter {
    tenant_id: Uuid,
    build_id: Uuid,
    reply: oneshot::Sender<Reply>,
}

#[derive(Debug)]
enum Reply {
    Found(Box<(Build, MethodConfig)>),
    Missing,
    /// The shared query failed; the read runs alone for its own error.
    Failed,
}

impl BuildReads {
    pub fn new(pool: PgPool) -> Self {
        Self::with_max_in_flight(pool, DEFAULT_MAX_IN_FLIGHT)
    }

    pub fn with_max_in_flight(pool: PgPool, max_in_flight: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                pool,
                max_in_flight: max_in_flight.max(1),
                state: Mutex::default(),
                queries: AtomicU64::new(0),
            }),
        }
    }

    /// The tenant's build with its method config; another tenant's build,
    /// or none, is `NotFound`.
    pub async fn get_with_config(
        &self,
        tenant_id: Uuid,
        build_id: Uuid,
    ) -> StoreResult<(Build, MethodConfig)> {
        let (reply, answer) = oneshot::channel();
        let start_runner = {
            let mut state = self.inner.lock();
            state.waiting.push_back(Waiter {
                tenant_id,
                build_id,
                reply,
            });
            let start = state.running < self.inner.max_in_flight;
            if start {
                state.running += 1;
            }
            start
        };
        if start_runner {
            // A task of its own: a caller that goes away (its client hung
            // up) must not take the other reads of its batch with it.
            tokio::spawn(run(self.inner.clone()));
        }
        match answer.await {
            Ok(Reply::Found(found)) => Ok(*found),
            Ok(Reply::Missing) => Err(StoreError::NotFound),
            Ok(Reply::Failed) | Err(_) => {
                builds::get_with_config(&self.inner.pool, tenant_id, build_id).await
            }
        }
    }

    /// Shared queries started so far.
    pub fn queries(&self) -> u64 {
        self.inner.queries.load(Ordering::Relaxed)
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (push and drain only).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Answers batches until the queue is empty, then ends.
async fn run(inner: Arc<Inner>) {
    let mut runner = Runner {
        inner: &inner,
        ended: false,
    };
    while let Some(batch) = runner.next_batch() {
        let ids = distinct_ids(&batch);
        inner.queries.fetch_add(1, Ordering::Relaxed);
        let rows = builds::get_many_with_config(&inner.pool, &ids).await;
        answer(batch, rows);
    }
}

struct Runner<'a> {
    inner: &'a Inner,
    ended: bool,
}

impl Runner<'_> {
    /// The reads queued now, or `None` (and the runner ends) when none is:
    /// checked and counted under one lock, so a read queued meanwhile
    /// always finds a runner or starts one.
    fn next_batch(&mut self) -> Option<Vec<Waiter>> {
        let mut state = self.inner.lock();
        if state.waiting.is_empty() {
            state.running -= 1;
            self.ended = true;
            return None;
        }
        let n = state.waiting.len().min(MAX_BATCH);
        Some(state.waiting.drain(..n).collect())
    }
}

impl Drop for Runner<'_> {
    /// A runner that unwinds releases its count and sends the reads still
    /// queued to run alone, so none waits for a runner that is gone.
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        let waiting = {
            let mut state = self.inner.lock();
            state.running -= 1;
            std::mem::take(&mut state.waiting)
        };
        for waiter in waiting {
            let _ = waiter.reply.send(Reply::Failed);
        }
    }
}

fn distinct_ids(batch: &[Waiter]) -> Vec<Uuid> {
    let mut ids: Vec<Uuid> = batch.iter().map(|w| w.build_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn answer(batch: Vec<Waiter>, rows: StoreResult<Vec<(Build, MethodConfig)>>) {
    let rows = match rows {
        Ok(rows) => rows,
        Err(error) => {
            tracing::debug!(%error, reads = batch.len(), "shared build read failed; reading alone");
            for waiter in batch {
                let _ = waiter.reply.send(Reply::Failed);
            }
            return;
        }
    };
    let by_id: HashMap<Uuid, &(Build, MethodConfig)> =
        rows.iter().map(|row| (row.0.id, row)).collect();
    for waiter in batch {
        let reply = reply_for(waiter.tenant_id, waiter.build_id, &by_id);
        // The caller may have gone away meanwhile.
        let _ = waiter.reply.send(reply);
    }
}

/// A row answers a read only when the reading tenant owns it.
fn reply_for(
    tenant_id: Uuid,
    build_id: Uuid,
    by_id: &HashMap<Uuid, &(Build, MethodConfig)>,
) -> Reply {
    match by_id.get(&build_id) {
        Some(row) if row.0.tenant_id == tenant_id => Reply::Found(Box::new((*row).clone())),
        _ => Reply::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagefactory_domain::{GitRef, GitUrl, ImageRef};

    fn build_of(tenant_id: Uuid) -> (Build, MethodConfig) {
        let now = chrono::Utc::now();
        let build = Build {
            id: Uuid::new_v4(),
            tenant_id,
            project_id: Uuid::new_v4(),
            method: imagefactory_domain::BuildMethod::Docker,
            infrastructure_type: imagefactory_domain::InfrastructureType::Kubernetes,
            infrastructure_provider_id: None,
            registry_credential_id: None,
            git_url: GitUrl::parse("https://git.example.com/a/b.git").unwrap(),
            git_ref: GitRef::parse("main").unwrap(),
            image: ImageRef::parse("registry.example.com/a/b:1").unwrap(),
            status: imagefactory_domain::BuildStatus::Queued,
            priority: 0,
            timeout_seconds: 600,
            attempts: 0,
            max_attempts: 1,
            cancel_requested_at: None,
            error_message: None,
            created_by_token_id: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
        };
        (build, MethodConfig::default())
    }

    #[test]
    fn a_row_answers_only_the_tenant_that_owns_it() {
        let (owner, other) = (Uuid::new_v4(), Uuid::new_v4());
        let row = build_of(owner);
        let id = row.0.id;
        let by_id = HashMap::from([(id, &row)]);
        match reply_for(owner, id, &by_id) {
            Reply::Found(found) => assert_eq!(found.0.id, id),
            other => panic!("the owner got {other:?}"),
        }
        assert!(matches!(reply_for(other, id, &by_id), Reply::Missing));
        assert!(matches!(
            reply_for(owner, Uuid::new_v4(), &by_id),
            Reply::Missing
        ));
    }

    #[test]
    fn a_batch_asks_for_each_id_once() {
        let id = Uuid::new_v4();
        let waiters: Vec<Waiter> = [id, Uuid::new_v4(), id]
            .into_iter()
            .map(|build_id| Waiter {
                tenant_id: Uuid::new_v4(),
                build_id,
                reply: oneshot::channel().0,
            })
            .collect();
        let ids = distinct_ids(&waiters);
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&id));
    }
}
