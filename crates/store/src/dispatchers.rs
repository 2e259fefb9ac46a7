//! Dispatcher instances and their heartbeats, and the figures the admin API
//! shows about them and the queue.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, PgPool};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
pub struct Heartbeat<'a> {
    pub id: &'a str,
    /// `embedded` or `standalone`.
    pub mode: &'a str,
    pub host: &'a str,
    pub in_flight: i32,
}

/// Insert or refresh this dispatcher's row.
pub async fn heartbeat(pool: &PgPool, beat: Heartbeat<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dispatchers (id, mode, host, in_flight) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (id) DO UPDATE SET last_seen_at = now(), in_flight = EXCLUDED.in_flight, \
         stopped_at = NULL",
    )
    .bind(beat.id)
    .bind(beat.mode)
    .bind(beat.host)
    .bind(beat.in_flight)
    .execute(pool)
    .await?;
    Ok(())
}

/// Mark a dispatcher stopped (graceful shutdown).
pub async fn mark_stopped(pool: &PgPool, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE dispatchers SET stopped_at = now(), last_seen_at = now(), in_flight = 0 WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// One dispatcher as the admin API shows it.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct DispatcherInfo {
    pub id: String,
    pub mode: String,
    pub host: String,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub in_flight: i32,
    pub stopped_at: Option<DateTime<Utc>>,
    /// `live` (seen within the stale window), `stale` (not seen since; likely
    /// dead, its leases will be taken over) or `stopped` (shut down cleanly).
    pub state: String,
    /// Running builds whose lease this dispatcher holds right now.
    pub leases_held: i64,
}

/// All known dispatchers, live ones first, then most recently seen.
pub async fn list(
    pool: &PgPool,
    stale_after: Duration,
) -> Result<Vec<DispatcherInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT d.id, d.mode, d.host, d.started_at, d.last_seen_at, d.in_flight, d.stopped_at, \
                CASE WHEN d.stopped_at IS NOT NULL THEN 'stopped' \
                     WHEN d.last_seen_at >= now() - make_interval(secs => $1) THEN 'live' \
                     ELSE 'stale' END AS state, \
                (SELECT count(*) FROM builds b WHERE b.status = 'running' AND b.lease_owner = d.id) AS leases_held \
         FROM dispatchers d \
         ORDER BY (d.stopped_at IS NULL AND d.last_seen_at >= now() - make_interval(secs => $1)) DESC, \
                  d.last_seen_at DESC",
    )
    .bind(stale_after.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Queue depth of one tenant in one non-terminal status.
#[derive(Debug, Clone, Serialize, FromRow)]
pub struct QueueDepth {
    pub tenant_id: Uuid,
    pub tenant_name: String,
    /// `queued` or `running`.
    pub status: String,
    pub builds: i64,
    /// Queued builds still in retry backoff (`not_before` in the future).
    pub in_backoff: i64,
    pub oldest_created_at: DateTime<Utc>,
    pub max_concurrent_builds: i32,
}

pub async fn queue_depth(pool: &PgPool) -> Result<Vec<QueueDepth>, sqlx::Error> {
    sqlx::query_as(
        "SELECT b.tenant_id, t.name AS tenant_name, b.status, count(*) AS builds, \
                count(*) FILTER (WHERE b.status = 'queued' AND b.not_before > now()) AS in_backoff, \
                min(b.created_at) AS oldest_created_at, t.max_concurrent_builds \
         FROM builds b JOIN tenants t ON t.id = b.tenant_id \
         WHERE b.status IN ('queued', 'running') \
         GROUP BY b.tenant_id, t.name, b.status, t.max_concurrent_builds \
         ORDER BY t.name, b.status",
    )
    .fetch_all(pool)
    .await
}

/// The body of `GET /api/v1/admin/dispatchers`.
#[derive(Debug, Clone, Serialize)]
pub struct DispatchersOverview {
    pub dispatchers: Vec<DispatcherInfo>,
    pub queue: Vec<QueueDepth>,
}

pub async fn overview(
    pool: &PgPool,
    stale_after: Duration,
) -> Result<DispatchersOverview, sqlx::Error> {
    Ok(DispatchersOverview {
        dispatchers: list(pool, stale_after).await?,
        queue: queue_depth(pool).await?,
    })
}
