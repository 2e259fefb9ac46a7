//! What Tekton's admission webhooks do: defaulting and validation of Tekton objects.
//!
//! The API server calls [`apply_defaults`] then [`validate_create`] on create and
//! [`validate_update`] on update/patch of `tekton.dev` resources. An `Err(msg)`
//! should be answered like the real webhook: `400 BadRequest` with the message
//! `admission webhook "validation.webhook.pipeline.tekton.dev" denied the request: <msg>`
//! (see [`webhook_denial`]).

use std::collections::{HashMap, HashSet};

use serde_json::{Value, json};

use super::{convert, duration, model, steps};
use crate::cluster::Gvr;

pub const DEFAULT_TIMEOUT: &str = "1h0m0s";
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

const PR_SPEC_STATUSES: [&str; 4] = [
    "Cancelled",
    "CancelledRunFinally",
    "StoppedRunFinally",
    "PipelineRunPending",
];

/// The full Status message the API server returns for a rejected object.
pub fn webhook_denial(err: &str) -> String {
    format!(
        "admission webhook \"validation.webhook.pipeline.tekton.dev\" denied the request: {err}"
    )
}

/// Mutating-webhook defaults: `timeouts.pipeline` / `timeout` 1h, service account `default`,
/// param types. Objects of other resources are left alone.
pub fn apply_defaults(gvr: &Gvr, obj: &mut Value) {
    if gvr.group != model::GROUP {
        return;
    }
    let spec = model::obj_mut(obj, "spec");
    match gvr.plural {
        "pipelineruns" => {
            let is_v1beta1 = gvr.version == "v1beta1";
            let timeouts = spec.entry("timeouts").or_insert_with(|| json!({}));
            if !timeouts.is_object() {
                *timeouts = json!({});
            }
            let legacy = spec.get("timeout").cloned();
            let timeouts = spec
                .get_mut("timeouts")
                .and_then(Value::as_object_mut)
                .expect("object");
            if !timeouts.contains_key("pipeline") {
                timeouts.insert(
                    "pipeline".into(),
                    legacy.unwrap_or_else(|| json!(DEFAULT_TIMEOUT)),
                );
            }
            if is_v1beta1 {
                spec.entry("serviceAccountName")
                    .or_insert_with(|| json!(DEFAULT_SERVICE_ACCOUNT));
            } else {
                let tpl = spec.entry("taskRunTemplate").or_insert_with(|| json!({}));
                if let Some(tpl) = tpl.as_object_mut() {
                    tpl.entry("serviceAccountName")
                        .or_insert_with(|| json!(DEFAULT_SERVICE_ACCOUNT));
                }
            }
        }
        "taskruns" => {
            spec.entry("timeout")
                .or_insert_with(|| json!(DEFAULT_TIMEOUT));
            spec.entry("serviceAccountName")
                .or_insert_with(|| json!(DEFAULT_SERVICE_ACCOUNT));
        }
        _ => {}
    }
}

/// Validation on create. `Err` carries a Tekton-like `validation failed: …` message.
pub fn validate_create(gvr: &Gvr, obj: &Value) -> Result<(), String> {
    if gvr.group != model::GROUP {
        return Ok(());
    }
    let obj = if gvr.version == "v1beta1" {
        std::borrow::Cow::Owned(convert::to_v1(obj))
    } else {
        std::borrow::Cow::Borrowed(obj)
    };
    let null = Value::Null;
    let spec = obj.get("spec").unwrap_or(&null);
    let errs = match gvr.plural {
        "tasks" => task_spec_errors(spec, "spec"),
        "pipelines" => pipeline_spec_errors(spec, "spec"),
        "pipelineruns" => pipelinerun_errors(spec),
        "taskruns" => taskrun_errors(spec),
        "stepactions" => steps::step_action_errors(spec),
        _ => Vec::new(),
    };
    result(errs)
}

/// Validation on update: once a run has started only `spec.status` (and, for TaskRuns,
/// `spec.statusMessage`) may change; once it is done nothing may change.
pub fn validate_update(gvr: &Gvr, old: &Value, new: &Value) -> Result<(), String> {
    if gvr.group != model::GROUP {
        return Ok(());
    }
    let (old, new) = if gvr.version == "v1beta1" {
        (convert::to_v1(old), convert::to_v1(new))
    } else {
        (old.clone(), new.clone())
    };
    validate_create(&Gvr::new(gvr.group, "v1", gvr.plural), &new)?;
    let (kind, mutable): (&str, &[&str]) = match gvr.plural {
        "pipelineruns" => ("PipelineRun", &["status"]),
        "taskruns" => ("TaskRun", &["status", "statusMessage"]),
        _ => return Ok(()),
    };
    let started = model::at(&old, &["status", "startTime"]).is_some();
    let done = model::is_done(&old);
    let null = Value::Null;
    let old_spec = old.get("spec").unwrap_or(&null);
    let new_spec = new.get("spec").unwrap_or(&null);
    if done {
        if old_spec != new_spec {
            return result(vec![format!(
                "invalid value: Once the {kind} is complete, no updates are allowed"
            )]);
        }
        return Ok(());
    }
    if !started {
        return Ok(());
    }
    let strip = |s: &Value| {
        let mut s = s.clone();
        if let Some(m) = s.as_object_mut() {
            for k in mutable {
                m.remove(*k);
            }
        }
        s
    };
    if strip(old_spec) != strip(new_spec) {
        let what = if kind == "TaskRun" {
            "only status and statusMessage updates are allowed"
        } else {
            "only status updates are allowed"
        };
        return result(vec![format!(
            "invalid value: Once the {kind} has started, {what}"
        )]);
    }
    if kind == "PipelineRun"
        && new_spec.get("status").and_then(Value::as_str) == Some("PipelineRunPending")
    {
        return result(vec![
            "invalid value: PipelineRun cannot be Pending after it is started: spec.status"
                .to_string(),
        ]);
    }
    Ok(())
}

fn result(errs: Vec<String>) -> Result<(), String> {
    if errs.is_empty() {
        Ok(())
    } else {
        Err(format!("validation failed: {}", errs.join("\n")))
    }
}

fn pipelinerun_errors(spec: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    match (spec.get("pipelineRef"), spec.get("pipelineSpec")) {
        (Some(_), Some(_)) => errs.push(
            "expected exactly one, got both: spec.pipelineRef, spec.pipelineSpec".to_string(),
        ),
        (None, None) => errs.push(
            "expected exactly one, got neither: spec.pipelineRef, spec.pipelineSpec".to_string(),
        ),
        (Some(r), None) => errs.extend(ref_errors(r, "spec.pipelineRef")),
        (None, Some(ps)) => errs.extend(pipeline_spec_errors(ps, "spec.pipelineSpec")),
    }
    if let Some(status) = spec.get("status").and_then(Value::as_str)
        && !status.is_empty()
        && !PR_SPEC_STATUSES.contains(&status)
    {
        errs.push(format!("invalid value: {status}: spec.status"));
    }
    errs.extend(param_values_errors(spec, "spec"));
    errs.extend(duplicate_names(
        model::arr(spec, &["workspaces"]),
        "spec.workspaces",
        "workspace binding",
    ));
    if let Some(t) = spec.get("timeouts") {
        errs.extend(timeouts_errors(t));
    }
    errs
}

fn timeouts_errors(t: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    let mut parsed = HashMap::new();
    for key in ["pipeline", "tasks", "finally"] {
        if let Some(s) = t.get(key).and_then(Value::as_str) {
            match duration::parse(s) {
                Ok(d) => {
                    parsed.insert(key, d);
                }
                Err(e) => errs.push(format!("invalid value: {e}: spec.timeouts.{key}")),
            }
        }
    }
    if let Some(&pipeline) = parsed.get("pipeline")
        && !pipeline.is_zero()
    {
        let tasks = parsed.get("tasks").copied();
        let finally = parsed.get("finally").copied();
        if let Some(tk) = tasks
            && tk > pipeline
        {
            errs.push(format!(
                "invalid value: {} should be <= pipeline duration: spec.timeouts.tasks",
                duration::format(tk)
            ));
        }
        if let Some(f) = finally
            && f > pipeline
        {
            errs.push(format!(
                "invalid value: {} should be <= pipeline duration: spec.timeouts.finally",
                duration::format(f)
            ));
        }
        if let (Some(tk), Some(f)) = (tasks, finally)
            && tk + f > pipeline
        {
            errs.push(format!(
                "invalid value: {} + {} should be <= pipeline duration: spec.timeouts.finally, spec.timeouts.tasks",
                duration::format(tk),
                duration::format(f)
            ));
        }
    }
    errs
}

fn taskrun_errors(spec: &Value) -> Vec<String> {
    let mut errs = Vec::new();
    match (spec.get("taskRef"), spec.get("taskSpec")) {
        (Some(_), Some(_)) => {
            errs.push("expected exactly one, got both: spec.taskRef, spec.taskSpec".to_string())
        }
        (None, None) => {
            errs.push("expected exactly one, got neither: spec.taskRef, spec.taskSpec".to_string())
        }
        (Some(r), None) => errs.extend(ref_errors(r, "spec.taskRef")),
        (None, Some(ts)) => errs.extend(task_spec_errors(ts, "spec.taskSpec")),
    }
    if let Some(status) = spec.get("status").and_then(Value::as_str)
        && !status.is_empty()
        && status != "TaskRunCancelled"
    {
        errs.push(format!("invalid value: {status}: spec.status"));
    }
    if let Some(t) = spec.get("timeout").and_then(Value::as_str)
        && let Err(e) = duration::parse(t)
    {
        errs.push(format!("invalid value: {e}: spec.timeout"));
    }
    errs.extend(param_values_errors(spec, "spec"));
    errs.extend(duplicate_names(
        model::arr(spec, &["workspaces"]),
        "spec.workspaces",
        "workspace binding",
    ));
    errs
}

/// A `taskRef`/`pipelineRef`: a name, or a resolver (with params).
fn ref_errors(r: &Value, path: &str) -> Vec<String> {
    let name = r.get("name").and_then(Value::as_str).unwrap_or("");
    let resolver = r.get("resolver").and_then(Value::as_str).unwrap_or("");
    match (name.is_empty(), resolver.is_empty()) {
        (true, true) => vec![format!("missing field(s): {path}.name")],
        (false, false) => vec![format!(
            "expected exactly one, got both: {path}.name, {path}.resolver"
        )],
        _ => Vec::new(),
    }
}

fn param_values_errors(spec: &Value, path: &str) -> Vec<String> {
    let mut errs = duplicate_names(
        model::arr(spec, &["params"]),
        &format!("{path}.params"),
        "parameter",
    );
    for (i, p) in model::arr(spec, &["params"]).iter().enumerate() {
        if p.get("value").is_none() {
            errs.push(format!("missing field(s): {path}.params[{i}].value"));
        }
    }
    errs
}

fn duplicate_names(items: &[Value], path: &str, what: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    let mut errs = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let name = item.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            errs.push(format!("missing field(s): {path}[{i}].name"));
        } else if !seen.insert(name) {
            errs.push(format!("{what} appears more than once: {path}[{name}]"));
        }
    }
    errs
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn task_spec_errors(spec: &Value, path: &str) -> Vec<String> {
    let mut errs = Vec::new();
    // Tekton validates the steps with the stepTemplate merged in.
    let steps = steps::merged_steps(spec);
    if steps.is_empty() {
        errs.push(format!("missing field(s): {path}.steps"));
    }
    let mut step_names = HashSet::new();
    for (i, step) in steps.iter().enumerate() {
        let has_ref = step.get("ref").is_some();
        if has_ref {
            // Only the step as written counts: a template field is no conflict.
            let own = &model::arr(spec, &["steps"])[i];
            for f in steps::NOT_WITH_REF
                .iter()
                .filter(|f| own.get(**f).is_some())
            {
                errs.push(format!(
                    "{f} cannot be used with Ref: {path}.steps[{i}].{f}"
                ));
            }
        }
        if !has_ref
            && step
                .get("image")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
        {
            errs.push(format!("missing field(s): {path}.steps[{i}].image"));
        }
        if let Some(n) = step.get("name").and_then(Value::as_str) {
            if !is_dns_label(n) {
                errs.push(format!(
                    "invalid value \"{n}\": {path}.steps[{i}].name\nTask step name must be a valid DNS Label, For more info refer to https://kubernetes.io/docs/concepts/overview/working-with-objects/names/#names"
                ));
            } else if !step_names.insert(n) {
                errs.push(format!(
                    "invalid value \"{n}\": {path}.steps[{i}].name\nTask step name must be unique"
                ));
            }
        }
        if step.get("script").is_some() && step.get("command").is_some() {
            errs.push(format!("expected exactly one, got both: {path}.steps[{i}].command, {path}.steps[{i}].script"));
        }
    }
    errs.extend(duplicate_names(
        model::arr(spec, &["params"]),
        &format!("{path}.params"),
        "parameter",
    ));
    errs.extend(duplicate_names(
        model::arr(spec, &["results"]),
        &format!("{path}.results"),
        "result",
    ));
    errs.extend(duplicate_names(
        model::arr(spec, &["workspaces"]),
        &format!("{path}.workspaces"),
        "workspace",
    ));
    for (i, p) in model::arr(spec, &["params"]).iter().enumerate() {
        if let Some(t) = p.get("type").and_then(Value::as_str)
            && !["string", "array", "object"].contains(&t)
        {
            errs.push(format!(
                "invalid value: {t}: {path}.params.{}.type",
                p.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or(&i.to_string())
            ));
        }
    }
    errs
}

pub(crate) fn pipeline_spec_errors(spec: &Value, path: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let tasks = model::arr(spec, &["tasks"]);
    let finally = model::arr(spec, &["finally"]);
    if tasks.is_empty() && !finally.is_empty() {
        errs.push(format!(
            "invalid value: spec.tasks is empty but spec.finally has 1 tasks: {path}.finally"
        ));
    }
    let mut names = HashSet::new();
    for (section, list) in [("tasks", tasks), ("finally", finally)] {
        for (i, t) in list.iter().enumerate() {
            let p = format!("{path}.{section}[{i}]");
            let name = t.get("name").and_then(Value::as_str).unwrap_or("");
            if name.is_empty() {
                errs.push(format!("missing field(s): {p}.name"));
            } else if !is_dns_label(name) {
                errs.push(format!("invalid value \"{name}\": {p}.name\nPipeline Task name must be a valid DNS Label.For more info refer to https://kubernetes.io/docs/concepts/overview/working-with-objects/names/#names"));
            } else if !names.insert(name) {
                errs.push(format!("expected exactly one, got multiple: {p}.name"));
            }
            match (
                t.get("taskRef"),
                t.get("taskSpec"),
                t.get("pipelineRef").or(t.get("pipelineSpec")),
            ) {
                (Some(_), Some(_), _) => errs.push(format!(
                    "expected exactly one, got multiple: {p}.taskRef, {p}.taskSpec"
                )),
                (None, None, None) => errs.push(format!(
                    "expected exactly one, got neither: {p}.taskRef, {p}.taskSpec"
                )),
                (Some(r), None, _) => errs.extend(ref_errors(r, &format!("{p}.taskRef"))),
                (None, Some(ts), _) => errs.extend(task_spec_errors(ts, &format!("{p}.taskSpec"))),
                _ => {}
            }
            if section == "finally" && t.get("runAfter").is_some() {
                errs.push(format!("invalid value: no runAfter allowed under spec.finally, final task {name} has runAfter specified: {p}"));
            }
            errs.extend(param_values_errors(t, &p));
        }
    }
    if errs.is_empty()
        && let Err(e) = super::dag::build(tasks)
    {
        errs.push(format!("invalid value: {e}: {path}.tasks"));
    }
    errs.extend(duplicate_names(
        model::arr(spec, &["params"]),
        &format!("{path}.params"),
        "parameter",
    ));
    errs.extend(duplicate_names(
        model::arr(spec, &["workspaces"]),
        &format!("{path}.workspaces"),
        "workspace",
    ));
    errs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::gvr;

    #[test]
    fn pipelinerun_needs_exactly_one_of_ref_and_spec() {
        let both = json!({"spec": {"pipelineRef": {"name": "p"}, "pipelineSpec": {"tasks": []}}});
        let err = validate_create(&gvr::PIPELINERUNS, &both).unwrap_err();
        assert_eq!(
            err,
            "validation failed: expected exactly one, got both: spec.pipelineRef, spec.pipelineSpec"
        );
        let neither = json!({"spec": {}});
        assert!(
            validate_create(&gvr::PIPELINERUNS, &neither)
                .unwrap_err()
                .contains("got neither")
        );
    }

    #[test]
    fn task_without_steps_is_rejected() {
        let err = validate_create(&gvr::TASKS, &json!({"spec": {"params": []}})).unwrap_err();
        assert_eq!(err, "validation failed: missing field(s): spec.steps");
    }

    #[test]
    fn bad_spec_status_and_timeouts_are_rejected() {
        let pr = json!({"spec": {"pipelineRef": {"name": "p"}, "status": "Stop", "timeouts": {"pipeline": "1h", "tasks": "2h"}}});
        let err = validate_create(&gvr::PIPELINERUNS, &pr).unwrap_err();
        assert!(err.contains("invalid value: Stop: spec.status"), "{err}");
        assert!(
            err.contains("2h0m0s should be <= pipeline duration: spec.timeouts.tasks"),
            "{err}"
        );
    }

    #[test]
    fn pipeline_with_cycle_or_unknown_run_after_is_rejected() {
        let p = json!({"spec": {"tasks": [
            {"name": "a", "taskRef": {"name": "t"}, "runAfter": ["b"]},
            {"name": "b", "taskRef": {"name": "t"}, "runAfter": ["a"]}
        ]}});
        assert!(
            validate_create(&gvr::PIPELINES, &p)
                .unwrap_err()
                .contains("cycle detected")
        );
        let p = json!({"spec": {"tasks": [{"name": "a", "taskRef": {"name": "t"}, "runAfter": ["zz"]}]}});
        assert!(
            validate_create(&gvr::PIPELINES, &p)
                .unwrap_err()
                .contains("wasn't present in Pipeline")
        );
    }

    #[test]
    fn started_pipelinerun_only_accepts_spec_status_changes() {
        let old = json!({"spec": {"pipelineRef": {"name": "p"}}, "status": {"startTime": "2026-01-01T00:00:00Z"}});
        let mut cancel = old.clone();
        cancel["spec"]["status"] = json!("Cancelled");
        assert_eq!(validate_update(&gvr::PIPELINERUNS, &old, &cancel), Ok(()));
        let mut other = old.clone();
        other["spec"]["pipelineRef"]["name"] = json!("q");
        assert_eq!(
            validate_update(&gvr::PIPELINERUNS, &old, &other).unwrap_err(),
            "validation failed: invalid value: Once the PipelineRun has started, only status updates are allowed"
        );
        let mut done = old.clone();
        done["status"]["conditions"] = json!([{"type": "Succeeded", "status": "True"}]);
        assert!(
            validate_update(&gvr::PIPELINERUNS, &done, &cancel)
                .unwrap_err()
                .contains("is complete")
        );
        let mut pending = old.clone();
        pending["spec"]["status"] = json!("PipelineRunPending");
        assert!(validate_update(&gvr::PIPELINERUNS, &old, &pending).is_err());
    }

    #[test]
    fn defaults_timeout_and_service_account() {
        let mut pr = json!({"spec": {"pipelineRef": {"name": "p"}}});
        apply_defaults(&gvr::PIPELINERUNS, &mut pr);
        assert_eq!(pr["spec"]["timeouts"]["pipeline"], "1h0m0s");
        assert_eq!(
            pr["spec"]["taskRunTemplate"]["serviceAccountName"],
            "default"
        );
        let mut tr = json!({"spec": {"taskRef": {"name": "t"}, "timeout": "5m"}});
        apply_defaults(&gvr::TASKRUNS, &mut tr);
        assert_eq!(tr["spec"]["timeout"], "5m");
        assert_eq!(tr["spec"]["serviceAccountName"], "default");
    }
}
