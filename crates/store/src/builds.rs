//! Builds and their configs: submit, read, list, cancel and retry. State rules come from
//! `imagefactory_domain::Transition`; this module only applies them
//! atomically (`SELECT … FOR UPDATE`, and the transition's guard in the
//! `UPDATE`).
//!
//! A build is looked up by id with `tenant_id IS NOT DISTINCT FROM $1`, not
//! `=`: the same check (the column is `NOT NULL`), but one no index can
//! serve, so the primary key is the only path. With `=` the planner may
//! take a tenant index when its statistics are stale (a young or fast
//! growing table) and read every build of the tenant to find one.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use imagefactory_domain::{
    BuildMethod, BuildStatus, GitRef, GitUrl, ImageRef, InfrastructureType, MethodConfig,
    ProviderStatus, ProviderType, Transition,
};
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, Postgres, QueryBuilder, Transaction};
use uuid::Uuid;

use crate::decode::Text;
use crate::error::{StoreError, StoreResult};
use crate::status;
use crate::{CHANNEL_BUILD_CANCEL, CHANNEL_BUILD_QUEUED};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Build {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    #[sqlx(try_from = "Text<BuildMethod>")]
    pub method: BuildMethod,
    #[sqlx(try_from = "Text<InfrastructureType>")]
    pub infrastructure_type: InfrastructureType,
    pub infrastructure_provider_id: Option<Uuid>,
    pub registry_credential_id: Option<Uuid>,
    #[sqlx(try_from = "Text<GitUrl>")]
    pub git_url: GitUrl,
    #[sqlx(try_from = "Text<GitRef>")]
    pub git_ref: GitRef,
    #[sqlx(try_from = "Text<ImageRef>")]
    pub image: ImageRef,
    #[sqlx(try_from = "Text<BuildStatus>")]
    pub status: BuildStatus,
    pub priority: i32,
    pub timeout_seconds: i32,
    pub attempts: i32,
    pub max_attempts: i32,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub error_message: Option<String>,
    pub created_by_token_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str =
    "id, tenant_id, project_id, method, infrastructure_type, infrastructure_provider_id,
    registry_credential_id, git_url, git_ref, image, status, priority, timeout_seconds, attempts,
    max_attempts, cancel_requested_at, error_message, created_by_token_id, created_at, updated_at,
    started_at, finished_at";

/// A build to insert. Its repository (and default ref) come from the
/// project, read by the insert itself.
#[derive(Debug, Clone)]
pub struct NewBuild {
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub method: BuildMethod,
    pub infrastructure_type: InfrastructureType,
    pub infrastructure_provider_id: Option<Uuid>,
    pub registry_credential_id: Option<Uuid>,
    /// `None`: the project's default branch.
    pub git_ref: Option<GitRef>,
    pub image: ImageRef,
    pub priority: i32,
    pub timeout_seconds: i32,
    pub created_by_token_id: Option<Uuid>,
    pub config: MethodConfig,
}

/// What a submission names, as the tenant may see it: read to explain a
/// submission [`submit`] refused.
#[derive(Debug, Clone, FromRow)]
pub struct SubmissionRefs {
    /// The tenant's project's repository; `None`: no such project of the
    /// tenant.
    #[sqlx(try_from = "Text<Option<GitUrl>>")]
    pub git_url: Option<GitUrl>,
    #[sqlx(try_from = "Text<Option<GitRef>>")]
    pub default_branch: Option<GitRef>,
    /// The named provider, the tenant's own or a global one; `None`: none
    /// named, or no such provider for the tenant.
    #[sqlx(try_from = "Text<Option<ProviderType>>")]
    pub provider_type: Option<ProviderType>,
    #[sqlx(try_from = "Text<Option<ProviderStatus>>")]
    pub provider_status: Option<ProviderStatus>,
    /// The named registry credential is the tenant's (true when none is named).
    pub credential_found: bool,
}

/// The references of a submission as the tenant sees them. [`submit`] reads
/// the same, in the same words, inside its insert.
const REFS: &str =
    "SELECT p.git_url, p.default_branch, v.provider_type, v.status AS provider_status,
        ($4::uuid IS NULL OR EXISTS (SELECT 1 FROM registry_credentials
            WHERE id = $4 AND tenant_id IS NOT DISTINCT FROM $1)) AS credential_found
    FROM (SELECT) AS one
    LEFT JOIN projects p ON p.id = $2 AND p.tenant_id IS NOT DISTINCT FROM $1
    LEFT JOIN infrastructure_providers v ON v.id = $3 AND (v.tenant_id = $1 OR v.is_global)";

pub async fn submission_refs(
    pool: &PgPool,
    tenant_id: Uuid,
    project_id: Uuid,
    provider_id: Option<Uuid>,
    credential_id: Option<Uuid>,
) -> StoreResult<SubmissionRefs> {
    Ok(sqlx::query_as(REFS)
        .bind(tenant_id)
        .bind(project_id)
        .bind(provider_id)
        .bind(credential_id)
        .fetch_one(pool)
        .await?)
}

/// Insert the build and its config if every reference checks out: the
/// project is the tenant's, the registry credential (if any) is the
/// tenant's, and the provider (if any) is the tenant's or global, of the
/// build's infrastructure's type and active. `None`: one did not, and
/// nothing was stored ([`submission_refs`] tells which).
pub async fn submit(pool: &PgPool, new: &NewBuild) -> StoreResult<Option<Build>> {
    let mut stored = submit_many(pool, std::slice::from_ref(new)).await?;
    Ok(stored.pop().flatten())
}

/// [`submit`] for many builds in one statement (one commit): the answer for
/// each, in order. Each is checked and stored or refused on its own; an
/// error (the database's) stores none.
pub async fn submit_many(pool: &PgPool, new: &[NewBuild]) -> StoreResult<Vec<Option<Build>>> {
    // One statement, its own transaction: the references, the builds and
    // their configs; the config insert's foreign key is checked at the end
    // of the statement, when the build rows exist. The values travel as one
    // JSON document (a column per field), the references are read as
    // [`REFS`] reads them. No NOTIFY here: PostgreSQL serializes the commits
    // of notifying transactions (a database-wide lock held through the WAL
    // flush), which capped submits at a few hundred a second. The caller
    // wakes the dispatchers after the commit
    // ([`crate::queue::wake_dispatchers`], coalesced); they also poll.
    let sql = format!(
        "WITH x AS (
            SELECT * FROM jsonb_to_recordset($1) AS x(
                id uuid, tenant_id uuid, project_id uuid, provider_id uuid, credential_id uuid,
                method text, infrastructure_type text, git_ref text, image text,
                priority integer, timeout_seconds integer, token_id uuid, provider_type text,
                dockerfile text, context text, build_args jsonb, platforms jsonb, target text,
                cache_enabled boolean, cache_repo text, labels jsonb, packer_template text,
                packer_vars jsonb, metadata jsonb)
         ), r AS (
            SELECT x.*, p.git_url, p.default_branch, v.provider_type AS found_provider_type,
                v.status AS found_provider_status,
                (x.credential_id IS NULL OR EXISTS (SELECT 1 FROM registry_credentials
                    WHERE id = x.credential_id AND tenant_id IS NOT DISTINCT FROM x.tenant_id))
                    AS credential_found
            FROM x
            LEFT JOIN projects p
                ON p.id = x.project_id AND p.tenant_id IS NOT DISTINCT FROM x.tenant_id
            LEFT JOIN infrastructure_providers v
                ON v.id = x.provider_id AND (v.tenant_id = x.tenant_id OR v.is_global)
         ), b AS (
            INSERT INTO builds (id, tenant_id, project_id, method, infrastructure_type,
                infrastructure_provider_id, registry_credential_id, git_url, git_ref, image,
                priority, timeout_seconds, created_by_token_id)
            SELECT r.id, r.tenant_id, r.project_id, r.method, r.infrastructure_type,
                r.provider_id, r.credential_id, r.git_url, COALESCE(r.git_ref, r.default_branch),
                r.image, r.priority, r.timeout_seconds, r.token_id
            FROM r
            WHERE r.git_url IS NOT NULL AND r.credential_found
              AND (r.provider_id IS NULL OR (r.found_provider_type = r.provider_type
                                             AND r.found_provider_status = $2))
            RETURNING {COLUMNS}
         ), c AS (
            INSERT INTO build_configs (build_id, dockerfile, context, build_args, platforms,
                target, cache_enabled, cache_repo, labels, packer_template, packer_vars, metadata)
            SELECT r.id, r.dockerfile, r.context, r.build_args,
                ARRAY(SELECT jsonb_array_elements_text(r.platforms)), r.target, r.cache_enabled,
                r.cache_repo, r.labels, r.packer_template, r.packer_vars, r.metadata
            FROM b JOIN r ON r.id = b.id
         )
         SELECT b.* FROM b"
    );
    let ids: Vec<Uuid> = new.iter().map(|_| Uuid::now_v7()).collect();
    let rows: Vec<serde_json::Value> = new
        .iter()
        .zip(&ids)
        .map(|(new, id)| submission_json(*id, new))
        .collect();
    let stored: Vec<Build> = sqlx::query_as(&sql)
        .bind(Json(rows))
        .bind(ProviderStatus::Active.as_str())
        .fetch_all(pool)
        .await?;
    let mut by_id: HashMap<Uuid, Build> = stored.into_iter().map(|b| (b.id, b)).collect();
    Ok(ids.iter().map(|id| by_id.remove(id)).collect())
}

/// One build of [`submit_many`]'s document, its fields named as its columns.
fn submission_json(id: Uuid, new: &NewBuild) -> serde_json::Value {
    let c = &new.config;
    serde_json::json!({
        "id": id,
        "tenant_id": new.tenant_id,
        "project_id": new.project_id,
        "provider_id": new.infrastructure_provider_id,
        "credential_id": new.registry_credential_id,
        "method": new.method.as_str(),
        "infrastructure_type": new.infrastructure_type.as_str(),
        "git_ref": new.git_ref.as_ref().map(GitRef::as_str),
        "image": new.image.to_string(),
        "priority": new.priority,
        "timeout_seconds": new.timeout_seconds,
        "token_id": new.created_by_token_id,
        "provider_type": new.infrastructure_type.provider_type().as_str(),
        "dockerfile": c.dockerfile,
        "context": c.context,
        "build_args": c.build_args,
        "platforms": c.platforms,
        "target": c.target,
        "cache_enabled": c.cache_enabled,
        "cache_repo": c.cache_repo,
        "labels": c.labels,
        "packer_template": c.packer_template,
        "packer_vars": c.packer_vars,
        "metadata": c.metadata,
    })
}

async fn notify(
    tx: &mut Transaction<'_, Postgres>,
    channel: &str,
    payload: &str,
) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(channel)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn get(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> StoreResult<Build> {
    crate::page::tenant_row(pool, ("builds", COLUMNS), tenant_id, id).await
}

#[derive(sqlx::FromRow)]
struct ConfigRow {
    dockerfile: Option<String>,
    context: Option<String>,
    build_args: Json<BTreeMap<String, String>>,
    platforms: Vec<String>,
    target: Option<String>,
    cache_enabled: bool,
    cache_repo: Option<String>,
    labels: Json<BTreeMap<String, String>>,
    packer_template: Option<String>,
    packer_vars: Json<BTreeMap<String, String>>,
    metadata: Json<serde_json::Map<String, serde_json::Value>>,
}

/// The method config of the tenant's build (every build has one, written by
/// `submit`); another tenant's build is `NotFound`.
pub async fn get_config(
    pool: &PgPool,
    tenant_id: Uuid,
    build_id: Uuid,
) -> StoreResult<MethodConfig> {
    let row: ConfigRow = sqlx::query_as(&format!(
        "SELECT {CONFIG_COLUMNS}
         FROM build_configs c JOIN builds b ON b.id = c.build_id
         WHERE c.build_id = $2 AND b.tenant_id IS NOT DISTINCT FROM $1"
    ))
    .bind(tenant_id)
    .bind(build_id)
    .fetch_optional(pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok(row.into())
}

/// [`get`] and [`get_config`] in one round trip.
pub async fn get_with_config(
    pool: &PgPool,
    tenant_id: Uuid,
    build_id: Uuid,
) -> StoreResult<(Build, MethodConfig)> {
    // The builds columns and the config's share no name.
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, {CONFIG_COLUMNS}
         FROM builds JOIN build_configs c ON c.build_id = builds.id
         WHERE builds.id = $2 AND builds.tenant_id IS NOT DISTINCT FROM $1"
    ))
    .bind(tenant_id)
    .bind(build_id)
    .fetch_optional(pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    let build = Build::from_row(&row)?;
    let config = ConfigRow::from_row(&row)?;
    Ok((build, config.into()))
}

/// The builds (with configs) among `ids`, of any tenant: only for
/// [`crate::build_reads`], which matches each row to the tenant that asked.
/// A primary-key probe per id on a plan made once (migration 0036).
pub(crate) async fn get_many_with_config(
    db: impl sqlx::PgExecutor<'_>,
    ids: &[Uuid],
) -> StoreResult<Vec<(Build, MethodConfig)>> {
    let rows = sqlx::query("SELECT (r.build).*, (r.config).* FROM builds_with_config($1) r")
        .bind(ids)
        .fetch_all(db)
        .await?;
    rows.iter()
        .map(|row| {
            let build = Build::from_row(row)?;
            let config = ConfigRow::from_row(row)?;
            Ok((build, config.into()))
        })
        .collect()
}

const CONFIG_COLUMNS: &str = "c.dockerfile, c.context, c.build_args, c.platforms, c.target,
    c.cache_enabled, c.cache_repo, c.labels, c.packer_template, c.packer_vars, c.metadata";

impl From<ConfigRow> for MethodConfig {
    fn from(row: ConfigRow) -> Self {
        MethodConfig {
            dockerfile: row.dockerfile,
            context: row.context,
            build_args: row.build_args.0,
            platforms: row.platforms,
            target: row.target,
            cache_enabled: row.cache_enabled,
            cache_repo: row.cache_repo,
            labels: row.labels.0,
            packer_template: row.packer_template,
            packer_vars: row.packer_vars.0,
            metadata: row.metadata.0,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct BuildFilter {
    pub project_id: Option<Uuid>,
    pub status: Option<BuildStatus>,
}

pub use crate::page::Page;

/// A page of builds, newest first, and, when more remain, the cursor of the
/// next page.
pub async fn list(
    pool: &PgPool,
    tenant_id: Uuid,
    filter: &BuildFilter,
    page: Page,
) -> StoreResult<(Vec<Build>, Option<Uuid>)> {
    // Only the filters given are in the SQL: an `$n IS NULL OR …` condition
    // makes the planner's generic plan guess one row and sort every build of
    // the tenant instead of reading a page off `builds_tenant_list_idx`.
    let mut q =
        QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM builds WHERE tenant_id = "));
    q.push_bind(tenant_id);
    if let Some(project_id) = filter.project_id {
        q.push(" AND project_id = ").push_bind(project_id);
    }
    if let Some(status) = filter.status {
        q.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(after) = page.after {
        q.push(" AND (created_at, id) < (SELECT created_at, id FROM builds WHERE id = ")
            .push_bind(after)
            .push(" AND tenant_id = ")
            .push_bind(tenant_id)
            .push(")");
    }
    q.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(page.fetch());
    let rows: Vec<Build> = q.build_query_as().fetch_all(pool).await?;
    let known = "SELECT EXISTS (SELECT 1 FROM builds WHERE id = $1 AND tenant_id = $2)";
    crate::page::finish(pool, rows, page, |b| b.id, known, &[tenant_id]).await
}

/// What a cancel request did.
#[derive(Debug, Clone)]
pub enum CancelOutcome {
    /// The build was queued: it is cancelled now.
    Cancelled(Build),
    /// The build is running: cancellation was requested and the dispatcher
    /// told (`NOTIFY build_cancel`); it ends when the executor stops the work.
    Requested(Build),
}

async fn lock(
    tx: &mut Transaction<'_, Postgres>,
    tenant_id: Uuid,
    id: Uuid,
) -> StoreResult<BuildStatus> {
    let status: Text<BuildStatus> = sqlx::query_scalar(
        "SELECT status FROM builds WHERE id = $2 AND tenant_id IS NOT DISTINCT FROM $1 FOR UPDATE",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok(status.0)
}

pub async fn cancel(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> StoreResult<CancelOutcome> {
    let mut tx = pool.begin().await?;
    let status = lock(&mut tx, tenant_id, id).await?;
    let outcome = if Transition::CancelQueued.allows(status) {
        let g = status::guard(Transition::CancelQueued)?;
        let sql = format!(
            "UPDATE builds SET status = {to}, cancel_requested_at = now(), finished_at = now(),
                    error_message = 'cancelled before it started', lease_owner = NULL,
                    lease_expires_at = NULL, updated_at = now()
             WHERE id = $1 AND status IN ({from}) RETURNING {COLUMNS}",
            to = g.to,
            from = g.from,
        );
        CancelOutcome::Cancelled(sqlx::query_as(&sql).bind(id).fetch_one(&mut *tx).await?)
    } else if status == BuildStatus::Running {
        // No status change: the dispatcher holding it stops the execution
        // and records `Finish(Cancelled)`.
        let sql = format!(
            "UPDATE builds SET cancel_requested_at = COALESCE(cancel_requested_at, now()), updated_at = now()
             WHERE id = $1 RETURNING {COLUMNS}"
        );
        let build = sqlx::query_as(&sql).bind(id).fetch_one(&mut *tx).await?;
        notify(&mut tx, CHANNEL_BUILD_CANCEL, &id.to_string()).await?;
        CancelOutcome::Requested(build)
    } else {
        return Err(StoreError::State(format!(
            "the build is already {status}; only queued or running builds can be cancelled"
        )));
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Queue a failed, cancelled or timed-out build again as a new attempt. The
/// earlier attempts' executions, logs and artifacts stay; the attempt counter
/// goes on, and the automatic-requeue budget is renewed from this point
/// (`attempts_before_retry`, see [`attempts_before_retry`]).
pub async fn retry(pool: &PgPool, tenant_id: Uuid, id: Uuid) -> StoreResult<Build> {
    let mut tx = pool.begin().await?;
    let status = lock(&mut tx, tenant_id, id).await?;
    if !Transition::Retry.allows(status) {
        return Err(StoreError::State(format!(
            "the build is {status}; only failed, cancelled or timed-out builds can be retried"
        )));
    }
    let g = status::guard(Transition::Retry)?;
    let sql = format!(
        "UPDATE builds SET status = {to}, cancel_requested_at = NULL, error_message = NULL,
                started_at = NULL, finished_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
                not_before = now(), attempts_before_retry = attempts,
                updated_at = now()
         WHERE id = $1 AND status IN ({from}) RETURNING {COLUMNS}",
        to = g.to,
        from = g.from,
    );
    let build: Build = sqlx::query_as(&sql).bind(id).fetch_one(&mut *tx).await?;
    notify(&mut tx, CHANNEL_BUILD_QUEUED, &id.to_string()).await?;
    tx.commit().await?;
    Ok(build)
}

/// How many attempts the build had made when it was last retried by hand (0
/// if never): the automatic-requeue budget counts attempts after this one.
/// The dispatcher passes the tenant from the build's claimed row.
pub async fn attempts_before_retry(
    pool: &PgPool,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT attempts_before_retry FROM builds WHERE id = $2 AND tenant_id IS NOT DISTINCT FROM $1")
        .bind(tenant_id)
        .bind(id)
        .fetch_one(pool)
        .await
}

/// Builds in one non-terminal status of one method (and, for queued
/// builds, of one tenant): a row of [`active_counts`].
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ActiveCount {
    pub status: String,
    pub method: String,
    /// Set for queued builds only (queue depth per tenant).
    pub tenant_id: Option<Uuid>,
    pub count: i64,
}

/// Queued and running builds by status and method, queued ones also by
/// tenant: the metrics' one aggregate per scrape. Only non-terminal rows
/// are read (the partial indexes on `status`), never the build history.
pub async fn active_counts(pool: &PgPool) -> StoreResult<Vec<ActiveCount>> {
    Ok(sqlx::query_as(
        "SELECT status, method, \
                CASE WHEN status = 'queued' THEN tenant_id END AS tenant_id, \
                count(*) AS count \
         FROM builds WHERE status IN ('queued', 'running') \
         GROUP BY 1, 2, 3",
    )
    .fetch_all(pool)
    .await?)
}
