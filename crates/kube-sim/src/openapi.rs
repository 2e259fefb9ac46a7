//! Just enough OpenAPI v3 for kubectl: the root index and, per group-version,
//! paths whose PATCH operations carry the GVK extension, the supported patch
//! media types and the `fieldValidation` parameter. kubectl then validates on
//! the server side (which accepts the parameter) and picks merge patch for
//! custom resources and strategic merge (from its compiled-in types) for core
//! kinds. Schemas are not served; `kubectl explain` does not work.

use crate::resources::ResourceInfo;
use serde_json::{Map, Value, json};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub fn root(registry: &[ResourceInfo]) -> Value {
    let mut paths = Map::new();
    for r in registry {
        let p = gv_path(r.gvr.group, r.gvr.version);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash=kube-sim")}),
        );
    }
    json!({"paths": paths})
}

pub fn group_version(registry: &[ResourceInfo], path: &str) -> Option<Value> {
    let mut paths = Map::new();
    for r in registry
        .iter()
        .filter(|r| gv_path(r.gvr.group, r.gvr.version) == path)
    {
        let gvk = json!({"group": r.gvr.group, "version": r.gvr.version, "kind": r.resource.kind});
        let mut content = Map::new();
        for ct in [
            "application/json-patch+json",
            "application/merge-patch+json",
            "application/apply-patch+yaml",
        ] {
            content.insert(ct.to_string(), json!({"schema": {"type": "object"}}));
        }
        let param = |name: &str| json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}});
        let op = |verb: &str| {
            json!({
                "operationId": format!("{verb}{}", r.resource.kind),
                "x-kubernetes-action": verb,
                "x-kubernetes-group-version-kind": gvk,
                "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
                "responses": {"200": {"description": "OK"}}
            })
        };
        let mut patch = op("patch");
        patch["requestBody"] = json!({"content": content});
        let item =
            json!({"get": op("get"), "put": op("put"), "patch": patch, "delete": op("delete")});
        let collection = json!({"get": op("list"), "post": op("post")});
        let base = format!("/{}", path);
        if r.resource.namespaced {
            paths.insert(
                format!("{base}/namespaces/{{namespace}}/{}/{{name}}", r.gvr.plural),
                item,
            );
            paths.insert(
                format!("{base}/namespaces/{{namespace}}/{}", r.gvr.plural),
                collection,
            );
        } else {
            paths.insert(format!("{base}/{}/{{name}}", r.gvr.plural), item);
            paths.insert(format!("{base}/{}", r.gvr.plural), collection);
        }
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.35.0-kube-sim"},
        "paths": paths,
        "components": {"schemas": {}}
    }))
}
