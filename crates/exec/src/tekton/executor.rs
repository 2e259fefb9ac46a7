//! The Tekton [`Executor`]: namespace → secrets → render → validate →
//! preflight → create (or adopt) → persist reference → watch, logs, results.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use imagefactory_domain::address::AddressPolicy;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::bundle::{LOG_SOURCE as BUNDLE_LOG_SOURCE, ensure_bundle};
use super::client::{ClientCache, Cluster, TektonVersion};
use super::error::{TektonError, describe_kube_error, is_not_found, is_transient};
use super::logs::{FinishedTaskRuns, LogFollower, LogReads, ReadState};
use super::monitor::{RunState, RunWatch};
use super::namespace::{ensure_named_namespace, namespace_name};
use super::oplog::OperatorLog;
use super::plan::{BoundSecrets, render_context};
use super::preflight::preflight;
use super::render::{Templates, build_task_name};
use super::retention::{apply_retention, mark_persisted};
use super::secrets::{OPERATOR_DOCKER_CONFIG, ensure_secret, git_secret, registry_secret};
use super::status::{
    Terminal, artifacts, child_taskruns, failed_step, pipeline_results, run_summary,
    succeeded_condition, taskrun_results, terminal,
};
use super::submit::{create_or_adopt, pipelinerun_resource, run_name, taskrun_resource};
use super::validate::{
    Expected, bound_secrets, has_finally, referenced_tasks, to_version, validate,
};
use crate::{
    ExecutionContext, ExecutionRef, ExecutionSink, Executor, ExecutorKind, LogLine, Outcome,
    StopReason, StopSignal,
};
use imagefactory_domain::task_bundle::TaskMode;

/// Settings from `IF_BUILD_TEKTON_*`.
#[derive(Debug, Clone)]
pub struct TektonSettings {
    /// `IF_BUILD_TEKTON_TEMPLATES_DIR`: `<method>.yaml` files overriding the
    /// shipped templates.
    pub templates_dir: Option<PathBuf>,
    /// `IF_BUILD_TEKTON_KUBECONFIG`: the global cluster for builds without a provider.
    pub global_kubeconfig: Option<PathBuf>,
    /// `IF_BUILD_TEKTON_IN_CLUSTER=true`: the global cluster is the one this
    /// process runs in (service account), when no kubeconfig is given.
    pub global_in_cluster: bool,
    /// How long to keep reading logs after the run ended.
    pub log_drain: Duration,
    /// How much longer, from the run's end, to keep reading them while the
    /// cluster fails the log reads (API server down, 5xx, 429): the lines
    /// are still on the cluster. Once it answers again the reads get
    /// another `log_drain`. A build whose log could not be read to its end
    /// says so in its log.
    pub log_drain_patience: Duration,
    /// How long to wait for Tekton to confirm a cancellation.
    pub cancel_grace: Duration,
    /// Retries of the (idempotent) submit sequence on transient errors before
    /// the attempt ends `Unreachable` (nothing of it on the cluster); backoff
    /// doubles from 500 ms. Once a create may have taken effect the attempt
    /// keeps trying beyond these (see `submit_retrying`).
    pub submit_retries: u32,
    /// Safety net under the shared watch (a real API server may stall or
    /// drop a watch): a followed run whose state has not changed for this
    /// long is read once with a GET. The wait doubles after every such read
    /// (up to an hour), so a build costs at most a few reads however long
    /// it runs (a run silent for 10 minutes: 2; for an hour: 4).
    pub resync_after: Duration,
    /// Where tenant providers' clusters may be (`IF_PROVIDER_ALLOW_LOOPBACK`,
    /// the host's and the API's own addresses); global providers are not
    /// restricted. Default: loopback refused.
    pub address_policy: Arc<AddressPolicy>,
}

impl Default for TektonSettings {
    fn default() -> Self {
        Self {
            templates_dir: None,
            global_kubeconfig: None,
            global_in_cluster: false,
            log_drain: Duration::from_secs(30),
            log_drain_patience: Duration::from_secs(300),
            cancel_grace: Duration::from_secs(300),
            submit_retries: 4,
            resync_after: Duration::from_secs(120),
            address_policy: Arc::default(),
        }
    }
}

pub struct TektonExecutor {
    clients: ClientCache,
    templates: Templates,
    settings: TektonSettings,
    cleanups: PendingCleanups,
}

/// Runs that ended under a provider with retention, by execution id, from
/// the moment the executor returned their outcome until the dispatcher says
/// it committed it ([`Executor::outcome_recorded`]): only then may they be
/// marked persisted and become candidates for deletion.
#[derive(Clone, Default)]
struct PendingCleanups(Arc<std::sync::Mutex<HashMap<Uuid, Cleanup>>>);

struct Cleanup {
    cluster: Arc<Cluster>,
    version: TektonVersion,
    namespace: String,
    name: String,
}

impl Cleanup {
    async fn run(self) {
        let Some(retention) = &self.cluster.settings.retention else {
            return;
        };
        let client = &self.cluster.client;
        let done = async {
            mark_persisted(client, self.version, &self.namespace, &self.name).await?;
            apply_retention(client, self.version, &self.namespace, retention).await
        };
        if let Err(e) = done.await {
            tracing::warn!(run = %self.name, namespace = %self.namespace, error = %e,
                "cleaning up old PipelineRuns failed; the next finished build tries again");
        }
    }
}

impl TektonExecutor {
    pub async fn new(settings: TektonSettings) -> Result<Self, TektonError> {
        let templates = match &settings.templates_dir {
            Some(dir) => Templates::with_overrides(dir).map_err(TektonError::Build)?,
            None => Templates::embedded(),
        };
        let mut clients = ClientCache::new().with_address_policy(settings.address_policy.clone());
        if let Some(path) = &settings.global_kubeconfig {
            clients = clients.with_global_kubeconfig(path.clone()).await?;
        } else if settings.global_in_cluster {
            clients = clients.with_global_in_cluster()?;
        }
        Ok(Self {
            clients,
            templates,
            settings,
            cleanups: PendingCleanups::default(),
        })
    }

    /// [`TektonExecutor::submit`], retried on transient errors: every step
    /// is idempotent (create-if-missing, 409 → adopt), so a create whose
    /// answer was lost is adopted on the next try instead of leaking a run.
    ///
    /// After `submit_retries` the attempt ends `Unreachable` while nothing
    /// of it can exist. Once a create may have taken effect (a 500, 504 or
    /// a connection cut mid-request: the server may have acted), it does
    /// not end `Transient`: the dispatcher's next attempt names its run
    /// differently and would run the build beside this one. It keeps trying
    /// to create or adopt the run by its fixed name instead (backoff up to
    /// [`UNCERTAIN_CREATE_MAX_DELAY`], no limit) while the dispatcher renews
    /// the lease; the build's timeout bounds it. A handover ends the wait
    /// recording nothing (whoever takes over starts this same execution and
    /// adopts the run); a cancel or timeout cancels the run by its name.
    async fn submit_retrying(
        &self,
        cluster: &Cluster,
        ctx: &ExecutionContext,
        sink: &dyn ExecutionSink,
        stop: &mut StopSignal,
    ) -> Result<Submitted, Outcome> {
        let mut backoff = ExponentialBuilder::new()
            .with_min_delay(SUBMIT_FIRST_RETRY)
            .without_max_delay()
            .with_max_times(self.settings.submit_retries as usize)
            .build();
        let mut uncertain = UNCERTAIN_CREATE_RETRIES.build();
        let mut may_exist = false;
        let mut waited_out = false;
        loop {
            let e = match self.submit(cluster, ctx, sink, &mut may_exist).await {
                Ok(submitted) => return Ok(submitted),
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e.into_outcome()),
            };
            // Not backon's `Retryable`: the note to the sink is async. Past
            // the attempt's retries only the first wait is noted: the wait
            // may last as long as the build's timeout.
            let (delay, note) = match backoff.next() {
                Some(delay) => (delay, true),
                // Nothing of this attempt is on the cluster: another attempt
                // cannot run the build twice, and an outage must not use up
                // the build's attempts (the dispatcher bounds the wait).
                None if !may_exist => {
                    return Err(Outcome::Unreachable {
                        message: e.to_string(),
                    });
                }
                None => {
                    let first = !waited_out;
                    if first {
                        waited_out = true;
                        tracing::warn!(build.id = %ctx.build_id, error = %e,
                            "the PipelineRun may have been created; retrying until the cluster answers");
                    }
                    (
                        uncertain.next().unwrap_or(UNCERTAIN_CREATE_MAX_DELAY),
                        first,
                    )
                }
            };
            if note {
                let _ = sink
                    .progress(&format!("retrying after a transient error: {e}"))
                    .await;
            }
            if let Some(reason) = wait_unless_stopped(delay, stop).await {
                return Err(match reason {
                    StopReason::Handover => Outcome::HandedOver,
                    _ if !may_exist => stopped_before_submit(stop).unwrap_or(Outcome::HandedOver),
                    reason => cancel_uncertain_run(cluster, ctx, reason).await,
                });
            }
        }
    }

    /// Everything up to and including the created (or adopted) run.
    /// `may_exist` is set when a create of the run may have taken effect.
    async fn submit(
        &self,
        cluster: &Cluster,
        ctx: &ExecutionContext,
        sink: &dyn ExecutionSink,
        may_exist: &mut bool,
    ) -> Result<Submitted, TektonError> {
        let version = cluster.tekton_version().await?;
        let namespace = run_namespace(cluster, ctx.tenant_id);
        // Keyed by the whole tenant id: the name holds only its first 8 hex
        // digits, so another tenant's check must not count for this one.
        let ns_key = format!("namespace:{}:{namespace}", ctx.tenant_id);
        if !cluster.recently_checked(&ns_key) {
            ensure_named_namespace(&cluster.client, &namespace, ctx.tenant_id).await?;
            cluster.remember_check(ns_key);
        }
        if cluster.settings.task_mode == TaskMode::Managed {
            let lines = ensure_bundle(cluster, version, &namespace).await?;
            if !lines.is_empty() {
                let lines: Vec<LogLine> = lines
                    .into_iter()
                    .enumerate()
                    .map(|(i, line)| LogLine {
                        source: BUNDLE_LOG_SOURCE.into(),
                        position: i as i64,
                        line,
                    })
                    .collect();
                // The apply happened; a lost log line must not fail the build.
                let _ = sink.logs(&lines).await;
            }
        }
        let registry = match &ctx.registry {
            Some(auth) => ensure_cached(cluster, &namespace, &registry_secret(auth)).await?,
            None => OPERATOR_DOCKER_CONFIG.to_string(),
        };
        let git_basic_auth = match git_secret(&ctx.source) {
            Some(secret) => Some(ensure_cached(cluster, &namespace, &secret).await?),
            None => None,
        };
        let bound = BoundSecrets {
            registry: registry.clone(),
            git_basic_auth,
        };
        let rc = render_context(ctx, &cluster.settings, &namespace, &bound);
        let run = self
            .templates
            .render(ctx.method, &rc)
            .map_err(|e| TektonError::Build(e.to_string()))?;
        let expected = Expected {
            run_name: &rc.build.run_name,
            namespace: &namespace,
            build_task: build_task_name(ctx.method),
            registry_secret: &registry,
        };
        validate(&run, &expected)
            .map_err(|e| TektonError::Build(format!("rendered PipelineRun is invalid: {e}")))?;
        let finally = has_finally(&run);
        let run = to_version(run, version);
        let created: Vec<String> = ctx
            .registry
            .as_ref()
            .map(|_| registry.clone())
            .into_iter()
            .chain(bound.git_basic_auth.clone())
            .collect();
        let preflight_key = format!("preflight:{namespace}:{}", preflight_shape(&run, &created));
        if !cluster.recently_checked(&preflight_key) {
            let report = preflight(&cluster.client, version, &namespace, &run, &created).await?;
            for note in report.notes {
                let _ = sink.progress(&note).await;
            }
            cluster.remember_check(preflight_key);
        }
        // Follow the run before it exists (see `WatchHub::subscribe`): the
        // shared watch may deliver its changes, even its end, while the
        // reference is being saved.
        let early = cluster.hub.subscribe(
            &pipelinerun_resource(version),
            &namespace,
            &rc.build.run_name,
            RunState::Unknown,
        );
        let (created, adopted) = create_or_adopt(&cluster.client, version, &run)
            .await
            .map_err(|failed| {
                *may_exist |= failed.may_exist;
                failed.error
            })?;
        Ok(Submitted {
            version,
            namespace,
            created,
            adopted,
            finally,
            early,
        })
    }

    /// Save the created run's reference, or cancel the run: without a
    /// persisted reference nobody could re-attach, and an orphan would run on.
    async fn save_reference(
        &self,
        cluster: Arc<Cluster>,
        provider_id: Option<Uuid>,
        submitted: Submitted,
        sink: &dyn ExecutionSink,
        oplog: &mut OperatorLog,
    ) -> Result<RunToFollow, Outcome> {
        let Submitted {
            version,
            namespace,
            created,
            adopted,
            finally,
            early,
        } = submitted;
        let name = created.metadata.name.clone().unwrap_or_default();
        let reference = ExecutionRef {
            executor: ExecutorKind::Tekton,
            provider_id,
            namespace: Some(namespace.clone()),
            name: Some(name.clone()),
            uid: created.metadata.uid.clone(),
        };
        // The run as created seeds the watch's state: only its summary is
        // kept. The whole object (inline pipelineSpec, managed fields: tens
        // of kB) must not stay alive in the future of `start`, which lives
        // as long as the build.
        let seed = RunState::Present(Arc::new(run_summary(
            &serde_json::to_value(&created).unwrap_or(Value::Null),
        )));
        drop(created);
        let saved = sink.reference(&reference).await;
        drop(reference);
        if let Err(e) = saved {
            // Cancelled, the run cannot go on beside the next attempt.
            // Otherwise it may: hand over instead of ending `Transient`, so
            // the next holder starts this same execution again and adopts
            // the run by its name (saving the reference then).
            return Err(
                match cancel(&cluster.client, version, &namespace, &name, finally).await {
                    Ok(()) => Outcome::Transient {
                        message: format!(
                            "PipelineRun {namespace}/{name} created but its reference could not be saved: {e}"
                        ),
                    },
                    Err(cancel_error) => {
                        tracing::warn!(run = %name, %namespace, error = %e, %cancel_error,
                            "the PipelineRun's reference could not be saved nor the run cancelled; handing over to adopt it");
                        Outcome::HandedOver
                    }
                },
            );
        }
        let _ = sink
            .progress(&format!("PipelineRun {namespace}/{name} created"))
            .await;
        let line = if adopted {
            format!(
                "Created PipelineRun: {name} (adopted: an earlier try of this attempt had created it)"
            )
        } else {
            format!("Created PipelineRun: {name}")
        };
        Box::pin(oplog.line(sink, line)).await;
        Ok(RunToFollow {
            cluster,
            version,
            namespace,
            name,
            finally,
            seed,
            early,
        })
    }

    /// The one place a [`Follow`] is built, for `start` and `reattach`:
    /// subscribes to the run, seeded unless the watch saw it change meanwhile.
    fn follower(&self, execution_id: Uuid, run: RunToFollow) -> (Follow, RunWatch) {
        let watch = run.cluster.hub.subscribe(
            &pipelinerun_resource(run.version),
            &run.namespace,
            &run.name,
            run.seed,
        );
        drop(run.early);
        let follow = Follow {
            execution_id,
            cleanups: self.cleanups.clone(),
            cluster: run.cluster,
            version: run.version,
            namespace: run.namespace,
            name: run.name,
            finally: run.finally,
            settings: self.settings.clone(),
        };
        (follow, watch)
    }
}

/// What [`TektonExecutor::submit`] leaves: the run as created (or adopted)
/// and the subscription taken before it existed.
struct Submitted {
    version: TektonVersion,
    namespace: String,
    created: DynamicObject,
    /// An earlier try of this attempt had created it (see `create_or_adopt`).
    adopted: bool,
    finally: bool,
    early: RunWatch,
}

/// A run to follow, as `start` created it or `reattach` found it: `seed` is
/// its summary as read, `early` the subscription held while it was read.
struct RunToFollow {
    cluster: Arc<Cluster>,
    version: TektonVersion,
    namespace: String,
    name: String,
    finally: bool,
    seed: RunState,
    early: RunWatch,
}

/// First wait between two submit attempts; it doubles after each.
const SUBMIT_FIRST_RETRY: Duration = Duration::from_millis(500);

/// Tries to create or adopt a run that may exist, after `submit_retries`:
/// 500 ms doubling up to [`UNCERTAIN_CREATE_MAX_DELAY`], without a limit
/// (see `submit_retrying`).
const UNCERTAIN_CREATE_RETRIES: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(500))
    .with_max_delay(UNCERTAIN_CREATE_MAX_DELAY)
    .without_max_times();

/// Longest wait between two tries at a run that may exist: a cluster that
/// is back is used within this.
const UNCERTAIN_CREATE_MAX_DELAY: Duration = Duration::from_secs(15);

/// Sleep `delay` unless a stop is asked first; `Handover` when the
/// dispatcher went away without a reason (as in `on_stop_signal`).
async fn wait_unless_stopped(delay: Duration, stop: &mut StopSignal) -> Option<StopReason> {
    let wait = tokio::time::sleep(delay);
    tokio::pin!(wait);
    loop {
        if let Some(reason) = *stop.borrow() {
            return Some(reason);
        }
        tokio::select! {
            _ = &mut wait => return None,
            changed = stop.changed() => if changed.is_err() {
                return Some(StopReason::Handover);
            },
        }
    }
}

/// A cancel or timeout asked while this attempt's run may exist but could
/// not be created or adopted: cancel it by its fixed name (gone already
/// counts as cancelled), trying until the cluster answers. The dispatcher
/// records the end itself after its stop grace if it never does.
async fn cancel_uncertain_run(
    cluster: &Cluster,
    ctx: &ExecutionContext,
    reason: StopReason,
) -> Outcome {
    let namespace = run_namespace(cluster, ctx.tenant_id);
    let name = run_name(ctx.build_id, ctx.attempt);
    let mut backoff = UNCERTAIN_CREATE_RETRIES.build();
    loop {
        // Finally tasks, if the run has any, still run (the template is
        // not rendered here to know).
        let cancelled = match cluster.tekton_version().await {
            Ok(version) => cancel(&cluster.client, version, &namespace, &name, true).await,
            Err(e) => Err(e),
        };
        match cancelled {
            Ok(()) => break,
            Err(e) if e.is_transient() => {
                tracing::warn!(run = %name, %namespace, error = %e,
                    "cancelling a PipelineRun that may exist failed; retrying");
                tokio::time::sleep(backoff.next().unwrap_or(UNCERTAIN_CREATE_MAX_DELAY)).await;
            }
            Err(e) => {
                return Outcome::Failed {
                    message: format!(
                        "the PipelineRun may be running and could not be cancelled: {e}"
                    ),
                };
            }
        }
    }
    match reason {
        StopReason::Timeout => Outcome::TimedOut {
            message: format!(
                "timed out before PipelineRun {namespace}/{name} was confirmed created; it was cancelled"
            ),
        },
        _ => Outcome::Cancelled {
            message: format!(
                "cancelled before PipelineRun {namespace}/{name} was confirmed created; it was cancelled"
            ),
        },
    }
}

/// The outcome of a stop asked before anything exists on the cluster.
fn stopped_before_submit(stop: &StopSignal) -> Option<Outcome> {
    match *stop.borrow() {
        Some(StopReason::Cancel) => Some(Outcome::Cancelled {
            message: "cancelled before the PipelineRun was created".into(),
        }),
        Some(StopReason::Timeout) => Some(Outcome::TimedOut {
            message: "timed out before the PipelineRun was created".into(),
        }),
        Some(StopReason::Handover) => Some(Outcome::HandedOver),
        None => None,
    }
}

#[async_trait]
impl Executor for TektonExecutor {
    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Tekton
    }

    async fn start(
        &self,
        ctx: ExecutionContext,
        sink: Arc<dyn ExecutionSink>,
        mut stop: StopSignal,
    ) -> Outcome {
        // Stopped before anything exists: nothing to cancel on the cluster.
        if let Some(outcome) = stopped_before_submit(&stop) {
            return outcome;
        }
        let began = std::time::Instant::now();
        let mut oplog = OperatorLog::new();
        // Boxed, as `submit`: creating the run (secrets, rendering,
        // preflight, operator lines) is short, and the future of `start`
        // lives as long as the build.
        let created = Box::pin(self.create_run(&ctx, &sink, &mut stop, &mut oplog, began)).await;
        // Not needed to follow the run (provider config, secrets, method config).
        drop(ctx);
        let run = match created {
            Ok(run) => run,
            Err(outcome) => return outcome,
        };
        let name = run.name.clone();
        let (follow, watch) = self.follower(run.execution_id, run.run);
        let outcome = follow.run(watch, sink.clone(), stop).await;
        Box::pin(oplog.finished(sink.as_ref(), Some(&name), &outcome, began.elapsed())).await;
        outcome
    }

    async fn reattach(
        &self,
        ctx: ExecutionContext,
        reference: ExecutionRef,
        sink: Arc<dyn ExecutionSink>,
        mut stop: StopSignal,
    ) -> Outcome {
        let execution_id = ctx.execution_id;
        let (Some(namespace), Some(name)) = (reference.namespace.clone(), reference.name.clone())
        else {
            return Outcome::Failed {
                message:
                    "cannot re-attach: the execution reference has no namespace or PipelineRun name"
                        .into(),
            };
        };
        let cluster = match self.clients.cluster(ctx.provider.as_ref()).await {
            Ok(c) => c,
            Err(e) => return e.into_outcome(),
        };
        drop(ctx);
        // Boxed: the retries are rare and the future of `reattach` lives as
        // long as the build.
        let read = Box::pin(read_to_reattach(
            &cluster,
            &namespace,
            &name,
            sink.as_ref(),
            &mut stop,
        ))
        .await;
        let (version, current, early) = match read {
            Ok(found) => found,
            Err(outcome) => return outcome,
        };
        if reference.uid.is_some() && current.metadata.uid != reference.uid {
            return Outcome::Failed {
                message: format!(
                    "PipelineRun {namespace}/{name} was deleted and replaced by another run with the same name"
                ),
            };
        }
        // As in `start`: only the summary of the run as read is kept.
        let value = serde_json::to_value(&current).unwrap_or(Value::Null);
        drop(current);
        let finally = has_finally(&value);
        let seed = RunState::Present(Arc::new(run_summary(&value)));
        // The attempt's duration counts from the run's creation, not from
        // this dispatcher's arrival.
        let began = value
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .and_then(|t| {
                (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                    .to_std()
                    .ok()
            })
            .and_then(|ago| std::time::Instant::now().checked_sub(ago))
            .unwrap_or_else(std::time::Instant::now);
        drop(value);
        let mut oplog = OperatorLog::resume(sink.as_ref()).await;
        Box::pin(oplog.line(
            sink.as_ref(),
            format!("Re-attached to PipelineRun: {name} in namespace {namespace}"),
        ))
        .await;
        let run_name = name.clone();
        let run = RunToFollow {
            cluster,
            version,
            namespace,
            name,
            finally,
            seed,
            early,
        };
        let (follow, watch) = self.follower(execution_id, run);
        let outcome = follow.run(watch, sink.clone(), stop).await;
        Box::pin(oplog.finished(sink.as_ref(), Some(&run_name), &outcome, began.elapsed())).await;
        outcome
    }

    async fn outcome_recorded(&self, execution_id: Uuid, recorded: bool) {
        let cleanup = self.cleanups.0.lock().unwrap().remove(&execution_id);
        // Not recorded (lease lost): the dispatcher that takes over
        // re-attaches to the run, and cleans up after recording it.
        if let Some(cleanup) = cleanup.filter(|_| recorded) {
            tokio::spawn(cleanup.run());
        }
    }
}

/// The run a re-attach follows, read with the cluster's Tekton version and
/// the subscription taken before the read (see `WatchHub::subscribe`).
///
/// This attempt's run may be going on the cluster, so a transient error
/// must not end the attempt: the dispatcher would start another attempt,
/// with another PipelineRun, beside it. The read is retried (backoff up to
/// [`REATTACH_READ_MAX_DELAY`]) for as long as it takes, within the lease
/// the dispatcher keeps renewing. A handover (or the dispatcher gone) ends
/// the wait and records nothing: whoever takes over reads the same run. A
/// cancel or timeout does not end it (the run must be read to be stopped);
/// if the cluster never answers, the dispatcher records the build's end
/// itself after its stop grace, so the build's timeout bounds the wait.
/// A run that is gone (404) fails the attempt, as it does while following.
async fn read_to_reattach(
    cluster: &Cluster,
    namespace: &str,
    name: &str,
    sink: &dyn ExecutionSink,
    stop: &mut StopSignal,
) -> Result<(TektonVersion, DynamicObject, RunWatch), Outcome> {
    let mut backoff = REATTACH_READ_RETRIES.build();
    let mut failed_reads = 0u32;
    loop {
        let failure = match cluster.tekton_version().await {
            Ok(version) => {
                let resource = pipelinerun_resource(version);
                // Follow before reading (see `WatchHub::subscribe`).
                let early = cluster
                    .hub
                    .subscribe(&resource, namespace, name, RunState::Unknown);
                let api: Api<DynamicObject> =
                    Api::namespaced_with(cluster.client.clone(), namespace, &resource);
                match api.get_opt(name).await {
                    Ok(Some(run)) => return Ok((version, run, early)),
                    Ok(None) => return Err(deleted(namespace, name)),
                    Err(e) => {
                        TektonError::kube(format!("reading PipelineRun {namespace}/{name}"), e)
                    }
                }
            }
            Err(e) => e,
        };
        if !failure.is_transient() {
            return Err(failure.into_outcome());
        }
        failed_reads += 1;
        if failed_reads == 1 {
            tracing::warn!(run = %name, %namespace, error = %failure,
                "re-attaching: the PipelineRun cannot be read; retrying until the cluster answers");
            let _ = sink
                .progress(&format!(
                    "re-attaching: retrying until the cluster answers: {failure}"
                ))
                .await;
        }
        let delay = backoff.next().unwrap_or(REATTACH_READ_MAX_DELAY);
        let wait = tokio::time::sleep(delay);
        tokio::pin!(wait);
        loop {
            if *stop.borrow_and_update() == Some(StopReason::Handover) {
                return Err(Outcome::HandedOver);
            }
            tokio::select! {
                _ = &mut wait => break,
                changed = stop.changed() => if changed.is_err() {
                    // The dispatcher went away without a reason, as in
                    // `on_stop_signal`.
                    return Err(Outcome::HandedOver);
                },
            }
        }
    }
}

/// Reads of the run a re-attach follows, while they fail transiently:
/// 500 ms doubling up to [`REATTACH_READ_MAX_DELAY`], without a limit
/// (see `read_to_reattach`).
const REATTACH_READ_RETRIES: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(500))
    .with_max_delay(REATTACH_READ_MAX_DELAY)
    .without_max_times();

/// Longest wait between two reads of a run a re-attach could not read: a
/// cluster that is back is used within this.
const REATTACH_READ_MAX_DELAY: Duration = Duration::from_secs(15);

/// A run [`TektonExecutor::create_run`] created (or adopted), to follow.
struct CreatedRun {
    execution_id: Uuid,
    name: String,
    run: RunToFollow,
}

impl TektonExecutor {
    /// `start` up to a created run with its reference saved, writing the
    /// namespace and "Created PipelineRun" operator lines, or on failure the
    /// completion line. `ctx` is borrowed: `start` drops it before following
    /// the run.
    async fn create_run(
        &self,
        ctx: &ExecutionContext,
        sink: &Arc<dyn ExecutionSink>,
        stop: &mut StopSignal,
        oplog: &mut OperatorLog,
        began: std::time::Instant,
    ) -> Result<CreatedRun, Outcome> {
        let created = self.try_create_run(ctx, sink, stop, oplog).await;
        if let Err(outcome) = &created {
            Box::pin(oplog.finished(sink.as_ref(), None, outcome, began.elapsed())).await;
        }
        created
    }

    async fn try_create_run(
        &self,
        ctx: &ExecutionContext,
        sink: &Arc<dyn ExecutionSink>,
        stop: &mut StopSignal,
        oplog: &mut OperatorLog,
    ) -> Result<CreatedRun, Outcome> {
        let cluster = self
            .clients
            .cluster(ctx.provider.as_ref())
            .await
            .map_err(TektonError::into_outcome)?;
        Box::pin(oplog.line(
            sink.as_ref(),
            format!(
                "Using Kubernetes namespace: {}",
                run_namespace(&cluster, ctx.tenant_id)
            ),
        ))
        .await;
        // Boxed: rendering and preflight are large futures, and the future
        // of `start` lives as long as the build.
        let submitted = Box::pin(self.submit_retrying(&cluster, ctx, sink.as_ref(), stop)).await?;
        let provider_id = ctx.provider.as_ref().map(|p| p.provider_id);
        let run = self
            .save_reference(cluster, provider_id, submitted, sink.as_ref(), oplog)
            .await?;
        Ok(CreatedRun {
            execution_id: ctx.execution_id,
            name: run.name.clone(),
            run,
        })
    }
}

/// Where a build's run goes: a tenant provider's `namespace`, else the
/// tenant's own.
fn run_namespace(cluster: &Cluster, tenant_id: Uuid) -> String {
    cluster
        .settings
        .namespace
        .clone()
        .unwrap_or_else(|| namespace_name(tenant_id))
}

/// Create a Secret unless this cluster created or checked it recently (names
/// carry the whole credential id and version or content hash, so the cache
/// key cannot be shared by two credentials).
async fn ensure_cached(
    cluster: &Cluster,
    namespace: &str,
    secret: &k8s_openapi::api::core::v1::Secret,
) -> Result<String, TektonError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let key = format!("secret:{namespace}/{name}");
    if cluster.recently_checked(&key) {
        return Ok(name);
    }
    let name = ensure_secret(&cluster.client, namespace, secret).await?;
    cluster.remember_check(key);
    Ok(name)
}

/// What preflight depends on in a run: its Tasks, Secrets, claim classes and
/// service account. Runs of the same shape share one recent preflight.
fn preflight_shape(run: &Value, created_secrets: &[String]) -> String {
    let classes: Vec<&str> = run
        .pointer("/spec/workspaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|w| w.get("volumeClaimTemplate"))
        .map(|c| {
            c.pointer("/spec/storageClassName")
                .and_then(Value::as_str)
                .unwrap_or("")
        })
        .collect();
    let account = run
        .pointer("/spec/taskRunTemplate/serviceAccountName")
        .or_else(|| run.pointer("/spec/serviceAccountName"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    format!(
        "{:?}|{:?}|{classes:?}|{account}",
        referenced_tasks(run, ""),
        bound_secrets(run)
            .into_iter()
            .filter(|s| !created_secrets.contains(s))
            .collect::<Vec<_>>()
    )
}

fn deleted(namespace: &str, name: &str) -> Outcome {
    Outcome::Failed {
        message: format!("PipelineRun {namespace}/{name} was deleted before it finished"),
    }
}

/// Merge-patch `spec.status` to cancel a run (gracefully when it has finally tasks).
pub async fn cancel(
    client: &kube::Client,
    version: TektonVersion,
    namespace: &str,
    name: &str,
    finally: bool,
) -> Result<(), TektonError> {
    let status = if finally {
        "CancelledRunFinally"
    } else {
        "Cancelled"
    };
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), namespace, &pipelinerun_resource(version));
    let patch = json!({ "spec": { "status": status } });
    let patch_once = || async {
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            // Gone already: nothing left to cancel.
            Err(e) if is_not_found(&e) => Ok(()),
            other => other.map(drop),
        }
    };
    patch_once
        .retry(CANCEL_RETRIES)
        .when(is_transient)
        .await
        .map_err(|e| TektonError::kube(format!("cancelling PipelineRun {namespace}/{name}"), e))
}

/// Five tries of a cancel patch, 200 ms apart and doubling, no jitter.
const CANCEL_RETRIES: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(200))
    .with_max_times(4);

/// Reads of a finished run's TaskRun: 200 ms doubling up to 5 s, about a
/// minute in all — longer than an API server's restart.
const TASKRUN_READ_RETRIES: ExponentialBuilder = ExponentialBuilder::new()
    .with_min_delay(Duration::from_millis(200))
    .with_max_delay(Duration::from_secs(5))
    .with_max_times(16);

/// Target of the debug events that mark a run's end path (`stage` =
/// `seen_ended`, `logs_drained`), so a profiler or the bench can time it.
pub const END_TARGET: &str = "imagefactory_exec::tekton::end";

/// Longest wait between two resync reads of a silent run.
const MAX_RESYNC_INTERVAL: Duration = Duration::from_secs(3600);

/// Following one run to its end.
struct Follow {
    execution_id: Uuid,
    cleanups: PendingCleanups,
    cluster: Arc<Cluster>,
    version: TektonVersion,
    namespace: String,
    name: String,
    finally: bool,
    settings: TektonSettings,
}

/// What [`Follow::run`] tracks between two events.
struct FollowState {
    /// The stop asked and acted on (cancel or timeout), if any.
    requested: Option<StopReason>,
    /// A stop received and not yet acted on.
    pending_stop: Option<StopReason>,
    /// When a requested cancellation counts as unconfirmed.
    cancel_deadline: Option<tokio::time::Instant>,
    /// The run's last reported condition reason.
    last_reason: String,
    /// Not a backon backoff: the interval is read again after every change
    /// of the run (which pushes the next read back) and doubles only after
    /// a resync read, so it is a plain `Duration` here.
    resync_every: Duration,
    resync_at: tokio::time::Instant,
}

/// What the run's latest state asks of [`Follow::run`].
enum Seen {
    /// Wait for the next event.
    Wait,
    /// Look at the state again (the watch was replaced).
    Again,
    /// The run ended (or is gone): the attempt's outcome.
    End(Outcome),
}

impl Follow {
    /// `watch`: the run's subscription, seeded with the run as created or read.
    async fn run(
        self,
        mut watch: RunWatch,
        sink: Arc<dyn ExecutionSink>,
        mut stop: StopSignal,
    ) -> Outcome {
        let finished_taskruns = FinishedTaskRuns::default();
        let reads = LogReads::default();
        let logs = self
            .spawn_logs(&watch, &sink, &finished_taskruns, &reads)
            .await;
        let mut logs = LogTask {
            handle: Some(logs),
            reads,
        };
        let now = tokio::time::Instant::now();
        let mut st = FollowState {
            requested: None,
            // A stop asked before we started counts too.
            pending_stop: *stop.borrow_and_update(),
            cancel_deadline: None,
            last_reason: String::new(),
            resync_every: self.settings.resync_after,
            resync_at: now + self.settings.resync_after,
        };
        loop {
            if let Some(reason) = st.pending_stop.take()
                && let ControlFlow::Break(outcome) =
                    self.on_stop(reason, &mut st, sink.as_ref()).await
            {
                return outcome;
            }
            match self
                .on_state(
                    &mut watch,
                    &mut st,
                    &mut logs,
                    &finished_taskruns,
                    &mut stop,
                    sink.as_ref(),
                )
                .await
            {
                Seen::Wait => {}
                Seen::Again => continue,
                Seen::End(outcome) => return outcome,
            }
            let deadline = st.cancel_deadline;
            let cancel_timer = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let step = tokio::select! {
                changed = watch.state.changed() => match changed {
                    Ok(()) => self.on_change(&mut st),
                    Err(_) => self.on_watch_closed(&mut watch).await,
                },
                _ = tokio::time::sleep_until(st.resync_at) => self.on_resync(&mut st).await,
                changed = stop.changed() => on_stop_signal(changed.is_ok(), &mut stop, &mut st),
                _ = watch.watch_error.changed() => self.on_watch_error(&mut watch),
                _ = cancel_timer => ControlFlow::Break(self.unconfirmed_cancel(st.requested)),
            };
            if let ControlFlow::Break(outcome) = step {
                return outcome;
            }
        }
    }

    /// Start following the run's logs (they resume from the stored positions).
    async fn spawn_logs(
        &self,
        watch: &RunWatch,
        sink: &Arc<dyn ExecutionSink>,
        finished_taskruns: &FinishedTaskRuns,
        reads: &LogReads,
    ) -> JoinHandle<Result<(), TektonError>> {
        let resume = sink.log_positions().await.unwrap_or_default();
        let follower = LogFollower {
            log_clients: self.cluster.logs.clone(),
            version: self.version,
            namespace: self.namespace.clone(),
            sink: sink.clone(),
            resume,
            run_state: None,
            finished_taskruns: finished_taskruns.clone(),
            reads: reads.clone(),
            patience: self.settings.log_drain_patience,
        };
        tokio::spawn(follower.run(watch.state.clone()))
    }

    /// A stop: handover ends following at once; the first cancel or
    /// timeout cancels the run and starts the grace period.
    async fn on_stop(
        &self,
        reason: StopReason,
        st: &mut FollowState,
        sink: &dyn ExecutionSink,
    ) -> ControlFlow<Outcome> {
        match reason {
            StopReason::Handover => return ControlFlow::Break(Outcome::HandedOver),
            StopReason::Cancel | StopReason::Timeout if st.requested.is_none() => {
                st.requested = Some(reason);
                // Boxed, as the reads below: rare requests must not size
                // the future of `run`, which lives as long as the build.
                let cancelled = Box::pin(cancel(
                    &self.cluster.client,
                    self.version,
                    &self.namespace,
                    &self.name,
                    self.finally,
                ))
                .await;
                if let Err(e) = cancelled {
                    let _ = sink
                        .progress(&format!("cancelling failed, will wait for the run: {e}"))
                        .await;
                }
                st.cancel_deadline = Some(tokio::time::Instant::now() + self.settings.cancel_grace);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    /// The run as the watch sees it now: ended, gone, progressing or unknown.
    async fn on_state(
        &self,
        watch: &mut RunWatch,
        st: &mut FollowState,
        logs: &mut LogTask,
        finished_taskruns: &FinishedTaskRuns,
        stop: &mut StopSignal,
        sink: &dyn ExecutionSink,
    ) -> Seen {
        let state = watch.state.borrow_and_update().clone();
        let run = match state {
            RunState::Present(run) => run,
            RunState::Deleted => return Seen::End(deleted(&self.namespace, &self.name)),
            RunState::Missing => return self.confirm_missing(watch).await,
            RunState::Unknown => return Seen::Wait,
        };
        let Some(cond) = succeeded_condition(&run) else {
            return Seen::Wait;
        };
        if let Some(end) = terminal(&cond) {
            // Boxed: only the end needs this future's room.
            let outcome =
                Box::pin(self.finish(&run, end, st.requested, logs, finished_taskruns, stop, sink));
            return Seen::End(outcome.await);
        }
        if cond.reason != st.last_reason {
            st.last_reason = cond.reason.clone();
            let _ = sink
                .progress(&format!("PipelineRun {}: {}", self.name, cond.reason))
                .await;
        }
        Seen::Wait
    }

    /// The watch lists the run as missing: confirm with a GET, as a relist
    /// may have been taken before the run existed.
    async fn confirm_missing(&self, watch: &mut RunWatch) -> Seen {
        match Box::pin(self.api().get_opt(&self.name)).await {
            Ok(None) => Seen::End(deleted(&self.namespace, &self.name)),
            Ok(Some(run)) => {
                let value = Arc::new(serde_json::to_value(&run).unwrap_or(Value::Null));
                *watch = self.cluster.hub.subscribe(
                    &pipelinerun_resource(self.version),
                    &self.namespace,
                    &self.name,
                    RunState::Present(value),
                );
                Seen::Again
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Seen::Wait
            }
        }
    }

    /// The run changed: the next resync read moves back.
    fn on_change(&self, st: &mut FollowState) -> ControlFlow<Outcome> {
        st.resync_at = tokio::time::Instant::now() + st.resync_every;
        ControlFlow::Continue(())
    }

    /// The run's subscription ended (its shared watch went away). The run
    /// may still be going: ending the attempt `Transient` would have the
    /// dispatcher start another beside it. Read it and follow it afresh, as
    /// a run missing from a relist is (a failing read is tried again a
    /// second later; the build's timeout bounds this).
    async fn on_watch_closed(&self, watch: &mut RunWatch) -> ControlFlow<Outcome> {
        tracing::warn!(run = %self.name, namespace = %self.namespace,
            "the PipelineRun watch ended; reading the run to follow it again");
        match Box::pin(self.confirm_missing(watch)).await {
            Seen::End(outcome) => ControlFlow::Break(outcome),
            Seen::Wait | Seen::Again => ControlFlow::Continue(()),
        }
    }

    /// Silent for long: read the run once, in case the watch lost a change
    /// (see `TektonSettings::resync_after`).
    async fn on_resync(&self, st: &mut FollowState) -> ControlFlow<Outcome> {
        st.resync_every = (st.resync_every * 2).min(MAX_RESYNC_INTERVAL);
        st.resync_at = tokio::time::Instant::now() + st.resync_every;
        match Box::pin(self.api().get_opt(&self.name)).await {
            Ok(Some(run)) => {
                let value = Arc::new(serde_json::to_value(&run).unwrap_or(Value::Null));
                let resource = pipelinerun_resource(self.version);
                if self
                    .cluster
                    .hub
                    .refresh(&resource, &self.namespace, &self.name, value)
                {
                    tracing::warn!(run = %self.name, namespace = %self.namespace,
                        "the PipelineRun watch had not delivered the run's latest state; resynced by GET");
                }
            }
            Ok(None) => return ControlFlow::Break(deleted(&self.namespace, &self.name)),
            Err(e) => {
                tracing::debug!(run = %self.name, error = %e, "resync read failed; the watch stays the source")
            }
        }
        ControlFlow::Continue(())
    }

    /// The shared watch reports trouble: permanent (no permission) fails
    /// the attempt, anything else is retried by the watch.
    fn on_watch_error(&self, watch: &mut RunWatch) -> ControlFlow<Outcome> {
        let trouble = watch.watch_error.borrow_and_update().clone();
        let Some(trouble) = trouble else {
            return ControlFlow::Continue(());
        };
        if trouble.is_permanent() {
            return ControlFlow::Break(Outcome::Failed {
                message: format!(
                    "cannot watch PipelineRuns in namespace {}: {}; grant the provider's identity list and watch on pipelineruns",
                    self.namespace, trouble.message
                ),
            });
        }
        tracing::debug!(run = %self.name, error = %trouble.message, "watch trouble; retrying");
        ControlFlow::Continue(())
    }

    /// Tekton did not confirm the cancellation within the grace period.
    fn unconfirmed_cancel(&self, requested: Option<StopReason>) -> Outcome {
        let message = format!(
            "PipelineRun {}/{} did not confirm cancellation within {:?}",
            self.namespace, self.name, self.settings.cancel_grace
        );
        match requested {
            Some(StopReason::Timeout) => Outcome::TimedOut { message },
            _ => Outcome::Cancelled { message },
        }
    }

    fn api(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.cluster.client.clone(),
            &self.namespace,
            &pipelinerun_resource(self.version),
        )
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish(
        &self,
        run: &Value,
        end: Terminal,
        requested: Option<StopReason>,
        logs: &mut LogTask,
        seen: &FinishedTaskRuns,
        stop: &mut StopSignal,
        sink: &dyn ExecutionSink,
    ) -> Outcome {
        tracing::debug!(target: END_TARGET, run = %self.name, stage = "seen_ended", "the PipelineRun has ended; draining its logs");
        if let Drained::HandedOver = self.drain_logs(logs, stop, sink).await {
            return Outcome::HandedOver;
        }
        tracing::debug!(target: END_TARGET, run = %self.name, stage = "logs_drained", "logs drained; reading the TaskRuns' results");
        let (taskruns, unread) = self.taskruns(run, seen).await;
        let task_results: Vec<(String, Vec<(String, String)>)> = taskruns
            .iter()
            .map(|(task, tr)| (task.clone(), taskrun_results(tr)))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        // One write for all of them: the build's end waits on it.
        let found = artifacts(&pipeline_results(run), &task_results);
        if let Err(e) = sink.artifacts(&found).await {
            let names: Vec<&str> = found.iter().map(|a| a.name.as_str()).collect();
            return Outcome::Transient {
                message: format!("saving artifacts {names:?} failed: {e}"),
            };
        }
        let outcome = match end {
            Terminal::Succeeded => Outcome::Succeeded,
            Terminal::Cancelled { message } | Terminal::TimedOut { message }
                if requested == Some(StopReason::Timeout) =>
            {
                Outcome::TimedOut {
                    message: format!(
                        "build timed out; PipelineRun {} stopped: {message}",
                        self.name
                    ),
                }
            }
            Terminal::Cancelled { message } => Outcome::Cancelled {
                message: format!("PipelineRun {} cancelled: {message}", self.name),
            },
            Terminal::TimedOut { message } => Outcome::TimedOut {
                message: format!("PipelineRun {} timed out: {message}", self.name),
            },
            Terminal::Failed { reason, message } => {
                let steps: Vec<String> = taskruns
                    .iter()
                    .filter_map(|(task, tr)| failed_step(task, tr))
                    .collect();
                let mut text = format!("PipelineRun {} failed: {reason}: {message}", self.name);
                for part in steps.iter().chain(&unread) {
                    text.push_str("; ");
                    text.push_str(part);
                }
                Outcome::Failed { message: text }
            }
        };
        if self.cluster.settings.retention.is_some() {
            // Not yet: see `PendingCleanups`.
            self.cleanups.0.lock().unwrap().insert(
                self.execution_id,
                Cleanup {
                    cluster: self.cluster.clone(),
                    version: self.version,
                    namespace: self.namespace.clone(),
                    name: self.name.clone(),
                },
            );
        }
        outcome
    }

    /// Let the log follower read the last lines: for `log_drain`, and while
    /// its reads fail transiently (the cluster down or failing; the lines
    /// are still there) or the database does not take the lines it holds,
    /// up to `log_drain_patience` from the run's end, with
    /// another `log_drain` once the cluster answers again. Not when a stop
    /// was asked: the dispatcher records the end itself after its stop
    /// grace. A handover asked while waiting ends the wait (whoever
    /// re-attaches drains again from the stored positions). Whatever could
    /// not be read is named in the build's log, never silently lost.
    async fn drain_logs(
        &self,
        logs: &mut LogTask,
        stop: &mut StopSignal,
        sink: &dyn ExecutionSink,
    ) -> Drained {
        let Some(mut handle) = logs.handle.take() else {
            return Drained::Done;
        };
        let ended = tokio::time::Instant::now();
        let patience_end = ended + self.settings.log_drain_patience;
        let mut drain_end = ended + self.settings.log_drain;
        let mut reads = logs.reads.subscribe();
        // Past `log_drain` because the reads were failing.
        let mut waiting_out = false;
        let mut stop_open = true;
        let problem = loop {
            tokio::select! {
                joined = &mut handle => break match joined {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("Log streaming stopped early: {e}; lines may be missing")),
                    Err(_) => Some("Log streaming ended unexpectedly; lines may be missing".to_owned()),
                },
                changed = reads.changed(), if waiting_out => {
                    if changed.is_ok() && !reads.borrow_and_update().waiting() {
                        drain_end = tokio::time::Instant::now() + self.settings.log_drain;
                    }
                }
                _ = tokio::time::sleep_until(drain_end) => {
                    let now = tokio::time::Instant::now();
                    let failing = reads.borrow_and_update().waiting();
                    let asked = *stop.borrow();
                    if failing && now < patience_end {
                        match asked {
                            None => {
                                waiting_out = true;
                                drain_end = patience_end;
                                continue;
                            }
                            Some(StopReason::Handover) => {
                                handle.abort();
                                return Drained::HandedOver;
                            }
                            Some(_) => {}
                        }
                    }
                    handle.abort();
                    break Some(unread_note(&logs.reads.current(), now - ended));
                }
                changed = stop.changed(), if waiting_out && stop_open => {
                    if changed.is_err() {
                        stop_open = false;
                        continue;
                    }
                    handle.abort();
                    if *stop.borrow_and_update() == Some(StopReason::Handover) {
                        return Drained::HandedOver;
                    }
                    let waited = tokio::time::Instant::now() - ended;
                    break Some(unread_note(&logs.reads.current(), waited));
                }
            }
        };
        let mut notes: Vec<String> = logs
            .reads
            .current()
            .incomplete
            .iter()
            .map(|(source, why)| {
                format!(
                    "The end of the log of step {source} could not be read: {why}; its last lines may be missing"
                )
            })
            .collect();
        notes.extend(problem);
        if !notes.is_empty() {
            let mut oplog = OperatorLog::resume(sink).await;
            for note in notes {
                tracing::warn!(run = %self.name, namespace = %self.namespace, %note, "log lines may be missing");
                let _ = sink.progress(&note).await;
                Box::pin(oplog.line(sink, note)).await;
            }
        }
        Drained::Done
    }

    /// The run's TaskRuns, by pipeline task, in status order, and a note
    /// for each one that could not be read (so a failure's message says
    /// its step detail is missing rather than silently leaving it out).
    async fn taskruns(
        &self,
        run: &Value,
        seen: &FinishedTaskRuns,
    ) -> (Vec<(String, Value)>, Vec<String>) {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.cluster.client.clone(),
            &self.namespace,
            &taskrun_resource(self.version),
        );
        let mut out = Vec::new();
        let mut unread = Vec::new();
        for (task, name) in child_taskruns(run) {
            if let Some(tr) = seen.take(&name) {
                out.push((task, tr));
                continue;
            }
            // The run's end often coincides with a flaky or restarting API
            // server; its results and failing step are worth waiting for.
            let read = (|| api.get_opt(&name))
                .retry(TASKRUN_READ_RETRIES)
                .when(is_transient)
                .await;
            match read {
                Ok(Some(tr)) => out.push((task, serde_json::to_value(tr).unwrap_or(Value::Null))),
                // Deleted (retention, an operator): nothing to report.
                Ok(None) => {}
                Err(e) => unread.push(format!(
                    "TaskRun {name} of task {task} could not be read: {}",
                    describe_kube_error(&e)
                )),
            }
        }
        (out, unread)
    }
}

/// The stop signal changed: a new reason to act on, or the dispatcher gone.
fn on_stop_signal(
    alive: bool,
    stop: &mut StopSignal,
    st: &mut FollowState,
) -> ControlFlow<Outcome> {
    if alive {
        st.pending_stop = *stop.borrow_and_update();
    } else if st.requested.is_none() {
        // The dispatcher went away without a reason: treat as handover.
        return ControlFlow::Break(Outcome::HandedOver);
    }
    ControlFlow::Continue(())
}

/// The log follower's task (aborted when dropped) and how its reads go.
struct LogTask {
    handle: Option<JoinHandle<Result<(), TektonError>>>,
    reads: LogReads,
}

impl Drop for LogTask {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}

/// What became of the log follower at the run's end.
enum Drained {
    /// It read to the end, or what it could not read is noted.
    Done,
    /// A handover was asked while it waited out failing reads.
    HandedOver,
}

/// Why the follower was given up after `waited`, and from which step lines
/// may be missing.
fn unread_note(reads: &ReadState, waited: Duration) -> String {
    let why = match &reads.failing {
        Some((since, cause)) => format!(
            "the cluster failed the log reads for {:.0} s ({cause})",
            since.elapsed().as_secs_f64()
        ),
        None => match reads.storing_since {
            Some(since) => format!(
                "the database did not take the log lines for {:.0} s",
                since.elapsed().as_secs_f64()
            ),
            None => format!(
                "log streaming did not finish within {:.0} s after the run ended",
                waited.as_secs_f64()
            ),
        },
    };
    match &reads.source {
        Some(source) => format!(
            "The build's log could not be read to its end: {why}; lines of step {source} and of later steps may be missing"
        ),
        None => {
            format!("The build's log could not be read to its end: {why}; lines may be missing")
        }
    }
}
