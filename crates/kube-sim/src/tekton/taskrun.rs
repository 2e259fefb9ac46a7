//! Pure TaskRun logic: validating a TaskRun against its Task, substituting
//! variables, and building the pod and the status shapes Tekton writes.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::pipelinerun::{Failure, child_name};
use super::resolve::{Resolved, Resolver};
use super::script::StepPlan;
use super::{model, steps, subst};

/// A validated TaskRun ready to get a pod.
#[derive(Clone, Debug)]
pub struct TaskRunPlan {
    pub task: Resolved,
    /// The task spec after substitution (`status.taskSpec`).
    pub task_spec: Value,
    pub params: BTreeMap<String, String>,
}

/// A volume the pod needs before its containers can start.
#[derive(Clone, Debug, PartialEq)]
pub enum VolumeNeed {
    Secret { volume: String, name: String },
    ConfigMap { volume: String, name: String },
    Claim { volume: String, name: String },
}

/// Resolve and validate the TaskRun; `Err` is its `False` condition.
/// Variables Tekton substitutes into a task spec besides params: the run's
/// context, result paths and each workspace's path, binding, claim and volume.
fn context_vars(
    tr: &Value,
    spec: &Value,
    task_spec: &Value,
    task_name: &str,
) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = BTreeMap::new();
    vars.insert("context.taskRun.name".into(), model::name(tr).into());
    vars.insert(
        "context.taskRun.namespace".into(),
        model::namespace(tr).into(),
    );
    vars.insert("context.taskRun.uid".into(), model::uid(tr).into());
    vars.insert("context.task.name".into(), task_name.into());
    for r in model::arr(task_spec, &["results"]) {
        if let Some(n) = r.get("name").and_then(Value::as_str) {
            vars.insert(format!("results.{n}.path"), format!("/tekton/results/{n}"));
        }
    }
    let bindings = model::arr(spec, &["workspaces"]);
    for w in model::arr(task_spec, &["workspaces"]) {
        let Some(n) = w.get("name").and_then(Value::as_str) else {
            continue;
        };
        let path = model::str_at(w, &["mountPath"])
            .map(String::from)
            .unwrap_or_else(|| format!("/workspace/{n}"));
        vars.insert(format!("workspaces.{n}.path"), path);
        let binding = bindings
            .iter()
            .find(|b| b.get("name").and_then(Value::as_str) == Some(n));
        vars.insert(
            format!("workspaces.{n}.bound"),
            binding.is_some().to_string(),
        );
        let claim = binding
            .and_then(|b| model::str_at(b, &["persistentVolumeClaim", "claimName"]))
            .unwrap_or("");
        vars.insert(format!("workspaces.{n}.claim"), claim.into());
        vars.insert(
            format!("workspaces.{n}.volume"),
            volume_name(n, model::uid(tr)),
        );
    }
    vars
}

pub fn prepare(tr: &Value, resolver: &Resolver) -> Result<TaskRunPlan, Failure> {
    let ns = model::namespace(tr);
    let spec = tr.get("spec").cloned().unwrap_or(Value::Null);
    let task = resolver
        .task(ns, spec.get("taskRef"), spec.get("taskSpec"))
        .map_err(|e| Failure {
            reason: "CouldntGetTask".into(),
            message: e,
        })?;
    let task_name = task
        .name
        .clone()
        .unwrap_or_else(|| model::name(tr).to_string());

    let mut params = BTreeMap::new();
    let mut arrays = BTreeMap::new();
    let given = model::arr(&task.spec, &["params"])
        .iter()
        .filter_map(|p| Some((p.get("name")?.as_str()?, p.get("default")?)))
        .chain(
            model::arr(&spec, &["params"])
                .iter()
                .filter_map(|p| Some((p.get("name")?.as_str()?, p.get("value")?))),
        );
    for (n, v) in given {
        params.insert(n.to_string(), model::param_value_to_string(v));
        if let Some(items) = v.as_array() {
            arrays.insert(
                n.to_string(),
                items.iter().map(model::param_value_to_string).collect(),
            );
        } else {
            arrays.remove(n);
        }
    }
    let missing: Vec<&str> = model::arr(&task.spec, &["params"])
        .iter()
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .filter(|n| !params.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        return Err(Failure {
            reason: "TaskRunValidationFailed".into(),
            message: format!(
                "invalid input params for task {task_name}: missing parameters: [{}]",
                missing.join(" ")
            ),
        });
    }
    let bound: Vec<&str> = model::arr(&spec, &["workspaces"])
        .iter()
        .filter_map(|w| w.get("name").and_then(Value::as_str))
        .collect();
    let unbound: Vec<&str> = model::arr(&task.spec, &["workspaces"])
        .iter()
        .filter(|w| !w.get("optional").and_then(Value::as_bool).unwrap_or(false))
        .filter_map(|w| w.get("name").and_then(Value::as_str))
        .filter(|n| !bound.contains(n))
        .collect();
    if !unbound.is_empty() {
        return Err(Failure {
            reason: "TaskRunValidationFailed".into(),
            message: format!(
                "bound workspaces did not match declared workspaces: didn't provide required values: [{}]",
                unbound.join(" ")
            ),
        });
    }

    let vars = context_vars(tr, &spec, &task.spec, &task_name);
    let mut task_spec = task.spec.clone();
    steps::resolve_step_refs(&mut task_spec, ns, resolver.cluster).map_err(|message| Failure {
        reason: "TaskRunResolutionFailed".into(),
        message,
    })?;
    steps::merge_step_template(&mut task_spec);
    subst::expand_array_params(&mut task_spec, &arrays);
    subst::replace_in_value(&mut task_spec, &|expr| {
        subst::param_name(expr)
            .and_then(|n| params.get(n).cloned())
            .or_else(|| vars.get(expr).cloned())
    });
    Ok(TaskRunPlan {
        task,
        task_spec,
        params,
    })
}

/// Tekton names workspace volumes `ws-<random>`; ours are derived from the TaskRun uid.
fn volume_name(workspace: &str, uid: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "ws-{}",
        &hex::encode(Sha256::digest(format!("{workspace}{uid}").as_bytes()))[..5]
    )
}

/// Volumes the pod mounts that must exist (and, for claims, be bound) before it starts.
pub fn volume_needs(tr: &Value, task_spec: &Value) -> Vec<VolumeNeed> {
    let mut needs = Vec::new();
    let mut add = |volume: String, source: &Value| {
        if let Some(s) = source.get("secret") {
            if !s.get("optional").and_then(Value::as_bool).unwrap_or(false) {
                let name = model::str_at(s, &["secretName"]).unwrap_or("").to_string();
                needs.push(VolumeNeed::Secret { volume, name });
            }
        } else if let Some(c) = source.get("configMap") {
            if !c.get("optional").and_then(Value::as_bool).unwrap_or(false) {
                let name = model::str_at(c, &["name"]).unwrap_or("").to_string();
                needs.push(VolumeNeed::ConfigMap { volume, name });
            }
        } else if let Some(p) = source.get("persistentVolumeClaim") {
            let name = model::str_at(p, &["claimName"]).unwrap_or("").to_string();
            needs.push(VolumeNeed::Claim { volume, name });
        }
    };
    for w in model::arr(tr, &["spec", "workspaces"]) {
        add(
            volume_name(model::str_at(w, &["name"]).unwrap_or(""), model::uid(tr)),
            w,
        );
    }
    for v in model::arr(task_spec, &["volumes"]) {
        add(model::str_at(v, &["name"]).unwrap_or("").to_string(), v);
    }
    needs
}

pub fn pod_name(tr: &Value) -> String {
    child_name(model::name(tr), "pod")
}

/// The pod for a TaskRun: one `step-<name>` container per step, all waiting.
pub fn build_pod(tr: &Value, plan: &TaskRunPlan, steps: &[StepPlan]) -> Value {
    let mut labels = model::at(tr, &["metadata", "labels"])
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(model::labels::TASK_RUN.into(), json!(model::name(tr)));
    labels.insert(model::labels::MANAGED_BY.into(), json!("tekton-pipelines"));
    labels.insert(
        "app.kubernetes.io/managed-by".into(),
        json!("tekton-pipelines"),
    );
    let task_steps = model::arr(&plan.task_spec, &["steps"]);
    let containers: Vec<Value> = steps
        .iter()
        .zip(task_steps)
        .map(|(s, ts)| {
            let mut c = json!({"name": format!("step-{}", s.name), "image": s.image});
            for key in [
                "command",
                "args",
                "env",
                "workingDir",
                "securityContext",
                "volumeMounts",
            ] {
                if let Some(v) = ts.get(key) {
                    c[key] = v.clone();
                }
            }
            c
        })
        .collect();
    let mut volumes = Vec::new();
    for w in model::arr(tr, &["spec", "workspaces"]) {
        let mut v = w.clone();
        if let Some(o) = v.as_object_mut() {
            o.remove("subPath");
            o.insert(
                "name".into(),
                json!(volume_name(
                    model::str_at(w, &["name"]).unwrap_or(""),
                    model::uid(tr)
                )),
            );
        }
        volumes.push(v);
    }
    volumes.extend(model::arr(&plan.task_spec, &["volumes"]).iter().cloned());
    let sa = model::str_at(tr, &["spec", "serviceAccountName"]).unwrap_or("default");
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(tr),
            "namespace": model::namespace(tr),
            "labels": labels,
            "annotations": {"pipeline.tekton.dev/release": "v1.15.0"},
            "ownerReferences": [model::owner_reference(tr, "TaskRun")],
        },
        "spec": {
            "serviceAccountName": sa,
            "restartPolicy": "Never",
            "containers": containers,
            "volumes": volumes,
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"},
    })
}

/// One step's container state for pod `containerStatuses` and TaskRun `steps`.
#[derive(Clone, Debug, PartialEq)]
pub enum StepState {
    Waiting(&'static str),
    Running {
        started: String,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        started: String,
        finished: String,
    },
}

impl StepState {
    pub fn to_json(&self) -> Value {
        match self {
            StepState::Waiting(reason) => json!({"waiting": {"reason": reason}}),
            StepState::Running { started } => json!({"running": {"startedAt": started}}),
            StepState::Terminated {
                exit_code,
                reason,
                started,
                finished,
            } => json!({"terminated": {
                "exitCode": exit_code, "reason": reason, "startedAt": started, "finishedAt": finished,
                "containerID": "containerd://simulated",
            }}),
        }
    }
}

fn image_id(image: &str) -> String {
    use sha2::{Digest, Sha256};
    let base = image.split('@').next().unwrap_or(image);
    format!(
        "{base}@sha256:{}",
        hex::encode(Sha256::digest(image.as_bytes()))
    )
}

/// A terminated state carries the step's termination message, if any.
fn with_message(mut state: Value, step: &StepPlan) -> Value {
    if let (Some(t), Some(m)) = (state.get_mut("terminated"), &step.message) {
        t["message"] = json!(m);
    }
    state
}

/// Pod `containerStatuses`.
pub fn container_statuses(steps: &[StepPlan], states: &[StepState]) -> Value {
    Value::Array(
        steps
            .iter()
            .zip(states)
            .map(|(s, st)| {
                let running = matches!(st, StepState::Running { .. });
                json!({
                    "name": format!("step-{}", s.name),
                    "image": s.image,
                    "imageID": if matches!(st, StepState::Waiting(_)) { String::new() } else { image_id(&s.image) },
                    "ready": running,
                    "started": running,
                    "restartCount": 0,
                    "state": with_message(st.to_json(), s),
                })
            })
            .collect(),
    )
}

/// TaskRun `status.steps`; `skipped` marks steps not run after an earlier failure.
pub fn step_statuses(
    steps: &[StepPlan],
    states: &[StepState],
    skipped_from: Option<usize>,
) -> Value {
    Value::Array(
        steps
            .iter()
            .zip(states)
            .enumerate()
            .map(|(i, (s, st))| {
                let mut v = with_message(st.to_json(), s);
                v["name"] = json!(s.name);
                v["container"] = json!(format!("step-{}", s.name));
                v["imageID"] = json!(image_id(&s.image));
                if let StepState::Terminated { reason, .. } = st {
                    let tr = if skipped_from.is_some_and(|k| i >= k) {
                        "Skipped"
                    } else {
                        reason.as_str()
                    };
                    v["terminationReason"] = json!(tr);
                }
                v
            })
            .collect(),
    )
}

/// TaskRun `status.results` from the steps that ran.
pub fn results(steps: &[StepPlan], ran: usize) -> Value {
    Value::Array(
        steps[..ran]
            .iter()
            .flat_map(|s| s.results.iter())
            .map(|(n, v)| json!({"name": n, "type": "string", "value": v}))
            .collect(),
    )
}
