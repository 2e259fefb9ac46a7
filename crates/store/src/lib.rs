//! PostgreSQL persistence: migrations, one repository module per aggregate,
//! queue claiming and LISTEN/NOTIFY. No business rules live here.

/// The embedded migrations; `imagefactory migrate` and tests run them.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// NOTIFY channel raised when a build becomes claimable (submit, retry, requeue).
pub const CHANNEL_BUILD_QUEUED: &str = "build_queued";
/// NOTIFY channel raised when cancellation of a build is requested; payload is the build id.
pub const CHANNEL_BUILD_CANCEL: &str = "build_cancel";

pub mod crypto;
pub mod dispatchers;
pub mod executions;
pub mod queue;
