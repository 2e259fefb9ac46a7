//! Reading Tekton objects (serde_json `Value`s in `tekton.dev/v1` storage shape).

use serde_json::{Map, Value, json};

pub const GROUP: &str = "tekton.dev";

/// Labels Tekton puts on the objects it creates.
pub mod labels {
    pub const PIPELINE: &str = "tekton.dev/pipeline";
    pub const PIPELINE_RUN: &str = "tekton.dev/pipelineRun";
    pub const PIPELINE_TASK: &str = "tekton.dev/pipelineTask";
    pub const TASK: &str = "tekton.dev/task";
    pub const TASK_RUN: &str = "tekton.dev/taskRun";
    pub const MEMBER_OF: &str = "tekton.dev/memberOf";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
}

pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

pub fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    Some(cur)
}

pub fn arr<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

pub fn name(v: &Value) -> &str {
    str_at(v, &["metadata", "name"]).unwrap_or("")
}

pub fn namespace(v: &Value) -> &str {
    str_at(v, &["metadata", "namespace"]).unwrap_or("default")
}

pub fn uid(v: &Value) -> &str {
    str_at(v, &["metadata", "uid"]).unwrap_or("")
}

/// Mutable access to `v[key]` as an object, creating it if missing or not an object.
pub fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    let map = v.as_object_mut().expect("object");
    let entry = map.entry(key.to_string()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    entry.as_object_mut().expect("object")
}

/// The `Succeeded` condition of a run, if any.
pub fn succeeded_condition(run: &Value) -> Option<&Value> {
    arr(run, &["status", "conditions"])
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Succeeded"))
}

/// `Some(true)` succeeded, `Some(false)` failed, `None` still running / not started.
pub fn run_outcome(run: &Value) -> Option<bool> {
    match succeeded_condition(run)?.get("status")?.as_str()? {
        "True" => Some(true),
        "False" => Some(false),
        _ => None,
    }
}

pub fn is_done(run: &Value) -> bool {
    run_outcome(run).is_some()
}

pub fn condition(status: &str, reason: &str, message: &str) -> Value {
    json!({
        "type": "Succeeded",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": now(),
    })
}

/// Kubernetes timestamps have whole seconds.
pub fn now() -> String {
    // `2006-01-02T15:04:05Z`; the fixed formatter, not a format string parsed per call.
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A parameter value as Tekton stores it: string, array of strings or object.
pub fn param_value_to_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(param_value_to_string)
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Steps of a task spec with Tekton's names for unnamed steps (`unnamed-<index>`).
pub fn step_names(task_spec: &Value) -> Vec<String> {
    arr(task_spec, &["steps"])
        .iter()
        .enumerate()
        .map(|(i, s)| match s.get("name").and_then(Value::as_str) {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => format!("unnamed-{i}"),
        })
        .collect()
}

/// `ownerReferences` entry pointing at a controller object.
pub fn owner_reference(owner: &Value, kind: &str) -> Value {
    json!({
        "apiVersion": owner.get("apiVersion").and_then(Value::as_str).unwrap_or("tekton.dev/v1"),
        "kind": kind,
        "name": name(owner),
        "uid": uid(owner),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The uid of the object's controller owner of the given kind.
pub fn controller_owner_uid<'a>(obj: &'a Value, kind: &str) -> Option<&'a str> {
    arr(obj, &["metadata", "ownerReferences"])
        .iter()
        .find(|o| o.get("kind").and_then(Value::as_str) == Some(kind))
        .and_then(|o| o.get("uid").and_then(Value::as_str))
}
