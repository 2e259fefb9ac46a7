//! Executors run one build attempt (an *execution*) somewhere and report what
//! happens through an [`ExecutionSink`]. The dispatcher owns claiming, leases,
//! retries and the database; an executor owns only "run this attempt, tell me
//! how it goes, stop when told".
//!
//! - `tekton`: one PipelineRun per execution on the provider's cluster.
//! - `local`: processes on the dispatcher's own machine.

pub mod context;
pub mod local;
pub mod tekton;

use std::sync::Arc;

use async_trait::async_trait;
pub use context::*;
pub use imagefactory_domain::ExecutorKind;
use tokio::sync::watch;

/// Why the dispatcher wants an execution to stop before it ends by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The user cancelled the build: end the real work (PipelineRun cancelled,
    /// process group killed) and report `Cancelled`.
    Cancel,
    /// The build's timeout passed (enforced by the dispatcher too, in case the
    /// executor or cluster missed it): end the work and report `TimedOut`.
    Timeout,
    /// This dispatcher is shutting down: stop *watching* but leave the work
    /// running if it can survive us (Tekton), and report `HandedOver`.
    Handover,
}

/// The receiving end of the dispatcher's stop signal; `None` until a stop is asked.
pub type StopSignal = watch::Receiver<Option<StopReason>>;

/// How an execution ended, from the executor's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    /// The build itself failed (step exit code, bad Dockerfile, missing Task,
    /// rejected credentials...). Not retried automatically.
    Failed {
        message: String,
    },
    Cancelled {
        message: String,
    },
    TimedOut {
        message: String,
    },
    /// Infrastructure trouble that another attempt may not meet (cluster
    /// unreachable, 5xx, 429): the dispatcher requeues with backoff while
    /// attempts remain. Another attempt is new work (a new PipelineRun):
    /// once this attempt's work may be going on, an executor waits the
    /// trouble out or hands over instead (Tekton: `reattach` retries reading
    /// its run; a closed watch is read again; a create that may have acted
    /// is retried under the same name; a run whose reference cannot be
    /// saved nor the run cancelled is handed over), so the build never runs
    /// twice.
    Transient {
        message: String,
    },
    /// The infrastructure could not be reached (or refused to act: 429,
    /// 503) before anything of this attempt existed there, and no request
    /// that could have created it may have taken effect: another attempt
    /// cannot run the build twice. The dispatcher requeues it without
    /// counting an attempt, for a bounded time (an outage must not use up
    /// a build's attempts).
    Unreachable {
        message: String,
    },
    /// Stopped watching on `StopReason::Handover`; the work goes on and another
    /// dispatcher re-attaches through the persisted [`ExecutionRef`].
    HandedOver,
}

#[async_trait]
pub trait Executor: Send + Sync {
    fn kind(&self) -> ExecutorKind;

    /// Start a new execution and follow it to its end. Must call
    /// [`ExecutionSink::reference`] as soon as the external work exists, so a
    /// crash after that point re-attaches instead of starting it again.
    async fn start(
        &self,
        ctx: ExecutionContext,
        sink: Arc<dyn ExecutionSink>,
        stop: StopSignal,
    ) -> Outcome;

    /// Resume following an execution that another (possibly dead) dispatcher
    /// started, from its persisted reference. Never starts the work again,
    /// and never ends `Transient` while that work may still be going.
    async fn reattach(
        &self,
        ctx: ExecutionContext,
        reference: ExecutionRef,
        sink: Arc<dyn ExecutionSink>,
        stop: StopSignal,
    ) -> Outcome;

    /// The dispatcher has committed the outcome that `start`/`reattach`
    /// returned for `execution_id` (`recorded`), or could not (its lease was
    /// lost: another dispatcher re-attaches and records it). Clean-up that
    /// must not come before the commit waits for this call — done earlier, a
    /// takeover in between would find the execution's work gone (Tekton:
    /// marking the run persisted and applying the provider's retention).
    /// Must return quickly (spawn what takes time).
    async fn outcome_recorded(&self, _execution_id: uuid::Uuid, _recorded: bool) {}
}

/// Where an executor reports progress. The dispatcher implements it over the
/// store; tests implement it in memory.
#[async_trait]
pub trait ExecutionSink: Send + Sync {
    /// Persist where the execution lives (namespace, name, uid, ...).
    async fn reference(&self, reference: &ExecutionRef) -> Result<(), SinkError>;
    /// Append log lines in order. Lines carry their own position so a
    /// re-attached executor can resend a few without creating duplicates.
    /// An error means these lines are lost after the sink's own retries (it
    /// has said so where it could); executors carry on with the next lines
    /// rather than stop following the build's output.
    async fn logs(&self, lines: &[LogLine]) -> Result<(), SinkError>;
    async fn artifact(&self, artifact: &Artifact) -> Result<(), SinkError>;
    /// Several artifacts at once (a build's results arrive together at its
    /// end); sinks that can store them in one round trip override this.
    async fn artifacts(&self, artifacts: &[Artifact]) -> Result<(), SinkError> {
        for artifact in artifacts {
            self.artifact(artifact).await?;
        }
        Ok(())
    }
    /// A human-readable progress note (e.g. "PipelineRun Running"), optional.
    async fn progress(&self, message: &str) -> Result<(), SinkError>;
    /// The last position already recorded for each log source, so a
    /// re-attached executor resumes without duplicates or gaps. The default
    /// (nothing recorded) makes it resend from the start, which `logs`
    /// tolerates because positions make lines idempotent.
    async fn log_positions(&self) -> Result<std::collections::HashMap<String, i64>, SinkError> {
        Ok(std::collections::HashMap::new())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("recording execution progress failed: {0}")]
pub struct SinkError(pub String);
