//! [`ExecutionSink`] over the store: what an executor reports lands in the
//! execution's rows at once.

use async_trait::async_trait;
use imagefactory_exec::{Artifact, ExecutionRef, ExecutionSink, LogLine, SinkError};
use imagefactory_store::executions::{self, NewLogLine, ReferenceColumns};
use sqlx::PgPool;
use uuid::Uuid;

pub struct StoreSink {
    pool: PgPool,
    build_id: Uuid,
    execution_id: Uuid,
}

impl StoreSink {
    pub fn new(pool: PgPool, build_id: Uuid, execution_id: Uuid) -> Self {
        Self {
            pool,
            build_id,
            execution_id,
        }
    }
}

fn err(what: &str, e: sqlx::Error) -> SinkError {
    SinkError(format!("{what}: {e}"))
}

#[async_trait]
impl ExecutionSink for StoreSink {
    async fn reference(&self, reference: &ExecutionRef) -> Result<(), SinkError> {
        let columns = ReferenceColumns {
            provider_id: reference.provider_id,
            namespace: reference.namespace.as_deref(),
            name: reference.name.as_deref(),
            uid: reference.uid.as_deref(),
        };
        executions::record_reference(&self.pool, self.execution_id, &columns)
            .await
            .map_err(|e| err("persisting the execution reference", e))
    }

    async fn logs(&self, lines: &[LogLine]) -> Result<(), SinkError> {
        let rows: Vec<NewLogLine<'_>> = lines
            .iter()
            .map(|l| NewLogLine {
                source: &l.source,
                position: l.position,
                line: &l.line,
            })
            .collect();
        executions::append_logs(&self.pool, self.build_id, self.execution_id, &rows)
            .await
            .map(|_| ())
            .map_err(|e| err("storing log lines", e))
    }

    async fn artifact(&self, artifact: &Artifact) -> Result<(), SinkError> {
        executions::put_artifact(
            &self.pool,
            self.build_id,
            self.execution_id,
            &artifact.name,
            &artifact.value,
            artifact.kind.as_str(),
        )
        .await
        .map_err(|e| err("storing an artifact", e))
    }

    async fn artifacts(&self, artifacts: &[Artifact]) -> Result<(), SinkError> {
        let rows: Vec<(&str, &str, &str)> = artifacts
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str(), a.kind.as_str()))
            .collect();
        executions::put_artifacts(&self.pool, self.build_id, self.execution_id, &rows)
            .await
            .map_err(|e| err("storing artifacts", e))
    }

    async fn progress(&self, message: &str) -> Result<(), SinkError> {
        executions::set_progress(&self.pool, self.execution_id, message)
            .await
            .map_err(|e| err("storing progress", e))
    }

    async fn log_positions(&self) -> Result<std::collections::HashMap<String, i64>, SinkError> {
        executions::last_log_positions(&self.pool, self.execution_id)
            .await
            .map_err(|e| err("reading stored log positions", e))
    }
}
