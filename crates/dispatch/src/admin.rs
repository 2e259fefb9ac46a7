//! Figures for `GET /api/v1/admin/dispatchers`. The API mounts the route
//! (with its admin auth) and returns [`overview`] as JSON.

use std::time::Duration;

pub use imagefactory_store::dispatchers::{DispatcherInfo, DispatchersOverview, QueueDepth};
use sqlx::PgPool;

use crate::DispatcherSettings;

/// A dispatcher counts as stale when not seen for this long: three missed
/// heartbeats, or the lease if shorter (its builds are being taken over).
pub fn stale_after(settings: &DispatcherSettings) -> Duration {
    (settings.heartbeat_interval * 3).min(settings.lease)
}

/// Live and stale dispatchers with their figures, and queue depth per tenant
/// and status.
pub async fn overview(
    pool: &PgPool,
    settings: &DispatcherSettings,
) -> Result<DispatchersOverview, sqlx::Error> {
    imagefactory_store::dispatchers::overview(pool, stale_after(settings)).await
}
