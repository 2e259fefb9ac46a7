//! Conversion between the storage version (`tekton.dev/v1`) and the other
//! served version (`tekton.dev/v1beta1`). Only what differs for the fields the
//! simulator fills: results live in `status.results` in v1 and in
//! `status.pipelineResults` / `status.taskResults` in v1beta1.
//! (The Tekton simulation may replace this with a fuller conversion.)

use serde_json::{Value, json};

fn results_field(plural: &str) -> Option<&'static str> {
    match plural {
        "pipelineruns" => Some("pipelineResults"),
        "taskruns" => Some("taskResults"),
        _ => None,
    }
}

fn rename_status_field(obj: &mut Value, from: &str, to: &str) {
    if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut)
        && let Some(v) = status.remove(from)
    {
        status.insert(to.to_string(), v);
    }
}

/// Storage (v1) object → the served `version`.
pub fn from_storage(group: &str, version: &str, plural: &str, mut obj: Value) -> Value {
    if group != "tekton.dev" || version == "v1" {
        return obj;
    }
    obj["apiVersion"] = json!(format!("{group}/{version}"));
    if let Some(f) = results_field(plural) {
        rename_status_field(&mut obj, "results", f);
    }
    obj
}

/// An object sent in `version` → storage (v1).
pub fn to_storage(group: &str, version: &str, plural: &str, mut obj: Value) -> Value {
    if group != "tekton.dev" || version == "v1" {
        return obj;
    }
    if obj.is_object() {
        obj["apiVersion"] = json!(format!("{group}/v1"));
    }
    if let Some(f) = results_field(plural) {
        rename_status_field(&mut obj, f, "results");
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip() {
        let v1 = json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "status": {"results": [{"name": "a", "value": "b"}]}});
        let b = from_storage("tekton.dev", "v1beta1", "pipelineruns", v1.clone());
        assert_eq!(b["apiVersion"], "tekton.dev/v1beta1");
        assert_eq!(b["status"]["pipelineResults"][0]["name"], "a");
        assert!(b["status"].get("results").is_none());
        assert_eq!(to_storage("tekton.dev", "v1beta1", "pipelineruns", b), v1);
        let tr = from_storage(
            "tekton.dev",
            "v1beta1",
            "taskruns",
            json!({"status": {"results": []}}),
        );
        assert!(tr["status"].get("taskResults").is_some());
    }
}
