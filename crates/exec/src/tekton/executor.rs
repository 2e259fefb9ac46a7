//! The Tekton [`Executor`]: namespace → secrets → render → validate →
//! preflight → create (or adopt) → persist reference → watch, logs, results.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use imagefactory_domain::address::AddressPolicy;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::client::{ClientCache, Cluster, TektonVersion};
use super::error::{TektonError, is_not_found, is_transient};
use super::logs::{FinishedTaskRuns, LogFollower};
use super::monitor::{RunState, RunWatch};
use super::namespace::{ensure_namespace, namespace_name};
use super::plan::{BoundSecrets, render_context};
use super::preflight::preflight;
use super::render::{Templates, build_task_name};
use super::retention::{apply_retention, mark_persisted};
use super::secrets::{OPERATOR_DOCKER_CONFIG, ensure_secret, git_secret, registry_secret};
use super::status::{
    Terminal, artifacts, child_taskruns, failed_step, pipeline_results, run_summary,
    succeeded_condition, taskrun_results, terminal,
};
use super::submit::{create_or_adopt, pipelinerun_resource, taskrun_resource};
use super::validate::{
    Expected, bound_secrets, has_finally, referenced_tasks, to_version, validate,
};
use crate::{
    ExecutionContext, ExecutionRef, ExecutionSink, Executor, ExecutorKind, Outcome, StopReason,
    StopSignal,
};

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
    /// How long to wait for Tekton to confirm a cancellation.
    pub cancel_grace: Duration,
    /// Retries of the (idempotent) submit sequence on transient errors before
    /// the attempt ends `Transient`; backoff doubles from 500 ms.
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
            cancel_grace: Duration::from_secs(300),
            submit_retries: 4,
            resync_after: Duration::from_secs(120),
            address_policy: Arc::default(),
        }
    }
}

impl TektonSettings {
    pub fn from_env() -> Self {
        let path = |key: &str| {
            std::env::var_os(key)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            templates_dir: path("IF_BUILD_TEKTON_TEMPLATES_DIR"),
            global_kubeconfig: path("IF_BUILD_TEKTON_KUBECONFIG"),
            global_in_cluster: std::env::var("IF_BUILD_TEKTON_IN_CLUSTER")
                .is_ok_and(|v| v == "true" || v == "1"),
            address_policy: Arc::new(AddressPolicy::new(
                std::env::var("IF_PROVIDER_ALLOW_LOOPBACK").is_ok_and(|v| v == "true" || v == "1"),
            )),
            ..Self::default()
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

    /// Everything up to and including the created (or adopted) run.
    async fn submit(
        &self,
        cluster: &Cluster,
        ctx: &ExecutionContext,
        sink: &dyn ExecutionSink,
    ) -> Result<(TektonVersion, String, DynamicObject, bool, RunWatch), TektonError> {
        let version = cluster.tekton_version().await?;
        let namespace = namespace_name(ctx.tenant_id);
        // Keyed by the whole tenant id: the name holds only its first 8 hex
        // digits, so another tenant's check must not count for this one.
        let ns_key = format!("namespace:{}", ctx.tenant_id);
        if !cluster.recently_checked(&ns_key) {
            ensure_namespace(&cluster.client, ctx.tenant_id).await?;
            cluster.remember_check(ns_key);
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
        let created = create_or_adopt(&cluster.client, version, &run).await?;
        Ok((version, namespace, created, finally, early))
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
        stop: StopSignal,
    ) -> Outcome {
        let execution_id = ctx.execution_id;
        // Stopped before anything exists: nothing to cancel on the cluster.
        match *stop.borrow() {
            Some(StopReason::Cancel) => {
                return Outcome::Cancelled {
                    message: "cancelled before the PipelineRun was created".into(),
                };
            }
            Some(StopReason::Timeout) => {
                return Outcome::TimedOut {
                    message: "timed out before the PipelineRun was created".into(),
                };
            }
            Some(StopReason::Handover) => return Outcome::HandedOver,
            None => {}
        }
        let cluster = match self.clients.cluster(ctx.provider.as_ref()).await {
            Ok(c) => c,
            Err(e) => return e.into_outcome(),
        };
        // Every step of submit is idempotent (create-if-missing, 409 → adopt),
        // so a 5xx/429/connection error is retried here: a create whose
        // answer was lost is adopted on the next try instead of leaking a run.
        let mut delay = Duration::from_millis(500);
        let mut retries = 0;
        let (version, namespace, created, finally, early) = loop {
            // Boxed: rendering and preflight are large futures, and the
            // future of `start` lives as long as the build.
            match Box::pin(self.submit(&cluster, &ctx, sink.as_ref())).await {
                Ok(v) => break v,
                Err(e) if e.is_transient() && retries < self.settings.submit_retries => {
                    retries += 1;
                    let _ = sink
                        .progress(&format!("retrying after a transient error: {e}"))
                        .await;
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => return e.into_outcome(),
            }
        };
        let name = created.metadata.name.clone().unwrap_or_default();
        let reference = ExecutionRef {
            executor: ExecutorKind::Tekton,
            provider_id: ctx.provider.as_ref().map(|p| p.provider_id),
            namespace: Some(namespace.clone()),
            name: Some(name.clone()),
            uid: created.metadata.uid.clone(),
        };
        // The run as created seeds the watch's state: only its summary is
        // kept. The whole object (inline pipelineSpec, managed fields: tens
        // of kB) must not stay alive in this future, which lives as long as
        // the build; nor is the context (provider config, secrets, method
        // config) needed to follow the run.
        let seed = RunState::Present(Arc::new(run_summary(
            &serde_json::to_value(&created).unwrap_or(Value::Null),
        )));
        drop(created);
        drop(ctx);
        let saved = sink.reference(&reference).await;
        drop(reference);
        if let Err(e) = saved {
            // Without a persisted reference nobody could re-attach: stop the
            // run rather than leave an orphan, and let the attempt be retried.
            let _ = cancel(&cluster.client, version, &namespace, &name, finally).await;
            return Outcome::Transient {
                message: format!(
                    "PipelineRun {namespace}/{name} created but its reference could not be saved: {e}"
                ),
            };
        }
        let _ = sink
            .progress(&format!("PipelineRun {namespace}/{name} created"))
            .await;
        // Seeds the state unless the watch saw the run change meanwhile.
        let watch = cluster
            .hub
            .subscribe(&pipelinerun_resource(version), &namespace, &name, seed);
        drop(early);
        let follow = Follow {
            execution_id,
            cleanups: self.cleanups.clone(),
            cluster,
            version,
            namespace,
            name,
            finally,
            settings: self.settings.clone(),
        };
        follow.run(watch, sink, stop).await
    }

    async fn reattach(
        &self,
        ctx: ExecutionContext,
        reference: ExecutionRef,
        sink: Arc<dyn ExecutionSink>,
        stop: StopSignal,
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
        let version = match cluster.tekton_version().await {
            Ok(v) => v,
            Err(e) => return e.into_outcome(),
        };
        let resource = pipelinerun_resource(version);
        let api: Api<DynamicObject> =
            Api::namespaced_with(cluster.client.clone(), &namespace, &resource);
        // Follow before reading (see `WatchHub::subscribe`).
        let early = cluster
            .hub
            .subscribe(&resource, &namespace, &name, RunState::Unknown);
        let current = match api.get_opt(&name).await {
            Ok(Some(run)) => run,
            Ok(None) => return deleted(&namespace, &name),
            Err(e) => {
                return TektonError::kube(format!("reading PipelineRun {namespace}/{name}"), e)
                    .into_outcome();
            }
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
        drop(value);
        let watch = cluster.hub.subscribe(&resource, &namespace, &name, seed);
        drop(early);
        let follow = Follow {
            execution_id,
            cleanups: self.cleanups.clone(),
            cluster,
            version,
            namespace,
            name,
            finally,
            settings: self.settings.clone(),
        };
        follow.run(watch, sink, stop).await
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
    let mut delay = Duration::from_millis(200);
    for attempt in 0..5 {
        match api
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) if is_transient(&e) && attempt < 4 => {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(e) => {
                return Err(TektonError::kube(
                    format!("cancelling PipelineRun {namespace}/{name}"),
                    e,
                ));
            }
        }
    }
    Ok(())
}

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

impl Follow {
    /// `watch`: the run's subscription, seeded with the run as created or read.
    async fn run(
        self,
        mut watch: RunWatch,
        sink: Arc<dyn ExecutionSink>,
        mut stop: StopSignal,
    ) -> Outcome {
        let resource = pipelinerun_resource(self.version);
        let resume = sink.log_positions().await.unwrap_or_default();
        let finished_taskruns = FinishedTaskRuns::default();
        let follower = LogFollower {
            log_clients: self.cluster.logs.clone(),
            version: self.version,
            namespace: self.namespace.clone(),
            sink: sink.clone(),
            resume,
            run_state: None,
            finished_taskruns: finished_taskruns.clone(),
        };
        let logs: JoinHandle<Result<(), TektonError>> =
            tokio::spawn(follower.run(watch.state.clone()));
        let logs = AbortOnDrop(Some(logs));
        let mut requested: Option<StopReason> = None;
        let mut cancel_deadline: Option<tokio::time::Instant> = None;
        let mut last_reason = String::new();
        let mut resync_every = self.settings.resync_after;
        let mut resync_at = tokio::time::Instant::now() + resync_every;
        // A stop asked before we started counts too.
        let mut pending_stop = *stop.borrow_and_update();
        loop {
            if let Some(reason) = pending_stop.take() {
                match reason {
                    StopReason::Handover => return Outcome::HandedOver,
                    StopReason::Cancel | StopReason::Timeout if requested.is_none() => {
                        requested = Some(reason);
                        // Boxed, as the reads below: rare requests must not
                        // size this future, which lives as long as the build.
                        if let Err(e) = Box::pin(cancel(
                            &self.cluster.client,
                            self.version,
                            &self.namespace,
                            &self.name,
                            self.finally,
                        ))
                        .await
                        {
                            let _ = sink
                                .progress(&format!("cancelling failed, will wait for the run: {e}"))
                                .await;
                        }
                        cancel_deadline =
                            Some(tokio::time::Instant::now() + self.settings.cancel_grace);
                    }
                    _ => {}
                }
            }
            let state = watch.state.borrow_and_update().clone();
            match state {
                RunState::Present(run) => {
                    if let Some(cond) = succeeded_condition(&run) {
                        if let Some(end) = terminal(&cond) {
                            // Boxed: only the end needs this future's room.
                            return Box::pin(self.finish(
                                &run,
                                end,
                                requested,
                                logs,
                                &finished_taskruns,
                                sink.as_ref(),
                            ))
                            .await;
                        }
                        if cond.reason != last_reason {
                            last_reason = cond.reason.clone();
                            let _ = sink
                                .progress(&format!("PipelineRun {}: {}", self.name, cond.reason))
                                .await;
                        }
                    }
                }
                RunState::Deleted => return deleted(&self.namespace, &self.name),
                RunState::Missing => {
                    // Confirm: a relist may have been taken before the run existed.
                    let api: Api<DynamicObject> = Api::namespaced_with(
                        self.cluster.client.clone(),
                        &self.namespace,
                        &resource,
                    );
                    match Box::pin(api.get_opt(&self.name)).await {
                        Ok(None) => return deleted(&self.namespace, &self.name),
                        Ok(Some(run)) => {
                            let value = Arc::new(serde_json::to_value(&run).unwrap_or(Value::Null));
                            watch = self.cluster.hub.subscribe(
                                &resource,
                                &self.namespace,
                                &self.name,
                                RunState::Present(value),
                            );
                            continue;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                    }
                }
                RunState::Unknown => {}
            }
            let cancel_timer = async {
                match cancel_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = watch.state.changed() => {
                    if changed.is_err() {
                        return Outcome::Transient { message: "the PipelineRun watch ended unexpectedly".into() };
                    }
                    resync_at = tokio::time::Instant::now() + resync_every;
                }
                _ = tokio::time::sleep_until(resync_at) => {
                    // Silent for long: read the run once, in case the watch
                    // lost a change (see `TektonSettings::resync_after`).
                    resync_every = (resync_every * 2).min(MAX_RESYNC_INTERVAL);
                    resync_at = tokio::time::Instant::now() + resync_every;
                    let api: Api<DynamicObject> = Api::namespaced_with(
                        self.cluster.client.clone(),
                        &self.namespace,
                        &resource,
                    );
                    match Box::pin(api.get_opt(&self.name)).await {
                        Ok(Some(run)) => {
                            let value = Arc::new(serde_json::to_value(&run).unwrap_or(Value::Null));
                            if self.cluster.hub.refresh(&resource, &self.namespace, &self.name, value) {
                                tracing::warn!(run = %self.name, namespace = %self.namespace,
                                    "the PipelineRun watch had not delivered the run's latest state; resynced by GET");
                            }
                        }
                        Ok(None) => return deleted(&self.namespace, &self.name),
                        Err(e) => tracing::debug!(run = %self.name, error = %e, "resync read failed; the watch stays the source"),
                    }
                }
                changed = stop.changed() => {
                    if changed.is_ok() {
                        pending_stop = *stop.borrow_and_update();
                    } else if requested.is_none() {
                        // The dispatcher went away without a reason: treat as handover.
                        return Outcome::HandedOver;
                    }
                }
                _ = watch.watch_error.changed() => {
                    let trouble = watch.watch_error.borrow_and_update().clone();
                    if let Some(trouble) = trouble {
                        if trouble.is_permanent() {
                            return Outcome::Failed {
                                message: format!(
                                    "cannot watch PipelineRuns in namespace {}: {}; grant the provider's identity list and watch on pipelineruns",
                                    self.namespace, trouble.message
                                ),
                            };
                        }
                        tracing::debug!(run = %self.name, error = %trouble.message, "watch trouble; retrying");
                    }
                }
                _ = cancel_timer => {
                    let message = format!("PipelineRun {}/{} did not confirm cancellation within {:?}", self.namespace, self.name, self.settings.cancel_grace);
                    return match requested {
                        Some(StopReason::Timeout) => Outcome::TimedOut { message },
                        _ => Outcome::Cancelled { message },
                    };
                }
            }
        }
    }

    async fn finish(
        &self,
        run: &Value,
        end: Terminal,
        requested: Option<StopReason>,
        mut logs: AbortOnDrop,
        seen: &FinishedTaskRuns,
        sink: &dyn ExecutionSink,
    ) -> Outcome {
        tracing::debug!(target: END_TARGET, run = %self.name, stage = "seen_ended", "the PipelineRun has ended; draining its logs");
        // Let the log follower read the last lines.
        if let Some(handle) = logs.0.take() {
            match tokio::time::timeout(self.settings.log_drain, handle).await {
                Ok(Ok(Err(e))) => {
                    let _ = sink
                        .progress(&format!("log streaming stopped early: {e}"))
                        .await;
                }
                Ok(_) => {}
                Err(_) => {
                    let _ = sink
                        .progress("log streaming did not finish in time after the run ended")
                        .await;
                }
            }
        }
        tracing::debug!(target: END_TARGET, run = %self.name, stage = "logs_drained", "logs drained; reading the TaskRuns' results");
        let taskruns = self.taskruns(run, seen).await;
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
                if !steps.is_empty() {
                    text.push_str("; ");
                    text.push_str(&steps.join("; "));
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

    /// The run's TaskRuns, by pipeline task, in status order.
    async fn taskruns(&self, run: &Value, seen: &FinishedTaskRuns) -> Vec<(String, Value)> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.cluster.client.clone(),
            &self.namespace,
            &taskrun_resource(self.version),
        );
        let mut out = Vec::new();
        for (task, name) in child_taskruns(run) {
            let known = seen.take(&name);
            if let Some(tr) = known {
                out.push((task, tr));
            } else if let Ok(Some(tr)) = api.get_opt(&name).await {
                out.push((task, serde_json::to_value(tr).unwrap_or(Value::Null)));
            }
        }
        out
    }
}

struct AbortOnDrop(Option<JoinHandle<Result<(), TektonError>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}
