//! Wakes the dispatchers after submits, coalesced: one `NOTIFY build_queued`
//! at a time, at most one per [`MIN_SPACING`], and one more if builds were
//! submitted while it was being sent or spaced.
//!
//! A NOTIFY inside each submit's transaction would make PostgreSQL serialize
//! their commits (see `imagefactory_store::builds::submit`). Sending it after
//! the commit, from one task, keeps the dispatchers' wake-up within a round
//! trip of the submit while thousands of submits a second share a handful of
//! notifications. A notification that fails to go out (database down) is
//! covered by the dispatchers' poll interval.

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use imagefactory_store::queue;
use sqlx::PgPool;
use tokio::sync::Notify;

/// Each notification wakes every dispatcher into a claim query: under a
/// stream of submits, one per 10 ms keeps them busy claiming without a
/// claim per submit, and adds at most 10 ms to a build's wait.
pub const MIN_SPACING: Duration = Duration::from_millis(10);

/// Cheap to clone; the sending task starts with the first [`QueueWaker::wake`]
/// (inside the runtime) and ends once every clone is dropped.
#[derive(Clone)]
pub struct QueueWaker(Arc<Shared>);

struct Shared {
    pool: PgPool,
    signal: Arc<Notify>,
    task: OnceLock<()>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Lets the task notice the waker is gone and end.
        self.signal.notify_one();
    }
}

impl QueueWaker {
    pub fn new(pool: PgPool) -> Self {
        QueueWaker(Arc::new(Shared {
            pool,
            signal: Arc::new(Notify::new()),
            task: OnceLock::new(),
        }))
    }

    /// Builds were committed: make sure a notification goes out after now.
    /// Never waits.
    pub fn wake(&self) {
        self.0.task.get_or_init(|| {
            tokio::spawn(send_wakes(Arc::downgrade(&self.0), self.0.signal.clone()));
        });
        // A permit is stored if the task is busy sending: it sends once more.
        self.0.signal.notify_one();
    }
}

async fn send_wakes(shared: Weak<Shared>, signal: Arc<Notify>) {
    loop {
        signal.notified().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if let Err(e) = queue::wake_dispatchers(&shared.pool).await {
            tracing::warn!(error = %e, "could not notify dispatchers of queued builds; they will find them by polling");
        }
        drop(shared);
        tokio::time::sleep(MIN_SPACING).await;
    }
}
