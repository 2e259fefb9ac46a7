//! The dispatcher: turns queued builds into running executions exactly once.
//!
//! - [`Dispatcher`] runs the claim loop (LISTEN/NOTIFY with a poll fallback),
//!   leases and heartbeats, takeover of expired leases (re-attach, never a
//!   second start), timeouts, cancellation, retries and graceful handover.
//! - [`select`] and [`policy`] are the pure rules: which executor runs a
//!   build, and what an outcome means for it.
//! - `testing::TestExecutor` (feature `testing`) is a scripted executor whose
//!   work survives a dispatcher crash, for tests and the benchmark.
//! - [`admin`] serves the figures for `GET /api/v1/admin/dispatchers`.

pub mod admin;
pub mod context;
pub mod dispatcher;
pub mod measure;
pub mod outage;
pub mod policy;
pub mod select;
pub mod settings;
pub mod sink;
// Tests, the benchmark and `if-test-dispatcher` only: production builds
// (`imagefactory`) do not compile it.
#[cfg(feature = "testing")]
pub mod testing;

pub use dispatcher::{Activity, DispatchError, Dispatcher, Executors};
pub use settings::{DispatcherMode, DispatcherSettings};
