//! [`ExecutionSink`] over the store: what an executor reports lands in the
//! execution's rows at once (a reported reference is committed before
//! `reference` returns).

use std::sync::Arc;

use async_trait::async_trait;
use imagefactory_exec::{Artifact, ExecutionRef, ExecutionSink, LogLine, SinkError};
use imagefactory_store::executions::{self, NewLogLine, ReferenceColumns};
use sqlx::PgPool;
use uuid::Uuid;

use crate::coalesce::Coalescer;

/// One execution's reported reference, owned so it can wait in a queue.
pub struct ReferenceWrite {
    execution_id: Uuid,
    provider_id: Option<Uuid>,
    namespace: Option<String>,
    name: Option<String>,
    uid: Option<String>,
}

impl ReferenceWrite {
    fn columns(&self) -> ReferenceColumns<'_> {
        ReferenceColumns {
            provider_id: self.provider_id,
            namespace: self.namespace.as_deref(),
            name: self.name.as_deref(),
            uid: self.uid.as_deref(),
        }
    }
}

/// Writes the references of a dispatcher's executions: those reported at
/// about the same time (a claimed batch starting) go to the database in one
/// statement and one commit; each caller is answered after that commit.
pub type ReferenceWriter = Coalescer<ReferenceWrite, ()>;

/// Most references written by one statement.
const REFERENCE_BATCH: usize = 256;

pub fn reference_writer(pool: PgPool) -> Arc<ReferenceWriter> {
    Arc::new(Coalescer::new(
        REFERENCE_BATCH,
        move |batch: Vec<ReferenceWrite>| {
            let pool = pool.clone();
            async move {
                let rows: Vec<(Uuid, ReferenceColumns<'_>)> = batch
                    .iter()
                    .map(|w| (w.execution_id, w.columns()))
                    .collect();
                match executions::record_references(&pool, &rows).await {
                    Ok(()) => batch.iter().map(|_| Ok(())).collect(),
                    Err(e) if batch.len() == 1 => vec![Err(e.to_string())],
                    // One bad entry must not fail the others: write them one by
                    // one (each its own commit), answering each its own result.
                    Err(_) => {
                        let mut results = Vec::with_capacity(batch.len());
                        for w in &batch {
                            results.push(
                                executions::record_reference(&pool, w.execution_id, &w.columns())
                                    .await
                                    .map_err(|e| e.to_string()),
                            );
                        }
                        results
                    }
                }
            }
        },
    ))
}

pub struct StoreSink {
    pool: PgPool,
    build_id: Uuid,
    execution_id: Uuid,
    /// Shared by a dispatcher's executions; `None`: one statement per call.
    references: Option<Arc<ReferenceWriter>>,
}

impl StoreSink {
    pub fn new(pool: PgPool, build_id: Uuid, execution_id: Uuid) -> Self {
        Self {
            pool,
            build_id,
            execution_id,
            references: None,
        }
    }

    /// A sink whose references are written together with those of other
    /// executions reporting at the same time (see [`reference_writer`]).
    pub fn with_reference_writer(mut self, writer: Arc<ReferenceWriter>) -> Self {
        self.references = Some(writer);
        self
    }
}

fn err(what: &str, e: sqlx::Error) -> SinkError {
    SinkError(format!("{what}: {e}"))
}

#[async_trait]
impl ExecutionSink for StoreSink {
    async fn reference(&self, reference: &ExecutionRef) -> Result<(), SinkError> {
        if let Some(writer) = &self.references {
            return writer
                .submit(ReferenceWrite {
                    execution_id: self.execution_id,
                    provider_id: reference.provider_id,
                    namespace: reference.namespace.clone(),
                    name: reference.name.clone(),
                    uid: reference.uid.clone(),
                })
                .await
                .map_err(|e| SinkError(format!("persisting the execution reference: {e}")));
        }
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
