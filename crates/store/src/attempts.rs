//! Read side of what a build's attempts produced: executions, log lines and
//! artifacts. The dispatcher writes these rows; the API only reads them,
//! always scoped by tenant through the build.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::StoreResult;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExecutionRecord {
    pub id: Uuid,
    pub build_id: Uuid,
    pub attempt: i32,
    pub executor: String,
    pub provider_id: Option<Uuid>,
    pub cluster_namespace: Option<String>,
    pub pipeline_run_name: Option<String>,
    pub status: String,
    pub message: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub async fn executions(
    pool: &PgPool,
    tenant_id: Uuid,
    build_id: Uuid,
) -> StoreResult<Vec<ExecutionRecord>> {
    Ok(sqlx::query_as(
        "SELECT id, build_id, attempt, executor, provider_id, cluster_namespace, pipeline_run_name,
                status, message, started_at, finished_at
         FROM build_executions WHERE tenant_id = $1 AND build_id = $2 ORDER BY attempt",
    )
    .bind(tenant_id)
    .bind(build_id)
    .fetch_all(pool)
    .await?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRecord {
    /// Monotonic across the build: the SSE event id and resume cursor.
    pub id: i64,
    pub execution_id: Uuid,
    pub source: String,
    pub position: i64,
    pub line: String,
    pub created_at: DateTime<Utc>,
}

/// Log lines of a build in arrival order, after the cursor `after_id`.
/// The caller has already checked that the build belongs to the tenant.
pub async fn logs_after(
    pool: &PgPool,
    build_id: Uuid,
    after_id: i64,
    limit: i64,
) -> StoreResult<Vec<LogRecord>> {
    Ok(sqlx::query_as(
        "SELECT id, execution_id, source, position, line, created_at FROM build_logs
         WHERE build_id = $1 AND id > $2 ORDER BY id LIMIT $3",
    )
    .bind(build_id)
    .bind(after_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ArtifactRecord {
    pub id: Uuid,
    pub execution_id: Uuid,
    pub attempt: i32,
    pub name: String,
    pub value: String,
    pub kind: String,
    pub created_at: DateTime<Utc>,
}

pub async fn artifacts(
    pool: &PgPool,
    tenant_id: Uuid,
    build_id: Uuid,
) -> StoreResult<Vec<ArtifactRecord>> {
    Ok(sqlx::query_as(
        "SELECT a.id, a.execution_id, e.attempt, a.name, a.value, a.kind, a.created_at
         FROM build_artifacts a JOIN build_executions e ON e.id = a.execution_id
         WHERE e.tenant_id = $1 AND a.build_id = $2 ORDER BY e.attempt, a.name",
    )
    .bind(tenant_id)
    .bind(build_id)
    .fetch_all(pool)
    .await?)
}
