//! A scripted executor for tests and the benchmark.
//!
//! Its "external work" is a row in `test_executor_work` (created by
//! [`TestExecutor::install`], not a migration: it is test-only), so it
//! survives a dispatcher crash: `reattach` finds the row and waits for the
//! remaining time, as a re-attached Tekton executor would resume watching its
//! PipelineRun. The row is written in the same statement as the execution's
//! reference (and the "started" log line), so "work exists" and "reference
//! persisted" are one fact and a second `start` of the same attempt is always
//! a dispatcher bug — counted in `start_calls`, which tests require to be
//! exactly 1. Starts that arrive together (a claimed batch) are written by
//! one statement and one commit ([`Coalescer`]); each returns after it.
//!
//! The script comes from the build's config metadata, key `test`:
//! `{"duration_ms": 200, "outcome": "succeeded" | "failed", "message": "...",
//!   "transient_attempts": 2, "unreachable_attempts": 0, "ignore_stop": false}`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use imagefactory_domain::ExecutorKind;
use imagefactory_exec::{
    Artifact, ArtifactKind, ExecutionContext, ExecutionRef, ExecutionSink, Executor, LogLine,
    Outcome, StopReason, StopSignal,
};
use imagefactory_store::coalesce::{Batch, Coalescer};
use imagefactory_store::error::StoreResult;
use serde::Deserialize;
use sqlx::PgPool;
use uuid::Uuid;

/// What a build asks the test executor to do.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestScript {
    pub duration_ms: u64,
    /// `succeeded` or `failed` (a permanent failure).
    pub outcome: String,
    pub message: Option<String>,
    /// The first this many attempts fail transiently before creating work.
    pub transient_attempts: i32,
    /// The next this many attempts end `Unreachable` (their infrastructure
    /// could not be reached; nothing created).
    pub unreachable_attempts: i32,
    /// Ignore stop signals (an executor that misses a timeout or cancel).
    pub ignore_stop: bool,
}

impl Default for TestScript {
    fn default() -> Self {
        Self {
            duration_ms: 0,
            outcome: "succeeded".to_owned(),
            message: None,
            transient_attempts: 0,
            unreachable_attempts: 0,
            ignore_stop: false,
        }
    }
}

impl TestScript {
    /// Read the script from a build config's metadata; absent means defaults.
    pub fn from_metadata(
        metadata: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self, String> {
        match metadata.get("test") {
            None => Ok(Self::default()),
            Some(v) => {
                let script: Self = serde_json::from_value(v.clone())
                    .map_err(|e| format!("invalid test script: {e}"))?;
                if script.outcome != "succeeded" && script.outcome != "failed" {
                    return Err(format!(
                        "invalid test script: outcome {:?} (expected succeeded or failed)",
                        script.outcome
                    ));
                }
                Ok(script)
            }
        }
    }

    pub fn to_metadata(&self) -> serde_json::Value {
        serde_json::json!({ "test": {
            "duration_ms": self.duration_ms,
            "outcome": self.outcome,
            "message": self.message,
            "transient_attempts": self.transient_attempts,
            "unreachable_attempts": self.unreachable_attempts,
            "ignore_stop": self.ignore_stop,
        }})
    }
}

/// Counters of one execution's work, as tests read them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WorkRecord {
    pub execution_id: Uuid,
    pub build_id: Uuid,
    pub attempt: i32,
    pub start_calls: i32,
    pub reattach_calls: i32,
    pub completions: i32,
    pub stopped: Option<String>,
}

#[derive(Clone)]
pub struct TestExecutor {
    pool: PgPool,
    starts: Coalescer<Starts>,
    /// The kind it reports (`Test` unless set): a test giving the Tekton and
    /// local slots executors of their own kinds sees, in the execution rows,
    /// which slot each build was given.
    kind: ExecutorKind,
}

/// What one `start` writes: its work row, reference and "started" line.
struct StartWrite {
    execution_id: Uuid,
    build_id: Uuid,
    attempt: i32,
    duration_secs: f64,
    outcome: String,
    message: Option<String>,
    ignore_stop: bool,
    name: Option<String>,
    provider_id: Option<Uuid>,
}

/// Most starts written by one statement.
const START_BATCH: usize = 256;

/// The starts that arrive together, written by one statement (a single
/// writer); [`write_starts`] answers each on its own.
struct Starts {
    pool: PgPool,
}

impl Batch for Starts {
    type Request = StartWrite;
    type Answer = Result<i64, String>;
    const IDEMPOTENT: bool = true;

    async fn together(&self, batch: &[StartWrite]) -> StoreResult<Vec<Self::Answer>> {
        Ok(write_starts(&self.pool, batch).await)
    }

    async fn alone(&self, start: StartWrite) -> StoreResult<Self::Answer> {
        let mut answers = write_starts(&self.pool, std::slice::from_ref(&start)).await;
        Ok(answers
            .pop()
            .unwrap_or_else(|| Err("start not written".to_owned())))
    }
}

/// Write starts; answers each with its work's remaining milliseconds. An
/// execution started twice in one batch is written in a later round, so its
/// second start counts (`start_calls`) as if the two had come one by one.
async fn write_starts(pool: &PgPool, batch: &[StartWrite]) -> Vec<Result<i64, String>> {
    let mut results: Vec<Option<Result<i64, String>>> = batch.iter().map(|_| None).collect();
    let mut left: Vec<usize> = (0..batch.len()).collect();
    while !left.is_empty() {
        let mut seen = std::collections::HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) = left
            .into_iter()
            .partition(|&i| seen.insert(batch[i].execution_id));
        left = later;
        let writes: Vec<&StartWrite> = round.iter().map(|&i| &batch[i]).collect();
        match insert_starts(pool, &writes).await {
            Ok(remaining) => {
                for &i in &round {
                    results[i] = Some(
                        remaining
                            .get(&batch[i].execution_id)
                            .copied()
                            .ok_or_else(|| "test work was not created".to_owned()),
                    );
                }
            }
            Err(e) if round.len() == 1 => results[round[0]] = Some(Err(e.to_string())),
            // One bad start must not fail the others: one by one.
            Err(_) => {
                for &i in &round {
                    results[i] = Some(
                        insert_starts(pool, &[&batch[i]])
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| {
                                r.get(&batch[i].execution_id)
                                    .copied()
                                    .ok_or_else(|| "test work was not created".to_owned())
                            }),
                    );
                }
            }
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err("start not written".to_owned())))
        .collect()
}

/// One statement: work rows (a repeated start counts in `start_calls`),
/// references and "started" lines. `writes` has distinct execution ids.
async fn insert_starts(
    pool: &PgPool,
    writes: &[&StartWrite],
) -> Result<std::collections::HashMap<Uuid, i64>, sqlx::Error> {
    let started = started_line();
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "WITH input AS ( \
             SELECT * FROM UNNEST($1::uuid[], $2::uuid[], $3::int[], $4::float8[], $5::text[], \
                                  $6::text[], $7::bool[], $8::text[], $9::uuid[]) \
                 AS i(execution_id, build_id, attempt, secs, outcome, message, ignore_stop, name, provider_id) \
         ), work AS ( \
             INSERT INTO test_executor_work (execution_id, build_id, attempt, ends_at, outcome, message, ignore_stop) \
             SELECT execution_id, build_id, attempt, clock_timestamp() + make_interval(secs => secs), \
                    outcome, message, ignore_stop FROM input \
             ON CONFLICT (execution_id) DO UPDATE SET start_calls = test_executor_work.start_calls + 1 \
             RETURNING execution_id, GREATEST(0, EXTRACT(EPOCH FROM (ends_at - clock_timestamp())) * 1000)::bigint AS remaining_ms \
         ), reference AS ( \
             UPDATE build_executions e SET pipeline_run_name = i.name, \
                    provider_id = COALESCE(i.provider_id, e.provider_id), \
                    reference_at = COALESCE(e.reference_at, now()) \
             FROM input i WHERE e.id = i.execution_id \
         ), line AS ( \
             INSERT INTO build_logs (build_id, execution_id, source, position, line) \
             SELECT build_id, execution_id, $10, $11, $12 FROM input \
             ON CONFLICT (execution_id, source, position) DO NOTHING \
         ) \
         SELECT execution_id, remaining_ms FROM work",
    )
    .bind(writes.iter().map(|w| w.execution_id).collect::<Vec<_>>())
    .bind(writes.iter().map(|w| w.build_id).collect::<Vec<_>>())
    .bind(writes.iter().map(|w| w.attempt).collect::<Vec<_>>())
    .bind(writes.iter().map(|w| w.duration_secs).collect::<Vec<_>>())
    .bind(writes.iter().map(|w| w.outcome.as_str()).collect::<Vec<_>>())
    .bind(writes.iter().map(|w| w.message.as_deref()).collect::<Vec<_>>())
    .bind(writes.iter().map(|w| w.ignore_stop).collect::<Vec<_>>())
    .bind(writes.iter().map(|w| w.name.as_deref()).collect::<Vec<_>>())
    .bind(writes.iter().map(|w| w.provider_id).collect::<Vec<_>>())
    .bind(&started.source)
    .bind(started.position)
    .bind(&started.line)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

impl TestExecutor {
    /// Create the work table if needed (safe to call from several processes).
    pub async fn install(pool: &PgPool) -> Result<(), sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(7357)")
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS test_executor_work ( \
                execution_id uuid PRIMARY KEY, \
                build_id uuid NOT NULL, \
                attempt integer NOT NULL, \
                ends_at timestamptz NOT NULL, \
                outcome text NOT NULL, \
                message text, \
                ignore_stop boolean NOT NULL, \
                start_calls integer NOT NULL DEFAULT 1, \
                reattach_calls integer NOT NULL DEFAULT 0, \
                completions integer NOT NULL DEFAULT 0, \
                stopped text)",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    pub fn new(pool: PgPool) -> Self {
        let writer = pool.clone();
        Self {
            pool,
            starts: Coalescer::new(Starts { pool: writer }, 1, START_BATCH),
            kind: ExecutorKind::Test,
        }
    }

    /// The same executor, reporting itself as `kind`.
    pub fn with_kind(mut self, kind: ExecutorKind) -> Self {
        self.kind = kind;
        self
    }

    pub async fn work(pool: &PgPool) -> Result<Vec<WorkRecord>, sqlx::Error> {
        sqlx::query_as(
            "SELECT execution_id, build_id, attempt, start_calls, reattach_calls, completions, stopped \
             FROM test_executor_work ORDER BY build_id, attempt",
        )
        .fetch_all(pool)
        .await
    }

    async fn follow(
        &self,
        ctx: &ExecutionContext,
        sink: &dyn ExecutionSink,
        mut stop: StopSignal,
        remaining: Duration,
        failure: Option<String>,
        ignore_stop: bool,
    ) -> Outcome {
        let end = tokio::time::sleep(remaining);
        tokio::pin!(end);
        let reason = loop {
            if !ignore_stop && let Some(reason) = *stop.borrow_and_update() {
                break Some(reason);
            }
            tokio::select! {
                _ = &mut end => break None,
                changed = stop.changed(), if !ignore_stop => {
                    if changed.is_err() {
                        // The dispatcher went away: keep the work, stop watching.
                        return Outcome::HandedOver;
                    }
                }
            }
        };
        let stopped = |what: &'static str| async move {
            let _ =
                sqlx::query("UPDATE test_executor_work SET stopped = $2 WHERE execution_id = $1")
                    .bind(ctx.execution_id)
                    .bind(what)
                    .execute(&self.pool)
                    .await;
        };
        match reason {
            Some(StopReason::Handover) => Outcome::HandedOver,
            Some(StopReason::Cancel) => {
                stopped("cancel").await;
                Outcome::Cancelled {
                    message: "cancelled by request".to_owned(),
                }
            }
            Some(StopReason::Timeout) => {
                stopped("timeout").await;
                Outcome::TimedOut {
                    message: "test work stopped at its timeout".to_owned(),
                }
            }
            None => {
                if let Err(e) = sqlx::query(
                    "UPDATE test_executor_work SET completions = completions + 1 WHERE execution_id = $1",
                )
                .bind(ctx.execution_id)
                .execute(&self.pool)
                .await
                {
                    return Outcome::Transient { message: format!("test work bookkeeping failed: {e}") };
                }
                let line = LogLine {
                    source: "test".into(),
                    position: 1,
                    line: "finished".into(),
                };
                let _ = sink.logs(&[line]).await;
                match failure {
                    Some(message) => Outcome::Failed { message },
                    None => {
                        let digest = format!("sha256:{}", ctx.execution_id.simple());
                        let _ = sink
                            .artifact(&Artifact {
                                name: "IMAGE_DIGEST".into(),
                                value: digest,
                                kind: ArtifactKind::ImageDigest,
                            })
                            .await;
                        Outcome::Succeeded
                    }
                }
            }
        }
    }
}

fn reference(ctx: &ExecutionContext) -> ExecutionRef {
    ExecutionRef {
        executor: ExecutorKind::Test,
        provider_id: ctx.provider.as_ref().map(|p| p.provider_id),
        namespace: None,
        name: Some(format!("test-{}", ctx.execution_id)),
        uid: None,
    }
}

fn started_line() -> LogLine {
    LogLine {
        source: "test".into(),
        position: 0,
        line: "started".into(),
    }
}

#[async_trait]
impl Executor for TestExecutor {
    fn kind(&self) -> ExecutorKind {
        self.kind
    }

    async fn start(
        &self,
        ctx: ExecutionContext,
        sink: Arc<dyn ExecutionSink>,
        stop: StopSignal,
    ) -> Outcome {
        let script = match TestScript::from_metadata(&ctx.config.metadata) {
            Ok(s) => s,
            Err(message) => return Outcome::Failed { message },
        };
        if ctx.attempt <= script.transient_attempts {
            return Outcome::Transient {
                message: format!(
                    "test: scripted transient failure on attempt {}",
                    ctx.attempt
                ),
            };
        }
        if ctx.attempt <= script.transient_attempts + script.unreachable_attempts {
            return Outcome::Unreachable {
                message: format!(
                    "test: scripted unreachable infrastructure on attempt {}",
                    ctx.attempt
                ),
            };
        }
        let failure = (script.outcome == "failed").then(|| {
            script
                .message
                .clone()
                .unwrap_or_else(|| "test: scripted failure".into())
        });
        let r = reference(&ctx);
        // Work, reference and the "started" line in one statement (see the
        // module docs), shared with the starts that arrive at the same time.
        let created = self
            .starts
            .call(StartWrite {
                execution_id: ctx.execution_id,
                build_id: ctx.build_id,
                attempt: ctx.attempt,
                duration_secs: script.duration_ms as f64 / 1000.0,
                outcome: script.outcome.clone(),
                message: failure.clone(),
                ignore_stop: script.ignore_stop,
                name: r.name.clone(),
                provider_id: r.provider_id,
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|answer| answer);
        let remaining_ms = match created {
            Ok(ms) => ms,
            Err(e) => {
                return Outcome::Transient {
                    message: format!("test work could not be created: {e}"),
                };
            }
        };
        // Already persisted above; reported through the sink too, as the
        // contract asks (idempotent: it writes nothing).
        if let Err(e) = sink.reference(&r).await {
            return Outcome::Transient {
                message: e.to_string(),
            };
        }
        self.follow(
            &ctx,
            sink.as_ref(),
            stop,
            Duration::from_millis(remaining_ms as u64),
            failure,
            script.ignore_stop,
        )
        .await
    }

    async fn reattach(
        &self,
        ctx: ExecutionContext,
        _reference: ExecutionRef,
        sink: Arc<dyn ExecutionSink>,
        stop: StopSignal,
    ) -> Outcome {
        let row: Result<Option<(i64, Option<String>, String, bool)>, sqlx::Error> = sqlx::query_as(
            "UPDATE test_executor_work SET reattach_calls = reattach_calls + 1 WHERE execution_id = $1 \
             RETURNING GREATEST(0, EXTRACT(EPOCH FROM (ends_at - clock_timestamp())) * 1000)::bigint, \
                       message, outcome, ignore_stop",
        )
        .bind(ctx.execution_id)
        .fetch_optional(&self.pool)
        .await;
        let (remaining_ms, message, outcome, ignore_stop) = match row {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Outcome::Failed {
                    message: format!(
                        "test work for execution {} does not exist",
                        ctx.execution_id
                    ),
                };
            }
            Err(e) => {
                return Outcome::Transient {
                    message: format!("test work lookup failed: {e}"),
                };
            }
        };
        // Resent on purpose: stored logs must not duplicate it.
        let _ = sink.logs(&[started_line()]).await;
        let failure = (outcome == "failed").then(|| message.unwrap_or_default());
        self.follow(
            &ctx,
            sink.as_ref(),
            stop,
            Duration::from_millis(remaining_ms as u64),
            failure,
            ignore_stop,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_defaults_parses_and_rejects_unknown_outcomes() {
        let empty = serde_json::Map::new();
        assert_eq!(
            TestScript::from_metadata(&empty).unwrap(),
            TestScript::default()
        );
        let script = TestScript {
            duration_ms: 5,
            transient_attempts: 2,
            ..Default::default()
        };
        let meta = script.to_metadata();
        assert_eq!(
            TestScript::from_metadata(meta.as_object().unwrap()).unwrap(),
            script
        );
        let bad = serde_json::json!({"test": {"outcome": "exploded"}});
        assert!(
            TestScript::from_metadata(bad.as_object().unwrap())
                .unwrap_err()
                .contains("exploded")
        );
        let typo = serde_json::json!({"test": {"duraton_ms": 5}});
        assert!(TestScript::from_metadata(typo.as_object().unwrap()).is_err());
    }
}
