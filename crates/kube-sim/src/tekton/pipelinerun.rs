//! Pure PipelineRun logic: validating a run against its Pipeline and Tasks (with
//! Tekton's failure reasons and messages), deciding which tasks start or are skipped,
//! and computing the `Succeeded` condition.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::dag::{self, Deps};
use super::resolve::{Resolved, Resolver};
use super::{admission, model, subst};

/// `spec.statusMessage` of TaskRuns cancelled by their PipelineRun.
pub const CANCEL_MESSAGE: &str =
    "TaskRun cancelled as the PipelineRun it belongs to has been cancelled.";
/// `spec.statusMessage` of TaskRuns stopped because the PipelineRun timed out.
pub const TIMEOUT_MESSAGE: &str =
    "TaskRun cancelled as the PipelineRun it belongs to has timed out.";

/// A terminal failure before any task ran: condition reason and message.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    pub reason: String,
    pub message: String,
}

fn failure(reason: &str, message: String) -> Failure {
    Failure {
        reason: reason.to_string(),
        message,
    }
}

/// A pipeline task with its resolved Task.
#[derive(Clone, Debug)]
pub struct PlannedTask {
    pub name: String,
    /// The pipeline task entry after pipeline-param substitution.
    pub entry: Value,
    pub task: Resolved,
    pub is_finally: bool,
}

/// Everything needed to run a validated PipelineRun.
#[derive(Clone, Debug)]
pub struct PipelinePlan {
    pub pipeline_name: String,
    /// The pipeline spec after param substitution (`status.pipelineSpec`).
    pub spec: Value,
    pub pipeline_labels: Map<String, Value>,
    pub pipeline_annotations: Map<String, Value>,
    pub tasks: Vec<PlannedTask>,
    pub deps: Deps,
}

impl PipelinePlan {
    pub fn task(&self, name: &str) -> Option<&PlannedTask> {
        self.tasks.iter().find(|t| t.name == name)
    }
}

/// Validate `pr` the way Tekton's reconciler does, in the same order, and resolve
/// every task. `Err` is the `False` condition to set.
pub fn plan(pr: &Value, resolver: &Resolver) -> Result<PipelinePlan, Failure> {
    let ns = model::namespace(pr);
    let name = model::name(pr);
    let pipeline = resolver.pipeline(pr).map_err(|e| {
        failure(
            "CouldntGetPipeline",
            format!("Error retrieving pipeline for pipelinerun {ns}/{name}: {e}"),
        )
    })?;
    let pipeline_name = pipeline.name.clone().unwrap_or_else(|| name.to_string());
    let pipeline_ns = pipeline.namespace.clone().unwrap_or_else(|| ns.to_string());
    let spec = &pipeline.spec;

    let tasks = model::arr(spec, &["tasks"]);
    let deps = dag::build(tasks).map_err(|e| {
        failure(
            "PipelineInvalidGraph",
            format!("PipelineRun {ns}/{name}'s Pipeline DAG is invalid: {e}"),
        )
    })?;
    let errs = admission::pipeline_spec_errors(spec, "spec");
    if !errs.is_empty() {
        return Err(failure(
            "PipelineValidationFailed",
            format!(
                "Pipeline {pipeline_ns}/{pipeline_name} can't be Run; it has an invalid spec: {}",
                errs.join("\n")
            ),
        ));
    }

    let who = Who {
        ns,
        name,
        pipeline_ns: &pipeline_ns,
        pipeline_name: &pipeline_name,
    };
    check_params(pr, spec, &who)?;
    check_workspaces(pr, spec, &who)?;
    let resolved_spec = substitute(pr, spec, &who);
    let planned = resolve_tasks(&resolved_spec, resolver, &who)?;
    check_task_params(&planned)?;

    Ok(PipelinePlan {
        pipeline_name,
        spec: resolved_spec,
        pipeline_labels: pipeline.labels,
        pipeline_annotations: pipeline.annotations,
        tasks: planned,
        deps,
    })
}

/// The run and pipeline that failure messages name.
struct Who<'a> {
    ns: &'a str,
    name: &'a str,
    pipeline_ns: &'a str,
    pipeline_name: &'a str,
}

/// Every pipeline param without a default must be given.
fn check_params(pr: &Value, spec: &Value, who: &Who) -> Result<(), Failure> {
    let Who { ns, name, .. } = who;
    let provided: Vec<&str> = model::arr(pr, &["spec", "params"])
        .iter()
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .collect();
    let missing: Vec<&str> = model::arr(spec, &["params"])
        .iter()
        .filter(|p| p.get("default").is_none())
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .filter(|n| !provided.contains(n))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(failure(
        "ParameterMissing",
        format!(
            "PipelineRun {ns} parameters is missing some parameters required by Pipeline {name}'s parameters: PipelineRun missing parameters: [{}]",
            missing.join(" ")
        ),
    ))
}

/// Every non-optional pipeline workspace must be bound.
fn check_workspaces(pr: &Value, spec: &Value, who: &Who) -> Result<(), Failure> {
    let Who {
        ns,
        name,
        pipeline_name,
        ..
    } = who;
    let bound: Vec<&str> = model::arr(pr, &["spec", "workspaces"])
        .iter()
        .filter_map(|w| w.get("name").and_then(Value::as_str))
        .collect();
    for ws in model::arr(spec, &["workspaces"]) {
        let ws_name = ws.get("name").and_then(Value::as_str).unwrap_or("");
        let optional = ws.get("optional").and_then(Value::as_bool).unwrap_or(false);
        if !optional && !bound.contains(&ws_name) {
            return Err(failure(
                "InvalidWorkspaceBindings",
                format!(
                    "PipelineRun {ns}/{name} doesn't bind Pipeline {ns}/{pipeline_name}'s Workspaces correctly: pipeline requires workspace with name \"{ws_name}\" be provided by pipelinerun"
                ),
            ));
        }
    }
    Ok(())
}

/// The spec with pipeline params (given, else defaulted) and context
/// variables substituted into its tasks, finally tasks and results.
fn substitute(pr: &Value, spec: &Value, who: &Who) -> Value {
    let mut params = BTreeMap::new();
    for p in model::arr(spec, &["params"]) {
        if let (Some(n), Some(d)) = (p.get("name").and_then(Value::as_str), p.get("default")) {
            params.insert(n.to_string(), model::param_value_to_string(d));
        }
    }
    for p in model::arr(pr, &["spec", "params"]) {
        if let (Some(n), Some(v)) = (p.get("name").and_then(Value::as_str), p.get("value")) {
            params.insert(n.to_string(), model::param_value_to_string(v));
        }
    }
    let ctx_vars: BTreeMap<&str, String> = [
        ("context.pipelineRun.name", who.name.to_string()),
        ("context.pipelineRun.namespace", who.ns.to_string()),
        ("context.pipelineRun.uid", model::uid(pr).to_string()),
        ("context.pipeline.name", who.pipeline_name.to_string()),
    ]
    .into();
    let lookup = |expr: &str| {
        subst::param_name(expr)
            .and_then(|n| params.get(n).cloned())
            .or_else(|| ctx_vars.get(expr).cloned())
    };
    let mut resolved_spec = spec.clone();
    for key in ["tasks", "finally", "results"] {
        if let Some(v) = resolved_spec.get_mut(key) {
            subst::replace_in_value(v, &lookup);
        }
    }
    resolved_spec
}

/// Resolve every task and finally task of the (substituted) spec.
fn resolve_tasks(
    resolved_spec: &Value,
    resolver: &Resolver,
    who: &Who,
) -> Result<Vec<PlannedTask>, Failure> {
    let Who {
        ns,
        pipeline_ns,
        pipeline_name,
        ..
    } = who;
    let mut planned = Vec::new();
    for (key, is_finally) in [("tasks", false), ("finally", true)] {
        for entry in model::arr(resolved_spec, &[key]) {
            let task = resolver.task(ns, entry.get("taskRef"), entry.get("taskSpec")).map_err(|e| {
                failure(
                    "CouldntGetTask",
                    format!("Pipeline {pipeline_ns}/{pipeline_name} can't be Run; it contains Tasks that don't exist: {e}"),
                )
            })?;
            planned.push(PlannedTask {
                name: model::str_at(entry, &["name"]).unwrap_or("").to_string(),
                entry: entry.clone(),
                task,
                is_finally,
            });
        }
    }
    Ok(planned)
}

/// Each pipeline task must give the params its Task requires.
fn check_task_params(planned: &[PlannedTask]) -> Result<(), Failure> {
    for t in planned {
        let given: Vec<&str> = model::arr(&t.entry, &["params"])
            .iter()
            .filter_map(|p| p.get("name").and_then(Value::as_str))
            .collect();
        let missing: Vec<&str> = model::arr(&t.task.spec, &["params"])
            .iter()
            .filter(|p| p.get("default").is_none())
            .filter_map(|p| p.get("name").and_then(Value::as_str))
            .filter(|n| !given.contains(n))
            .collect();
        if !missing.is_empty() {
            let task_name = t.task.name.as_deref().unwrap_or(&t.name);
            return Err(failure(
                "PipelineValidationFailed",
                format!(
                    "invalid input params for task {task_name}: missing parameters: [{}]",
                    missing.join(" ")
                ),
            ));
        }
    }
    Ok(())
}

/// Where a pipeline task is.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskState {
    NotStarted,
    Running,
    Succeeded(BTreeMap<String, String>),
    Failed,
    Cancelled,
    Skipped {
        reason: &'static str,
        when: Option<Value>,
    },
}

impl TaskState {
    pub fn is_terminal(&self) -> bool {
        !matches!(self, TaskState::NotStarted | TaskState::Running)
    }

    /// From a child TaskRun's `Succeeded` condition.
    pub fn from_taskrun(tr: &Value) -> TaskState {
        match model::run_outcome(tr) {
            None => TaskState::Running,
            Some(true) => TaskState::Succeeded(
                model::arr(tr, &["status", "results"])
                    .iter()
                    .filter_map(|r| {
                        Some((
                            r.get("name")?.as_str()?.to_string(),
                            model::param_value_to_string(r.get("value")?),
                        ))
                    })
                    .collect(),
            ),
            Some(false) => {
                let cancelled = model::str_at(
                    model::succeeded_condition(tr).unwrap_or(&Value::Null),
                    &["reason"],
                ) == Some("TaskRunCancelled");
                // A TaskRun stopped because the PipelineRun's timeouts ran out counts as failed.
                let for_timeout =
                    model::str_at(tr, &["spec", "statusMessage"]) == Some(TIMEOUT_MESSAGE);
                if cancelled && !for_timeout {
                    TaskState::Cancelled
                } else {
                    TaskState::Failed
                }
            }
        }
    }
}

/// What is stopping the run from starting new work.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stops {
    /// `spec.status`: "", Cancelled, CancelledRunFinally, StoppedRunFinally.
    pub cancelled: bool,
    pub cancelled_run_finally: bool,
    pub stopped_run_finally: bool,
    pub pipeline_timed_out: bool,
    pub tasks_timed_out: bool,
    pub finally_timed_out: bool,
}

impl Stops {
    pub fn from_spec_status(s: &str) -> Stops {
        Stops {
            cancelled: s == "Cancelled",
            cancelled_run_finally: s == "CancelledRunFinally",
            stopped_run_finally: s == "StoppedRunFinally",
            ..Stops::default()
        }
    }
}

/// Decisions of one scheduling pass.
#[derive(Debug, Default, PartialEq)]
pub struct Next {
    /// Tasks to start now, with their params after result substitution.
    pub start: Vec<(String, Value)>,
    pub skip: Vec<(String, TaskState)>,
    /// A result reference that cannot be resolved fails the run.
    pub fail: Option<Failure>,
}

pub type States = HashMap<String, TaskState>;

fn results_of(states: &States) -> HashMap<&str, &BTreeMap<String, String>> {
    states
        .iter()
        .filter_map(|(k, s)| match s {
            TaskState::Succeeded(r) => Some((k.as_str(), r)),
            _ => None,
        })
        .collect()
}

/// Substitute `$(tasks.X.results.Y)`; `Err((task, result))` for the first missing one.
pub fn substitute_results(v: &Value, states: &States) -> Result<Value, (String, String)> {
    let results = results_of(states);
    for (t, r) in subst::result_refs(v) {
        if !results.get(t.as_str()).is_some_and(|m| m.contains_key(&r)) {
            return Err((t, r));
        }
    }
    let mut out = v.clone();
    subst::replace_in_value(&mut out, &|expr| {
        let (t, r) = subst::result_ref(expr)?;
        results.get(t)?.get(r).cloned()
    });
    Ok(out)
}

fn when_passes(when: &Value) -> bool {
    model::arr(when, &[]).iter().all(|w| {
        let Some(input) = w.get("input").and_then(Value::as_str) else {
            return true; // CEL expressions are not evaluated by the simulator.
        };
        let values: Vec<&str> = model::arr(w, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        match w.get("operator").and_then(Value::as_str).unwrap_or("in") {
            "notin" => !values.contains(&input),
            _ => values.contains(&input),
        }
    })
}

/// One scheduling pass: which tasks start and which are skipped.
pub fn next(plan: &PipelinePlan, states: &States, stops: Stops) -> Next {
    let mut out = Next::default();
    if stops.cancelled || stops.pipeline_timed_out {
        return out;
    }
    let state = |n: &str| states.get(n).cloned().unwrap_or(TaskState::NotStarted);
    let dag_stopping = stops.cancelled_run_finally
        || stops.stopped_run_finally
        || stops.tasks_timed_out
        || plan.tasks.iter().any(|t| {
            !t.is_finally && matches!(state(&t.name), TaskState::Failed | TaskState::Cancelled)
        });
    let stop_reason = if stops.tasks_timed_out {
        "PipelineRun Tasks timeout has been reached"
    } else if stops.cancelled_run_finally {
        "PipelineRun was gracefully cancelled"
    } else if stops.stopped_run_finally {
        "PipelineRun was gracefully stopped"
    } else {
        "PipelineRun was stopping"
    };
    // States as they will be once this round's decisions are made.
    let mut simulated = states.clone();
    for t in plan.tasks.iter().filter(|t| !t.is_finally) {
        if state(&t.name) != TaskState::NotStarted {
            continue;
        }
        let decision = if dag_stopping {
            Decision::Skip(TaskState::Skipped {
                reason: stop_reason,
                when: None,
            })
        } else {
            match decide_dag_task(plan, t, &simulated) {
                Ok(d) => d,
                Err(f) => {
                    out.fail = Some(f);
                    return out;
                }
            }
        };
        match decision {
            Decision::Wait => {}
            Decision::Skip(s) => {
                simulated.insert(t.name.clone(), s.clone());
                out.skip.push((t.name.clone(), s));
            }
            Decision::Start => {
                let params =
                    substitute_results(t.entry.get("params").unwrap_or(&json!([])), &simulated)
                        .unwrap_or_default();
                simulated.insert(t.name.clone(), TaskState::Running);
                out.start.push((t.name.clone(), params));
            }
        }
    }
    let dag_done = plan
        .tasks
        .iter()
        .filter(|t| !t.is_finally)
        .all(|t| simulated.get(&t.name).is_some_and(TaskState::is_terminal));
    if dag_done {
        next_finally(plan, states, &simulated, stops, &mut out);
    }
    out
}

/// What to do with a DAG task that has not started.
enum Decision {
    /// Its dependencies are not done yet.
    Wait,
    Skip(TaskState),
    Start,
}

fn decide_dag_task(
    plan: &PipelinePlan,
    t: &PlannedTask,
    simulated: &States,
) -> Result<Decision, Failure> {
    let deps = plan.deps.get(&t.name).cloned().unwrap_or_default();
    let deps_done = deps.iter().all(|d| {
        matches!(
            simulated.get(d),
            Some(TaskState::Succeeded(_) | TaskState::Skipped { .. })
        )
    });
    if !deps_done {
        return Ok(Decision::Wait);
    }
    let uses_skipped_results = subst::result_refs(&t.entry)
        .iter()
        .any(|(d, _)| matches!(simulated.get(d), Some(TaskState::Skipped { .. })));
    if uses_skipped_results {
        return Ok(Decision::Skip(TaskState::Skipped {
            reason: "Results were missing",
            when: None,
        }));
    }
    match check_start(t, simulated) {
        Ok(Some(s)) => Ok(Decision::Skip(s)),
        Ok(None) => Ok(Decision::Start),
        Err((task, result)) => Err(failure(
            "InvalidTaskResultReference",
            format!(
                "Invalid task result reference: Could not find result with name {result} for task {task}"
            ),
        )),
    }
}

/// Once the DAG is done: start (or skip) the finally tasks not started yet.
fn next_finally(
    plan: &PipelinePlan,
    states: &States,
    simulated: &States,
    stops: Stops,
    out: &mut Next,
) {
    for t in plan.tasks.iter().filter(|t| t.is_finally) {
        if states
            .get(&t.name)
            .is_some_and(|s| *s != TaskState::NotStarted)
        {
            continue;
        }
        if stops.finally_timed_out {
            out.skip.push((
                t.name.clone(),
                TaskState::Skipped {
                    reason: "PipelineRun Finally timeout has been reached",
                    when: None,
                },
            ));
            continue;
        }
        match check_start(t, simulated) {
            Ok(Some(s)) => out.skip.push((t.name.clone(), s)),
            Ok(None) => {
                let params =
                    substitute_results(t.entry.get("params").unwrap_or(&json!([])), simulated)
                        .unwrap_or_default();
                out.start.push((t.name.clone(), params));
            }
            Err(_) => out.skip.push((
                t.name.clone(),
                TaskState::Skipped {
                    reason: "Results were missing",
                    when: None,
                },
            )),
        }
    }
}

/// `Ok(Some(skip))` when its `when` expressions are false, `Ok(None)` to start,
/// `Err` when a referenced result is missing.
fn check_start(t: &PlannedTask, states: &States) -> Result<Option<TaskState>, (String, String)> {
    substitute_results(t.entry.get("params").unwrap_or(&Value::Null), states)?;
    if let Some(when) = t.entry.get("when") {
        let when = substitute_results(when, states)?;
        if !when_passes(&when) {
            return Ok(Some(TaskState::Skipped {
                reason: "When Expressions evaluated to false",
                when: Some(when),
            }));
        }
    }
    Ok(None)
}

/// The `Succeeded` condition (status, reason, message) from the task states.
pub fn condition(
    plan: &PipelinePlan,
    states: &States,
    stops: Stops,
    pr_name: &str,
    pipeline_timeout: &str,
) -> (String, String, String) {
    let c = |s: &str, r: &str, m: String| (s.to_string(), r.to_string(), m);
    if stops.pipeline_timed_out {
        return c(
            "False",
            "PipelineRunTimeout",
            format!("PipelineRun \"{pr_name}\" failed to finish within \"{pipeline_timeout}\""),
        );
    }
    if stops.cancelled {
        return c(
            "False",
            "Cancelled",
            format!("PipelineRun \"{pr_name}\" was cancelled"),
        );
    }
    let (
        mut succeeded,
        mut failed,
        mut cancelled,
        mut skipped,
        mut incomplete,
        mut skipped_by_timeout,
    ) = (0, 0, 0, 0, 0, 0);
    for t in &plan.tasks {
        match states.get(&t.name).unwrap_or(&TaskState::NotStarted) {
            TaskState::NotStarted | TaskState::Running => incomplete += 1,
            TaskState::Succeeded(_) => succeeded += 1,
            TaskState::Failed => failed += 1,
            TaskState::Cancelled => cancelled += 1,
            TaskState::Skipped { reason, .. } => {
                skipped += 1;
                if reason.contains("timeout") {
                    skipped_by_timeout += 1;
                }
            }
        }
    }
    let completed = succeeded + failed + cancelled;
    if incomplete == 0 {
        let msg = format!(
            "Tasks Completed: {completed} (Failed: {failed}, Cancelled {cancelled}), Skipped: {skipped}"
        );
        return if failed > 0 || skipped_by_timeout > 0 {
            c("False", "Failed", msg)
        } else if stops.cancelled_run_finally || stops.stopped_run_finally {
            c(
                "False",
                "Cancelled",
                format!("PipelineRun \"{pr_name}\" was cancelled"),
            )
        } else if cancelled > 0 {
            c("False", "Cancelled", msg)
        } else if skipped > 0 {
            c("True", "Completed", msg)
        } else {
            c("True", "Succeeded", msg)
        };
    }
    let finally_done = plan
        .tasks
        .iter()
        .filter(|t| t.is_finally)
        .all(|t| states.get(&t.name).is_some_and(TaskState::is_terminal));
    let reason = if cancelled > 0 || (failed > 0 && finally_done) {
        "Stopping"
    } else {
        "Running"
    };
    c(
        "Unknown",
        reason,
        format!(
            "Tasks Completed: {completed} (Failed: {failed}, Cancelled {cancelled}), Incomplete: {incomplete}, Skipped: {skipped}"
        ),
    )
}

/// `status.results`: each pipeline result whose task result references all resolve.
pub fn pipeline_results(plan: &PipelinePlan, states: &States) -> Vec<Value> {
    model::arr(&plan.spec, &["results"])
        .iter()
        .filter_map(|r| {
            let name = r.get("name")?.as_str()?;
            let value = substitute_results(r.get("value")?, states).ok()?;
            Some(json!({"name": name, "value": value}))
        })
        .collect()
}

/// `status.skippedTasks` entries.
pub fn skipped_tasks(plan: &PipelinePlan, states: &States) -> Vec<Value> {
    plan.tasks
        .iter()
        .filter_map(|t| match states.get(&t.name) {
            Some(TaskState::Skipped { reason, when }) => {
                let mut v = json!({"name": t.name, "reason": reason});
                if let Some(w) = when {
                    v["whenExpressions"] = w.clone();
                }
                Some(v)
            }
            _ => None,
        })
        .collect()
}

/// Kubernetes child names: `<parent>-<suffix>`, shortened with a hash past 63 chars
/// (what knative's `kmeta.ChildName` does).
pub fn child_name(parent: &str, suffix: &str) -> String {
    let full = format!("{parent}-{suffix}");
    if full.len() <= 63 {
        return full;
    }
    use sha2::{Digest, Sha256};
    let hash = hex::encode(Sha256::digest(parent.as_bytes()));
    let keep = 63usize.saturating_sub(suffix.len() + 1 + 32);
    format!(
        "{}{}-{suffix}",
        &parent[..keep.min(parent.len())],
        &hash[..32]
    )
}

/// The TaskRun Tekton creates for pipeline task `t` of `pr`.
pub fn taskrun_for(
    pr: &Value,
    plan: &PipelinePlan,
    t: &PlannedTask,
    params: Value,
    claims: &BTreeMap<String, String>,
    timeout: Duration,
) -> Value {
    let pr_name = model::name(pr);
    let (labels, annotations) = child_metadata(pr, plan, t);
    let run_spec = model::arr(pr, &["spec", "taskRunSpecs"])
        .iter()
        .find(|s| s.get("pipelineTaskName").and_then(Value::as_str) == Some(&t.name));
    let service_account = run_spec
        .and_then(|s| s.get("serviceAccountName"))
        .or_else(|| model::at(pr, &["spec", "taskRunTemplate", "serviceAccountName"]))
        .and_then(Value::as_str)
        .unwrap_or(admission::DEFAULT_SERVICE_ACCOUNT);

    let mut spec = json!({
        "params": params,
        "serviceAccountName": service_account,
        "timeout": super::duration::format(timeout),
    });
    match (t.entry.get("taskRef"), t.entry.get("taskSpec")) {
        (Some(r), _) => {
            let mut r = r.clone();
            if r.get("resolver").is_none() && r.get("kind").is_none() {
                r["kind"] = json!("Task");
            }
            spec["taskRef"] = r;
        }
        (None, Some(s)) => spec["taskSpec"] = s.clone(),
        _ => {}
    }
    let pod_template = run_spec
        .and_then(|s| s.get("podTemplate"))
        .or_else(|| model::at(pr, &["spec", "taskRunTemplate", "podTemplate"]));
    if let Some(p) = pod_template {
        spec["podTemplate"] = p.clone();
    }
    let workspaces = child_workspaces(pr, t, claims);
    if !workspaces.is_empty() {
        spec["workspaces"] = Value::Array(workspaces);
    }

    json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "TaskRun",
        "metadata": {
            "name": child_name(pr_name, &t.name),
            "namespace": model::namespace(pr),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [model::owner_reference(pr, "PipelineRun")],
        },
        "spec": spec,
    })
}

/// A child TaskRun's labels and annotations: the pipeline's, then the run's,
/// then Tekton's own labels.
fn child_metadata(
    pr: &Value,
    plan: &PipelinePlan,
    t: &PlannedTask,
) -> (Map<String, Value>, Map<String, Value>) {
    let mut labels = plan.pipeline_labels.clone();
    if let Some(l) = model::at(pr, &["metadata", "labels"]).and_then(Value::as_object) {
        labels.extend(l.clone());
    }
    labels.insert(model::labels::PIPELINE.into(), json!(plan.pipeline_name));
    labels.insert(model::labels::PIPELINE_RUN.into(), json!(model::name(pr)));
    labels.insert(model::labels::PIPELINE_TASK.into(), json!(t.name));
    labels.insert(
        model::labels::MEMBER_OF.into(),
        json!(if t.is_finally { "finally" } else { "tasks" }),
    );
    labels.insert(model::labels::MANAGED_BY.into(), json!("tekton-pipelines"));
    if let Some(task_name) = &t.task.name {
        labels.insert(model::labels::TASK.into(), json!(task_name));
    }
    let mut annotations = plan.pipeline_annotations.clone();
    if let Some(a) = model::at(pr, &["metadata", "annotations"]).and_then(Value::as_object) {
        annotations.extend(a.clone());
    }
    annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    (labels, annotations)
}

/// A child TaskRun's workspaces: the pipeline task maps task workspace →
/// pipeline workspace, whose binding (a template becoming the run's claim,
/// sub-paths joined) the child gets.
fn child_workspaces(pr: &Value, t: &PlannedTask, claims: &BTreeMap<String, String>) -> Vec<Value> {
    let bindings = model::arr(pr, &["spec", "workspaces"]);
    let mut workspaces = Vec::new();
    for w in model::arr(&t.entry, &["workspaces"]) {
        let task_ws = model::str_at(w, &["name"]).unwrap_or("");
        let pipeline_ws = model::str_at(w, &["workspace"]).unwrap_or(task_ws);
        let Some(b) = bindings
            .iter()
            .find(|b| b.get("name").and_then(Value::as_str) == Some(pipeline_ws))
        else {
            continue;
        };
        let mut binding = b.clone();
        binding["name"] = json!(task_ws);
        if let Some(obj) = binding.as_object_mut()
            && obj.remove("volumeClaimTemplate").is_some()
            && let Some(claim) = claims.get(pipeline_ws)
        {
            obj.insert("persistentVolumeClaim".into(), json!({"claimName": claim}));
        }
        let sub = [b.get("subPath"), w.get("subPath")]
            .iter()
            .filter_map(|s| s.and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("/");
        if !sub.is_empty() {
            binding["subPath"] = json!(sub);
        }
        workspaces.push(binding);
    }
    workspaces
}

/// Name of the PVC made from a workspace's `volumeClaimTemplate` for an owner.
pub fn claim_name(template: &Value, workspace: &str, owner_uid: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash = hex::encode(Sha256::digest(format!("{workspace}{owner_uid}").as_bytes()));
    let base = model::str_at(template, &["metadata", "name"]).unwrap_or("pvc");
    format!("{base}-{}", &hash[..10])
}
