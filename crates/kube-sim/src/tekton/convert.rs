//! Conversion between the `tekton.dev/v1` storage shape and `tekton.dev/v1beta1`.
//!
//! The API layer calls these when a client reads or writes `v1beta1`: objects are
//! stored as v1 and converted on the way out ([`to_v1beta1`]) and on the way in
//! ([`to_v1`]). Only fields whose names or places differ are moved; everything
//! else is the same in both versions.

use serde_json::{Map, Value};

pub const V1: &str = "tekton.dev/v1";
pub const V1BETA1: &str = "tekton.dev/v1beta1";

/// A stored (v1) object as served in `group/version`: only `tekton.dev/v1beta1`
/// differs; everything else is returned as is.
pub fn from_storage(group: &str, version: &str, mut obj: Value) -> Value {
    if group != "tekton.dev" || version == "v1" || !obj.is_object() {
        return obj;
    }
    if obj["kind"] == "StepAction" {
        // Stored as v1beta1; v1alpha1 has the same shape.
        set_api_version(&mut obj, &format!("tekton.dev/{version}"));
        return obj;
    }
    to_v1beta1(&obj)
}

/// An object a client sent in `group/version` → the v1 storage shape. `kind` fills a
/// missing `kind` so the conversion knows what it is converting.
pub fn to_storage(group: &str, version: &str, kind: &str, mut obj: Value) -> Value {
    if group != "tekton.dev" || version == "v1" || !obj.is_object() {
        return obj;
    }
    if obj.get("kind").is_none() {
        obj["kind"] = Value::String(kind.to_string());
    }
    if kind == "StepAction" {
        set_api_version(&mut obj, "tekton.dev/v1beta1");
        return obj;
    }
    to_v1(&obj)
}

/// Convert a v1 object of the given kind (`PipelineRun`, `TaskRun`, `Task`, `Pipeline`)
/// to v1beta1. Other kinds only get their apiVersion changed.
pub fn to_v1beta1(v1: &Value) -> Value {
    let mut v = v1.clone();
    set_api_version(&mut v, V1BETA1);
    match kind(&v).as_str() {
        "PipelineRun" => {
            if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
                if let Some(Value::Object(mut tpl)) = spec.remove("taskRunTemplate") {
                    move_key(&mut tpl, "serviceAccountName", spec, "serviceAccountName");
                    move_key(&mut tpl, "podTemplate", spec, "podTemplate");
                }
                for trs in array_items(spec.get_mut("taskRunSpecs")) {
                    rename(trs, "serviceAccountName", "taskServiceAccountName");
                    rename(trs, "podTemplate", "taskPodTemplate");
                }
                if let Some(ps) = spec.get_mut("pipelineSpec") {
                    pipeline_spec_to_v1beta1(ps);
                }
            }
            if let Some(status) = v.get_mut("status").and_then(Value::as_object_mut) {
                rename(status, "results", "pipelineResults");
                if let Some(ps) = status.get_mut("pipelineSpec") {
                    pipeline_spec_to_v1beta1(ps);
                }
            }
        }
        "TaskRun" => {
            if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut)
                && let Some(ts) = spec.get_mut("taskSpec")
            {
                task_spec_to_v1beta1(ts);
            }
            if let Some(status) = v.get_mut("status").and_then(Value::as_object_mut) {
                rename(status, "results", "taskResults");
                if let Some(ts) = status.get_mut("taskSpec") {
                    task_spec_to_v1beta1(ts);
                }
            }
        }
        "Task" => {
            if let Some(spec) = v.get_mut("spec") {
                task_spec_to_v1beta1(spec);
            }
        }
        "Pipeline" => {
            if let Some(spec) = v.get_mut("spec") {
                pipeline_spec_to_v1beta1(spec);
            }
        }
        _ => {}
    }
    v
}

/// Convert a v1beta1 object to the v1 storage shape (inverse of [`to_v1beta1`]).
pub fn to_v1(v1beta1: &Value) -> Value {
    let mut v = v1beta1.clone();
    set_api_version(&mut v, V1);
    match kind(&v).as_str() {
        "PipelineRun" => {
            if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut) {
                let mut tpl = Map::new();
                move_key(spec, "serviceAccountName", &mut tpl, "serviceAccountName");
                move_key(spec, "podTemplate", &mut tpl, "podTemplate");
                if !tpl.is_empty() {
                    let entry = spec
                        .entry("taskRunTemplate")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Some(existing) = entry.as_object_mut() {
                        existing.extend(tpl);
                    }
                }
                // v1beta1 `timeout` (deprecated) is v1 `timeouts.pipeline`.
                if let Some(t) = spec.remove("timeout") {
                    let entry = spec
                        .entry("timeouts")
                        .or_insert_with(|| Value::Object(Map::new()));
                    if let Some(m) = entry.as_object_mut() {
                        m.entry("pipeline").or_insert(t);
                    }
                }
                for trs in array_items(spec.get_mut("taskRunSpecs")) {
                    rename(trs, "taskServiceAccountName", "serviceAccountName");
                    rename(trs, "taskPodTemplate", "podTemplate");
                }
                if let Some(ps) = spec.get_mut("pipelineSpec") {
                    pipeline_spec_to_v1(ps);
                }
            }
            if let Some(status) = v.get_mut("status").and_then(Value::as_object_mut) {
                rename(status, "pipelineResults", "results");
                if let Some(ps) = status.get_mut("pipelineSpec") {
                    pipeline_spec_to_v1(ps);
                }
            }
        }
        "TaskRun" => {
            if let Some(spec) = v.get_mut("spec").and_then(Value::as_object_mut)
                && let Some(ts) = spec.get_mut("taskSpec")
            {
                task_spec_to_v1(ts);
            }
            if let Some(status) = v.get_mut("status").and_then(Value::as_object_mut) {
                rename(status, "taskResults", "results");
                if let Some(ts) = status.get_mut("taskSpec") {
                    task_spec_to_v1(ts);
                }
            }
        }
        "Task" => {
            if let Some(spec) = v.get_mut("spec") {
                task_spec_to_v1(spec);
            }
        }
        "Pipeline" => {
            if let Some(spec) = v.get_mut("spec") {
                pipeline_spec_to_v1(spec);
            }
        }
        _ => {}
    }
    v
}

fn pipeline_spec_to_v1beta1(ps: &mut Value) {
    for key in ["tasks", "finally"] {
        for t in array_items(ps.get_mut(key)) {
            if let Some(ts) = t.get_mut("taskSpec") {
                task_spec_to_v1beta1(ts);
            }
        }
    }
}

fn pipeline_spec_to_v1(ps: &mut Value) {
    for key in ["tasks", "finally"] {
        for t in array_items(ps.get_mut(key)) {
            if let Some(ts) = t.get_mut("taskSpec") {
                task_spec_to_v1(ts);
            }
        }
    }
}

/// v1 steps have `computeResources`; v1beta1 steps call it `resources`.
fn task_spec_to_v1beta1(ts: &mut Value) {
    for key in ["steps", "sidecars"] {
        for s in array_items(ts.get_mut(key)) {
            rename(s, "computeResources", "resources");
        }
    }
}

fn task_spec_to_v1(ts: &mut Value) {
    for key in ["steps", "sidecars"] {
        for s in array_items(ts.get_mut(key)) {
            rename(s, "resources", "computeResources");
        }
    }
}

fn kind(v: &Value) -> String {
    v.get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn set_api_version(v: &mut Value, api_version: &str) {
    if let Some(m) = v.as_object_mut()
        && m.contains_key("apiVersion")
    {
        m.insert("apiVersion".into(), Value::String(api_version.into()));
    }
}

fn array_items(v: Option<&mut Value>) -> impl Iterator<Item = &mut Map<String, Value>> {
    v.and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

fn rename(m: &mut Map<String, Value>, from: &str, to: &str) {
    if let Some(v) = m.remove(from) {
        m.insert(to.to_string(), v);
    }
}

fn move_key(
    from: &mut Map<String, Value>,
    from_key: &str,
    to: &mut Map<String, Value>,
    to_key: &str,
) {
    if let Some(v) = from.remove(from_key) {
        to.insert(to_key.to_string(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v1_pipelinerun() -> Value {
        json!({
            "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
            "metadata": {"name": "r", "namespace": "ci"},
            "spec": {
                "pipelineRef": {"name": "p"},
                "taskRunTemplate": {"serviceAccountName": "builder", "podTemplate": {"nodeSelector": {"a": "b"}}},
                "taskRunSpecs": [{"pipelineTaskName": "build", "serviceAccountName": "sa2"}],
                "timeouts": {"pipeline": "1h0m0s"}
            },
            "status": {"results": [{"name": "IMAGE_DIGEST", "value": "sha256:00"}]}
        })
    }

    #[test]
    fn pipelinerun_results_become_pipeline_results() {
        let b = to_v1beta1(&v1_pipelinerun());
        assert_eq!(b["apiVersion"], "tekton.dev/v1beta1");
        assert_eq!(b["status"]["pipelineResults"][0]["name"], "IMAGE_DIGEST");
        assert!(b["status"].get("results").is_none());
        assert_eq!(b["spec"]["serviceAccountName"], "builder");
        assert_eq!(b["spec"]["podTemplate"]["nodeSelector"]["a"], "b");
        assert!(b["spec"].get("taskRunTemplate").is_none());
        assert_eq!(
            b["spec"]["taskRunSpecs"][0]["taskServiceAccountName"],
            "sa2"
        );
    }

    #[test]
    fn pipelinerun_round_trips() {
        let v1 = v1_pipelinerun();
        assert_eq!(to_v1(&to_v1beta1(&v1)), v1);
    }

    #[test]
    fn v1beta1_timeout_becomes_timeouts_pipeline() {
        let b = json!({"apiVersion": "tekton.dev/v1beta1", "kind": "PipelineRun", "spec": {"timeout": "30m"}});
        assert_eq!(to_v1(&b)["spec"]["timeouts"]["pipeline"], "30m");
    }

    #[test]
    fn taskrun_results_become_task_results() {
        let v1 = json!({
            "apiVersion": "tekton.dev/v1", "kind": "TaskRun",
            "spec": {"taskSpec": {"steps": [{"name": "s", "image": "i", "computeResources": {"limits": {"cpu": "1"}}}]}},
            "status": {"results": [{"name": "IMAGE_URL", "type": "string", "value": "r/i"}], "steps": []}
        });
        let b = to_v1beta1(&v1);
        assert_eq!(b["status"]["taskResults"][0]["value"], "r/i");
        assert!(b["status"].get("results").is_none());
        assert_eq!(
            b["spec"]["taskSpec"]["steps"][0]["resources"]["limits"]["cpu"],
            "1"
        );
        assert_eq!(to_v1(&b), v1);
    }
}
