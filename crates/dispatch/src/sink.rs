//! [`ExecutionSink`] over the store: what an executor reports lands in the
//! execution's rows at once (a reported reference is committed before
//! `reference` returns).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_trait::async_trait;
use imagefactory_exec::{Artifact, ExecutionRef, ExecutionSink, LogLine, SinkError};
use imagefactory_store::coalesce::{Batch, Coalescer};
use imagefactory_store::error::{StoreError, StoreResult};
use imagefactory_store::executions::{self, NewLogLine, ReferenceColumns};
use sqlx::PgPool;
use uuid::Uuid;

use crate::measure;
use crate::outage::{OUTAGE_PATIENCE, retry_unavailable};

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
/// statement and one commit (a single writer); each caller is answered
/// after that commit. When the statement fails, each is written alone, so
/// one bad entry fails only itself (the writes are idempotent).
pub type ReferenceWriter = Coalescer<References>;

/// Most references written by one statement.
const REFERENCE_BATCH: usize = 256;

pub fn reference_writer(pool: PgPool) -> Arc<ReferenceWriter> {
    Arc::new(Coalescer::new(References { pool }, 1, REFERENCE_BATCH))
}

pub struct References {
    pool: PgPool,
}

impl Batch for References {
    type Request = ReferenceWrite;
    type Answer = ();
    const IDEMPOTENT: bool = true;

    async fn together(&self, batch: &[ReferenceWrite]) -> StoreResult<Vec<()>> {
        let rows: Vec<(Uuid, ReferenceColumns<'_>)> = batch
            .iter()
            .map(|w| (w.execution_id, w.columns()))
            .collect();
        retry_unavailable("storing execution references", OUTAGE_PATIENCE, || {
            executions::record_references(&self.pool, &rows)
        })
        .await?;
        Ok(vec![(); batch.len()])
    }

    async fn alone(&self, w: ReferenceWrite) -> StoreResult<()> {
        let columns = w.columns();
        retry_unavailable("storing an execution reference", OUTAGE_PATIENCE, || {
            executions::record_reference(&self.pool, w.execution_id, &columns)
        })
        .await
    }
}

pub struct StoreSink {
    pool: PgPool,
    build_id: Uuid,
    execution_id: Uuid,
    /// Shared by a dispatcher's executions; `None`: one statement per call.
    references: Option<Arc<ReferenceWriter>>,
    /// When the attempt was claimed, for its start latency; taken (so
    /// recorded once) by the first reference stored.
    start_clock: Mutex<Option<Instant>>,
}

impl StoreSink {
    pub fn new(pool: PgPool, build_id: Uuid, execution_id: Uuid) -> Self {
        Self {
            pool,
            build_id,
            execution_id,
            references: None,
            start_clock: Mutex::new(None),
        }
    }

    /// Record the start latency from `claimed` when the executor reports
    /// where the work lives (a new start, not a re-attach).
    pub fn with_start_clock(self, claimed: Instant) -> Self {
        *self.start_clock.lock().unwrap() = Some(claimed);
        self
    }

    fn reference_stored(&self) {
        if let Some(claimed) = self.start_clock.lock().unwrap().take() {
            measure::started(claimed);
        }
    }

    /// A sink whose references are written together with those of other
    /// executions reporting at the same time (see [`reference_writer`]).
    pub fn with_reference_writer(mut self, writer: Arc<ReferenceWriter>) -> Self {
        self.references = Some(writer);
        self
    }
}

/// Source of the notes the sink itself writes into a build's log.
pub const NOTICE_SOURCE: &str = "imagefactory";

impl StoreSink {
    /// `append_logs`, retried with backoff while the database is unavailable
    /// (lines are kept, in order, until it is back: the executor's log
    /// stream waits meanwhile).
    async fn append_retrying(&self, rows: &[NewLogLine<'_>]) -> Result<(), StoreError> {
        let new = retry_unavailable("storing log lines", OUTAGE_PATIENCE, || {
            executions::append_logs(&self.pool, self.build_id, self.execution_id, rows)
        })
        .await?;
        measure::logs_stored(rows, new);
        Ok(())
    }

    /// Lines that could not be stored: a warning for the operator (with the
    /// cause) and, if the database takes it, a line in the build's log saying
    /// how many are missing where (the cause only as a category: a database
    /// message is not the tenant's to read).
    async fn report_lost(&self, lines: &[LogLine], lost: usize, error: &StoreError) {
        tracing::warn!(
            build.id = %self.build_id,
            execution.id = %self.execution_id,
            lost,
            error = %error,
            "log lines could not be stored and are lost"
        );
        let mut sources: Vec<&str> = lines.iter().map(|l| l.source.as_str()).collect();
        sources.sort_unstable();
        sources.dedup();
        let cause = match error {
            StoreError::Unavailable(_) => "the database was unavailable",
            _ => "the database refused them",
        };
        let note = format!(
            "[imagefactory] {lost} log line(s) of {} could not be stored and are lost: {cause}",
            sources.join(", ")
        );
        match executions::append_notice(
            &self.pool,
            self.build_id,
            self.execution_id,
            NOTICE_SOURCE,
            &note,
        )
        .await
        {
            Ok(()) => measure::note_stored(&note),
            Err(e) => {
                tracing::warn!(build.id = %self.build_id, error = %e, "the note about lost log lines is lost too")
            }
        }
    }
}

fn err(what: &str, e: StoreError) -> SinkError {
    SinkError(format!("{what}: {e}"))
}

impl StoreSink {
    async fn store_reference(&self, reference: &ExecutionRef) -> Result<(), SinkError> {
        if let Some(writer) = &self.references {
            return writer
                .call(ReferenceWrite {
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
        retry_unavailable(
            "persisting the execution reference",
            OUTAGE_PATIENCE,
            || executions::record_reference(&self.pool, self.execution_id, &columns),
        )
        .await
        .map_err(|e| err("persisting the execution reference", e))
    }
}

#[async_trait]
impl ExecutionSink for StoreSink {
    async fn reference(&self, reference: &ExecutionRef) -> Result<(), SinkError> {
        let stored = self.store_reference(reference).await;
        if stored.is_ok() {
            self.reference_stored();
        }
        stored
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
        let mut error = match self.append_retrying(&rows).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // A refused batch (not an outage): store its lines one by one, so a
        // line the database will not take loses only itself.
        let mut lost = rows.len();
        if rows.len() > 1 && !matches!(error, StoreError::Unavailable(_)) {
            lost = 0;
            for row in &rows {
                if let Err(e) = self.append_retrying(std::slice::from_ref(row)).await {
                    lost += 1;
                    error = e;
                }
            }
            if lost == 0 {
                return Ok(());
            }
        }
        self.report_lost(lines, lost, &error).await;
        Err(SinkError(format!("{lost} log lines lost: {error}")))
    }

    async fn artifact(&self, artifact: &Artifact) -> Result<(), SinkError> {
        retry_unavailable("storing an artifact", OUTAGE_PATIENCE, || {
            executions::put_artifact(
                &self.pool,
                self.build_id,
                self.execution_id,
                &artifact.name,
                &artifact.value,
                artifact.kind.as_str(),
            )
        })
        .await
        .map_err(|e| err("storing an artifact", e))
    }

    async fn artifacts(&self, artifacts: &[Artifact]) -> Result<(), SinkError> {
        let rows: Vec<(&str, &str, &str)> = artifacts
            .iter()
            .map(|a| (a.name.as_str(), a.value.as_str(), a.kind.as_str()))
            .collect();
        retry_unavailable("storing artifacts", OUTAGE_PATIENCE, || {
            executions::put_artifacts(&self.pool, self.build_id, self.execution_id, &rows)
        })
        .await
        .map_err(|e| err("storing artifacts", e))
    }

    async fn progress(&self, message: &str) -> Result<(), SinkError> {
        retry_unavailable("storing progress", OUTAGE_PATIENCE, || {
            executions::set_progress(&self.pool, self.execution_id, message)
        })
        .await
        .map_err(|e| err("storing progress", e))
    }

    async fn log_positions(&self) -> Result<std::collections::HashMap<String, i64>, SinkError> {
        retry_unavailable("reading stored log positions", OUTAGE_PATIENCE, || {
            executions::last_log_positions(&self.pool, self.execution_id)
        })
        .await
        .map_err(|e| err("reading stored log positions", e))
    }
}
