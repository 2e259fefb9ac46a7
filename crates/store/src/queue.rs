//! The build queue: claiming queued builds under a lease, lease renewal,
//! takeover of expired leases, requeue with backoff and finalization.
//!
//! Invariants kept here (the *decisions* — which executor, how long to back
//! off — are the caller's):
//! - a build moves to `running` together with its new execution row, in one
//!   transaction, so `builds.attempts` always equals its number of executions;
//! - every write on a running build is fenced by `lease_owner`, so a dispatcher
//!   that lost its lease can no longer change the build;
//! - every status write is a domain `Transition` (claim, reject, finish,
//!   requeue, cancel-queued), guarded by its source states (`crate::status`);
//! - claims are serialized by a transaction-level advisory lock so per-tenant
//!   and per-provider limits hold exactly across any number of dispatchers;
//!   a claim is one statement (`claim_queued_builds`, migration 0011), so the
//!   lock is held only while the server runs it, never across round trips.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use imagefactory_domain::{
    BuildStatus, ExecutorKind, InfrastructureType, Transition, UnknownVariant,
};
use sqlx::{FromRow, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::CHANNEL_BUILD_QUEUED;
use crate::executions::{EXECUTION_COLUMNS, ExecutionRow};
use crate::status;

/// The advisory lock key every claim serializes on ("ifclaim" in ASCII);
/// `claim_queued_builds` takes it, anything that must not interleave with a
/// claim may take it too.
pub const CLAIM_LOCK_KEY: i64 = 0x0069_6663_6c61_696d;

/// The facts executor selection looks at for a claimable build: its
/// infrastructure type and the provider it would run on (its own, or the
/// global Kubernetes default). Decisions are cached per distinct tuple.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClaimFacts {
    pub infrastructure_type: String,
    pub provider_type: Option<String>,
    pub provider_tekton_enabled: Option<bool>,
    pub provider_status: Option<String>,
}

impl ClaimFacts {
    /// The stored infrastructure type; an unknown value is an error (a row
    /// written by a newer version), never a default.
    pub fn infrastructure(&self) -> Result<InfrastructureType, UnknownVariant> {
        self.infrastructure_type.parse()
    }
}

/// What the caller decided for a facts tuple.
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

/// Claims queued builds with one statement per claim (the
/// `claim_queued_builds` function of migration 0011), remembering the
/// caller's executor decisions so that only a facts tuple it has not seen
/// before costs an extra round trip. One per dispatcher: its decisions
/// depend on that dispatcher's settings and executors.
#[derive(Debug, Default)]
pub struct Claimer {
    decisions: Mutex<HashMap<ClaimFacts, ClaimDecision>>,
}

/// Decisions as the claim function's parallel arrays.
#[derive(Default)]
struct DecisionArrays {
    infrastructure_type: Vec<String>,
    provider_type: Vec<Option<String>>,
    provider_tekton_enabled: Vec<Option<bool>>,
    provider_status: Vec<Option<String>>,
    executor: Vec<Option<&'static str>>,
    fail_message: Vec<Option<String>>,
}

/// One row of `claim_queued_builds` (see the migration for the outcomes).
#[derive(FromRow)]
struct ClaimRow {
    outcome: String,
    ord: Option<i64>,
    build_id: Option<Uuid>,
    tenant_id: Option<Uuid>,
    id: Option<Uuid>,
    attempt: Option<i32>,
    executor: Option<String>,
    provider_id: Option<Uuid>,
    cluster_namespace: Option<String>,
    pipeline_run_name: Option<String>,
    pipeline_run_uid: Option<String>,
    status: Option<String>,
    dispatcher_id: Option<String>,
    message: Option<String>,
    reference_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    age_ms: Option<i64>,
    max_attempts: Option<i32>,
    timeout_seconds: Option<i32>,
    infrastructure_type: Option<String>,
    provider_type: Option<String>,
    provider_tekton_enabled: Option<bool>,
    provider_status: Option<String>,
    offered: Option<i64>,
}

fn missing(column: &str, outcome: &str) -> sqlx::Error {
    sqlx::Error::Decode(format!("claim_queued_builds: {outcome} row without {column}").into())
}

impl ClaimRow {
    fn claimed(self) -> Result<(i64, ClaimedBuild), sqlx::Error> {
        let need = |c: &str| missing(c, "claimed");
        let build_id = self.build_id.ok_or_else(|| need("build_id"))?;
        let tenant_id = self.tenant_id.ok_or_else(|| need("tenant_id"))?;
        let execution = ExecutionRow {
            id: self.id.ok_or_else(|| need("id"))?,
            build_id,
            tenant_id,
            attempt: self.attempt.ok_or_else(|| need("attempt"))?,
            executor: self.executor.ok_or_else(|| need("executor"))?,
            provider_id: self.provider_id,
            cluster_namespace: self.cluster_namespace,
            pipeline_run_name: self.pipeline_run_name,
            pipeline_run_uid: self.pipeline_run_uid,
            status: self.status.ok_or_else(|| need("status"))?,
            dispatcher_id: self.dispatcher_id,
            message: self.message,
            reference_at: self.reference_at,
            started_at: self.started_at.ok_or_else(|| need("started_at"))?,
            finished_at: self.finished_at,
            age_ms: self.age_ms.ok_or_else(|| need("age_ms"))?,
        };
        Ok((
            self.ord.ok_or_else(|| need("ord"))?,
            ClaimedBuild {
                build_id,
                tenant_id,
                max_attempts: self.max_attempts.ok_or_else(|| need("max_attempts"))?,
                timeout_seconds: self
                    .timeout_seconds
                    .ok_or_else(|| need("timeout_seconds"))?,
                cancel_requested: false,
                execution,
            },
        ))
    }
}

/// What one call of the claim function returned.
enum Attempt {
    Done(ClaimBatch),
    /// Nothing was claimed: these facts need a decision first.
    Undecided(Vec<ClaimFacts>),
}

impl Claimer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Claim up to `req.limit` queued builds, highest priority then oldest
    /// first, honouring `not_before`, tenant and provider limits. `decide`
    /// picks the executor (or fails the build) per facts tuple; it is called
    /// once per tuple this claimer has not seen, never per build.
    pub async fn claim(
        &self,
        pool: &PgPool,
        req: ClaimRequest<'_>,
        decide: impl Fn(&ClaimFacts) -> ClaimDecision,
    ) -> Result<ClaimBatch, sqlx::Error> {
        if req.limit <= 0 {
            return Ok(ClaimBatch::default());
        }
        // Every round but the last adds a decision, and there are finitely
        // many tuples in one result; the bound only turns a bug (a tuple the
        // function never matches) into an error instead of a loop.
        for _ in 0..4 {
            match self.attempt(pool, req).await? {
                Attempt::Done(batch) => return Ok(batch),
                Attempt::Undecided(facts) => {
                    let mut known = self.decisions.lock().unwrap();
                    for f in facts {
                        if known.contains_key(&f) {
                            return Err(sqlx::Error::Protocol(format!(
                                "claim_queued_builds did not match the decision for {f:?}"
                            )));
                        }
                        let decision = decide(&f);
                        known.insert(f, decision);
                    }
                }
            }
        }
        Err(sqlx::Error::Protocol(
            "claim_queued_builds kept asking for new decisions".to_owned(),
        ))
    }

    fn arrays(&self) -> DecisionArrays {
        let known = self.decisions.lock().unwrap();
        let mut a = DecisionArrays::default();
        for (facts, decision) in known.iter() {
            a.infrastructure_type
                .push(facts.infrastructure_type.clone());
            a.provider_type.push(facts.provider_type.clone());
            a.provider_tekton_enabled
                .push(facts.provider_tekton_enabled);
            a.provider_status.push(facts.provider_status.clone());
            match decision {
                ClaimDecision::Run(kind) => {
                    a.executor.push(Some(kind.as_str()));
                    a.fail_message.push(None);
                }
                ClaimDecision::Fail(message) => {
                    a.executor.push(None);
                    a.fail_message.push(Some(message.clone()));
                }
            }
        }
        a
    }

    async fn attempt(&self, pool: &PgPool, req: ClaimRequest<'_>) -> Result<Attempt, sqlx::Error> {
        let d = self.arrays();
        let limit = i32::try_from(req.limit).unwrap_or(i32::MAX);
        // Time-ordered ids, handed out in claim order.
        let execution_ids: Vec<Uuid> = (0..limit).map(|_| Uuid::now_v7()).collect();
        let rows: Vec<ClaimRow> = sqlx::query_as(
            "SELECT * FROM claim_queued_builds($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(req.owner)
        .bind(req.lease.as_secs_f64())
        .bind(limit)
        .bind(&execution_ids)
        .bind(&d.infrastructure_type)
        .bind(&d.provider_type)
        .bind(&d.provider_tekton_enabled)
        .bind(&d.provider_status)
        .bind(&d.executor)
        .bind(&d.fail_message)
        // The state machine's moves for a claim and a claim-time failure.
        .bind(status::sources(Transition::Claim))
        .bind(Transition::Claim.to().as_str())
        .bind(status::sources(Transition::Reject))
        .bind(Transition::Reject.to().as_str())
        .fetch_all(pool)
        .await?;

        let mut batch = ClaimBatch::default();
        let mut claimed = Vec::new();
        let mut failed = Vec::new();
        let mut undecided = Vec::new();
        for row in rows {
            match row.outcome.as_str() {
                "claimed" => claimed.push(row.claimed()?),
                "failed" => {
                    let need = |c: &str| missing(c, "failed");
                    failed.push((
                        row.ord.ok_or_else(|| need("ord"))?,
                        row.build_id.ok_or_else(|| need("build_id"))?,
                        row.message.ok_or_else(|| need("message"))?,
                    ));
                }
                "undecided" => undecided.push(ClaimFacts {
                    infrastructure_type: row
                        .infrastructure_type
                        .ok_or_else(|| missing("infrastructure_type", "undecided"))?,
                    provider_type: row.provider_type,
                    provider_tekton_enabled: row.provider_tekton_enabled,
                    provider_status: row.provider_status,
                }),
                "offered" => {
                    batch.offered =
                        row.offered.ok_or_else(|| missing("offered", "offered"))? as usize
                }
                other => {
                    return Err(sqlx::Error::Protocol(format!(
                        "claim_queued_builds returned an unknown outcome {other:?}"
                    )));
                }
            }
        }
        if !undecided.is_empty() {
            return Ok(Attempt::Undecided(undecided));
        }
        // Keep claim order (priority, age) for the caller.
        claimed.sort_by_key(|(ord, _)| *ord);
        failed.sort_by_key(|(ord, _, _)| *ord);
        batch.claimed = claimed.into_iter().map(|(_, c)| c).collect();
        batch.failed = failed.into_iter().map(|(_, id, m)| (id, m)).collect();
        Ok(Attempt::Done(batch))
    }
}

/// [`Claimer::claim`] without remembered decisions: each call decides the
/// facts of its candidates afresh (one extra round trip). For one-off
/// claims and tests; a dispatcher keeps a [`Claimer`].
pub async fn claim(
    pool: &PgPool,
    req: ClaimRequest<'_>,
    decide: impl Fn(&ClaimFacts) -> ClaimDecision,
) -> Result<ClaimBatch, sqlx::Error> {
    Claimer::new().claim(pool, req, decide).await
}

/// Take over running builds whose lease expired (their dispatcher died or
/// handed them over). Returns each with its current execution, which the
/// caller re-attaches to (or starts, if no reference was ever persisted).
///
/// `following` are the builds the caller still follows in memory: their
/// leases lapsed only because a heartbeat came late (the next one renews
/// them), so they are not taken over again by their own holder — that would
/// follow one execution twice. Its own expired leases on builds it no longer
/// follows are taken over like anyone's.
pub async fn take_over_expired(
    pool: &PgPool,
    req: ClaimRequest<'_>,
    following: &[Uuid],
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
               AND NOT (lease_owner = $1 AND id = ANY($4)) \
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
    .bind(following)
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

/// Payload of the `build_queued` notification sent after submits
/// ([`wake_dispatchers`]): builds were queued, look for them.
pub const QUEUED_PAYLOAD: &str = "queued";

/// `NOTIFY build_queued` in a transaction of its own, after the builds it
/// announces were committed. Asynchronous commit: a lost notification costs
/// one poll interval, and the commit does not wait for a WAL flush while it
/// holds PostgreSQL's database-wide notify lock.
pub async fn wake_dispatchers(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, $2)")
        .bind(CHANNEL_BUILD_QUEUED)
        .bind(QUEUED_PAYLOAD)
        .execute(pool)
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
    /// after `delay`; the execution row keeps `message`, and `counted`: false
    /// when the attempt never reached its cluster, so it does not use up the
    /// build's requeue budget (see [`round_so_far`]).
    Requeue {
        delay: Duration,
        message: String,
        counted: bool,
    },
}

/// The attempts of a build's current round (since its last manual retry)
/// as the requeue decision for attempt `attempt` needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RoundSoFar {
    /// Earlier attempts of the round that count toward the requeue budget.
    pub counted_before: i32,
    /// Earlier attempts in a row, right before this one, that were not
    /// counted (they never reached their cluster).
    pub uncounted_before: i32,
    /// Since the first of those started (or this attempt, if there are
    /// none), by the database's clock.
    pub uncounted_for: Duration,
}

/// [`RoundSoFar`] of `attempt` of build `build_id`. The dispatcher passes
/// the tenant from the build's claimed row.
pub async fn round_so_far(
    pool: &PgPool,
    tenant_id: Uuid,
    build_id: Uuid,
    attempt: i32,
) -> Result<RoundSoFar, sqlx::Error> {
    let (counted_before, uncounted_before, uncounted_ms): (i32, i32, Option<i64>) = sqlx::query_as(
        "WITH round AS ( \
                 SELECT e.attempt, e.counted, e.started_at FROM build_executions e \
                 JOIN builds b ON b.id = e.build_id \
                 WHERE e.build_id = $2 AND e.tenant_id = $1 AND b.tenant_id = $1 \
                   AND e.attempt > b.attempts_before_retry AND e.attempt <= $3 \
             ), streak AS ( \
                 SELECT attempt, started_at FROM round WHERE attempt > COALESCE( \
                     (SELECT max(attempt) FROM round WHERE counted AND attempt < $3), 0) \
             ) \
             SELECT (SELECT count(*) FROM round WHERE counted AND attempt < $3)::int, \
                    (SELECT count(*) FROM streak WHERE attempt < $3)::int, \
                    (EXTRACT(EPOCH FROM (now() - (SELECT min(started_at) FROM streak))) \
                     * 1000)::bigint",
    )
    .bind(tenant_id)
    .bind(build_id)
    .bind(attempt)
    .fetch_one(pool)
    .await?;
    Ok(RoundSoFar {
        counted_before,
        uncounted_before,
        uncounted_for: Duration::from_millis(uncounted_ms.unwrap_or(0).max(0) as u64),
    })
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
    let (transition, build_message, exec_status, exec_message, delay, counted) = match finish {
        Finish::Terminal { status, message } => (
            Transition::Finish(*status),
            match status {
                BuildStatus::Succeeded => None,
                _ => message.as_deref(),
            },
            status.as_str(),
            message.as_deref(),
            0.0,
            true,
        ),
        Finish::Requeue {
            delay,
            message,
            counted,
        } => (
            Transition::Requeue,
            Some(message.as_str()),
            "failed",
            Some(message.as_str()),
            delay.as_secs_f64(),
            *counted,
        ),
    };
    let requeue = transition == Transition::Requeue;
    let g = status::guard(transition)?;
    let sql = format!(
        "WITH b AS ( \
             UPDATE builds SET status = {to}, error_message = $3, \
                    finished_at = CASE WHEN $4 THEN finished_at ELSE now() END, \
                    not_before = CASE WHEN $4 THEN now() + make_interval(secs => $7) ELSE not_before END, \
                    lease_owner = NULL, lease_expires_at = NULL, updated_at = now() \
             WHERE id = $1 AND lease_owner = $2 AND status IN ({from}) \
             RETURNING id \
         ), e AS ( \
             UPDATE build_executions SET status = $5, message = $6, finished_at = now(), \
                    counted = $10 \
             WHERE id = $8 AND status = 'running' AND EXISTS (SELECT 1 FROM b) \
         ), n AS ( \
             SELECT pg_notify($9, b.id::text) FROM b WHERE $4 AND $7 = 0 \
         ) \
         SELECT b.id FROM b LEFT JOIN n ON true",
        to = g.to,
        from = g.from,
    );
    let done: Option<Uuid> = sqlx::query_scalar(&sql)
        .bind(build_id)
        .bind(owner)
        .bind(build_message)
        .bind(requeue)
        .bind(exec_status)
        .bind(exec_message)
        .bind(delay)
        .bind(execution_id)
        .bind(CHANNEL_BUILD_QUEUED)
        .bind(counted)
        .fetch_optional(pool)
        .await?;
    Ok(done.is_some())
}

/// Cancel queued builds whose cancellation was requested (the API may also
/// cancel them directly). Returns the ids cancelled.
pub async fn cancel_requested_queued(pool: &PgPool) -> Result<Vec<Uuid>, sqlx::Error> {
    let g = status::guard(Transition::CancelQueued)?;
    sqlx::query_scalar(&format!(
        "UPDATE builds SET status = {to}, finished_at = now(), updated_at = now(), \
         error_message = COALESCE(error_message, 'cancelled while queued') \
         WHERE id IN (SELECT id FROM builds WHERE status IN ({from}) \
                      AND cancel_requested_at IS NOT NULL FOR UPDATE SKIP LOCKED) \
         RETURNING id",
        to = g.to,
        from = g.from,
    ))
    .fetch_all(pool)
    .await
}
