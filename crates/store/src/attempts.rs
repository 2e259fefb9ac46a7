//! Read side of what a build's attempts produced: executions, log lines and
//! artifacts. The dispatcher writes these rows; the API only reads them,
//! always scoped by tenant: every function takes the tenant and its
//! statement filters by it (`build_executions.tenant_id`, or the build's
//! tenant for the tables that have none).

use chrono::{DateTime, Utc};
use imagefactory_domain::{BuildStatus, ExecutorKind};
use sqlx::PgPool;
use uuid::Uuid;

use crate::decode::Text;
use crate::error::StoreResult;
use crate::page::{self, Page};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExecutionRecord {
    pub id: Uuid,
    pub build_id: Uuid,
    pub attempt: i32,
    #[sqlx(try_from = "Text<ExecutorKind>")]
    pub executor: ExecutorKind,
    pub provider_id: Option<Uuid>,
    pub cluster_namespace: Option<String>,
    pub pipeline_run_name: Option<String>,
    #[sqlx(try_from = "Text<BuildStatus>")]
    pub status: BuildStatus,
    pub message: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A page of the build's executions, first attempt first.
pub async fn executions(
    pool: &PgPool,
    tenant_id: Uuid,
    build_id: Uuid,
    page: Page,
) -> StoreResult<(Vec<ExecutionRecord>, Option<Uuid>)> {
    let rows: Vec<ExecutionRecord> = sqlx::query_as(
        "SELECT id, build_id, attempt, executor, provider_id, cluster_namespace, pipeline_run_name,
                status, message, started_at, finished_at
         FROM build_executions WHERE tenant_id = $1 AND build_id = $2
           AND ($3::uuid IS NULL OR (attempt, id) > (
                SELECT attempt, id FROM build_executions
                WHERE id = $3 AND tenant_id = $1 AND build_id = $2))
         ORDER BY attempt, id LIMIT $4",
    )
    .bind(tenant_id)
    .bind(build_id)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(pool)
    .await?;
    let known = "SELECT EXISTS (SELECT 1 FROM build_executions \
                 WHERE id = $1 AND tenant_id = $2 AND build_id = $3)";
    page::finish(pool, rows, page, |e| e.id, known, &[tenant_id, build_id]).await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LogRecord {
    /// Unique line id: the SSE event id (`Last-Event-ID` resumes after it).
    /// Increasing within a writer's transaction, not across transactions.
    pub id: i64,
    /// The transaction that inserted the line (`xid8` as a number; 0 for
    /// lines stored before migration 0020).
    pub tx: i64,
    pub execution_id: Uuid,
    pub source: String,
    pub position: i64,
    pub line: String,
    pub created_at: DateTime<Utc>,
}

impl LogRecord {
    /// The position of a reader that has this line and everything before it.
    pub fn cursor(&self) -> LogCursor {
        LogCursor {
            tx: self.tx,
            id: self.id,
        }
    }
}

/// A position in a build's log order, (inserting transaction, id): lines
/// after it come next. See [`logs_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogCursor {
    pub tx: i64,
    pub id: i64,
}

impl LogCursor {
    /// Before the first line.
    pub const START: LogCursor = LogCursor { tx: 0, id: 0 };
}

/// Which committed lines a read may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogHorizon {
    /// Only lines whose transaction is older than every transaction still in
    /// progress (`tx < pg_snapshot_xmin(pg_current_snapshot())` of the
    /// reading statement). Every transaction that can still commit a line
    /// has, or will be given, an id at or above that horizon, so no line can
    /// later appear before the last one returned: a live follower's cursor
    /// never passes a line that commits after it read. A long-running
    /// transaction anywhere in the cluster holds the horizon back, which
    /// delays lines but never loses them.
    Settled,
    /// Every committed line: for a single read, or once the writers are done
    /// (the build is terminal) so nothing can commit behind the cursor.
    Committed,
}

/// Log lines of a build after `after`, in log order: by inserting
/// transaction, then id. That is arrival order for a single writer (each
/// transaction after the previous one) and per source and attempt in any
/// case; lines of concurrent writers are grouped by transaction. Served by
/// the index `build_logs_follow_idx (build_id, tx, id)`: a range scan of the
/// lines returned. Lines of another tenant's build are never returned (the
/// build's tenant is checked in the same statement).
pub async fn logs_after(
    pool: &PgPool,
    tenant_id: Uuid,
    build_id: Uuid,
    after: LogCursor,
    horizon: LogHorizon,
    limit: i64,
) -> StoreResult<Vec<LogRecord>> {
    let settled = match horizon {
        LogHorizon::Settled => "AND tx < pg_snapshot_xmin(pg_current_snapshot())",
        LogHorizon::Committed => "",
    };
    // ORDER BY names the table's columns: a bare `tx` would be the bigint
    // output column, sorted instead of read in index order.
    let sql = format!(
        "SELECT id, tx::text::bigint AS tx, execution_id, source, position, line, created_at
         FROM build_logs
         WHERE build_id = $1 AND (tx, id) > ($2::bigint::text::xid8, $3) {settled}
           AND EXISTS (SELECT 1 FROM builds WHERE id = $1 AND tenant_id = $5)
         ORDER BY build_logs.tx, build_logs.id LIMIT $4"
    );
    Ok(sqlx::query_as(&sql)
        .bind(build_id)
        .bind(after.tx)
        .bind(after.id)
        .bind(limit)
        .bind(tenant_id)
        .fetch_all(pool)
        .await?)
}

/// The cursor just after the line `id` of the build (to resume a stream from
/// its last event id); `None` if the tenant's build has no such line.
pub async fn log_cursor(
    pool: &PgPool,
    tenant_id: Uuid,
    build_id: Uuid,
    id: i64,
) -> StoreResult<Option<LogCursor>> {
    let tx: Option<i64> = sqlx::query_scalar(
        "SELECT l.tx::text::bigint FROM build_logs l JOIN builds b ON b.id = l.build_id
         WHERE b.tenant_id = $1 AND l.build_id = $2 AND l.id = $3",
    )
    .bind(tenant_id)
    .bind(build_id)
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(tx.map(|tx| LogCursor { tx, id }))
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

/// A page of the build's artifacts by attempt, then name.
pub async fn artifacts(
    pool: &PgPool,
    tenant_id: Uuid,
    build_id: Uuid,
    page: Page,
) -> StoreResult<(Vec<ArtifactRecord>, Option<Uuid>)> {
    let rows: Vec<ArtifactRecord> = sqlx::query_as(
        "SELECT a.id, a.execution_id, e.attempt, a.name, a.value, a.kind, a.created_at
         FROM build_artifacts a JOIN build_executions e ON e.id = a.execution_id
         WHERE e.tenant_id = $1 AND a.build_id = $2
           AND ($3::uuid IS NULL OR (e.attempt, a.name, a.id) > (
                SELECT ce.attempt, ca.name, ca.id
                FROM build_artifacts ca JOIN build_executions ce ON ce.id = ca.execution_id
                WHERE ca.id = $3 AND ce.tenant_id = $1 AND ca.build_id = $2))
         ORDER BY e.attempt, a.name, a.id LIMIT $4",
    )
    .bind(tenant_id)
    .bind(build_id)
    .bind(page.after)
    .bind(page.fetch())
    .fetch_all(pool)
    .await?;
    let known = "SELECT EXISTS (SELECT 1 FROM build_artifacts a \
                 JOIN build_executions e ON e.id = a.execution_id \
                 WHERE a.id = $1 AND e.tenant_id = $2 AND a.build_id = $3)";
    page::finish(pool, rows, page, |a| a.id, known, &[tenant_id, build_id]).await
}
