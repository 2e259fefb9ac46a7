//! Reading PipelineRun and TaskRun objects (v1 and v1beta1): the `Succeeded`
//! condition and what it means for the build, failing steps, and results as
//! artifacts. Pure functions over JSON.

use serde_json::Value;

use crate::{Artifact, ArtifactKind};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
}

/// The `Succeeded` condition of a PipelineRun or TaskRun.
pub fn succeeded_condition(object: &Value) -> Option<Condition> {
    object
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Succeeded"))
        .map(|c| {
            let text = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            Condition {
                status: text("status"),
                reason: text("reason"),
                message: text("message"),
            }
        })
}

/// How a finished run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Terminal {
    Succeeded,
    Cancelled { message: String },
    TimedOut { message: String },
    Failed { reason: String, message: String },
}

/// The build's end from the `Succeeded` condition; `None` while running.
pub fn terminal(condition: &Condition) -> Option<Terminal> {
    match condition.status.as_str() {
        "True" => Some(Terminal::Succeeded),
        "False" => Some(match condition.reason.as_str() {
            "Cancelled" | "CancelledRunFinally" | "StoppedRunFinally" | "PipelineRunCancelled" => {
                Terminal::Cancelled {
                    message: condition.message.clone(),
                }
            }
            "PipelineRunTimeout" | "TaskRunTimeout" => Terminal::TimedOut {
                message: condition.message.clone(),
            },
            reason => Terminal::Failed {
                reason: reason.to_string(),
                message: condition.message.clone(),
            },
        }),
        _ => None,
    }
}

/// A TaskRun of the run: `(pipelineTaskName, TaskRun name)` in the order the
/// status lists them.
pub fn child_taskruns(run: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = run
        .pointer("/status/childReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("kind").and_then(Value::as_str).unwrap_or("TaskRun") == "TaskRun")
        .filter_map(|c| {
            Some((
                c.get("pipelineTaskName")?.as_str()?.to_string(),
                c.get("name")?.as_str()?.to_string(),
            ))
        })
        .collect();
    // v1beta1 runs from older controllers keep a map of TaskRuns instead.
    if out.is_empty()
        && let Some(map) = run.pointer("/status/taskRuns").and_then(Value::as_object)
    {
        for (name, tr) in map {
            if let Some(task) = tr.get("pipelineTaskName").and_then(Value::as_str) {
                out.push((task.to_string(), name.clone()));
            }
        }
    }
    out
}

/// Names of the run's pipeline tasks in declaration order (tasks, then finally).
pub fn pipeline_task_order(run: &Value) -> Vec<String> {
    let spec = run
        .pointer("/status/pipelineSpec")
        .filter(|s| s.get("tasks").is_some())
        .or_else(|| run.pointer("/spec/pipelineSpec"));
    let Some(spec) = spec else { return Vec::new() };
    ["tasks", "finally"]
        .iter()
        .flat_map(|k| {
            spec.get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|t| t.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// A step of a TaskRun that failed: `task "build" step "build-and-push"
/// exited with code 1 (Error)`.
pub fn failed_step(task: &str, taskrun: &Value) -> Option<String> {
    let steps = taskrun.pointer("/status/steps")?.as_array()?;
    steps.iter().find_map(|s| {
        let terminated = s.get("terminated")?;
        let code = terminated.get("exitCode")?.as_i64()?;
        if code == 0 {
            return None;
        }
        // Steps skipped after the failure carry the same code; the first is the cause.
        if s.get("terminationReason").and_then(Value::as_str) == Some("Skipped") {
            return None;
        }
        let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
        let reason = terminated
            .get("reason")
            .and_then(Value::as_str)
            .unwrap_or("");
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!(" ({reason})")
        };
        Some(format!(
            "task {task:?} step {name:?} exited with code {code}{reason}"
        ))
    })
}

/// Step container names of a TaskRun in execution order.
pub fn step_containers(taskrun: &Value) -> Vec<String> {
    let from_status: Vec<String> = taskrun
        .pointer("/status/steps")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| {
            s.get("container")
                .and_then(Value::as_str)
                .map(str::to_string)
                .or_else(|| {
                    s.get("name")
                        .and_then(Value::as_str)
                        .map(|n| format!("step-{n}"))
                })
        })
        .collect();
    if !from_status.is_empty() {
        return from_status;
    }
    let spec = taskrun
        .pointer("/status/taskSpec/steps")
        .or_else(|| taskrun.pointer("/spec/taskSpec/steps"));
    spec.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, s)| match s.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => format!("step-{n}"),
            _ => format!("step-unnamed-{i}"),
        })
        .collect()
}

fn result_value(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn named_results(list: Option<&Value>) -> Vec<(String, String)> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| {
            Some((
                r.get("name")?.as_str()?.to_string(),
                result_value(r.get("value")?),
            ))
        })
        .collect()
}

/// What following a run needs of its PipelineRun, and nothing else: the
/// `Succeeded` condition, child TaskRuns, results and the task names of the
/// pipeline spec. The shared watch keeps one object per followed run; the
/// full run (inline pipeline spec twice, params, metadata, timestamps) is
/// six times larger, and with thousands of runs in flight that is most of a
/// dispatcher's memory. Every reader of the watched state in this module
/// (`succeeded_condition`, `child_taskruns`, `pipeline_task_order`,
/// `pipeline_results`) answers the same on the summary as on the full run.
pub fn run_summary(run: &Value) -> Value {
    let pick = |from: &Value, keys: &[&str]| -> Value {
        Value::Object(
            keys.iter()
                .filter_map(|k| from.get(*k).map(|v| ((*k).to_string(), v.clone())))
                .collect(),
        )
    };
    let task_names = |spec: &Value| {
        let mut names = serde_json::Map::new();
        for key in ["tasks", "finally"] {
            if let Some(tasks) = spec.get(key).and_then(Value::as_array) {
                let list: Vec<Value> = tasks.iter().map(|t| pick(t, &["name"])).collect();
                names.insert(key.into(), Value::Array(list));
            }
        }
        Value::Object(names)
    };
    let mut out = serde_json::Map::new();
    let mut kept = serde_json::Map::new();
    let status = run.get("status").and_then(Value::as_object);
    if let Some(status) = status {
        if let Some(conditions) = status.get("conditions").and_then(Value::as_array) {
            let succeeded: Vec<Value> = conditions
                .iter()
                .filter(|c| c.get("type").and_then(Value::as_str) == Some("Succeeded"))
                .map(|c| pick(c, &["type", "status", "reason", "message"]))
                .collect();
            kept.insert("conditions".into(), Value::Array(succeeded));
        }
        if let Some(children) = status.get("childReferences").and_then(Value::as_array) {
            let slim: Vec<Value> = children
                .iter()
                .map(|c| pick(c, &["kind", "name", "pipelineTaskName"]))
                .collect();
            kept.insert("childReferences".into(), Value::Array(slim));
        }
        for key in ["results", "pipelineResults"] {
            if let Some(v) = status.get(key) {
                kept.insert(key.into(), v.clone());
            }
        }
        // v1beta1: map of TaskRun name → {pipelineTaskName, status, ...}.
        if let Some(map) = status.get("taskRuns").and_then(Value::as_object) {
            let slim: serde_json::Map<String, Value> = map
                .iter()
                .map(|(name, tr)| (name.clone(), pick(tr, &["pipelineTaskName"])))
                .collect();
            kept.insert("taskRuns".into(), Value::Object(slim));
        }
    }
    // The task order comes from status.pipelineSpec when it has tasks, else
    // from spec.pipelineSpec (see `pipeline_task_order`): keep just that one.
    match status
        .and_then(|s| s.get("pipelineSpec"))
        .filter(|p| p.get("tasks").is_some())
    {
        Some(p) => {
            kept.insert("pipelineSpec".into(), task_names(p));
        }
        None => {
            if let Some(p) = run.pointer("/spec/pipelineSpec") {
                out.insert(
                    "spec".into(),
                    serde_json::json!({ "pipelineSpec": task_names(p) }),
                );
            }
        }
    }
    if status.is_some() {
        out.insert("status".into(), Value::Object(kept));
    }
    // The version orders a resync GET against what the watch delivered
    // (`WatchHub::refresh`).
    if let Some(rv) = run.pointer("/metadata/resourceVersion") {
        out.insert(
            "metadata".into(),
            serde_json::json!({ "resourceVersion": rv }),
        );
    }
    Value::Object(out)
}

/// What the end of a build needs of a finished TaskRun: its condition, pod,
/// steps' names and terminations, and results. The log follower keeps
/// finished TaskRuns until the run ends; the full objects (task spec, step
/// specs, timestamps) are several times larger.
pub fn taskrun_summary(taskrun: &Value) -> Value {
    let mut status = serde_json::Map::new();
    if let Some(st) = taskrun.get("status").and_then(Value::as_object) {
        for key in ["conditions", "podName", "results", "taskResults"] {
            if let Some(v) = st.get(key) {
                status.insert(key.into(), v.clone());
            }
        }
        if let Some(steps) = st.get("steps").and_then(Value::as_array) {
            let slim: Vec<Value> = steps
                .iter()
                .map(|step| {
                    let mut kept = serde_json::Map::new();
                    for key in ["name", "container", "terminationReason"] {
                        if let Some(v) = step.get(key) {
                            kept.insert(key.into(), v.clone());
                        }
                    }
                    if let Some(t) = step.get("terminated") {
                        let mut term = serde_json::Map::new();
                        for key in ["exitCode", "reason"] {
                            if let Some(v) = t.get(key) {
                                term.insert(key.into(), v.clone());
                            }
                        }
                        kept.insert("terminated".into(), Value::Object(term));
                    }
                    Value::Object(kept)
                })
                .collect();
            status.insert("steps".into(), Value::Array(slim));
        }
    }
    let name = taskrun
        .pointer("/metadata/name")
        .cloned()
        .unwrap_or(Value::Null);
    serde_json::json!({ "metadata": { "name": name }, "status": status })
}

/// Pipeline results: `status.results` (v1) or `status.pipelineResults` (v1beta1).
pub fn pipeline_results(run: &Value) -> Vec<(String, String)> {
    let v1 = named_results(run.pointer("/status/results"));
    if !v1.is_empty() {
        return v1;
    }
    named_results(run.pointer("/status/pipelineResults"))
}

/// TaskRun results: `status.results` (v1) or `status.taskResults` (v1beta1).
pub fn taskrun_results(taskrun: &Value) -> Vec<(String, String)> {
    let v1 = named_results(taskrun.pointer("/status/results"));
    if !v1.is_empty() {
        return v1;
    }
    named_results(taskrun.pointer("/status/taskResults"))
}

/// Artifacts from pipeline results and each task's results: `IMAGE_URL` and
/// `IMAGE_DIGEST` are the image; every other result is kept, TaskRun results as
/// `<task>.<result>`.
pub fn artifacts(
    pipeline: &[(String, String)],
    tasks: &[(String, Vec<(String, String)>)],
) -> Vec<Artifact> {
    let mut out: Vec<Artifact> = pipeline
        .iter()
        .map(|(name, value)| Artifact {
            name: name.clone(),
            value: value.clone(),
            kind: match name.as_str() {
                "IMAGE_URL" => ArtifactKind::ImageUrl,
                "IMAGE_DIGEST" => ArtifactKind::ImageDigest,
                _ => ArtifactKind::Result,
            },
        })
        .collect();
    for (task, results) in tasks {
        for (name, value) in results {
            out.push(Artifact {
                name: format!("{task}.{name}"),
                value: value.clone(),
                kind: ArtifactKind::Result,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-written objects in the shapes Tekton v1 gives them (see
    /// `testdata/README.md`), compiled in so no path is involved.
    fn reference(name: &str) -> Value {
        let text = match name {
            "pipelinerun-succeeded.json" => include_str!("testdata/pipelinerun-succeeded.json"),
            "pipelinerun-couldnt-get-task.json" => {
                include_str!("testdata/pipelinerun-couldnt-get-task.json")
            }
            "taskrun-step-failed.json" => include_str!("testdata/taskrun-step-failed.json"),
            other => panic!("no fixture {other}"),
        };
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn with_condition(status: &str, reason: &str, message: &str) -> Condition {
        Condition {
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }

    #[test]
    fn taskrun_summary_answers_like_the_full_taskrun() {
        let tr = reference("taskrun-step-failed.json");
        let summary = taskrun_summary(&tr);
        assert!(failed_step("build", &tr).is_some());
        assert_eq!(failed_step("build", &summary), failed_step("build", &tr));
        assert_eq!(taskrun_results(&summary), taskrun_results(&tr));
        assert_eq!(step_containers(&summary), step_containers(&tr));
        assert_eq!(succeeded_condition(&summary), succeeded_condition(&tr));
        assert!(summary.to_string().len() < tr.to_string().len());
        let with_results = serde_json::json!({"status": {
            "results": [{"name": "IMAGE_DIGEST", "value": "sha256:1"}],
            "steps": [{"name": "push", "container": "step-push", "imageID": "x",
                       "terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "t"}}]}});
        let summary = taskrun_summary(&with_results);
        assert_eq!(taskrun_results(&summary), taskrun_results(&with_results));
        assert_eq!(
            summary["status"]["steps"][0]["terminated"]["reason"],
            "Completed"
        );
        assert!(summary["status"]["steps"][0].get("imageID").is_none());
    }

    #[test]
    fn run_summary_answers_like_the_full_run() {
        for name in [
            "pipelinerun-succeeded.json",
            "pipelinerun-couldnt-get-task.json",
        ] {
            let run = reference(name);
            let summary = run_summary(&run);
            assert_eq!(
                succeeded_condition(&summary),
                succeeded_condition(&run),
                "{name}"
            );
            assert_eq!(child_taskruns(&summary), child_taskruns(&run), "{name}");
            assert_eq!(
                pipeline_task_order(&summary),
                pipeline_task_order(&run),
                "{name}"
            );
            assert_eq!(pipeline_results(&summary), pipeline_results(&run), "{name}");
            assert!(summary.to_string().len() < run.to_string().len(), "{name}");
        }
        // v1beta1 shapes: the TaskRun map and pipelineResults.
        let beta = serde_json::json!({
            "metadata": {"name": "r", "uid": "u", "labels": {"a": "b"}},
            "spec": {"status": "Cancelled", "params": [{"name": "p", "value": "v"}],
                     "pipelineSpec": {"tasks": [{"name": "clone", "taskRef": {"name": "git-clone"}}],
                                      "finally": [{"name": "notify", "taskRef": {"name": "n"}}]}},
            "status": {"conditions": [{"type": "Succeeded", "status": "False", "reason": "Cancelled"}],
                       "taskRuns": {"r-clone": {"pipelineTaskName": "clone", "status": {"podName": "p"}}},
                       "pipelineResults": [{"name": "IMAGE_URL", "value": "x"}]}
        });
        let summary = run_summary(&beta);
        assert_eq!(
            child_taskruns(&summary),
            vec![("clone".to_string(), "r-clone".to_string())]
        );
        assert_eq!(
            pipeline_task_order(&summary),
            vec!["clone".to_string(), "notify".to_string()]
        );
        assert_eq!(pipeline_results(&summary), pipeline_results(&beta));
        assert_eq!(succeeded_condition(&summary), succeeded_condition(&beta));
        assert!(summary["spec"].get("params").is_none());
        assert!(summary.get("metadata").is_none());
        // Before the controller's first status: the order from spec.
        let fresh = serde_json::json!({"spec": beta["spec"].clone()});
        assert_eq!(
            pipeline_task_order(&run_summary(&fresh)),
            pipeline_task_order(&fresh)
        );
    }

    #[test]
    fn succeeded_reference_maps_to_succeeded_with_results() {
        let run = reference("pipelinerun-succeeded.json");
        let cond = succeeded_condition(&run).unwrap();
        assert_eq!(terminal(&cond), Some(Terminal::Succeeded));
        assert_eq!(
            pipeline_results(&run),
            vec![(
                "IMAGE_DIGEST".to_string(),
                "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
                    .to_string()
            )]
        );
        assert_eq!(
            child_taskruns(&run),
            vec![
                ("clone".to_string(), "build-abc12-clone".to_string()),
                ("build".to_string(), "build-abc12-build".to_string())
            ]
        );
        assert_eq!(pipeline_task_order(&run), vec!["clone", "build"]);
    }

    #[test]
    fn couldnt_get_task_reference_maps_to_failed_with_tektons_words() {
        let run = reference("pipelinerun-couldnt-get-task.json");
        let cond = succeeded_condition(&run).unwrap();
        match terminal(&cond) {
            Some(Terminal::Failed { reason, message }) => {
                assert_eq!(reason, "CouldntGetTask");
                assert!(
                    message.contains("tasks.tekton.dev \"kaniko\" not found"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_step_reference_names_step_and_exit_code() {
        let tr = reference("taskrun-step-failed.json");
        assert_eq!(
            failed_step("build", &tr).unwrap(),
            "task \"build\" step \"build-and-push\" exited with code 1 (Error)"
        );
        assert_eq!(
            step_containers(&tr),
            vec!["step-build-and-push", "step-write-url"]
        );
        let cond = succeeded_condition(&tr).unwrap();
        assert!(
            matches!(terminal(&cond), Some(Terminal::Failed { reason, .. }) if reason == "StepFailed")
        );
    }

    #[test]
    fn cancel_timeout_and_running_conditions() {
        assert!(matches!(
            terminal(&with_condition(
                "False",
                "Cancelled",
                "PipelineRun \"x\" was cancelled"
            )),
            Some(Terminal::Cancelled { .. })
        ));
        assert!(matches!(
            terminal(&with_condition("False", "CancelledRunFinally", "")),
            Some(Terminal::Cancelled { .. })
        ));
        assert!(matches!(
            terminal(&with_condition("False", "PipelineRunTimeout", "timed out")),
            Some(Terminal::TimedOut { .. })
        ));
        assert_eq!(terminal(&with_condition("Unknown", "Running", "")), None);
        assert_eq!(terminal(&with_condition("Unknown", "Started", "")), None);
        assert!(matches!(
            terminal(&with_condition("False", "Failed", "Tasks Completed: 2 (Failed: 1...")),
            Some(Terminal::Failed { reason, .. }) if reason == "Failed"
        ));
    }

    #[test]
    fn results_map_from_v1_and_v1beta1() {
        let v1 = serde_json::json!({"status": {"results": [
            {"name": "IMAGE_URL", "value": "reg/app:1"},
            {"name": "IMAGE_DIGEST", "value": "sha256:ab"},
            {"name": "extra", "value": ["a", "b"]}
        ]}});
        let v1beta1 = serde_json::json!({"status": {"pipelineResults": [
            {"name": "IMAGE_URL", "value": "reg/app:1"},
            {"name": "IMAGE_DIGEST", "value": "sha256:ab"},
            {"name": "extra", "value": ["a", "b"]}
        ]}});
        assert_eq!(pipeline_results(&v1), pipeline_results(&v1beta1));
        let tr_v1beta1 =
            serde_json::json!({"status": {"taskResults": [{"name": "commit", "value": "abc"}]}});
        let tasks = vec![("clone".to_string(), taskrun_results(&tr_v1beta1))];
        let arts = artifacts(&pipeline_results(&v1beta1), &tasks);
        assert_eq!(arts[0].kind, ArtifactKind::ImageUrl);
        assert_eq!(arts[1].kind, ArtifactKind::ImageDigest);
        assert_eq!(
            (arts[2].name.as_str(), arts[2].value.as_str()),
            ("extra", "[\"a\",\"b\"]")
        );
        assert_eq!(
            (arts[3].name.as_str(), arts[3].value.as_str(), arts[3].kind),
            ("clone.commit", "abc", ArtifactKind::Result)
        );
    }
}
