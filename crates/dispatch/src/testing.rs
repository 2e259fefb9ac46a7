//! A scripted executor for tests and the benchmark.
//!
//! Its "external work" is a row in `test_executor_work` (created by
//! [`TestExecutor::install`], not a migration: it is test-only), so it
//! survives a dispatcher crash: `reattach` finds the row and waits for the
//! remaining time, as a re-attached Tekton executor would resume watching its
//! PipelineRun. The row is written in the same statement as the execution's
//! reference (and the "started" log line, so a start costs one commit), so
//! "work exists" and "reference persisted" are one fact and a
//! second `start` of the same attempt is always a dispatcher bug — counted in
//! `start_calls`, which tests require to be exactly 1.
//!
//! The script comes from the build's config metadata, key `test`:
//! `{"duration_ms": 200, "outcome": "succeeded" | "failed", "message": "...",
//!   "transient_attempts": 2, "ignore_stop": false}`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use imagefactory_domain::ExecutorKind;
use imagefactory_exec::{
    Artifact, ArtifactKind, ExecutionContext, ExecutionRef, ExecutionSink, Executor, LogLine,
    Outcome, StopReason, StopSignal,
};
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
        Self { pool }
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
        ExecutorKind::Test
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
        let failure = (script.outcome == "failed").then(|| {
            script
                .message
                .clone()
                .unwrap_or_else(|| "test: scripted failure".into())
        });
        let r = reference(&ctx);
        let started = started_line();
        // Work, reference and the "started" line in one statement (see the
        // module docs): one commit per started build, as an executor that
        // creates its external work and records it would need.
        let created: Result<i64, sqlx::Error> = sqlx::query_scalar(
            "WITH work AS ( \
                 INSERT INTO test_executor_work (execution_id, build_id, attempt, ends_at, outcome, message, ignore_stop) \
                 VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4), $5, $6, $7) \
                 ON CONFLICT (execution_id) DO UPDATE SET start_calls = test_executor_work.start_calls + 1 \
                 RETURNING GREATEST(0, EXTRACT(EPOCH FROM (ends_at - clock_timestamp())) * 1000)::bigint AS remaining_ms \
             ), reference AS ( \
                 UPDATE build_executions SET pipeline_run_name = $8, provider_id = COALESCE($9, provider_id), \
                        reference_at = COALESCE(reference_at, now()) WHERE id = $1 \
             ), line AS ( \
                 INSERT INTO build_logs (build_id, execution_id, source, position, line) \
                 VALUES ($2, $1, $10, $11, $12) \
                 ON CONFLICT (execution_id, source, position) DO NOTHING \
             ) \
             SELECT remaining_ms FROM work",
        )
        .bind(ctx.execution_id)
        .bind(ctx.build_id)
        .bind(ctx.attempt)
        .bind(script.duration_ms as f64 / 1000.0)
        .bind(&script.outcome)
        .bind(&failure)
        .bind(script.ignore_stop)
        .bind(r.name.as_deref())
        .bind(r.provider_id)
        .bind(&started.source)
        .bind(started.position)
        .bind(&started.line)
        .fetch_one(&self.pool)
        .await;
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
