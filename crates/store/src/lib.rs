//! PostgreSQL persistence: migrations, one repository module per aggregate,
//! queue claiming and LISTEN/NOTIFY. No business rules live here.

/// The embedded migrations; `imagefactory migrate` and tests run them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// NOTIFY channel raised when a build becomes claimable (submit, retry, requeue).
pub const CHANNEL_BUILD_QUEUED: &str = "build_queued";
/// NOTIFY channel raised when cancellation of a build is requested; payload is the build id.
pub const CHANNEL_BUILD_CANCEL: &str = "build_cancel";

pub mod crypto;

// Repositories used by the API (the dispatcher's `queue`, `executions` and
// `dispatchers` modules live beside them).
pub mod attempts;
pub mod build_reads;
pub mod build_submits;
pub mod builds;
pub mod coalesce;
pub mod decode;
pub mod error;
pub mod page;
pub mod projects;
pub mod providers;
pub mod registry_credentials;
mod status;
pub mod tekton_jobs;
pub mod tenants;
pub mod tokens;

pub use error::{StoreError, StoreResult};
pub mod dispatchers;
pub mod executions;
pub mod queue;
