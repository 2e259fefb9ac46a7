//! The build queue: claiming queued builds under a lease, lease renewal,
//! takeover of expired leases, requeue with backoff and finalization.
//!
//! Invariants kept here (the *decisions* — which executor, how long to back
//! off — are the caller's):
//! - a build moves to `running` together with its new execution row, in one
//!   transaction, so `builds.attempts` always equals its number of executions;
//! - every write on a running build is fenced by `lease_owner`, so a dispatcher
//!   that lost its lease can no longer change the build;
//! - claims are serialized by a transaction-level advisory lock so per-tenant
//!   and per-provider limits hold exactly across any number of dispatchers
//!   (a claim transaction takes a few milliseconds and claims a batch).

use std::collections::HashMap;
use std::time::Duration;

use imagefactory_domain::{BuildStatus, ExecutorKind, InfrastructureType};
use sqlx::{FromRow, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::CHANNEL_BUILD_QUEUED;
use crate::executions::{EXECUTION_COLUMNS, ExecutionRow};

/// Advisory lock key serializing claim transactions ("ifclaim" in ASCII).
const CLAIM_LOCK_KEY: i64 = 0x0069_6663_6c61_696d;

/// A queued build the claim query found within every limit, with the
/// provider it would run on (its own, or the global Kubernetes default).
#[derive(Debug, Clone, FromRow)]
pub struct ClaimCandidate {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub infrastructure_type: String,
    pub provider_id: Option<Uuid>,
    pub provider_type: Option<String>,
    pub provider_tekton_enabled: Option<bool>,
    pub provider_status: Option<String>,
    /// Free slots of the build's own provider, `None` when it has no limit.
    provider_free: Option<i64>,
}

impl ClaimCandidate {
    pub fn infrastructure(&self) -> Option<InfrastructureType> {
        self.infrastructure_type.parse().ok()
    }
}

/// What the caller decided for a candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimDecision {
    /// Start a new attempt with this executor.
    Run(ExecutorKind),
    /// Fail the build at once (e.g. misconfiguration); the message says why.
    Fail(String),
}

/// A build this dispatcher now holds, with its new execution.
#[derive(Debug, Clone)]
pub struct ClaimedBuild {
    pub build_id: Uuid,
    pub tenant_id: Uuid,
    pub max_attempts: i32,
    pub timeout_seconds: i32,
    pub cancel_requested: bool,
    pub execution: ExecutionRow,
}

#[derive(Debug, Default)]
pub struct ClaimBatch {
    pub claimed: Vec<ClaimedBuild>,
    /// Builds failed at claim time, with the message stored on them.
    pub failed: Vec<(Uuid, String)>,
    /// How many candidates the query offered (a full batch means: claim again).
    pub offered: usize,
}

#[derive(Debug, Clone, Copy)]
pub struct ClaimRequest<'a> {
    pub owner: &'a str,
    pub lease: Duration,
    /// At most this many builds.
    pub limit: i64,
}

/// Claim up to `req.limit` queued builds, highest priority then oldest first,
/// honouring `not_before`, tenant and provider limits. `decide` picks the
/// executor (or fails the build) for each candidate.
pub async fn claim(
    pool: &PgPool,
    req: ClaimRequest<'_>,
    decide: impl Fn(&ClaimCandidate) -> ClaimDecision,
) -> Result<ClaimBatch, sqlx::Error> {
    if req.limit <= 0 {
        return Ok(ClaimBatch::default());
    }
    // BEGIN and the lock in one round trip; the lock comes before the
    // candidate query so that query's snapshot sees every earlier claim.
    let mut tx = pool
        .begin_with(format!(
            "BEGIN; SELECT pg_advisory_xact_lock({CLAIM_LOCK_KEY})"
        ))
        .await?;

    let candidates = candidates(&mut tx, req.limit).await?;
    let offered = candidates.len();
    if candidates.is_empty() {
        tx.commit().await?;
        return Ok(ClaimBatch::default());
    }

    // The query gives each tenant at most its free slots; provider slots are
    // shared across tenants, so they are counted down here in claim order.
    let mut provider_free: HashMap<Uuid, i64> = HashMap::new();
    let mut run: Vec<(&ClaimCandidate, ExecutorKind)> = Vec::new();
    let mut fail: Vec<(Uuid, String)> = Vec::new();
    for c in &candidates {
        if let (Some(pid), Some(free)) = (c.provider_id, c.provider_free) {
            let left = provider_free.entry(pid).or_insert(free);
            if *left <= 0 {
                continue;
            }
            *left -= 1;
        }
        match decide(c) {
            ClaimDecision::Run(kind) => run.push((c, kind)),
            ClaimDecision::Fail(message) => fail.push((c.id, message)),
        }
    }

    let claimed = start_attempts(&mut tx, req, &run).await?;
    let failed = if fail.is_empty() {
        Vec::new()
    } else {
        let (ids, messages): (Vec<Uuid>, Vec<String>) = fail.into_iter().unzip();
        // Rows another transaction holds (e.g. an API cancel in progress)
        // are skipped, not waited for.
        sqlx::query_as(
            "UPDATE builds b SET status = 'failed', error_message = f.message, \
             finished_at = now(), updated_at = now() \
             FROM UNNEST($1::uuid[], $2::text[]) AS f(id, message) \
             WHERE b.id = f.id AND b.id IN (SELECT id FROM builds WHERE id = ANY($1) \
                 AND status = 'queued' AND cancel_requested_at IS NULL FOR UPDATE SKIP LOCKED) \
             RETURNING b.id, f.message",
        )
        .bind(&ids)
        .bind(&messages)
        .fetch_all(&mut *tx)
        .await?
    };
    tx.commit().await?;
    Ok(ClaimBatch {
        claimed,
        failed,
        offered,
    })
}

async fn candidates(
    tx: &mut Transaction<'_, Postgres>,
    limit: i64,
) -> Result<Vec<ClaimCandidate>, sqlx::Error> {
    // For each tenant with free capacity, its first `free` claimable builds
    // (index builds_tenant_queue_idx), then the best `limit` of those overall.
    // Builds of providers at their limit are skipped inside the tenant walk so
    // they do not shadow the tenant's other builds.
    sqlx::query_as::<_, ClaimCandidate>(
        r#"
        WITH tenant_free AS (
            -- Running builds are counted only up to the limit (index-only
            -- scans), and only for tenants with something claimable.
            SELECT t.id AS tenant_id,
                   t.max_concurrent_builds - (
                       SELECT count(*) FROM (
                           SELECT 1 FROM builds r WHERE r.tenant_id = t.id AND r.status = 'running'
                           LIMIT t.max_concurrent_builds) x) AS free
            FROM tenants t
            WHERE EXISTS (SELECT 1 FROM builds q WHERE q.tenant_id = t.id AND q.status = 'queued'
                          AND q.not_before <= now() AND q.cancel_requested_at IS NULL)
        ), provider_free AS (
            SELECT p.id,
                   p.max_concurrent_builds - (
                       SELECT count(*) FROM (
                           SELECT 1 FROM builds r WHERE r.infrastructure_provider_id = p.id
                           AND r.status = 'running' LIMIT p.max_concurrent_builds) x) AS free
            FROM infrastructure_providers p
            WHERE p.max_concurrent_builds IS NOT NULL
        )
        SELECT c.id, c.tenant_id, c.infrastructure_type,
               p.id AS provider_id, p.provider_type, p.tekton_enabled AS provider_tekton_enabled,
               p.status AS provider_status, pf.free AS provider_free
        FROM tenant_free f
        JOIN LATERAL (
            SELECT b.id, b.tenant_id, b.infrastructure_type, b.infrastructure_provider_id,
                   b.priority, b.created_at
            FROM builds b
            WHERE b.tenant_id = f.tenant_id AND b.status = 'queued' AND b.not_before <= now()
              AND b.cancel_requested_at IS NULL
              AND (b.infrastructure_provider_id IS NULL OR b.infrastructure_provider_id NOT IN
                   (SELECT id FROM provider_free WHERE free <= 0))
            ORDER BY b.priority DESC, b.created_at, b.id
            LIMIT GREATEST(LEAST(f.free, $1), 0)
        ) c ON true
        LEFT JOIN LATERAL (
            SELECT ip.id, ip.provider_type, ip.tekton_enabled, ip.status
            FROM infrastructure_providers ip
            WHERE ip.id = c.infrastructure_provider_id
               OR (c.infrastructure_provider_id IS NULL AND c.infrastructure_type = 'kubernetes'
                   AND ip.is_global AND ip.provider_type = 'kubernetes' AND ip.status = 'active')
            ORDER BY ip.created_at, ip.id
            LIMIT 1
        ) p ON true
        LEFT JOIN provider_free pf ON pf.id = c.infrastructure_provider_id
        ORDER BY c.priority DESC, c.created_at, c.id
        LIMIT $1
        "#,
    )
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
}

#[derive(FromRow)]
struct StartedRow {
    #[sqlx(flatten)]
    execution: ExecutionRow,
    max_attempts: i32,
    timeout_seconds: i32,
}

/// Lock the chosen builds (skipping rows another transaction holds), move
/// them to running under our lease and create their execution rows: one
/// statement, so claiming costs few round trips.
async fn start_attempts(
    tx: &mut Transaction<'_, Postgres>,
    req: ClaimRequest<'_>,
    run: &[(&ClaimCandidate, ExecutorKind)],
) -> Result<Vec<ClaimedBuild>, sqlx::Error> {
    if run.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<Uuid> = run.iter().map(|(c, _)| c.id).collect();
    let exec_ids: Vec<Uuid> = run.iter().map(|_| Uuid::now_v7()).collect();
    let kinds: Vec<&str> = run.iter().map(|(_, k)| k.as_str()).collect();
    let providers: Vec<Option<Uuid>> = run.iter().map(|(c, _)| c.provider_id).collect();
    let rows: Vec<StartedRow> = sqlx::query_as(&format!(
        "WITH locked AS ( \
             SELECT id FROM builds WHERE id = ANY($1) AND status = 'queued' \
             AND cancel_requested_at IS NULL FOR UPDATE SKIP LOCKED \
         ), started AS ( \
             UPDATE builds b SET status = 'running', attempts = b.attempts + 1, lease_owner = $2, \
                    lease_expires_at = now() + make_interval(secs => $3), \
                    started_at = COALESCE(b.started_at, now()), finished_at = NULL, updated_at = now() \
             FROM locked WHERE b.id = locked.id \
             RETURNING b.id, b.tenant_id, b.attempts, b.max_attempts, b.timeout_seconds \
         ), plan AS ( \
             SELECT * FROM UNNEST($1::uuid[], $4::uuid[], $5::text[], $6::uuid[]) \
                 AS p(build_id, execution_id, executor, provider_id) \
         ), inserted AS ( \
             INSERT INTO build_executions (id, build_id, tenant_id, attempt, executor, provider_id, dispatcher_id) \
             SELECT p.execution_id, s.id, s.tenant_id, s.attempts, p.executor, p.provider_id, $2 \
             FROM started s JOIN plan p ON p.build_id = s.id \
             RETURNING {EXECUTION_COLUMNS} \
         ) \
         SELECT i.*, s.max_attempts, s.timeout_seconds FROM inserted i JOIN started s ON s.id = i.build_id"
    ))
    .bind(&ids)
    .bind(req.owner)
    .bind(req.lease.as_secs_f64())
    .bind(&exec_ids)
    .bind(&kinds)
    .bind(&providers)
    .fetch_all(&mut **tx)
    .await?;

    let order: HashMap<Uuid, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
    let mut out: Vec<ClaimedBuild> = rows
        .into_iter()
        .map(|r| ClaimedBuild {
            build_id: r.execution.build_id,
            tenant_id: r.execution.tenant_id,
            max_attempts: r.max_attempts,
            timeout_seconds: r.timeout_seconds,
            cancel_requested: false,
            execution: r.execution,
        })
        .collect();
    // Keep claim order (priority, age) for the caller.
    out.sort_by_key(|c| order[&c.build_id]);
    Ok(out)
}

/// Take over running builds whose lease expired (their dispatcher died or
/// handed them over). Returns each with its current execution, which the
/// caller re-attaches to (or starts, if no reference was ever persisted).
pub async fn take_over_expired(
    pool: &PgPool,
    req: ClaimRequest<'_>,
) -> Result<Vec<ClaimedBuild>, sqlx::Error> {
    if req.limit <= 0 {
        return Ok(Vec::new());
    }
    #[derive(FromRow)]
    struct Row {
        #[sqlx(flatten)]
        execution: ExecutionRow,
        max_attempts: i32,
        timeout_seconds: i32,
        cancel_requested: bool,
    }
    // A running build always has its current execution (both are written in
    // the claim transaction), so the join loses nothing.
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "WITH expired AS ( \
             SELECT id FROM builds WHERE status = 'running' AND lease_expires_at <= now() \
             ORDER BY lease_expires_at LIMIT $3 FOR UPDATE SKIP LOCKED \
         ), taken AS ( \
             UPDATE builds b SET lease_owner = $1, lease_expires_at = now() + make_interval(secs => $2), \
                    updated_at = now() \
             FROM expired WHERE b.id = expired.id \
             RETURNING b.id AS taken_id, b.attempts, b.max_attempts, b.timeout_seconds, \
                       b.cancel_requested_at IS NOT NULL AS cancel_requested \
         ) \
         SELECT {EXECUTION_COLUMNS}, t.max_attempts, t.timeout_seconds, t.cancel_requested \
         FROM taken t JOIN build_executions e ON e.build_id = t.taken_id AND e.attempt = t.attempts"
    ))
    .bind(req.owner)
    .bind(req.lease.as_secs_f64())
    .bind(req.limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ClaimedBuild {
            build_id: r.execution.build_id,
            tenant_id: r.execution.tenant_id,
            max_attempts: r.max_attempts,
            timeout_seconds: r.timeout_seconds,
            cancel_requested: r.cancel_requested,
            execution: r.execution,
        })
        .collect())
}

/// A held build after lease renewal: whether cancellation was requested since.
#[derive(Debug, Clone, FromRow)]
pub struct RenewedLease {
    pub id: Uuid,
    pub cancel_requested: bool,
}

/// Extend the leases `owner` still holds among `ids`. Builds missing from the
/// result are no longer ours (lease expired and taken over, or finished).
pub async fn renew_leases(
    pool: &PgPool,
    owner: &str,
    ids: &[Uuid],
    lease: Duration,
) -> Result<Vec<RenewedLease>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "UPDATE builds SET lease_expires_at = now() + make_interval(secs => $3) \
         WHERE id = ANY($1) AND lease_owner = $2 AND status = 'running' \
         RETURNING id, cancel_requested_at IS NOT NULL AS cancel_requested",
    )
    .bind(ids)
    .bind(owner)
    .bind(lease.as_secs_f64())
    .fetch_all(pool)
    .await
}

/// Give up leases at once (graceful shutdown): the builds stay `running` and
/// another dispatcher re-attaches to their executions immediately. Wakes
/// the other dispatchers. Returns the released build ids.
pub async fn release_leases(
    pool: &PgPool,
    owner: &str,
    ids: Option<&[Uuid]>,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let released: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE builds SET lease_owner = NULL, lease_expires_at = now(), updated_at = now() \
         WHERE lease_owner = $1 AND status = 'running' AND ($2::uuid[] IS NULL OR id = ANY($2)) \
         RETURNING id",
    )
    .bind(owner)
    .bind(ids)
    .fetch_all(&mut *tx)
    .await?;
    if !released.is_empty() {
        notify_queued(&mut tx, RELEASED_PAYLOAD).await?;
    }
    tx.commit().await?;
    Ok(released)
}

/// Payload of the `build_queued` notification sent when leases are released:
/// dispatchers should look for leases to take over right away.
pub const RELEASED_PAYLOAD: &str = "released";

async fn notify_queued(
    tx: &mut Transaction<'_, Postgres>,
    payload: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL_BUILD_QUEUED)
        .bind(payload)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// How an attempt ends for the queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// The build reaches a terminal status; `message` goes to the execution
    /// row and (unless success) to the build's `error_message`.
    Terminal {
        status: BuildStatus,
        message: Option<String>,
    },
    /// The attempt failed transiently: the build is queued again, claimable
    /// after `delay`; the execution row keeps `message`.
    Requeue { delay: Duration, message: String },
}

/// Record the end of an attempt: execution row and build together, fenced by
/// the lease. Returns false (and changes nothing) if `owner` no longer holds
/// the build.
pub async fn finish(
    pool: &PgPool,
    owner: &str,
    build_id: Uuid,
    execution_id: Uuid,
    finish: &Finish,
) -> Result<bool, sqlx::Error> {
    // One statement: the build update is fenced by the lease, and the
    // execution row changes only if it did (the CTE yields no row otherwise).
    let (build_status, build_message, exec_status, exec_message, delay) = match finish {
        Finish::Terminal { status, message } => (
            status.as_str(),
            match status {
                BuildStatus::Succeeded => None,
                _ => message.as_deref(),
            },
            status.as_str(),
            message.as_deref(),
            0.0,
        ),
        Finish::Requeue { delay, message } => (
            "queued",
            Some(message.as_str()),
            "failed",
            Some(message.as_str()),
            delay.as_secs_f64(),
        ),
    };
    let done: Option<Uuid> = sqlx::query_scalar(
        "WITH b AS ( \
             UPDATE builds SET status = $3, error_message = $4, \
                    finished_at = CASE WHEN $3 = 'queued' THEN finished_at ELSE now() END, \
                    not_before = CASE WHEN $3 = 'queued' THEN now() + make_interval(secs => $7) ELSE not_before END, \
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = now() \
             WHERE id = $1 AND lease_owner = $2 AND status = 'running' \
             RETURNING id \
         ), e AS ( \
             UPDATE build_executions SET status = $5, message = $6, finished_at = now() \
             WHERE id = $8 AND status = 'running' AND EXISTS (SELECT 1 FROM b) \
         ), n AS ( \
             SELECT pg_notify($9, b.id::text) FROM b WHERE $3 = 'queued' AND $7 = 0 \
         ) \
         SELECT b.id FROM b LEFT JOIN n ON true",
    )
    .bind(build_id)
    .bind(owner)
    .bind(build_status)
    .bind(build_message)
    .bind(exec_status)
    .bind(exec_message)
    .bind(delay)
    .bind(execution_id)
    .bind(CHANNEL_BUILD_QUEUED)
    .fetch_optional(pool)
    .await?;
    Ok(done.is_some())
}

/// Cancel queued builds whose cancellation was requested (the API may also
/// cancel them directly). Returns the ids cancelled.
pub async fn cancel_requested_queued(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE builds SET status = 'cancelled', finished_at = now(), updated_at = now(), \
         error_message = COALESCE(error_message, 'cancelled while queued') \
         WHERE id IN (SELECT id FROM builds WHERE status = 'queued' \
                      AND cancel_requested_at IS NOT NULL FOR UPDATE SKIP LOCKED) \
         RETURNING id",
    )
    .fetch_all(pool)
    .await
}
