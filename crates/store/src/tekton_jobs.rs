//! Installs of the Tekton Task bundle as jobs (migration 0031): one running
//! job per provider, renewed by heartbeat; a running job whose heartbeat is
//! older than the lease is recovered (marked failed, naming its owner) by
//! the next call for that provider, so a killed process leaves nothing stuck.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{StoreError, StoreResult};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstallJob {
    pub id: Uuid,
    pub provider_id: Uuid,
    pub status: String,
    pub namespace: Option<String>,
    pub dry_run: bool,
    pub owner_host: String,
    pub owner_pid: i32,
    pub heartbeat_at: DateTime<Utc>,
    pub results: Value,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// Who runs a job: this process.
#[derive(Debug, Clone)]
pub struct JobOwner {
    pub host: String,
    pub pid: i32,
}

impl JobOwner {
    pub fn this_process() -> Self {
        Self {
            host: std::env::var("HOSTNAME")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "unknown-host".into()),
            pid: std::process::id() as i32,
        }
    }
}

/// Why a job could not start.
#[derive(Debug)]
pub enum StartError {
    /// Another job runs for the provider.
    Running(InstallJob),
    Store(StoreError),
}

impl From<StoreError> for StartError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

const COLUMNS: &str = "id, provider_id, status, namespace, dry_run, owner_host, owner_pid,
    heartbeat_at, results, error, created_at, finished_at";

/// Mark the provider's running job failed when its heartbeat is older than
/// `lease`: its process stopped without finishing it.
pub async fn recover(pool: &PgPool, provider_id: Uuid, lease: Duration) -> StoreResult<u64> {
    let done = sqlx::query(
        "UPDATE tekton_install_jobs
         SET status = 'failed', finished_at = now(),
             error = format('abandoned: its process (pid %s on %s) stopped renewing it at %s', owner_pid, owner_host, heartbeat_at)
         WHERE provider_id = $1 AND status = 'running'
           AND heartbeat_at < now() - make_interval(secs => $2)",
    )
    .bind(provider_id)
    .bind(lease.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Start a job for `provider_id`, unless one runs (after recovering an
/// abandoned one).
pub async fn start(
    pool: &PgPool,
    provider_id: Uuid,
    namespace: Option<&str>,
    dry_run: bool,
    owner: &JobOwner,
    lease: Duration,
) -> Result<InstallJob, StartError> {
    recover(pool, provider_id, lease).await?;
    let sql = format!(
        "INSERT INTO tekton_install_jobs (id, provider_id, status, namespace, dry_run, owner_host, owner_pid)
         VALUES ($1, $2, 'running', $3, $4, $5, $6)
         ON CONFLICT (provider_id) WHERE status = 'running' DO NOTHING
         RETURNING {COLUMNS}"
    );
    let inserted: Option<InstallJob> = sqlx::query_as(&sql)
        .bind(Uuid::now_v7())
        .bind(provider_id)
        .bind(namespace)
        .bind(dry_run)
        .bind(&owner.host)
        .bind(owner.pid)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::from)?;
    if let Some(job) = inserted {
        return Ok(job);
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM tekton_install_jobs WHERE provider_id = $1 AND status = 'running'"
    );
    match sqlx::query_as(&sql)
        .bind(provider_id)
        .fetch_optional(pool)
        .await
        .map_err(StoreError::from)?
    {
        Some(running) => Err(StartError::Running(running)),
        // It finished between the insert and this read: the caller may retry.
        None => Err(StartError::Store(StoreError::State(
            "another install for this provider just finished; try again".into(),
        ))),
    }
}

/// Renew a running job's heartbeat; false when it is no longer running
/// (recovered as abandoned meanwhile).
pub async fn heartbeat(pool: &PgPool, id: Uuid) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE tekton_install_jobs SET heartbeat_at = now() WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Record a running job's end.
pub async fn finish(
    pool: &PgPool,
    id: Uuid,
    succeeded: bool,
    results: &Value,
    error: Option<&str>,
) -> StoreResult<()> {
    let done = sqlx::query(
        "UPDATE tekton_install_jobs
         SET status = $2, results = $3, error = $4, finished_at = now()
         WHERE id = $1 AND status = 'running'",
    )
    .bind(id)
    .bind(if succeeded { "succeeded" } else { "failed" })
    .bind(results)
    .bind(error)
    .execute(pool)
    .await?;
    if done.rows_affected() == 0 {
        return Err(StoreError::State(format!(
            "install job {id} is no longer running (recovered as abandoned)"
        )));
    }
    Ok(())
}

/// One job of a provider (after recovering the provider's abandoned job).
pub async fn get(
    pool: &PgPool,
    provider_id: Uuid,
    id: Uuid,
    lease: Duration,
) -> StoreResult<InstallJob> {
    recover(pool, provider_id, lease).await?;
    let sql =
        format!("SELECT {COLUMNS} FROM tekton_install_jobs WHERE provider_id = $1 AND id = $2");
    sqlx::query_as(&sql)
        .bind(provider_id)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)
}
