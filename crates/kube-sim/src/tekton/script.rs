//! Scripting what simulated steps do: duration, log lines, exit code, results.
//!
//! A step's behaviour is the merge of, from weakest to strongest:
//! 1. defaults: duration = the `sleep N` seconds found in the step's script, else
//!    [`ControllerOptions::default_step_duration`](super::ControllerOptions); log lines
//!    derived from the step (echoed text, or plausible git/kaniko/buildah output);
//!    exit code 0; every result the Task declares is written by its last step
//!    (`IMAGE_DIGEST` = `sha256:` of the task's params, `IMAGE_URL` = the `IMAGE` param,
//!    `commit` = a 40-hex id derived from `url`/`revision`);
//! 2. the rules in [`ControllerOptions::rules`](super::ControllerOptions);
//! 3. the `sim.imagefactory.io/script` annotation on the Task;
//! 4. the same annotation on the PipelineRun (propagated to its TaskRuns) or TaskRun.
//!
//! The annotation holds a JSON list of [`ScriptRule`]s, e.g.
//! `[{"task": "build", "step": "build-and-push", "exitCode": 1, "logs": ["boom"]},
//!   {"task": "clone", "duration": "30s", "results": {"commit": "abc"}}]`.
//! `task` matches the pipeline task name, the Task name or the TaskRun name; `step`
//! the step name; a missing selector matches everything. Durations are simulated
//! time (Go duration strings) and are multiplied by `time_scale`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{duration, model};

pub const ANNOTATION: &str = "sim.imagefactory.io/script";

/// What a step does, and which task/step it applies to; unset fields fall through
/// to weaker layers.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScriptRule {
    /// Pipeline task, Task or TaskRun name; `None` or `"*"` matches every task.
    pub task: Option<String>,
    /// Step name (`unnamed-<i>` for unnamed steps); `None` or `"*"` matches every step.
    pub step: Option<String>,
    /// Simulated run time, Go duration syntax ("30s", "2m").
    pub duration: Option<String>,
    pub logs: Option<Vec<String>>,
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub results: BTreeMap<String, String>,
}

/// The rules in an object's `sim.imagefactory.io/script` annotation.
pub fn rules_from_annotations(obj: &Value) -> Result<Vec<ScriptRule>, String> {
    match model::str_at(obj, &["metadata", "annotations", ANNOTATION]) {
        None => Ok(Vec::new()),
        Some(s) => serde_json::from_str(s).map_err(|e| format!("annotation {ANNOTATION}: {e}")),
    }
}

/// What the simulator will do for one step.
#[derive(Clone, Debug, PartialEq)]
pub struct StepPlan {
    pub name: String,
    pub image: String,
    /// Simulated time (before `time_scale`).
    pub duration: Duration,
    pub logs: Vec<String>,
    pub exit_code: i32,
    pub results: Vec<(String, String)>,
    /// The container's termination message (set by the host runner).
    pub message: Option<String>,
}

/// Inputs to planning a task's steps.
pub struct TaskContext<'a> {
    /// Names a rule's `task` may match: pipeline task, Task, TaskRun.
    pub names: Vec<&'a str>,
    /// The task spec after parameter substitution.
    pub task_spec: &'a Value,
    pub params: &'a BTreeMap<String, String>,
}

/// Plan every step of a task: defaults overlaid by `layers` (weakest first).
pub fn plan_steps(
    ctx: &TaskContext,
    layers: &[&[ScriptRule]],
    default_step: Duration,
) -> Vec<StepPlan> {
    let steps = model::arr(ctx.task_spec, &["steps"]);
    let names = model::step_names(ctx.task_spec);
    let declared: Vec<String> = model::arr(ctx.task_spec, &["results"])
        .iter()
        .filter_map(|r| r.get("name").and_then(Value::as_str).map(String::from))
        .collect();
    let mut plans: Vec<StepPlan> = steps
        .iter()
        .zip(&names)
        .map(|(step, name)| {
            let mut merged = ScriptRule::default();
            for rule in layers.iter().flat_map(|l| l.iter()) {
                let task_ok = rule
                    .task
                    .as_deref()
                    .is_none_or(|t| t == "*" || ctx.names.contains(&t));
                let step_ok = rule.step.as_deref().is_none_or(|s| s == "*" || s == name);
                if task_ok && step_ok {
                    overlay(&mut merged, rule);
                }
            }
            let duration = merged
                .duration
                .as_deref()
                .and_then(|d| duration::parse(d).ok())
                .unwrap_or_else(|| script_sleep(step).unwrap_or(default_step));
            StepPlan {
                name: name.clone(),
                image: model::str_at(step, &["image"]).unwrap_or("").to_string(),
                duration,
                logs: merged
                    .logs
                    .unwrap_or_else(|| default_logs(step, name, ctx.params)),
                exit_code: merged.exit_code.unwrap_or(0),
                results: merged.results.into_iter().collect(),
                message: None,
            }
        })
        .collect();
    // Declared results no rule writes are written by the last step.
    let written: Vec<String> = plans
        .iter()
        .flat_map(|p| p.results.iter().map(|(n, _)| n.clone()))
        .collect();
    let task_name = ctx.names.first().copied().unwrap_or("");
    if let Some(last) = plans.last_mut() {
        for r in declared.iter().filter(|r| !written.contains(r)) {
            last.results
                .push((r.clone(), default_result(r, task_name, ctx.params)));
        }
    }
    plans
}

fn overlay(into: &mut ScriptRule, from: &ScriptRule) {
    if from.duration.is_some() {
        into.duration.clone_from(&from.duration);
    }
    if from.logs.is_some() {
        into.logs.clone_from(&from.logs);
    }
    if from.exit_code.is_some() {
        into.exit_code = from.exit_code;
    }
    into.results
        .extend(from.results.iter().map(|(k, v)| (k.clone(), v.clone())));
}

/// Sum of `sleep N` commands in the step's script (simulated seconds).
fn script_sleep(step: &Value) -> Option<Duration> {
    let script = step.get("script").and_then(Value::as_str)?;
    let secs: f64 = script
        .split(['\n', ';', '&', '|'])
        .filter_map(|cmd| cmd.trim().strip_prefix("sleep "))
        .filter_map(|n| n.trim().parse::<f64>().ok())
        .sum();
    (secs > 0.0).then(|| Duration::from_secs_f64(secs))
}

/// Plausible output for a step nobody scripted.
fn default_logs(step: &Value, name: &str, params: &BTreeMap<String, String>) -> Vec<String> {
    let image = model::str_at(step, &["image"]).unwrap_or("");
    let param = |k: &str| params.get(k).cloned().unwrap_or_default();
    if image.contains("git-init") || image.contains("git-clone") {
        let url = param("url");
        let revision = param("revision");
        return vec![
            format!("{{\"level\":\"info\",\"msg\":\"Cloning {url} at {revision}\"}}"),
            format!(
                "{{\"level\":\"info\",\"msg\":\"Successfully cloned {url} @ {} (grafted, HEAD, origin/{revision}) in path /workspace/output/\"}}",
                default_result("commit", "", params)
            ),
        ];
    }
    if image.contains("kaniko") || image.contains("buildah") {
        let target = param("IMAGE");
        return vec![
            format!("STEP 1/2: FROM {}", "scratch"),
            "STEP 2/2: COPY . /".to_string(),
            format!("COMMIT {target}"),
            format!(
                "Successfully pushed {target}@{}",
                default_result("IMAGE_DIGEST", "", params)
            ),
        ];
    }
    let script = step.get("script").and_then(Value::as_str).unwrap_or("");
    let mut lines: Vec<String> = script
        .lines()
        .filter_map(|l| l.trim().strip_prefix("echo "))
        .map(|l| l.trim_start_matches("-n ").trim_matches('"').to_string())
        .collect();
    if lines.is_empty() && step.get("command").is_some() {
        let cmd = model::arr(step, &["command"])
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>();
        if cmd.first() == Some(&"echo") {
            lines.push(
                model::arr(step, &["args"])
                    .iter()
                    .map(model::param_value_to_string)
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
    }
    if lines.is_empty() {
        lines.push(format!("[{name}] running {image}"));
        lines.push(format!("[{name}] done"));
    }
    lines
}

/// Deterministic `sha256:<64 hex>` from a task's name and params.
pub fn image_digest(task: &str, params: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(task.as_bytes());
    for (k, v) in params {
        h.update([0]);
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finalize()))
}

fn default_result(result: &str, task: &str, params: &BTreeMap<String, String>) -> String {
    match result {
        "IMAGE_DIGEST" => image_digest("", params),
        "IMAGE_URL" => params.get("IMAGE").cloned().unwrap_or_default(),
        "commit" => {
            let seed = format!(
                "{}\0{}",
                params.get("url").map(String::as_str).unwrap_or(""),
                params.get("revision").map(String::as_str).unwrap_or("")
            );
            hex::encode(Sha256::digest(seed.as_bytes()))[..40].to_string()
        }
        "url" => params.get("url").cloned().unwrap_or_default(),
        other => match params.get(other) {
            Some(v) => v.clone(),
            None => {
                let seed = format!("{task}\0{other}\0{params:?}");
                format!(
                    "{other}-{}",
                    &hex::encode(Sha256::digest(seed.as_bytes()))[..8]
                )
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kaniko_spec() -> Value {
        json!({
            "results": [{"name": "IMAGE_DIGEST"}, {"name": "IMAGE_URL"}],
            "steps": [
                {"name": "build-and-push", "image": "gcr.io/kaniko-project/executor:v1.8.1"},
                {"name": "write-url", "image": "bash", "script": "sleep 3\necho -n done"}
            ]
        })
    }

    fn params() -> BTreeMap<String, String> {
        [("IMAGE".to_string(), "registry.local/app:1".to_string())].into()
    }

    /// The plans of the kaniko Task's steps (pipeline task `build`) under
    /// `layers`, with steps lasting 2 s by default.
    fn kaniko_plans(layers: &[&[ScriptRule]]) -> Vec<StepPlan> {
        let spec = kaniko_spec();
        let p = params();
        let ctx = TaskContext {
            names: vec!["build", "kaniko"],
            task_spec: &spec,
            params: &p,
        };
        plan_steps(&ctx, layers, Duration::from_secs(2))
    }

    #[test]
    fn defaults_write_every_declared_result() {
        let plans = kaniko_plans(&[]);
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].duration, Duration::from_secs(2));
        assert_eq!(
            plans[1].duration,
            Duration::from_secs(3),
            "sleep 3 in the script"
        );
        let results: BTreeMap<_, _> = plans[1].results.iter().cloned().collect();
        assert_eq!(results["IMAGE_URL"], "registry.local/app:1");
        let digest = &results["IMAGE_DIGEST"];
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{digest}"
        );
        assert_eq!(digest, &image_digest("", &params()), "deterministic");
        let other: BTreeMap<String, String> =
            [("IMAGE".to_string(), "registry.local/app:2".to_string())].into();
        assert_ne!(digest, &image_digest("", &other));
        assert!(
            plans[0]
                .logs
                .iter()
                .any(|l| l.contains("registry.local/app:1"))
        );
        assert_eq!(plans[1].logs, vec!["done"]);
    }

    #[test]
    fn rules_override_in_layer_order() {
        let opts = vec![ScriptRule {
            task: Some("kaniko".into()),
            exit_code: Some(2),
            ..Default::default()
        }];
        let ann: Vec<ScriptRule> = serde_json::from_str(
            r#"[{"task": "build", "step": "build-and-push", "exitCode": 1, "logs": ["boom"], "duration": "1m", "results": {"IMAGE_DIGEST": "sha256:feed"}}]"#,
        )
        .unwrap();
        let plans = kaniko_plans(&[&opts, &ann]);
        assert_eq!(plans[0].exit_code, 1);
        assert_eq!(plans[0].logs, vec!["boom"]);
        assert_eq!(plans[0].duration, Duration::from_secs(60));
        assert_eq!(
            plans[1].exit_code, 2,
            "options rule still applies to the other step"
        );
        assert_eq!(
            plans[0].results,
            vec![("IMAGE_DIGEST".to_string(), "sha256:feed".to_string())]
        );
        assert!(
            plans[1].results.iter().all(|(n, _)| n != "IMAGE_DIGEST"),
            "scripted on an earlier step"
        );
    }

    #[test]
    fn bad_annotation_is_an_error() {
        let obj = json!({"metadata": {"annotations": {ANNOTATION: "[{\"exitcode\": 1}]"}}});
        assert!(
            rules_from_annotations(&obj)
                .unwrap_err()
                .contains("exitcode")
        );
    }
}
