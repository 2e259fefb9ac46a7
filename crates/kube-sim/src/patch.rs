//! Patch kinds: JSON merge patch (RFC 7386), JSON patch (RFC 6902),
//! strategic merge for core kinds (lists merged by the Kubernetes merge keys
//! of the fields kube-sim serves, `$patch`/`$setElementOrder`/
//! `$deleteFromPrimitiveList`/`$retainKeys` directives) and server-side apply
//! with per-manager field ownership.

use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    StrategicMerge,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/json-patch+json" => Some(Self::Json),
            "application/strategic-merge-patch+json" => Some(Self::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// The merge key of list fields that strategic merge patch merges element-wise
/// (from the core/v1 types' `patchMergeKey` tags); other lists are replaced.
fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "hostAliases"
        | "readinessGates"
        | "secrets" => Some(match field {
            "hostAliases" => "ip",
            "readinessGates" => "conditionType",
            _ => "name",
        }),
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "ports" => Some("containerPort"),
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        "finalizers" => Some(""),
        _ => None,
    }
}

/// Strategic merge patch of `patch` into `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("delete") => {
            *target = Value::Null;
            return;
        }
        Some("replace") => {
            let mut replaced = patch.clone();
            strip_directives(&mut replaced);
            *target = replaced;
            return;
        }
        _ => {}
    }
    if !target.is_object() {
        *target = json!({});
    }
    let t = target.as_object_mut().expect("object");
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(remove)) =
                (t.get_mut(field).and_then(Value::as_array_mut), v.as_array())
            {
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue; // $setElementOrder/…, $retainKeys: ordering and pruning hints
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (merge_key(k), v) {
            (Some(key), Value::Array(items)) => {
                let existing = t.entry(k.clone()).or_insert_with(|| json!([]));
                if !existing.is_array() {
                    *existing = json!([]);
                }
                merge_list(existing.as_array_mut().expect("array"), items, key);
            }
            (_, Value::Object(_)) => {
                let entry = t.entry(k.clone()).or_insert(Value::Null);
                strategic_merge(entry, v);
                if entry.is_null() {
                    t.remove(k);
                }
            }
            _ => {
                let mut v = v.clone();
                strip_directives(&mut v);
                t.insert(k.clone(), v);
            }
        }
    }
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str) {
    for item in items {
        if key.is_empty() || !item.is_object() {
            // Primitive lists with a merge strategy are unions.
            if !existing.contains(item) {
                existing.push(item.clone());
            }
            continue;
        }
        let id = item.get(key).cloned();
        let pos = existing
            .iter()
            .position(|e| id.is_some() && e.get(key) == id.as_ref());
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                existing.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut existing[i], item),
            (None, false) => {
                let mut v = item.clone();
                strip_directives(&mut v);
                existing.push(v);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    let p: json_patch::Patch =
        serde_json::from_value(patch.clone()).map_err(|e| format!("invalid JSON patch: {e}"))?;
    json_patch::patch(target, &p).map_err(|e| e.to_string())
}

/// Leaf paths of an applied configuration (objects recurse, everything else is a leaf).
pub fn leaf_paths(v: &Value) -> BTreeSet<Vec<String>> {
    fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    prefix.push(k.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                out.insert(prefix.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    let mut config = v.clone();
    // Identity fields are not "owned".
    if let Some(m) = config.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for f in [
                "name",
                "namespace",
                "resourceVersion",
                "uid",
                "managedFields",
                "creationTimestamp",
            ] {
                meta.remove(f);
            }
        }
        if m.get("metadata")
            .and_then(Value::as_object)
            .is_some_and(|meta| meta.is_empty())
        {
            m.remove("metadata");
        }
    }
    walk(&config, &mut Vec::new(), &mut out);
    out.retain(|p| !p.is_empty());
    out
}

/// Paths as the `fieldsV1` document of a managedFields entry (`{"f:spec":{"f:x":{}}}`).
pub fn to_fields_v1(paths: &BTreeSet<Vec<String>>) -> Value {
    let mut root = Map::new();
    for p in paths {
        let mut cur = &mut root;
        for seg in p {
            cur = cur
                .entry(format!("f:{seg}"))
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

pub fn from_fields_v1(v: &Value) -> BTreeSet<Vec<String>> {
    fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    let Some(seg) = k.strip_prefix("f:") else {
                        continue;
                    };
                    prefix.push(seg.to_string());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.insert(prefix.clone());
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(v, &mut Vec::new(), &mut out);
    out
}

fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, seg| cur.get(seg))
}

fn remove_path(v: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parents {
        match cur.get_mut(seg) {
            Some(next) => cur = next,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

/// One conflicting field: the other manager and the dotted path.
#[derive(Debug, PartialEq, Eq)]
pub struct ApplyConflict {
    pub manager: String,
    pub operation_api_version: Option<String>,
    pub field: String,
}

/// Server-side apply of `config` by `manager` onto `current` (or a new object
/// when `current` is `None`). Returns the merged object with updated
/// `metadata.managedFields`, or the conflicts when `force` is false.
pub fn apply(
    current: Option<&Value>,
    config: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    now: &str,
) -> Result<Value, Vec<ApplyConflict>> {
    let mine = leaf_paths(config);
    let mut obj = current.cloned().unwrap_or_else(|| json!({}));
    let mut entries: Vec<Value> = obj
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut previously_mine = BTreeSet::new();
    let mut others_owned = BTreeSet::new();
    let mut conflicts = Vec::new();
    for e in &mut entries {
        let owned = from_fields_v1(&e["fieldsV1"]);
        if e["manager"] == manager && e["operation"] == "Apply" {
            previously_mine = owned;
            continue;
        }
        let mut kept = BTreeSet::new();
        for p in owned {
            let overlaps = mine.iter().any(|m| m.starts_with(&p));
            let differs = get_path(config, &p) != get_path(&obj, &p);
            if overlaps && differs {
                if force {
                    continue; // ownership moves to the forcing manager
                }
                conflicts.push(ApplyConflict {
                    manager: e["manager"].as_str().unwrap_or("").to_string(),
                    operation_api_version: (e["operation"] == "Update")
                        .then(|| e["apiVersion"].as_str().unwrap_or("").to_string()),
                    field: format!(".{}", p.join(".")),
                });
            }
            kept.insert(p);
        }
        others_owned.extend(kept.iter().cloned());
        e["fieldsV1"] = to_fields_v1(&kept);
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    // Fields this manager stopped applying and nobody else owns are removed.
    for p in previously_mine.difference(&mine) {
        if !others_owned.contains(p) {
            remove_path(&mut obj, p);
        }
    }
    let mut patch = config.clone();
    if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    merge_patch(&mut obj, &patch);
    entries.retain(|e| {
        let mine = e["manager"] == manager && e["operation"] == "Apply";
        !mine && !from_fields_v1(&e["fieldsV1"]).is_empty()
    });
    entries.push(json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(&mine),
    }));
    obj["metadata"]["managedFields"] = Value::Array(entries);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_and_json_patch() {
        let mut v = json!({"a": 1, "b": {"c": 2}});
        merge_patch(&mut v, &json!({"b": {"c": null, "d": 3}}));
        assert_eq!(v, json!({"a": 1, "b": {"d": 3}}));
        json_patch(&mut v, &json!([{"op": "replace", "path": "/a", "value": 5}, {"op": "test", "path": "/a", "value": 5}]))
            .unwrap();
        assert_eq!(v["a"], 5);
        assert!(json_patch(&mut v, &json!([{"op": "test", "path": "/a", "value": 6}])).is_err());
    }

    #[test]
    fn apply_conflicts_and_force() {
        let cfg_a = json!({"metadata": {"name": "x"}, "spec": {"x": 1, "y": 1}});
        let o = apply(None, &cfg_a, "a", "v1", false, "t").unwrap();
        assert_eq!(o["spec"], json!({"x": 1, "y": 1}));
        let cfg_b = json!({"metadata": {"name": "x"}, "spec": {"x": 2}});
        let c = apply(Some(&o), &cfg_b, "b", "v1", false, "t").unwrap_err();
        assert_eq!(
            c,
            vec![ApplyConflict {
                manager: "a".into(),
                operation_api_version: None,
                field: ".spec.x".into()
            }]
        );
        // Same value is shared ownership, not a conflict.
        let same = json!({"metadata": {"name": "x"}, "spec": {"x": 1}});
        assert!(apply(Some(&o), &same, "b", "v1", false, "t").is_ok());
        let forced = apply(Some(&o), &cfg_b, "b", "v1", true, "t").unwrap();
        assert_eq!(forced["spec"]["x"], 2);
        // a drops y from its config: y is removed.
        let cfg_a2 = json!({"metadata": {"name": "x"}, "spec": {}});
        let o3 = apply(Some(&forced), &cfg_a2, "a", "v1", false, "t").unwrap();
        assert_eq!(o3["spec"], json!({"x": 2}));
    }

    #[test]
    fn strategic_merge_merges_named_lists_and_honours_directives() {
        let mut pod = json!({"metadata": {"finalizers": ["a", "b"], "labels": {"x": "1"}}, "spec": {"containers": [
            {"name": "one", "image": "i1", "env": [{"name": "A", "value": "1"}]},
            {"name": "two", "image": "i2"}
        ], "tolerations": [{"key": "k"}]}});
        strategic_merge(
            &mut pod,
            &json!({
                "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "labels": {"x": null, "y": "2"}},
                "spec": {
                    "$setElementOrder/containers": [{"name": "one"}, {"name": "two"}, {"name": "three"}],
                    "containers": [
                        {"name": "one", "image": "i1b", "env": [{"name": "B", "value": "2"}]},
                        {"name": "two", "$patch": "delete"},
                        {"name": "three", "image": "i3"}
                    ],
                    "tolerations": [{"key": "new"}]
                }
            }),
        );
        assert_eq!(
            pod["metadata"],
            json!({"finalizers": ["b"], "labels": {"y": "2"}})
        );
        assert_eq!(
            pod["spec"]["containers"],
            json!([
                {"name": "one", "image": "i1b", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                {"name": "three", "image": "i3"}
            ])
        );
        assert_eq!(
            pod["spec"]["tolerations"],
            json!([{"key": "new"}]),
            "lists without a merge key are replaced"
        );
        strategic_merge(
            &mut pod,
            &json!({"spec": {"$patch": "replace", "containers": []}}),
        );
        assert_eq!(pod["spec"], json!({"containers": []}));
    }

    #[test]
    fn fields_v1_round_trip() {
        let paths = leaf_paths(
            &json!({"spec": {"a": {"b": 1}, "c": [1]}, "metadata": {"labels": {"l": "v"}}}),
        );
        assert_eq!(from_fields_v1(&to_fields_v1(&paths)), paths);
    }
}
