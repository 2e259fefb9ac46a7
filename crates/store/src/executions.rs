//! Build executions (one row per attempt): the persisted reference that lets
//! another dispatcher re-attach, logs (idempotent by position), artifacts,
//! and the raw inputs a dispatcher turns into an execution context.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use imagefactory_domain::{BuildMethod, GitRef, GitUrl, ImageRef, InfrastructureType};
use sqlx::{FromRow, PgExecutor, PgPool};
use uuid::Uuid;

use crate::decode::Text;

/// Column list matching [`ExecutionRow`].
pub(crate) const EXECUTION_COLUMNS: &str = "id, build_id, tenant_id, attempt, executor, provider_id, \
     cluster_namespace, pipeline_run_name, pipeline_run_uid, status, dispatcher_id, message, \
     reference_at, started_at, finished_at, \
     (EXTRACT(EPOCH FROM (clock_timestamp() - started_at)) * 1000)::bigint AS age_ms";

#[derive(Debug, Clone, FromRow)]
pub struct ExecutionRow {
    pub id: Uuid,
    pub build_id: Uuid,
    pub tenant_id: Uuid,
    pub attempt: i32,
    pub executor: String,
    pub provider_id: Option<Uuid>,
    pub cluster_namespace: Option<String>,
    pub pipeline_run_name: Option<String>,
    pub pipeline_run_uid: Option<String>,
    pub status: String,
    pub dispatcher_id: Option<String>,
    pub message: Option<String>,
    /// Set once the executor reported where the work lives: from then on the
    /// attempt is only ever re-attached to, never started again.
    pub reference_at: Option<DateTime<Utc>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Milliseconds since `started_at` by the database clock when read, so
    /// deadlines do not depend on the dispatcher's clock.
    pub age_ms: i64,
}

/// The reference columns of an execution (where its work lives).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReferenceColumns<'a> {
    pub provider_id: Option<Uuid>,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    pub uid: Option<&'a str>,
}

/// Persist where an execution's work lives. Takes any executor so callers can
/// make it part of a larger transaction. Reporting the reference already
/// stored writes nothing (no row version, no WAL flush at commit): executors
/// report it again on every start and re-attach.
pub async fn record_reference<'e>(
    db: impl PgExecutor<'e>,
    execution_id: Uuid,
    reference: &ReferenceColumns<'_>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE build_executions SET provider_id = COALESCE($2, provider_id), \
         cluster_namespace = $3, pipeline_run_name = $4, pipeline_run_uid = $5, \
         reference_at = COALESCE(reference_at, now()) \
         WHERE id = $1 AND (reference_at IS NULL \
               OR provider_id IS DISTINCT FROM COALESCE($2, provider_id) \
               OR cluster_namespace IS DISTINCT FROM $3 OR pipeline_run_name IS DISTINCT FROM $4 \
               OR pipeline_run_uid IS DISTINCT FROM $5)",
    )
    .bind(execution_id)
    .bind(reference.provider_id)
    .bind(reference.namespace)
    .bind(reference.name)
    .bind(reference.uid)
    .execute(db)
    .await?;
    Ok(())
}

/// [`record_reference`] for several executions in one statement (one round
/// trip, one commit): what a dispatcher's concurrently starting executions
/// report is written together. Same rules per execution (a reference already
/// stored writes nothing); if an execution appears more than once, its last
/// entry is written, as if the entries were written in order.
pub async fn record_references<'e>(
    db: impl PgExecutor<'e>,
    references: &[(Uuid, ReferenceColumns<'_>)],
) -> Result<(), sqlx::Error> {
    let mut last: std::collections::HashMap<Uuid, usize> = Default::default();
    for (i, (id, _)) in references.iter().enumerate() {
        last.insert(*id, i);
    }
    let rows: Vec<&(Uuid, ReferenceColumns<'_>)> = references
        .iter()
        .enumerate()
        .filter(|(i, (id, _))| last[id] == *i)
        .map(|(_, r)| r)
        .collect();
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let providers: Vec<Option<Uuid>> = rows.iter().map(|r| r.1.provider_id).collect();
    let namespaces: Vec<Option<&str>> = rows.iter().map(|r| r.1.namespace).collect();
    let names: Vec<Option<&str>> = rows.iter().map(|r| r.1.name).collect();
    let uids: Vec<Option<&str>> = rows.iter().map(|r| r.1.uid).collect();
    sqlx::query(
        "UPDATE build_executions e SET provider_id = COALESCE(r.provider_id, e.provider_id), \
         cluster_namespace = r.namespace, pipeline_run_name = r.name, pipeline_run_uid = r.uid, \
         reference_at = COALESCE(e.reference_at, now()) \
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[]) \
              AS r(id, provider_id, namespace, name, uid) \
         WHERE e.id = r.id AND (e.reference_at IS NULL \
               OR e.provider_id IS DISTINCT FROM COALESCE(r.provider_id, e.provider_id) \
               OR e.cluster_namespace IS DISTINCT FROM r.namespace \
               OR e.pipeline_run_name IS DISTINCT FROM r.name \
               OR e.pipeline_run_uid IS DISTINCT FROM r.uid)",
    )
    .bind(&ids)
    .bind(&providers)
    .bind(&namespaces)
    .bind(&names)
    .bind(&uids)
    .execute(db)
    .await?;
    Ok(())
}

/// A log line to store.
#[derive(Debug, Clone)]
pub struct NewLogLine<'a> {
    pub source: &'a str,
    pub position: i64,
    pub line: &'a str,
}

// The text rules are pure and shared with the executors, which decode tool
// output with them; they live in the domain.
pub use imagefactory_domain::log_text::{REPLACED_MARK, log_text, log_text_from_bytes};

/// Append log lines; a line already stored at the same (source, position) is
/// ignored, so re-attached executors may resend. Returns how many were new.
/// Lines (and sources) holding NUL are stored with it replaced ([`log_text`]):
/// one such line must not fail its whole batch.
pub async fn append_logs(
    pool: &PgPool,
    build_id: Uuid,
    execution_id: Uuid,
    lines: &[NewLogLine<'_>],
) -> Result<u64, sqlx::Error> {
    if lines.is_empty() {
        return Ok(0);
    }
    let sources: Vec<Cow<'_, str>> = lines.iter().map(|l| log_text(l.source)).collect();
    let positions: Vec<i64> = lines.iter().map(|l| l.position).collect();
    let texts: Vec<Cow<'_, str>> = lines.iter().map(|l| log_text(l.line)).collect();
    let sources: Vec<&str> = sources.iter().map(AsRef::as_ref).collect();
    let texts: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
    let done = sqlx::query(
        "INSERT INTO build_logs (build_id, execution_id, source, position, line) \
         SELECT $1, $2, l.source, l.position, l.line \
         FROM UNNEST($3::text[], $4::bigint[], $5::text[]) WITH ORDINALITY AS l(source, position, line, n) \
         ORDER BY l.n \
         ON CONFLICT (execution_id, source, position) DO NOTHING",
    )
    .bind(build_id)
    .bind(execution_id)
    .bind(&sources)
    .bind(&positions)
    .bind(&texts)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Append one line at the next free position of `source` (the service's own
/// notes in a build's log, e.g. about lines that could not be stored).
pub async fn append_notice(
    pool: &PgPool,
    build_id: Uuid,
    execution_id: Uuid,
    source: &str,
    line: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO build_logs (build_id, execution_id, source, position, line) \
         SELECT $1, $2, $3, COALESCE(max(position) + 1, 0), $4 \
         FROM build_logs WHERE execution_id = $2 AND source = $3 \
         ON CONFLICT (execution_id, source, position) DO NOTHING",
    )
    .bind(build_id)
    .bind(execution_id)
    .bind(log_text(source).as_ref())
    .bind(log_text(line).as_ref())
    .execute(pool)
    .await?;
    Ok(())
}

/// The highest stored log position per source of an execution, so a
/// re-attached executor resumes its log streams where the last one stopped.
pub async fn last_log_positions(
    pool: &PgPool,
    execution_id: Uuid,
) -> Result<std::collections::HashMap<String, i64>, sqlx::Error> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT source, max(position) FROM build_logs WHERE execution_id = $1 GROUP BY source",
    )
    .bind(execution_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Store an artifact; the same name again replaces the value (idempotent).
pub async fn put_artifact(
    pool: &PgPool,
    build_id: Uuid,
    execution_id: Uuid,
    name: &str,
    value: &str,
    kind: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO build_artifacts (id, build_id, execution_id, name, value, kind) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (execution_id, name) DO UPDATE SET value = EXCLUDED.value, kind = EXCLUDED.kind",
    )
    .bind(Uuid::now_v7())
    .bind(build_id)
    .bind(execution_id)
    .bind(name)
    .bind(value)
    .bind(kind)
    .execute(pool)
    .await?;
    Ok(())
}

/// Several artifacts (name, value, kind) in one statement; the same upsert
/// as [`put_artifact`]. A name given twice keeps the last value.
pub async fn put_artifacts(
    pool: &PgPool,
    build_id: Uuid,
    execution_id: Uuid,
    artifacts: &[(&str, &str, &str)],
) -> Result<(), sqlx::Error> {
    let mut latest: Vec<(&str, &str, &str)> = Vec::new();
    for a in artifacts {
        latest.retain(|(name, _, _)| *name != a.0);
        latest.push(*a);
    }
    if latest.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = latest.iter().map(|_| Uuid::now_v7()).collect();
    let names: Vec<&str> = latest.iter().map(|a| a.0).collect();
    let values: Vec<&str> = latest.iter().map(|a| a.1).collect();
    let kinds: Vec<&str> = latest.iter().map(|a| a.2).collect();
    sqlx::query(
        "INSERT INTO build_artifacts (id, build_id, execution_id, name, value, kind) \
         SELECT id, $2, $3, name, value, kind \
         FROM UNNEST($1::uuid[], $4::text[], $5::text[], $6::text[]) AS a(id, name, value, kind) \
         ON CONFLICT (execution_id, name) DO UPDATE SET value = EXCLUDED.value, kind = EXCLUDED.kind",
    )
    .bind(&ids)
    .bind(build_id)
    .bind(execution_id)
    .bind(&names)
    .bind(&values)
    .bind(&kinds)
    .execute(pool)
    .await?;
    Ok(())
}

/// Keep the latest progress note of a running execution.
pub async fn set_progress(
    pool: &PgPool,
    execution_id: Uuid,
    message: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE build_executions SET message = $2 WHERE id = $1 AND status = 'running'")
        .bind(execution_id)
        .bind(message)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn list_for_build(
    pool: &PgPool,
    build_id: Uuid,
) -> Result<Vec<ExecutionRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {EXECUTION_COLUMNS} FROM build_executions WHERE build_id = $1 ORDER BY attempt"
    ))
    .bind(build_id)
    .fetch_all(pool)
    .await
}

/// Everything stored about a build that an execution context is made of.
/// Secrets are still sealed; the dispatcher opens them.
#[derive(Debug, Clone, FromRow)]
pub struct ExecutionInputs {
    pub build_id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    #[sqlx(try_from = "Text<BuildMethod>")]
    pub method: BuildMethod,
    #[sqlx(try_from = "Text<InfrastructureType>")]
    pub infrastructure_type: InfrastructureType,
    #[sqlx(try_from = "Text<GitUrl>")]
    pub git_url: GitUrl,
    #[sqlx(try_from = "Text<GitRef>")]
    pub git_ref: GitRef,
    #[sqlx(try_from = "Text<ImageRef>")]
    pub image: ImageRef,
    pub timeout_seconds: i32,
    // build_configs (absent row → defaults)
    pub dockerfile: Option<String>,
    pub context: Option<String>,
    pub build_args: Option<serde_json::Value>,
    pub platforms: Option<Vec<String>>,
    pub target: Option<String>,
    pub cache_enabled: Option<bool>,
    pub cache_repo: Option<String>,
    pub labels: Option<serde_json::Value>,
    pub packer_template: Option<String>,
    pub packer_vars: Option<serde_json::Value>,
    pub metadata: Option<serde_json::Value>,
    // project git credential
    pub git_username: Option<String>,
    pub git_password_enc: Option<Vec<u8>>,
    // registry credential
    pub registry_credential_id: Option<Uuid>,
    pub registry_version: Option<i32>,
    pub registry: Option<String>,
    pub registry_username: Option<String>,
    pub registry_secret_enc: Option<Vec<u8>>,
    // provider of the execution
    pub provider_id: Option<Uuid>,
    pub provider_name: Option<String>,
    pub provider_tekton_enabled: Option<bool>,
    pub provider_config_version: Option<i64>,
    pub provider_config: Option<serde_json::Value>,
    /// The tenant's `allow_local_builds` now, re-checked before a local
    /// build starts (it may have been withdrawn since the build was queued).
    pub local_builds_allowed: bool,
    /// The platform admin's provider (may reference server files, no address
    /// policy); `false`/`None` is a tenant's.
    pub provider_is_global: Option<bool>,
    /// Since when the build could be claimed (submitted, requeued after its
    /// backoff, or manually retried): the start of its queue wait.
    pub claimable_since: DateTime<Utc>,
}

/// The inputs of many builds at once (a claimed batch): one query instead
/// of one per build. `keys` pairs each build with its execution's provider.
/// Builds that no longer exist are missing from the result, and so are
/// builds whose stored values do not parse: each row is decoded on its own,
/// so one bad row does not cost its batch; [`load_inputs`] of that build
/// says what is wrong with it.
pub async fn load_inputs_many(
    pool: &PgPool,
    keys: &[(Uuid, Option<Uuid>)],
) -> Result<Vec<ExecutionInputs>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let builds: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let providers: Vec<Option<Uuid>> = keys.iter().map(|k| k.1).collect();
    let rows = sqlx::query(&format!(
        "SELECT {INPUT_COLUMNS} \
         FROM UNNEST($1::uuid[], $2::uuid[]) AS k(build_id, provider_id) \
         JOIN builds b ON b.id = k.build_id {INPUT_JOINS} ON p.id = k.provider_id"
    ))
    .bind(&builds)
    .bind(&providers)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .filter_map(|row| ExecutionInputs::from_row(row).ok())
        .collect())
}

/// Whether a load failed because a stored value does not parse (a row the
/// build cannot run with, whatever is retried) rather than for the database.
pub fn is_bad_stored_value(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::ColumnDecode { .. })
}

/// Columns matching [`ExecutionInputs`] (tables `b`, `c`, `pr`, `r`, `p`, `t`).
const INPUT_COLUMNS: &str = "b.id AS build_id, b.tenant_id, b.project_id, b.method, b.infrastructure_type, \
     b.git_url, b.git_ref, b.image, b.timeout_seconds, \
     c.dockerfile, c.context, c.build_args, c.platforms, c.target, c.cache_enabled, \
     c.cache_repo, c.labels, c.packer_template, c.packer_vars, c.metadata, \
     pr.git_username, pr.git_password_enc, \
     r.id AS registry_credential_id, r.version AS registry_version, r.registry, \
     r.username AS registry_username, r.secret_enc AS registry_secret_enc, \
     p.id AS provider_id, p.name AS provider_name, p.tekton_enabled AS provider_tekton_enabled, \
     p.config_version AS provider_config_version, p.config AS provider_config, \
     t.allow_local_builds AS local_builds_allowed, \
     p.is_global AS provider_is_global, \
     GREATEST(b.created_at, b.not_before) AS claimable_since";

/// Joins after `builds b`, ending with the provider join's table (`ON` follows).
const INPUT_JOINS: &str = "JOIN projects pr ON pr.id = b.project_id AND pr.tenant_id = b.tenant_id \
     JOIN tenants t ON t.id = b.tenant_id \
     LEFT JOIN build_configs c ON c.build_id = b.id \
     LEFT JOIN registry_credentials r ON r.id = b.registry_credential_id AND r.tenant_id = b.tenant_id \
     LEFT JOIN infrastructure_providers p";

pub async fn load_inputs(
    pool: &PgPool,
    build_id: Uuid,
    provider_id: Option<Uuid>,
) -> Result<Option<ExecutionInputs>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {INPUT_COLUMNS} FROM builds b {INPUT_JOINS} ON p.id = $2 WHERE b.id = $1"
    ))
    .bind(build_id)
    .bind(provider_id)
    .fetch_optional(pool)
    .await
}
