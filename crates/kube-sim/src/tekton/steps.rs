//! What Tekton does to a Task's steps before they are validated and run:
//! `stepTemplate` merged into every step (the step's own fields win; lists
//! with a merge key — `env` by name, `volumeMounts` by mountPath — are merged
//! element-wise, as Tekton's strategic merge of the two containers does), and
//! `ref:` steps replaced by the StepAction they name, with the step's params
//! substituted into it and `$(step.results.<r>.path)` pointing at the step's
//! own results directory.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{model, subst};
use crate::cluster::{Cluster, gvr};
use crate::patch;

/// Fields a StepAction supplies to the step that refers to it.
const STEP_ACTION_FIELDS: &[&str] = &[
    "image",
    "command",
    "args",
    "script",
    "env",
    "workingDir",
    "securityContext",
    "volumeMounts",
    "results",
];

/// Fields a `ref:` step must not set itself (Tekton's "<field> cannot be used with Ref").
pub const NOT_WITH_REF: &[&str] = &[
    "image",
    "command",
    "args",
    "script",
    "env",
    "volumeMounts",
    "results",
];

/// The steps of `spec` with its `stepTemplate` merged into each (borrowed,
/// not copied, when there is no template: admission runs on every create).
pub fn merged_steps(spec: &Value) -> Cow<'_, [Value]> {
    let steps = model::arr(spec, &["steps"]);
    let Some(template) = spec.get("stepTemplate").filter(|t| t.is_object()) else {
        return Cow::Borrowed(steps);
    };
    steps
        .iter()
        .map(|step| {
            let mut merged = template.clone();
            patch::strategic_merge(&mut merged, step);
            merged
        })
        .collect::<Vec<_>>()
        .into()
}

/// Merges `spec.stepTemplate` into `spec.steps` in place (the template stays).
pub fn merge_step_template(spec: &mut Value) {
    if spec.get("stepTemplate").is_none() {
        return;
    }
    let steps = merged_steps(spec).into_owned();
    spec["steps"] = Value::Array(steps);
}

/// Replaces each `ref:` step of `spec` by its StepAction from `namespace`.
/// `Err` is the message of the TaskRun's failure.
pub fn resolve_step_refs(
    spec: &mut Value,
    namespace: &str,
    cluster: &dyn Cluster,
) -> Result<(), String> {
    // Most Tasks have no `ref:` step: cost them nothing per TaskRun.
    if !model::arr(spec, &["steps"])
        .iter()
        .any(|s| s.get("ref").is_some())
    {
        return Ok(());
    }
    let names = model::step_names(spec);
    let Some(steps) = spec.get_mut("steps").and_then(Value::as_array_mut) else {
        return Ok(());
    };
    for (step, step_name) in steps.iter_mut().zip(&names) {
        let Some(r) = step.get("ref") else {
            continue;
        };
        if r.get("resolver").is_some() {
            return Err(format!(
                "step {step_name}: remote resolution of StepActions is not simulated"
            ));
        }
        let name = model::str_at(r, &["name"]).unwrap_or("");
        let action = cluster
            .get(&gvr::STEPACTIONS, Some(namespace), name)
            .ok_or_else(|| format!("stepactions.tekton.dev \"{name}\" not found"))?;
        *step = resolved_step(step, step_name, name, &action["spec"])?;
    }
    Ok(())
}

/// The step a StepAction stands for: its fields, the step's other fields
/// (name, timeout, onError, …), params substituted.
fn resolved_step(
    step: &Value,
    step_name: &str,
    action: &str,
    spec: &Value,
) -> Result<Value, String> {
    let mut params: Map<String, Value> = Map::new();
    for p in model::arr(spec, &["params"]) {
        if let (Some(n), Some(d)) = (p.get("name").and_then(Value::as_str), p.get("default")) {
            params.insert(n.to_string(), d.clone());
        }
    }
    for p in model::arr(step, &["params"]) {
        if let (Some(n), Some(v)) = (p.get("name").and_then(Value::as_str), p.get("value")) {
            params.insert(n.to_string(), v.clone());
        }
    }
    let missing: Vec<&str> = model::arr(spec, &["params"])
        .iter()
        .filter_map(|p| p.get("name").and_then(Value::as_str))
        .filter(|n| !params.contains_key(*n))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "invalid input params for StepAction {action} of step {step_name}: missing parameters: [{}]",
            missing.join(" ")
        ));
    }
    let mut out: Map<String, Value> = step
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| !matches!(k.as_str(), "ref" | "params"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for key in STEP_ACTION_FIELDS {
        if let Some(v) = spec.get(*key) {
            out.insert((*key).to_string(), v.clone());
        }
    }
    let mut out = Value::Object(out);
    let results_dir = format!("/tekton/steps/step-{step_name}/results");
    subst::replace_in_value(&mut out, &|expr| {
        if let Some(n) = subst::param_name(expr) {
            return params.get(n).map(model::param_value_to_string);
        }
        let r = expr.strip_prefix("step.results.")?.strip_suffix(".path")?;
        Some(format!("{results_dir}/{r}"))
    });
    Ok(out)
}

/// Validation of a StepAction's spec (Tekton's webhook for the kind).
pub fn step_action_errors(spec: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    if model::str_at(spec, &["image"]).unwrap_or("").is_empty() {
        errs.push("missing field(s): spec.image".to_string());
    }
    if spec.get("script").is_some() && spec.get("command").is_some() {
        errs.push("expected exactly one, got both: spec.command, spec.script".to_string());
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tekton::testing::MemCluster;
    use serde_json::json;

    #[test]
    fn step_template_supplies_what_a_step_lacks() {
        let mut spec = json!({
            "stepTemplate": {"image": "alpine:3", "env": [{"name": "A", "value": "t"}, {"name": "B", "value": "t"}],
                             "workingDir": "/src"},
            "steps": [
                {"name": "one", "script": "echo 1", "env": [{"name": "B", "value": "s"}]},
                {"name": "two", "image": "busybox", "script": "echo 2"},
            ]
        });
        merge_step_template(&mut spec);
        let steps = model::arr(&spec, &["steps"]);
        assert_eq!(steps[0]["image"], "alpine:3");
        assert_eq!(steps[0]["workingDir"], "/src");
        assert_eq!(
            steps[0]["env"],
            json!([{"name": "A", "value": "t"}, {"name": "B", "value": "s"}])
        );
        assert_eq!(steps[1]["image"], "busybox", "the step's own image wins");
        assert_eq!(steps[1]["script"], "echo 2");
    }

    #[test]
    fn a_ref_step_becomes_its_step_action() {
        let cluster = MemCluster::default();
        cluster.add_namespace("ns");
        let created = cluster.create(
            &gvr::STEPACTIONS,
            Some("ns"),
            json!({"apiVersion": "tekton.dev/v1beta1", "kind": "StepAction",
                   "metadata": {"name": "greet", "namespace": "ns"},
                   "spec": {"image": "alpine", "params": [{"name": "who"}, {"name": "how", "default": "Hello"}],
                            "results": [{"name": "said"}],
                            "script": "echo \"$(params.how), $(params.who)\" | tee $(step.results.said.path)"}}),
        );
        assert!(created.is_ok());
        let mut spec = json!({"steps": [
            {"name": "hi", "ref": {"name": "greet"}, "params": [{"name": "who", "value": "$(params.user)"}],
             "timeout": "1m"},
        ]});
        resolve_step_refs(&mut spec, "ns", &cluster).unwrap();
        let step = &spec["steps"][0];
        assert_eq!(step["image"], "alpine");
        assert_eq!(
            step["script"],
            "echo \"Hello, $(params.user)\" | tee /tekton/steps/step-hi/results/said"
        );
        assert_eq!(step["timeout"], "1m");
        assert_eq!(step["results"], json!([{"name": "said"}]));
        assert!(step.get("ref").is_none() && step.get("params").is_none());

        let mut missing = json!({"steps": [{"ref": {"name": "greet"}}]});
        assert_eq!(
            resolve_step_refs(&mut missing, "ns", &cluster).unwrap_err(),
            "invalid input params for StepAction greet of step unnamed-0: missing parameters: [who]"
        );
        let mut absent = json!({"steps": [{"ref": {"name": "nope"}}]});
        assert_eq!(
            resolve_step_refs(&mut absent, "ns", &cluster).unwrap_err(),
            "stepactions.tekton.dev \"nope\" not found"
        );
    }
}
