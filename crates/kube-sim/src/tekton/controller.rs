//! The driver: watches the cluster and runs one lightweight task (actor) per live
//! PipelineRun and TaskRun. Actors sleep until their next deadline or message, so an
//! idle run costs no CPU; nothing polls.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::host::{self, HostPod, HostSteps};
use super::pipelinerun::{self, Failure, PipelinePlan, States, Stops, TaskState};
use super::resolve::Resolver;
use super::script::{self, ScriptRule, StepPlan, TaskContext};
use super::taskrun::{self, StepState, TaskRunPlan, VolumeNeed};
use super::{admission, duration, model};
use crate::cluster::{Cluster, ClusterError, ClusterEvent, EventKind, Gvr, gvr};

/// How the simulated controller behaves.
#[derive(Clone, Debug)]
pub struct ControllerOptions {
    /// Real time per simulated time: 1.0 runs in real time, 0.01 runs 100× faster.
    /// Step durations, pod start delay and every timeout are multiplied by it.
    pub time_scale: f64,
    /// Simulated duration of a step that no rule scripts and whose script has no `sleep`.
    pub default_step_duration: Duration,
    /// Simulated time from pod creation to the first step running (scheduling, pulls).
    pub pod_start_delay: Duration,
    /// Step scripting rules (weaker than annotations); see [`super::script`].
    pub rules: Vec<ScriptRule>,
    /// Tasks the remote resolvers (`git`, `hub`) can fetch, e.g. the catalog Tasks.
    pub catalog: Vec<Value>,
    /// Run steps for real as host processes (see [`super::host`]) instead of
    /// simulating them; `None` (the default) simulates.
    pub host_steps: Option<HostSteps>,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            time_scale: 1.0,
            default_step_duration: Duration::from_secs(2),
            pod_start_delay: Duration::from_secs(1),
            rules: Vec::new(),
            catalog: Vec::new(),
            host_steps: None,
        }
    }
}

struct Ctx {
    cluster: Arc<dyn Cluster>,
    opts: ControllerOptions,
}

impl Ctx {
    /// Real time for a simulated duration.
    fn real(&self, simulated: Duration) -> Duration {
        simulated.mul_f64(self.opts.time_scale.max(0.0))
    }

    /// When a simulated timeout `d` from `started` ends; none for a zero
    /// timeout (Tekton's "no timeout") or a stopped clock.
    fn deadline(&self, started: Instant, d: Duration) -> Option<Instant> {
        (!d.is_zero() && self.opts.time_scale > 0.0).then(|| started + self.real(d))
    }

    fn resolver(&self) -> Resolver<'_> {
        Resolver {
            cluster: self.cluster.as_ref(),
            catalog: &self.opts.catalog,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    PipelineRun,
    TaskRun,
}

/// Objects travel as the store's shared copies (`Arc`): the dispatcher sees every
/// change in the cluster and must not copy them.
enum Msg {
    /// The run object changed (e.g. `spec.status`).
    Object(Arc<Value>),
    /// A child TaskRun changed (to its PipelineRun).
    Child(Arc<Value>),
    /// Something a waiting pod needs may have appeared.
    Recheck,
    Deleted,
    /// Answer once at rest (see [`ControllerHandle::settled`]).
    Settle(Probe),
}

/// An actor at rest answers with when it will next wake by itself (`None`:
/// only a change wakes it). The asker learns that every actor answered when
/// the last clone is dropped.
#[derive(Clone)]
struct Probe(mpsc::UnboundedSender<Option<Instant>>);

impl Probe {
    fn answer(self, wake: Option<Instant>) {
        let _ = self.0.send(wake);
    }
}

/// From actors to the dispatcher, naming the run by uid.
enum Note {
    Finished(String),
    Waiting(String, bool),
}

struct Actor {
    namespace: String,
    tx: mpsc::UnboundedSender<Msg>,
    /// `metadata.generation` last sent: actors only care about spec changes (their
    /// own status writes do not bump it), so other updates are not forwarded.
    generation: Option<i64>,
}

fn generation(obj: &Value) -> Option<i64> {
    model::at(obj, &["metadata", "generation"]).and_then(Value::as_i64)
}

/// The simulated Tekton controller.
pub struct Controller;

impl Controller {
    /// Start reconciling every PipelineRun and TaskRun in `cluster` (existing and future),
    /// and binding PersistentVolumeClaims. Runs until the cluster's event stream closes
    /// or the handle is aborted.
    pub fn spawn(cluster: Arc<dyn Cluster>, opts: ControllerOptions) -> JoinHandle<()> {
        Self::start(cluster, opts).task
    }

    /// [`Controller::spawn`], keeping a handle that can also tell when the
    /// controller is at rest.
    pub fn start(cluster: Arc<dyn Cluster>, opts: ControllerOptions) -> ControllerHandle {
        let ctx = Arc::new(Ctx { cluster, opts });
        let (settle, settle_rx) = mpsc::unbounded_channel();
        ControllerHandle {
            task: tokio::spawn(dispatch(ctx, settle_rx)),
            settle,
        }
    }
}

/// A running controller.
pub struct ControllerHandle {
    /// The dispatcher task; aborting it stops new actors, not the running ones.
    pub task: JoinHandle<()>,
    settle: mpsc::UnboundedSender<Probe>,
}

/// What [`ControllerHandle::settled`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    /// Live runs that answered.
    pub runs: usize,
    /// The earliest time a run wakes by itself (a step ending, a timeout);
    /// `None` when only a cluster change can make the controller act again.
    pub next_wake: Option<Instant>,
}

impl ControllerHandle {
    /// Wait until the controller has handled every cluster change made before
    /// the call and each live run is at rest: waiting for a change or a
    /// deadline. Lets tests assert that something did not happen without
    /// sleeping for a guessed time.
    pub async fn settled(&self) -> Settled {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut found = Settled {
            runs: 0,
            next_wake: None,
        };
        if self.settle.send(Probe(tx)).is_err() {
            return found; // the controller has stopped
        }
        while let Some(wake) = rx.recv().await {
            found.runs += 1;
            found.next_wake = [found.next_wake, wake].into_iter().flatten().min();
        }
        found
    }
}

async fn dispatch(ctx: Arc<Ctx>, mut settle: mpsc::UnboundedReceiver<Probe>) {
    let mut events = ctx.cluster.subscribe();
    let (notes_tx, mut notes) = mpsc::unbounded_channel::<Note>();
    let mut d = Dispatcher {
        ctx: ctx.clone(),
        actors: HashMap::new(),
        waiting: HashSet::new(),
        notes_tx,
    };
    d.resync();
    loop {
        tokio::select! {
            ev = events.recv() => if d.take_event(&mut events, ev).is_break() {
                break;
            },
            Some(probe) = settle.recv() => {
                // Changes made before the question are queued already: handle them first.
                loop {
                    let ev = match events.try_recv() {
                        Err(broadcast::error::TryRecvError::Empty) => break,
                        Ok(ev) => Ok(ev),
                        Err(broadcast::error::TryRecvError::Lagged(n)) => Err(broadcast::error::RecvError::Lagged(n)),
                        Err(broadcast::error::TryRecvError::Closed) => Err(broadcast::error::RecvError::Closed),
                    };
                    if d.take_event(&mut events, ev).is_break() {
                        return;
                    }
                }
                for a in d.actors.values() {
                    let _ = a.tx.send(Msg::Settle(probe.clone()));
                }
            },
            Some(note) = notes.recv() => match note {
                Note::Finished(uid) => {
                    d.actors.remove(&uid);
                    d.waiting.remove(&uid);
                }
                Note::Waiting(uid, on) => {
                    if on {
                        // The event the actor waits for may have been handled before this
                        // note arrived (two channels, no order between them): look once
                        // more now that it is registered, or the wake-up is lost.
                        d.send(&uid, Msg::Recheck);
                        d.waiting.insert(uid);
                    } else {
                        d.waiting.remove(&uid);
                    }
                }
            },
        }
    }
}

struct Dispatcher {
    ctx: Arc<Ctx>,
    /// Live runs by uid (unique across kinds and re-creations), so the event of any
    /// object is matched without building a key.
    actors: HashMap<String, Actor>,
    /// Uids of TaskRuns whose pod waits for a volume source to appear.
    waiting: HashSet<String>,
    notes_tx: mpsc::UnboundedSender<Note>,
}

impl Dispatcher {
    /// Handle what the cluster's event stream gave; `Break` when it closed.
    fn take_event(
        &mut self,
        events: &mut broadcast::Receiver<ClusterEvent>,
        ev: Result<ClusterEvent, broadcast::error::RecvError>,
    ) -> std::ops::ControlFlow<()> {
        match ev {
            Ok(ev) => self.on_event(ev.kind, ev.gvr, ev.object),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    missed = n,
                    "tekton controller lagged behind cluster events; resyncing"
                );
                // Drop the stale backlog: subscribe afresh, then list (list+watch).
                *events = self.ctx.cluster.subscribe();
                self.resync();
            }
            Err(broadcast::error::RecvError::Closed) => return std::ops::ControlFlow::Break(()),
        }
        std::ops::ControlFlow::Continue(())
    }

    /// Catch up with the stored state (at start, and after missing events).
    fn resync(&mut self) {
        let cluster = self.ctx.cluster.clone();
        for pr in cluster.list(&gvr::PIPELINERUNS, None) {
            let pr = Arc::new(pr);
            self.on_event(EventKind::Added, gvr::PIPELINERUNS, pr.clone());
            self.on_event(EventKind::Modified, gvr::PIPELINERUNS, pr);
        }
        for tr in cluster.list(&gvr::TASKRUNS, None) {
            let tr = Arc::new(tr);
            self.on_event(EventKind::Added, gvr::TASKRUNS, tr.clone());
            self.on_event(EventKind::Modified, gvr::TASKRUNS, tr);
        }
        for pvc in cluster.list(&gvr::PVCS, None) {
            bind_claim(self.ctx.cluster.as_ref(), &pvc, false);
        }
        for uid in &self.waiting {
            self.send(uid, Msg::Recheck);
        }
    }

    fn send(&self, uid: &str, msg: Msg) {
        if let Some(a) = self.actors.get(uid) {
            let _ = a.tx.send(msg);
        }
    }

    fn on_event(&mut self, kind: EventKind, g: Gvr, obj: Arc<Value>) {
        if g == gvr::PIPELINERUNS {
            self.on_run(Kind::PipelineRun, kind, obj);
        } else if g == gvr::TASKRUNS {
            // A PipelineRun only needs to hear about children that finished.
            if kind != EventKind::Deleted
                && let Some(owner) = model::controller_owner_uid(&obj, "PipelineRun")
                && model::is_done(&obj)
            {
                self.send(owner, Msg::Child(obj.clone()));
            }
            self.on_run(Kind::TaskRun, kind, obj);
        } else if g == gvr::PVCS {
            if kind == EventKind::Added {
                bind_claim(self.ctx.cluster.as_ref(), &obj, true);
            }
            if let (EventKind::Deleted, Some(h)) = (kind, &self.ctx.opts.host_steps) {
                h.claim_deleted(&obj);
            }
            self.recheck_namespace(model::namespace(&obj));
        } else if g == gvr::STORAGECLASSES && kind != EventKind::Deleted {
            for pvc in self.ctx.cluster.list(&gvr::PVCS, None) {
                bind_claim(self.ctx.cluster.as_ref(), &pvc, false);
            }
        } else if (g == gvr::SECRETS || g == gvr::CONFIGMAPS) && kind == EventKind::Added {
            self.recheck_namespace(model::namespace(&obj));
        }
    }

    fn recheck_namespace(&self, ns: &str) {
        for uid in &self.waiting {
            if self.actors.get(uid).is_some_and(|a| a.namespace == ns) {
                self.send(uid, Msg::Recheck);
            }
        }
    }

    fn on_run(&mut self, run_kind: Kind, kind: EventKind, obj: Arc<Value>) {
        let uid = model::uid(&obj);
        match kind {
            EventKind::Added => {
                if model::is_done(&obj) || self.actors.contains_key(uid) {
                    return;
                }
                let uid = uid.to_string();
                let (tx, rx) = mpsc::unbounded_channel();
                self.actors.insert(
                    uid.clone(),
                    Actor {
                        namespace: model::namespace(&obj).to_string(),
                        tx,
                        generation: generation(&obj),
                    },
                );
                let ctx = self.ctx.clone();
                let notes = self.notes_tx.clone();
                match run_kind {
                    Kind::PipelineRun => {
                        tokio::spawn(async move {
                            PipelineRunActor::new(ctx, obj, rx, notes.clone())
                                .run()
                                .await;
                            let _ = notes.send(Note::Finished(uid));
                        });
                    }
                    Kind::TaskRun => {
                        tokio::spawn(async move {
                            TaskRunActor::new(ctx, obj, rx, notes.clone(), uid.clone())
                                .run()
                                .await;
                            let _ = notes.send(Note::Finished(uid));
                        });
                    }
                }
            }
            EventKind::Modified => {
                if let Some(a) = self.actors.get_mut(uid) {
                    let g = generation(&obj);
                    if g.is_none() || g != a.generation {
                        a.generation = g;
                        let _ = a.tx.send(Msg::Object(obj));
                    }
                }
            }
            EventKind::Deleted => {
                if let Some(a) = self.actors.remove(uid) {
                    let _ = a.tx.send(Msg::Deleted);
                    self.waiting.remove(uid);
                }
            }
        }
    }
}

/// Bind a claim the way the PV controller with a dynamic provisioner does: to its
/// StorageClass, or to the default one when it names none. Without either it stays
/// Pending (and so does every pod that mounts it).
fn bind_claim(cluster: &dyn Cluster, pvc: &Value, report: bool) {
    if model::str_at(pvc, &["status", "phase"]) == Some("Bound") {
        return;
    }
    let ns = model::namespace(pvc);
    let name = model::name(pvc);
    let classes = cluster.list(&gvr::STORAGECLASSES, None);
    let class = match model::str_at(pvc, &["spec", "storageClassName"]) {
        Some(c) if !c.is_empty() => {
            if !classes.iter().any(|sc| model::name(sc) == c) {
                if report {
                    record_event(
                        cluster,
                        pvc,
                        "PersistentVolumeClaim",
                        "Warning",
                        "ProvisioningFailed",
                        &format!("storageclass.storage.k8s.io \"{c}\" not found"),
                    );
                }
                let _ =
                    cluster.update_status(&gvr::PVCS, Some(ns), name, json!({"phase": "Pending"}));
                return;
            }
            c.to_string()
        }
        _ => {
            let default = classes.iter().find(|sc| {
                model::str_at(
                    sc,
                    &[
                        "metadata",
                        "annotations",
                        "storageclass.kubernetes.io/is-default-class",
                    ],
                ) == Some("true")
            });
            match default {
                Some(sc) => model::name(sc).to_string(),
                None => {
                    if report {
                        record_event(
                            cluster,
                            pvc,
                            "PersistentVolumeClaim",
                            "Normal",
                            "FailedBinding",
                            "no persistent volumes available for this claim and no storage class is set",
                        );
                        let _ = cluster.update_status(
                            &gvr::PVCS,
                            Some(ns),
                            name,
                            json!({"phase": "Pending"}),
                        );
                    }
                    return;
                }
            }
        }
    };
    let storage = model::at(pvc, &["spec", "resources", "requests", "storage"])
        .cloned()
        .unwrap_or(json!("1Gi"));
    let status = json!({
        "phase": "Bound",
        "accessModes": model::at(pvc, &["spec", "accessModes"]).cloned().unwrap_or(json!(["ReadWriteOnce"])),
        "capacity": {"storage": storage},
    });
    if cluster
        .update_status(&gvr::PVCS, Some(ns), name, status)
        .is_err()
    {
        return;
    }
    if let Some(mut fresh) = cluster.get(&gvr::PVCS, Some(ns), name) {
        fresh["spec"]["storageClassName"] = json!(class);
        fresh["spec"]["volumeName"] = json!(format!("pvc-{}", model::uid(pvc)));
        let _ = cluster.update(&gvr::PVCS, Some(ns), fresh);
    }
}

fn record_event(
    cluster: &dyn Cluster,
    about: &Value,
    kind: &str,
    event_type: &str,
    reason: &str,
    message: &str,
) {
    let now = model::now();
    let ns = model::namespace(about);
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": format!("{}.", model::name(about)), "namespace": ns},
        "involvedObject": {"apiVersion": about.get("apiVersion").cloned().unwrap_or(json!("v1")), "kind": kind,
            "name": model::name(about), "namespace": ns, "uid": model::uid(about)},
        "reason": reason,
        "message": message,
        "type": event_type,
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "source": {"component": if kind == "Pod" { "kubelet" } else { "persistentvolume-controller" }},
    });
    if let Err(e) = cluster.create(&gvr::EVENTS, Some(ns), event) {
        tracing::debug!(error = %e, "could not record event");
    }
}

/// Why a wait ended early.
enum Interrupt {
    Cancelled(String),
    TimedOut,
    Deleted,
    Recheck,
}

// ---------------------------------------------------------------- PipelineRuns

/// A PipelineRun's `spec.timeouts` (simulated time).
#[derive(Clone, Copy, Debug)]
struct Timeouts {
    pipeline: Duration,
    tasks: Option<Duration>,
    finally: Option<Duration>,
}

/// One PipelineRun's execution: its plan, clocks and what has happened so far.
struct Execution {
    plan: PipelinePlan,
    started: Instant,
    timeouts: Timeouts,
    pipeline_deadline: Option<Instant>,
    tasks_deadline: Option<Instant>,
    /// Set once the first finally task starts.
    finally_deadline: Option<Instant>,
    /// Workspace name → the claim made from its volumeClaimTemplate.
    claims: BTreeMap<String, String>,
    states: States,
    /// (TaskRun name, pipeline task name), in creation order.
    children: Vec<(String, String)>,
    stops: Stops,
    /// Whether a cancellation or pipeline timeout already cancelled the children.
    cancelled_children: bool,
}

/// Record a finished child's state; `true` when that is news to the run.
fn child_changed(states: &mut States, tr: &Value) -> bool {
    let Some(task) = model::str_at(tr, &["metadata", "labels", model::labels::PIPELINE_TASK])
    else {
        return false;
    };
    let new = TaskState::from_taskrun(tr);
    let old = states.get(task).cloned().unwrap_or(TaskState::NotStarted);
    if new == old || old.is_terminal() {
        return false;
    }
    states.insert(task.to_string(), new);
    true
}

struct PipelineRunActor {
    ctx: Arc<Ctx>,
    pr: Arc<Value>,
    rx: mpsc::UnboundedReceiver<Msg>,
    ns: String,
    name: String,
    status: Value,
    written: LastWrite,
}

/// A run as stored after its actor's last status write: the actor's `status`
/// is written only when it differs from this object's.
struct LastWrite {
    gvr: Gvr,
    stored: Arc<Value>,
}

impl LastWrite {
    /// Write a run's status unless the stored object already has it; the
    /// result becomes the stored object. A failed write is retried by the next one.
    fn write_status(&mut self, ctx: &Ctx, ns: &str, name: &str, status: &Value) {
        if status_written(status, &self.stored) {
            return;
        }
        let g = &self.gvr;
        match ctx.cluster.update_status(g, Some(ns), name, status.clone()) {
            Ok(stored) => self.stored = stored,
            Err(e) => {
                tracing::debug!(resource = g.plural, %name, error = %e, "status write failed")
            }
        }
    }
}

/// Set the `Succeeded` condition (kept as is when unchanged, so its
/// transition time stays) and the completion time once it is final.
fn set_condition(run_status: &mut Value, status: &str, reason: &str, message: &str) {
    let same = model::succeeded_condition(run_status).is_some_and(|c| {
        model::str_at(c, &["status"]) == Some(status)
            && model::str_at(c, &["reason"]) == Some(reason)
            && model::str_at(c, &["message"]) == Some(message)
    });
    if !same {
        run_status["conditions"] = json!([model::condition(status, reason, message)]);
    }
    if status != "Unknown" && run_status.get("completionTime").is_none() {
        run_status["completionTime"] = json!(model::now());
    }
}

/// Whether `status` is what `written` (a stored object) already has; an object
/// without status counts as having an empty one.
fn status_written(status: &Value, written: &Value) -> bool {
    match written.get("status") {
        Some(w) => w == status,
        None => status.as_object().is_some_and(|m| m.is_empty()),
    }
}

impl PipelineRunActor {
    fn new(
        ctx: Arc<Ctx>,
        pr: Arc<Value>,
        rx: mpsc::UnboundedReceiver<Msg>,
        _notes: mpsc::UnboundedSender<Note>,
    ) -> Self {
        let ns = model::namespace(&pr).to_string();
        let name = model::name(&pr).to_string();
        let status = pr.get("status").cloned().unwrap_or(json!({}));
        PipelineRunActor {
            ctx,
            written: LastWrite {
                gvr: gvr::PIPELINERUNS,
                stored: pr.clone(),
            },
            pr,
            rx,
            ns,
            name,
            status,
        }
    }

    fn spec_status(&self) -> &str {
        model::str_at(&self.pr, &["spec", "status"]).unwrap_or("")
    }

    fn write_status(&mut self) {
        self.written
            .write_status(&self.ctx, &self.ns, &self.name, &self.status);
    }

    fn set_condition(&mut self, status: &str, reason: &str, message: &str) {
        set_condition(&mut self.status, status, reason, message);
    }

    /// Apply the mutating webhook's defaults and the `tekton.dev/pipeline` label, if missing.
    fn update_metadata(&mut self, pipeline_name: Option<&str>) {
        let Some(mut fresh) = self
            .ctx
            .cluster
            .get(&gvr::PIPELINERUNS, Some(&self.ns), &self.name)
        else {
            return;
        };
        // Defaults only touch the spec: compare that, not a copy of the whole run.
        let spec_before = fresh.get("spec").cloned();
        admission::apply_defaults(&gvr::PIPELINERUNS, &mut fresh);
        let mut changed = fresh.get("spec") != spec_before.as_ref();
        if let Some(p) = pipeline_name {
            let labels = model::obj_mut(&mut fresh, "metadata")
                .entry("labels")
                .or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                changed |= l.insert(model::labels::PIPELINE.into(), json!(p)) != Some(json!(p));
            }
        }
        if changed {
            match self
                .ctx
                .cluster
                .update(&gvr::PIPELINERUNS, Some(&self.ns), fresh)
            {
                Ok(updated) => self.pr = updated,
                Err(e) => {
                    tracing::debug!(run = %self.name, error = %e, "pipelinerun defaulting failed")
                }
            }
        } else {
            self.pr = Arc::new(fresh);
        }
    }

    /// Wait for a message or `until`; `Ok(None)` when the deadline passed.
    async fn wait(&mut self, until: Option<Instant>) -> Result<Option<Msg>, Interrupt> {
        loop {
            let msg = match until {
                Some(t) => tokio::select! {
                    m = self.rx.recv() => m,
                    _ = tokio::time::sleep_until(t) => return Ok(None),
                },
                None => self.rx.recv().await,
            };
            return match msg {
                None | Some(Msg::Deleted) => Err(Interrupt::Deleted),
                Some(Msg::Settle(probe)) => {
                    probe.answer(until);
                    continue;
                }
                Some(Msg::Object(o)) => {
                    self.pr = o;
                    Ok(Some(Msg::Recheck))
                }
                Some(m) => Ok(Some(m)),
            };
        }
    }

    async fn run(mut self) {
        // Pending runs wait for spec.status to change.
        while self.spec_status() == "PipelineRunPending" {
            let msg = format!("PipelineRun \"{}\" is pending", self.name);
            self.set_condition("Unknown", "PipelineRunPending", &msg);
            self.write_status();
            if self.wait(None).await.is_err() {
                return;
            }
        }
        if self.spec_status() == "Cancelled" && self.status.get("startTime").is_none() {
            // Cancelled before it started: nothing ran.
            self.status["startTime"] = json!(model::now());
            let msg = format!("PipelineRun \"{}\" was cancelled", self.name);
            self.set_condition("False", "Cancelled", &msg);
            self.write_status();
            return;
        }
        if self.status.get("startTime").is_none() {
            self.status["startTime"] = json!(model::now());
        }
        self.set_condition("Unknown", "Started", "");
        self.write_status();

        let plan = pipelinerun::plan(&self.pr, &self.ctx.resolver());
        let plan = match plan {
            Ok(p) => p,
            Err(Failure { reason, message }) => {
                let pipeline_name = (reason != "CouldntGetPipeline")
                    .then(|| {
                        self.ctx
                            .resolver()
                            .pipeline(&self.pr)
                            .ok()
                            .and_then(|p| p.name)
                    })
                    .flatten();
                self.update_metadata(pipeline_name.as_deref());
                if reason != "CouldntGetPipeline"
                    && let Ok(p) = self.ctx.resolver().pipeline(&self.pr)
                {
                    self.status["pipelineSpec"] = p.spec;
                }
                self.set_condition("False", &reason, &message);
                self.write_status();
                return;
            }
        };
        self.update_metadata(Some(&plan.pipeline_name));
        self.status["pipelineSpec"] = plan.spec.clone();
        if let Err(Interrupt::Deleted) = self.execute(plan).await {
            tracing::debug!(run = %self.name, "pipelinerun deleted while running");
        }
    }

    /// `spec.timeouts`, defaulted like Tekton's webhook does.
    fn timeouts(&self) -> Timeouts {
        let get = |k: &str| {
            model::str_at(&self.pr, &["spec", "timeouts", k]).and_then(|s| duration::parse(s).ok())
        };
        Timeouts {
            pipeline: get("pipeline").unwrap_or(Duration::from_secs(3600)),
            tasks: get("tasks"),
            finally: get("finally"),
        }
    }

    /// Run the plan until the run is done: each round applies stop requests and
    /// deadlines, starts what may start, publishes the status, then sleeps until
    /// a child finishes, the spec changes or a deadline passes.
    async fn execute(&mut self, plan: PipelinePlan) -> Result<(), Interrupt> {
        let mut run = self.begin(plan);
        loop {
            self.apply_stops(&mut run);
            let next = pipelinerun::next(&run.plan, &run.states, run.stops);
            if let Some(f) = next.fail {
                self.set_condition("False", &f.reason, &f.message);
                self.write_status();
                return Ok(());
            }
            run.states.extend(next.skip);
            if let Err(message) = self.start_tasks(&mut run, next.start) {
                self.set_condition("False", "CreateRunFailed", &message);
                self.write_status();
                return Ok(());
            }
            if self.publish(&run) {
                return Ok(());
            }
            self.wait_for_change(&mut run).await?;
        }
    }

    /// The clocks of a starting run, and its workspaces' claims.
    fn begin(&self, plan: PipelinePlan) -> Execution {
        let started = Instant::now();
        let timeouts = self.timeouts();
        Execution {
            pipeline_deadline: self.ctx.deadline(started, timeouts.pipeline),
            tasks_deadline: timeouts.tasks.and_then(|d| self.ctx.deadline(started, d)),
            finally_deadline: None,
            claims: self.create_workspace_claims(),
            plan,
            started,
            timeouts,
            states: HashMap::new(),
            children: Vec::new(),
            stops: Stops::default(),
            cancelled_children: false,
        }
    }

    /// Workspaces from volumeClaimTemplate get one PVC per run, owned by it:
    /// workspace name → claim name.
    fn create_workspace_claims(&self) -> BTreeMap<String, String> {
        let mut claims = BTreeMap::new();
        for ws in model::arr(&self.pr, &["spec", "workspaces"]) {
            if let Some(tpl) = ws.get("volumeClaimTemplate") {
                let ws_name = model::str_at(ws, &["name"]).unwrap_or("");
                let claim = pipelinerun::claim_name(tpl, ws_name, model::uid(&self.pr));
                let cluster = self.ctx.cluster.as_ref();
                create_claim(cluster, &self.pr, "PipelineRun", tpl, &claim);
                claims.insert(ws_name.to_string(), claim);
            }
        }
        claims
    }

    /// Take in `spec.status` and passed deadlines, cancelling the children they stop.
    fn apply_stops(&self, run: &mut Execution) {
        let spec_stops = Stops::from_spec_status(self.spec_status());
        run.stops.cancelled |= spec_stops.cancelled;
        run.stops.cancelled_run_finally |= spec_stops.cancelled_run_finally;
        run.stops.stopped_run_finally |= spec_stops.stopped_run_finally;
        let now = Instant::now();
        if run.pipeline_deadline.is_some_and(|d| now >= d) {
            run.stops.pipeline_timed_out = true;
        }
        if run.tasks_deadline.is_some_and(|d| now >= d) && !run.stops.tasks_timed_out {
            run.stops.tasks_timed_out = true;
            self.cancel_children(run, false, TIMEOUT_MESSAGE);
        }
        if run.finally_deadline.is_some_and(|d| now >= d) && !run.stops.finally_timed_out {
            run.stops.finally_timed_out = true;
            self.cancel_children(run, true, TIMEOUT_MESSAGE);
        }
        let stops = run.stops;
        if (stops.cancelled || stops.pipeline_timed_out) && !run.cancelled_children {
            let msg = if stops.pipeline_timed_out {
                TIMEOUT_MESSAGE
            } else {
                CANCEL_MESSAGE
            };
            self.cancel_children(run, false, msg);
            self.cancel_children(run, true, msg);
            run.cancelled_children = true;
        }
        if stops.cancelled_run_finally && !run.cancelled_children {
            self.cancel_children(run, false, CANCEL_MESSAGE);
            run.cancelled_children = true;
        }
    }

    /// Create the TaskRuns of the tasks `next` starts. `Err` is the message of
    /// the `CreateRunFailed` condition.
    fn start_tasks(
        &mut self,
        run: &mut Execution,
        start: Vec<(String, Value)>,
    ) -> Result<(), String> {
        let mut started_finally = false;
        for (task, params) in start {
            let Some(t) = run.plan.task(&task) else {
                continue;
            };
            started_finally |= t.is_finally;
            let timeout = self.taskrun_timeout(run, t);
            let tr = pipelinerun::taskrun_for(&self.pr, &run.plan, t, params, &run.claims, timeout);
            let tr_name = model::name(&tr).to_string();
            let state = self.create_taskrun(tr, &tr_name)?;
            run.states.insert(task.clone(), state);
            run.children.push((tr_name, task));
        }
        if started_finally && self.status.get("finallyStartTime").is_none() {
            self.status["finallyStartTime"] = json!(model::now());
            run.finally_deadline = run
                .timeouts
                .finally
                .and_then(|d| self.ctx.deadline(run.started, d));
        }
        Ok(())
    }

    /// Create a child TaskRun; one that already exists (a re-created actor) is adopted.
    fn create_taskrun(&self, tr: Value, tr_name: &str) -> Result<TaskState, String> {
        match self.ctx.cluster.create(&gvr::TASKRUNS, Some(&self.ns), tr) {
            Ok(_) => Ok(TaskState::Running),
            Err(ClusterError::AlreadyExists(_)) => Ok(self
                .ctx
                .cluster
                .get(&gvr::TASKRUNS, Some(&self.ns), tr_name)
                .map(|o| TaskState::from_taskrun(&o))
                .unwrap_or(TaskState::Running)),
            Err(e) => Err(format!("Failed to create TaskRun {tr_name:?}: {e}")),
        }
    }

    /// Write the run's condition, children, skipped tasks and (once final)
    /// results. `true` when the run is done.
    fn publish(&mut self, run: &Execution) -> bool {
        let (status, reason, message) = pipelinerun::condition(
            &run.plan,
            &run.states,
            run.stops,
            &self.name,
            &duration::format(run.timeouts.pipeline),
        );
        self.status["childReferences"] = Value::Array(
            run.children
                .iter()
                .map(|(tr, task)| json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "name": tr, "pipelineTaskName": task}))
                .collect(),
        );
        let skipped = pipelinerun::skipped_tasks(&run.plan, &run.states);
        if !skipped.is_empty() {
            self.status["skippedTasks"] = Value::Array(skipped);
        }
        let done = status != "Unknown";
        if done {
            let results = pipelinerun::pipeline_results(&run.plan, &run.states);
            if !results.is_empty() {
                self.status["results"] = Value::Array(results);
            }
        }
        self.set_condition(&status, &reason, &message);
        self.write_status();
        done
    }

    /// Sleep until a child changes state, `spec.status` changes or the next
    /// deadline passes.
    async fn wait_for_change(&mut self, run: &mut Execution) -> Result<(), Interrupt> {
        let until = [
            run.pipeline_deadline,
            run.tasks_deadline.filter(|_| !run.stops.tasks_timed_out),
            run.finally_deadline
                .filter(|_| !run.stops.finally_timed_out),
        ]
        .into_iter()
        .flatten()
        .min();
        loop {
            let before = self.spec_status().to_string();
            match self.wait(until).await? {
                None => return Ok(()),
                Some(Msg::Child(tr)) => {
                    if child_changed(&mut run.states, &tr) {
                        return Ok(());
                    }
                }
                Some(_) => {
                    if self.spec_status() != before {
                        return Ok(());
                    }
                }
            }
        }
    }

    fn taskrun_timeout(&self, run: &Execution, t: &pipelinerun::PlannedTask) -> Duration {
        let explicit = model::arr(&self.pr, &["spec", "taskRunSpecs"])
            .iter()
            .find(|s| s.get("pipelineTaskName").and_then(Value::as_str) == Some(&t.name))
            .and_then(|s| s.get("timeout"))
            .or_else(|| t.entry.get("timeout"))
            .and_then(Value::as_str)
            .and_then(|s| duration::parse(s).ok());
        if let Some(d) = explicit {
            return d;
        }
        let elapsed = if self.ctx.opts.time_scale > 0.0 {
            run.started.elapsed().div_f64(self.ctx.opts.time_scale)
        } else {
            Duration::ZERO
        };
        let Timeouts {
            pipeline,
            tasks,
            finally,
        } = run.timeouts;
        let budget = if t.is_finally {
            finally.unwrap_or(pipeline)
        } else {
            tasks.unwrap_or(pipeline)
        };
        if budget.is_zero() {
            return Duration::ZERO;
        }
        let remaining = pipeline.saturating_sub(elapsed).min(budget);
        // Whole seconds, rounded up so the PipelineRun's own timeout fires first.
        Duration::from_secs(remaining.as_secs_f64().ceil().max(1.0) as u64)
    }

    /// Ask running child TaskRuns (DAG or finally ones) to stop.
    fn cancel_children(&self, run: &Execution, finally: bool, message: &str) {
        for (tr, task) in &run.children {
            let is_finally = run.plan.task(task).is_some_and(|t| t.is_finally);
            if is_finally != finally || run.states.get(task).is_some_and(TaskState::is_terminal) {
                continue;
            }
            if let Some(mut obj) = self.ctx.cluster.get(&gvr::TASKRUNS, Some(&self.ns), tr) {
                if model::is_done(&obj) {
                    continue;
                }
                obj["spec"]["status"] = json!("TaskRunCancelled");
                obj["spec"]["statusMessage"] = json!(message);
                if let Err(e) = self.ctx.cluster.update(&gvr::TASKRUNS, Some(&self.ns), obj) {
                    tracing::debug!(taskrun = %tr, error = %e, "could not cancel taskrun");
                }
            }
        }
    }
}

use pipelinerun::{CANCEL_MESSAGE, TIMEOUT_MESSAGE};

fn create_claim(
    cluster: &dyn Cluster,
    owner: &Value,
    owner_kind: &str,
    template: &Value,
    name: &str,
) {
    let mut pvc = json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": name,
            "namespace": model::namespace(owner),
            "ownerReferences": [model::owner_reference(owner, owner_kind)],
        },
        "spec": template.get("spec").cloned().unwrap_or(json!({})),
    });
    if let Some(labels) = model::at(template, &["metadata", "labels"]) {
        pvc["metadata"]["labels"] = labels.clone();
    }
    match cluster.create(&gvr::PVCS, Some(model::namespace(owner)), pvc) {
        Ok(_) | Err(ClusterError::AlreadyExists(_)) => {}
        Err(e) => tracing::debug!(claim = name, error = %e, "could not create workspace claim"),
    }
}

// ---------------------------------------------------------------- TaskRuns

struct TaskRunActor {
    ctx: Arc<Ctx>,
    tr: Arc<Value>,
    rx: mpsc::UnboundedReceiver<Msg>,
    notes: mpsc::UnboundedSender<Note>,
    uid: String,
    ns: String,
    name: String,
    status: Value,
    written: LastWrite,
    timeout: Option<(Duration, Instant)>,
}

enum Outcome {
    Finished,
    Interrupted(Interrupt),
}

impl TaskRunActor {
    fn new(
        ctx: Arc<Ctx>,
        tr: Arc<Value>,
        rx: mpsc::UnboundedReceiver<Msg>,
        notes: mpsc::UnboundedSender<Note>,
        uid: String,
    ) -> Self {
        let ns = model::namespace(&tr).to_string();
        let name = model::name(&tr).to_string();
        let status = tr.get("status").cloned().unwrap_or(json!({}));
        TaskRunActor {
            ctx,
            written: LastWrite {
                gvr: gvr::TASKRUNS,
                stored: tr.clone(),
            },
            tr,
            rx,
            notes,
            uid,
            ns,
            name,
            status,
            timeout: None,
        }
    }

    fn write_status(&mut self) {
        self.written
            .write_status(&self.ctx, &self.ns, &self.name, &self.status);
    }

    fn set_condition(&mut self, status: &str, reason: &str, message: &str) {
        set_condition(&mut self.status, status, reason, message);
    }

    fn fail(&mut self, reason: &str, message: &str) {
        self.set_condition("False", reason, message);
        self.write_status();
    }

    fn cancel_request(&self) -> Option<String> {
        (model::str_at(&self.tr, &["spec", "status"]) == Some("TaskRunCancelled")).then(|| {
            model::str_at(&self.tr, &["spec", "statusMessage"])
                .unwrap_or("")
                .to_string()
        })
    }

    /// Wait until `until` (or forever), ending early on cancellation, timeout, deletion
    /// or (when `recheck`) a hint that a missing volume source may exist now.
    async fn wait(&mut self, until: Option<Instant>, recheck: bool) -> Result<(), Interrupt> {
        let timeout_at = self.timeout.map(|(_, at)| at);
        let wake = [until, timeout_at].into_iter().flatten().min();
        loop {
            // Take what is queued first, so a deadline already passed costs no timer.
            while let Ok(m) = self.rx.try_recv() {
                self.take(Some(m), recheck, wake)?;
            }
            if let Some(m) = self.cancel_request() {
                return Err(Interrupt::Cancelled(m));
            }
            let now = Instant::now();
            // Compare the scheduled times, not the clock: a wake-up delayed on
            // a loaded machine past both must not turn a step that was due to
            // end before the deadline into a timeout.
            if until.is_some_and(|t| now >= t && timeout_at.is_none_or(|at| t < at)) {
                return Ok(());
            }
            if timeout_at.is_some_and(|at| now >= at) {
                return Err(Interrupt::TimedOut);
            }
            let msg = match wake {
                Some(t) => tokio::select! {
                    m = self.rx.recv() => m,
                    _ = tokio::time::sleep_until(t) => continue,
                },
                None => self.rx.recv().await,
            };
            self.take(msg, recheck, wake)?;
        }
    }

    /// Handle a message that came while waiting (to wake by itself at `wake`).
    fn take(
        &mut self,
        msg: Option<Msg>,
        recheck: bool,
        wake: Option<Instant>,
    ) -> Result<(), Interrupt> {
        match msg {
            None | Some(Msg::Deleted) => Err(Interrupt::Deleted),
            Some(Msg::Settle(probe)) => {
                probe.answer(wake);
                Ok(())
            }
            Some(Msg::Object(o)) => {
                self.tr = o;
                Ok(())
            }
            Some(Msg::Recheck) if recheck => Err(Interrupt::Recheck),
            Some(_) => Ok(()),
        }
    }

    async fn run(mut self) {
        if let Some(m) = self.cancel_request() {
            self.status["startTime"] = json!(model::now());
            let msg = format!("TaskRun \"{}\" was cancelled. {m}", self.name);
            self.fail("TaskRunCancelled", msg.trim_end());
            return;
        }
        self.apply_defaults();
        if self.status.get("startTime").is_none() {
            self.status["startTime"] = json!(model::now());
        }
        self.start_clock();
        self.set_condition("Unknown", "Started", "");
        // Like Tekton, the first status written is the one after the pod exists.

        let plan = match taskrun::prepare(&self.tr, &self.ctx.resolver()) {
            Ok(p) => p,
            Err(f) => return self.fail(&f.reason, &f.message),
        };
        self.status["taskSpec"] = plan.task_spec.clone();
        let steps = match self.plan_steps(&plan) {
            Ok(s) => s,
            Err(e) => return self.fail("TaskRunValidationFailed", &e),
        };

        if let Err(msg) = self.check_service_account(&plan) {
            return self.fail("PodCreationFailed", &msg);
        }
        let tr_for_pod = self.with_workspace_claims();
        let pod = taskrun::build_pod(&tr_for_pod, &plan, &steps);
        let pod = match self.create_pod(pod) {
            Ok(pod) => pod,
            Err(msg) => return self.fail("PodCreationFailed", &msg),
        };
        self.status["podName"] = json!(model::name(&pod));
        let mut sim = PodSim::new(self.ctx.clone(), pod, steps);
        self.status["steps"] = sim.step_statuses(None);
        self.set_condition("Unknown", "Pending", "Pending");
        self.write_status();

        let outcome = self.execute(&mut sim, &tr_for_pod, &plan).await;
        let _ = self.notes.send(Note::Waiting(self.uid.clone(), false));
        match outcome {
            Outcome::Finished | Outcome::Interrupted(Interrupt::Deleted) => {}
            Outcome::Interrupted(i) => self.stop(&mut sim, i),
        }
    }

    /// `spec.timeout` (default 1h) starts counting now; zero means none.
    fn start_clock(&mut self) {
        let timeout = model::str_at(&self.tr, &["spec", "timeout"])
            .and_then(|s| duration::parse(s).ok())
            .unwrap_or(Duration::from_secs(3600));
        if !timeout.is_zero() && self.ctx.opts.time_scale > 0.0 {
            self.timeout = Some((timeout, Instant::now() + self.ctx.real(timeout)));
        }
    }

    /// The pod is created with the TaskRun's service account, which must exist
    /// (every namespace has `default`). `Err` is the failure message.
    fn check_service_account(&self, plan: &TaskRunPlan) -> Result<(), String> {
        let sa = model::str_at(&self.tr, &["spec", "serviceAccountName"]).unwrap_or("default");
        let cluster = self.ctx.cluster.as_ref();
        if sa == "default"
            || cluster
                .get(&gvr::SERVICEACCOUNTS, Some(&self.ns), sa)
                .is_some()
        {
            return Ok(());
        }
        let maybe = match (model::at(&self.tr, &["spec", "taskRef"]), &plan.task.name) {
            (Some(_), Some(t)) => format!("missing or invalid Task {}/{t}", self.ns),
            _ => "invalid TaskSpec".to_string(),
        };
        Err(format!(
            "failed to create task run pod \"{}\": translating TaskSpec to Pod: serviceaccounts \"{sa}\" not found. Maybe {maybe}",
            self.name
        ))
    }

    /// The TaskRun as its pod sees it: a standalone TaskRun's
    /// volumeClaimTemplate workspaces get their own claims.
    fn with_workspace_claims(&self) -> Value {
        let mut tr_for_pod = (*self.tr).clone();
        let Some(wss) = tr_for_pod["spec"]["workspaces"].as_array_mut() else {
            return tr_for_pod;
        };
        for ws in wss.iter_mut() {
            if let Some(tpl) = ws.get("volumeClaimTemplate").cloned() {
                let ws_name = model::str_at(ws, &["name"]).unwrap_or("").to_string();
                let claim = pipelinerun::claim_name(&tpl, &ws_name, model::uid(&self.tr));
                create_claim(self.ctx.cluster.as_ref(), &self.tr, "TaskRun", &tpl, &claim);
                if let Some(o) = ws.as_object_mut() {
                    o.remove("volumeClaimTemplate");
                    o.insert("persistentVolumeClaim".into(), json!({"claimName": claim}));
                }
            }
        }
        tr_for_pod
    }

    /// Create the run's pod; one that already exists (a re-created actor) is
    /// adopted. `Err` is the failure message.
    fn create_pod(&self, pod: Value) -> Result<Arc<Value>, String> {
        let pod_name = model::name(&pod).to_string();
        match self.ctx.cluster.create(&gvr::PODS, Some(&self.ns), pod) {
            Ok(created) => Ok(created),
            Err(ClusterError::AlreadyExists(_)) => Ok(self
                .ctx
                .cluster
                .get(&gvr::PODS, Some(&self.ns), &pod_name)
                .map(Arc::new)
                .unwrap_or_else(|| {
                    Arc::new(json!({"metadata": {"name": pod_name, "namespace": self.ns}}))
                })),
            Err(e) => Err(format!(
                "failed to create task run pod \"{}\": {e}. Maybe invalid TaskSpec",
                self.name
            )),
        }
    }

    /// End a run that timed out or was cancelled: stop its steps, fail it and
    /// (as Tekton does) delete its pod.
    fn stop(&mut self, sim: &mut PodSim, i: Interrupt) {
        let (reason, message) = match i {
            Interrupt::TimedOut => {
                let t = self
                    .timeout
                    .map(|(d, _)| duration::format(d))
                    .unwrap_or_default();
                (
                    "TaskRunTimeout",
                    format!("TaskRun \"{}\" failed to finish within \"{t}\"", self.name),
                )
            }
            Interrupt::Cancelled(m) => (
                "TaskRunCancelled",
                format!("TaskRun \"{}\" was cancelled. {m}", self.name)
                    .trim_end()
                    .to_string(),
            ),
            Interrupt::Deleted => return,
            Interrupt::Recheck => unreachable!("execute handles rechecks"),
        };
        sim.stop(reason);
        self.status["steps"] = sim.step_statuses(None);
        self.set_condition("False", reason, &message);
        self.write_status();
        let _ = self
            .ctx
            .cluster
            .delete(&gvr::PODS, Some(&self.ns), &sim.pod_name);
    }

    fn apply_defaults(&mut self) {
        let needs = model::at(&self.tr, &["spec", "timeout"]).is_none()
            || model::at(&self.tr, &["spec", "serviceAccountName"]).is_none();
        if !needs {
            return;
        }
        if let Some(mut fresh) = self
            .ctx
            .cluster
            .get(&gvr::TASKRUNS, Some(&self.ns), &self.name)
        {
            admission::apply_defaults(&gvr::TASKRUNS, &mut fresh);
            match self
                .ctx
                .cluster
                .update(&gvr::TASKRUNS, Some(&self.ns), fresh)
            {
                Ok(o) => self.tr = o,
                Err(e) => {
                    tracing::debug!(taskrun = %self.name, error = %e, "taskrun defaulting failed")
                }
            }
        }
    }

    fn plan_steps(&self, plan: &TaskRunPlan) -> Result<Vec<StepPlan>, String> {
        let task_rules = script::rules_from_annotations(
            &json!({"metadata": {"annotations": plan.task.annotations}}),
        )?;
        let run_rules = script::rules_from_annotations(&self.tr)?;
        let pipeline_task = model::str_at(
            &self.tr,
            &["metadata", "labels", model::labels::PIPELINE_TASK],
        );
        let mut names: Vec<&str> = Vec::new();
        names.extend(pipeline_task);
        names.extend(plan.task.name.as_deref());
        names.push(&self.name);
        let ctx = TaskContext {
            names,
            task_spec: &plan.task_spec,
            params: &plan.params,
        };
        Ok(script::plan_steps(
            &ctx,
            &[&self.ctx.opts.rules, &task_rules, &run_rules],
            self.ctx.opts.default_step_duration,
        ))
    }

    async fn execute(
        &mut self,
        sim: &mut PodSim,
        tr_for_pod: &Value,
        plan: &TaskRunPlan,
    ) -> Outcome {
        if let Err(i) = self.wait_for_volumes(sim, tr_for_pod, plan).await {
            return Outcome::Interrupted(i);
        }
        let start_at = Instant::now() + self.ctx.real(self.ctx.opts.pod_start_delay);
        if let Err(i) = self.wait(Some(start_at), false).await {
            return Outcome::Interrupted(i);
        }
        let host = self.ctx.opts.host_steps.as_ref().map(|h| {
            HostPod::prepare(
                h,
                self.ctx.cluster.as_ref(),
                tr_for_pod,
                &sim.pod_name,
                &plan.task_spec,
            )
        });
        let count = sim.steps.len();
        for idx in 0..count {
            sim.start_step(idx);
            self.status["steps"] = sim.step_statuses(None);
            if idx == 0 {
                self.set_condition(
                    "Unknown",
                    "Running",
                    "Not all Steps in the Task have finished executing",
                );
            }
            self.write_status();
            let step = sim.steps[idx].clone();
            let ran = match &host {
                None => self.run_step(sim, &step).await,
                Some(pod) => self.run_host_step(sim, idx, pod, plan).await,
            };
            if let Err(e) = ran {
                return Outcome::Interrupted(e);
            }
            let step = sim.steps[idx].clone();
            sim.finish_step(idx);
            if step.exit_code != 0 {
                sim.skip_rest(idx + 1);
                sim.finish_pod(false);
                self.status["steps"] = sim.step_statuses(Some(idx + 1));
                self.status["results"] = taskrun::results(&sim.steps, idx);
                let msg = format!(
                    "\"step-{}\" exited with code {}: Error",
                    step.name, step.exit_code
                );
                self.fail("StepFailed", &msg);
                return Outcome::Finished;
            }
        }
        sim.finish_pod(true);
        self.status["steps"] = sim.step_statuses(None);
        let results = taskrun::results(&sim.steps, count);
        if results.as_array().is_some_and(|r| !r.is_empty()) {
            self.status["results"] = results;
        }
        self.set_condition("True", "Succeeded", "All Steps have completed executing");
        self.write_status();
        Outcome::Finished
    }

    /// Volumes: a missing Secret/ConfigMap keeps the pod in ContainerCreating
    /// (FailedMount), an unbound claim keeps it unschedulable, until it appears.
    async fn wait_for_volumes(
        &mut self,
        sim: &mut PodSim,
        tr_for_pod: &Value,
        plan: &TaskRunPlan,
    ) -> Result<(), Interrupt> {
        let needs = taskrun::volume_needs(tr_for_pod, &plan.task_spec);
        let mut reported = false;
        while let Some(problem) = volume_problem(self.ctx.cluster.as_ref(), &self.ns, &needs) {
            if !reported {
                sim.block(&problem);
                let reason = if problem.unschedulable {
                    "FailedScheduling"
                } else {
                    "FailedMount"
                };
                let cluster = self.ctx.cluster.as_ref();
                record_event(
                    cluster,
                    &sim.pod,
                    "Pod",
                    "Warning",
                    reason,
                    &problem.message,
                );
                self.set_condition("Unknown", "Pending", &sim.waiting_message());
                self.write_status();
                let _ = self.notes.send(Note::Waiting(self.uid.clone(), true));
                reported = true;
            }
            match self.wait(None, true).await {
                Ok(()) | Err(Interrupt::Recheck) => {}
                Err(i) => return Err(i),
            }
        }
        if reported {
            let _ = self.notes.send(Note::Waiting(self.uid.clone(), false));
        }
        Ok(())
    }

    /// Run step `idx` as a host process, streaming its lines to the pod log;
    /// its exit code, termination message and the results written so far go
    /// into `sim.steps`. A pod that could not be prepared fails its first step.
    async fn run_host_step(
        &mut self,
        sim: &mut PodSim,
        idx: usize,
        pod: &Result<HostPod, String>,
        plan: &TaskRunPlan,
    ) -> Result<(), Interrupt> {
        let container = format!("step-{}", sim.steps[idx].name);
        let (cluster, ns, pod_name) = (
            self.ctx.cluster.clone(),
            self.ns.clone(),
            sim.pod_name.clone(),
        );
        let log = move |line: &str| cluster.append_pod_log(&ns, &pod_name, &container, line);
        let task_step = &model::arr(&plan.task_spec, &["steps"])[idx];
        let name = sim.steps[idx].name.clone();
        let cmd = pod
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|p| p.command(self.ctx.cluster.as_ref(), idx, &name, task_step));
        let exit = match cmd {
            Err(e) => Err(e),
            Ok(cmd) => match missing_tool(&cmd) {
                Some(tool) => Ok(host::StepExit {
                    code: 127,
                    missing_tool: Some(tool),
                }),
                None => self.wait_for(host::process::run(&cmd, |l| log(&l))).await?,
            },
        };
        let step = &mut sim.steps[idx];
        (step.exit_code, step.message) = match exit {
            Ok(host::StepExit {
                code,
                missing_tool: Some(tool),
            }) => (code, Some(format!("{tool} is not available on this host"))),
            Ok(e) => (e.code, None),
            Err(e) => (1, Some(e)),
        };
        if let Some(m) = &step.message {
            log(m);
        }
        // The last step's termination message carries every result written so far.
        if let Ok(pod) = pod {
            sim.steps.iter_mut().for_each(|s| s.results.clear());
            let step = &mut sim.steps[idx];
            match pod.read_results(&plan.task_spec) {
                Ok(r) => step.results = r,
                Err(e) if step.exit_code == 0 => {
                    log(&e);
                    (step.exit_code, step.message) = (1, Some(e));
                }
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Wait for `fut` like [`Self::wait`] waits for a time: cancellation,
    /// timeout and deletion end it early, dropping `fut`.
    async fn wait_for<F: std::future::Future>(&mut self, fut: F) -> Result<F::Output, Interrupt> {
        let timeout_at = self.timeout.map(|(_, at)| at);
        tokio::pin!(fut);
        loop {
            while let Ok(m) = self.rx.try_recv() {
                self.take(Some(m), false, timeout_at)?;
            }
            if let Some(m) = self.cancel_request() {
                return Err(Interrupt::Cancelled(m));
            }
            if timeout_at.is_some_and(|at| Instant::now() >= at) {
                return Err(Interrupt::TimedOut);
            }
            let far = Instant::now() + Duration::from_secs(86_400 * 365);
            tokio::select! {
                out = &mut fut => return Ok(out),
                m = self.rx.recv() => self.take(m, false, timeout_at)?,
                _ = tokio::time::sleep_until(timeout_at.unwrap_or(far)) => {}
            }
        }
    }

    /// Let a step's simulated time pass, writing its log lines evenly over it.
    async fn run_step(&mut self, sim: &PodSim, step: &StepPlan) -> Result<(), Interrupt> {
        let begin = Instant::now();
        let real = self.ctx.real(step.duration);
        let lines = step.logs.len().max(1) as u32;
        for (i, line) in step.logs.iter().enumerate() {
            self.wait(Some(begin + real * i as u32 / lines), false)
                .await?;
            let container = format!("step-{}", step.name);
            self.ctx
                .cluster
                .append_pod_log(&self.ns, &sim.pod_name, &container, line);
        }
        self.wait(Some(begin + real), false).await
    }
}

/// The tool a step's command needs that this host lacks: the program, or for
/// `#!/usr/bin/env tool` scripts the tool `env` runs.
fn missing_tool(cmd: &host::StepCommand) -> Option<String> {
    let path = cmd
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    if !host::available(&cmd.program, path) {
        return Some(cmd.program.clone());
    }
    let first = cmd.args.first().filter(|_| cmd.program.ends_with("/env"))?;
    (!first.starts_with('-') && !host::available(first, path)).then(|| first.clone())
}

struct VolumeProblem {
    unschedulable: bool,
    message: String,
}

fn volume_problem(cluster: &dyn Cluster, ns: &str, needs: &[VolumeNeed]) -> Option<VolumeProblem> {
    for n in needs {
        match n {
            VolumeNeed::Claim { name, .. } => match cluster.get(&gvr::PVCS, Some(ns), name) {
                None => {
                    return Some(VolumeProblem {
                        unschedulable: true,
                        message: format!(
                            "0/1 nodes are available: persistentvolumeclaim \"{name}\" not found. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
                        ),
                    });
                }
                Some(pvc) if model::str_at(&pvc, &["status", "phase"]) != Some("Bound") => {
                    return Some(VolumeProblem {
                        unschedulable: true,
                        message: "0/1 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.".to_string(),
                    });
                }
                Some(_) => {}
            },
            VolumeNeed::Secret { volume, name }
                if cluster.get(&gvr::SECRETS, Some(ns), name).is_none() =>
            {
                return Some(VolumeProblem {
                    unschedulable: false,
                    message: format!(
                        "MountVolume.SetUp failed for volume \"{volume}\" : secret \"{name}\" not found"
                    ),
                });
            }
            VolumeNeed::ConfigMap { volume, name }
                if cluster.get(&gvr::CONFIGMAPS, Some(ns), name).is_none() =>
            {
                return Some(VolumeProblem {
                    unschedulable: false,
                    message: format!(
                        "MountVolume.SetUp failed for volume \"{volume}\" : configmap \"{name}\" not found"
                    ),
                });
            }
            _ => {}
        }
    }
    None
}

/// The simulated pod of a TaskRun: container states and pod status writes.
struct PodSim {
    ctx: Arc<Ctx>,
    /// The pod as last written (the store's shared copy).
    pod: Arc<Value>,
    pod_name: String,
    ns: String,
    steps: Vec<StepPlan>,
    states: Vec<StepState>,
}

impl PodSim {
    fn new(ctx: Arc<Ctx>, pod: Arc<Value>, steps: Vec<StepPlan>) -> Self {
        let states = vec![StepState::Waiting("PodInitializing"); steps.len()];
        PodSim {
            ctx,
            pod_name: model::name(&pod).to_string(),
            ns: model::namespace(&pod).to_string(),
            pod,
            steps,
            states,
        }
    }

    fn step_statuses(&self, skipped_from: Option<usize>) -> Value {
        taskrun::step_statuses(&self.steps, &self.states, skipped_from)
    }

    fn write(&mut self, status: Value) {
        match self
            .ctx
            .cluster
            .update_status(&gvr::PODS, Some(&self.ns), &self.pod_name, status)
        {
            // The stored pod is ours to read: no copy of the status kept aside.
            Ok(stored) => self.pod = stored,
            // The pod is gone (deleted under us); what we last wrote stays our view.
            Err(e) => tracing::debug!(pod = %self.pod_name, error = %e, "pod status write failed"),
        }
    }

    fn container_names(&self) -> String {
        self.steps
            .iter()
            .map(|s| format!("step-{}", s.name))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The pod cannot start: unschedulable, or stuck mounting a volume.
    fn block(&mut self, problem: &VolumeProblem) {
        let now = model::now();
        let status = if problem.unschedulable {
            json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                    "message": problem.message, "lastTransitionTime": now}],
                "qosClass": "BestEffort",
            })
        } else {
            self.states = vec![StepState::Waiting("ContainerCreating"); self.steps.len()];
            let unready = format!(
                "containers with unready status: [{}]",
                self.container_names()
            );
            json!({
                "phase": "Pending",
                "conditions": [
                    {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                    {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": unready, "lastTransitionTime": now},
                    {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady", "message": unready, "lastTransitionTime": now},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                ],
                "hostIP": "10.0.0.1",
                "startTime": now,
                "containerStatuses": taskrun::container_statuses(&self.steps, &self.states),
                "qosClass": "BestEffort",
            })
        };
        self.write(status);
    }

    /// Tekton's message for a pending pod (`getWaitingMessage`).
    fn waiting_message(&self) -> String {
        for cs in model::arr(&self.pod, &["status", "containerStatuses"]) {
            if let Some(m) = model::str_at(cs, &["state", "waiting", "message"]) {
                return format!(
                    "build step \"{}\" is pending with reason \"{m}\"",
                    model::str_at(cs, &["name"]).unwrap_or("")
                );
            }
        }
        for c in model::arr(&self.pod, &["status", "conditions"]) {
            if model::str_at(c, &["status"]) != Some("True") {
                return format!(
                    "pod status \"{}\":\"{}\"; message: \"{}\"",
                    model::str_at(c, &["type"]).unwrap_or(""),
                    model::str_at(c, &["status"]).unwrap_or(""),
                    model::str_at(c, &["message"]).unwrap_or("")
                );
            }
        }
        "Pending".to_string()
    }

    fn running_status(&self, phase: &str) -> Value {
        let now = model::now();
        let ready = if phase == "Running" { "True" } else { "False" };
        json!({
            "phase": phase,
            "conditions": [
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
            ],
            "hostIP": "10.0.0.1",
            "podIP": "10.244.0.10",
            "startTime": model::str_at(&self.pod, &["status", "startTime"]).map(String::from).unwrap_or(now),
            "containerStatuses": taskrun::container_statuses(&self.steps, &self.states),
            "qosClass": "BestEffort",
        })
    }

    fn start_step(&mut self, idx: usize) {
        self.states[idx] = StepState::Running {
            started: model::now(),
        };
        let s = self.running_status("Running");
        self.write(s);
    }

    fn finish_step(&mut self, idx: usize) {
        let started = match &self.states[idx] {
            StepState::Running { started } => started.clone(),
            _ => model::now(),
        };
        let code = self.steps[idx].exit_code;
        self.states[idx] = StepState::Terminated {
            exit_code: code,
            reason: if code == 0 {
                "Completed".into()
            } else {
                "Error".into()
            },
            started,
            finished: model::now(),
        };
    }

    /// Steps after a failed one never run; Tekton reports them terminated and skipped.
    fn skip_rest(&mut self, from: usize) {
        let now = model::now();
        for st in &mut self.states[from..] {
            *st = StepState::Terminated {
                exit_code: 1,
                reason: "Error".into(),
                started: now.clone(),
                finished: now.clone(),
            };
        }
    }

    fn finish_pod(&mut self, ok: bool) {
        let s = self.running_status(if ok { "Succeeded" } else { "Failed" });
        self.write(s);
    }

    /// Stop every unfinished step (cancellation or timeout).
    fn stop(&mut self, reason: &str) {
        let now = model::now();
        for st in &mut self.states {
            let started = match st {
                StepState::Terminated { .. } => continue,
                StepState::Running { started } => started.clone(),
                StepState::Waiting(_) => now.clone(),
            };
            *st = StepState::Terminated {
                exit_code: 1,
                reason: reason.to_string(),
                started,
                finished: now.clone(),
            };
        }
    }
}
