//! Discovery documents: `/version`, `/api`, `/apis`, and per-group-version
//! `APIResourceList`s, built from the resource table. Aggregated discovery is
//! not implemented: those Accept headers get the legacy JSON, which clients
//! (kubectl, client-go, kube-rs) accept as a fallback.

use crate::resources::ResourceInfo;
use serde_json::{Value, json};

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "35",
        "gitVersion": "v1.35.0-kube-sim",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25.0",
        "compiler": "gc",
        "platform": "linux/amd64"
    })
}

pub fn api_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
    })
}

/// Groups in the order they are served, with their versions (preferred first).
fn groups(registry: &[ResourceInfo]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for r in registry.iter().filter(|r| !r.gvr.group.is_empty()) {
        match out.iter_mut().find(|(g, _)| g == r.gvr.group) {
            Some((_, versions)) => {
                if !versions.iter().any(|v| v == r.gvr.version) {
                    versions.push(r.gvr.version.to_string());
                }
            }
            None => out.push((r.gvr.group.to_string(), vec![r.gvr.version.to_string()])),
        }
    }
    out
}

fn group_doc(name: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": vs, "preferredVersion": vs[0].clone()})
}

pub fn api_group_list(registry: &[ResourceInfo]) -> Value {
    let gs: Vec<Value> = groups(registry)
        .iter()
        .map(|(g, vs)| group_doc(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": gs})
}

pub fn api_group(registry: &[ResourceInfo], group: &str) -> Option<Value> {
    let gs = groups(registry);
    let (g, vs) = gs.iter().find(|(g, _)| g == group)?;
    let mut doc = group_doc(g, vs);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

pub fn api_resource_list(registry: &[ResourceInfo], group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in registry
        .iter()
        .filter(|r| r.gvr.group == group && r.gvr.version == version)
    {
        let mut doc = json!({
            "name": r.gvr.plural,
            "singularName": r.resource.singular,
            "namespaced": r.resource.namespaced,
            "kind": r.resource.kind,
            "verbs": r.verbs(),
        });
        if !r.resource.short_names.is_empty() {
            doc["shortNames"] = json!(r.resource.short_names);
        }
        if !r.resource.categories.is_empty() {
            doc["categories"] = json!(r.resource.categories);
        }
        resources.push(doc);
        if r.resource.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", r.gvr.plural),
                "singularName": "",
                "namespaced": r.resource.namespaced,
                "kind": r.resource.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if r.gvr.plural == "pods" {
            resources.push(json!({
                "name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tekton_group_prefers_v1_and_lists_status() {
        let reg = crate::resources::registry(&[]);
        let apis = api_group_list(&reg);
        let tekton = apis["groups"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == "tekton.dev")
            .unwrap();
        assert_eq!(tekton["preferredVersion"]["version"], "v1");
        let list = api_resource_list(&reg, "tekton.dev", "v1beta1").unwrap();
        let names: Vec<&str> = list["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pipelineruns/status"), "{names:?}");
        assert!(api_resource_list(&reg, "nope", "v1").is_none());
    }
}
