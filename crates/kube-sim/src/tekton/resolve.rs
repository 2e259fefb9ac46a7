//! Finding the Pipeline and Task specs a run refers to: namespaced objects, the
//! `cluster` resolver, and — for the remote resolvers (`git`, `hub`, `bundles`) that
//! need a network the simulator does not have — a local catalog of Tasks.

use serde_json::{Map, Value};

use super::model;
use crate::cluster::{Cluster, Gvr, gvr};

/// A resolved Task (or Pipeline) spec with the metadata that travels with it.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Object name; `None` for inline specs.
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub spec: Value,
    pub labels: Map<String, Value>,
    pub annotations: Map<String, Value>,
}

impl Resolved {
    fn from_object(obj: &Value) -> Self {
        let meta = |k: &str| {
            model::at(obj, &["metadata", k])
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        Resolved {
            name: Some(model::name(obj).to_string()),
            namespace: model::str_at(obj, &["metadata", "namespace"]).map(String::from),
            spec: obj.get("spec").cloned().unwrap_or(Value::Null),
            labels: meta("labels"),
            annotations: meta("annotations"),
        }
    }

    pub fn inline(spec: &Value) -> Self {
        Resolved {
            name: None,
            namespace: None,
            spec: spec.clone(),
            labels: Map::new(),
            annotations: Map::new(),
        }
    }
}

/// Where specs come from.
pub struct Resolver<'a> {
    pub cluster: &'a dyn Cluster,
    /// Tasks the remote resolvers can "fetch" (matched by name and
    /// `app.kubernetes.io/version` label), e.g. the catalog's git-clone 0.10.
    pub catalog: &'a [Value],
}

fn ref_param<'a>(r: &'a Value, key: &str) -> Option<&'a str> {
    model::arr(r, &["params"])
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(key))
        .and_then(|p| p.get("value").and_then(Value::as_str))
}

impl Resolver<'_> {
    /// Resolve a `taskRef` (or take an inline `taskSpec`). The error is the text of
    /// Tekton's `TaskNotFoundError`: `Couldn't retrieve Task "<name>": <cause>`.
    pub fn task(
        &self,
        namespace: &str,
        task_ref: Option<&Value>,
        task_spec: Option<&Value>,
    ) -> Result<Resolved, String> {
        if let Some(spec) = task_spec {
            return Ok(Resolved::inline(spec));
        }
        let Some(r) = task_ref else {
            return Err("Couldn't retrieve Task \"\": no taskRef or taskSpec".to_string());
        };
        let name = model::str_at(r, &["name"]).unwrap_or("");
        let fail = |cause: String| format!("Couldn't retrieve Task \"{name}\": {cause}");
        match model::str_at(r, &["resolver"]) {
            None => match model::str_at(r, &["kind"]).unwrap_or("Task") {
                "Task" => self
                    .get(&gvr::TASKS, namespace, name, "tasks")
                    .map_err(fail),
                "ClusterTask" => Err(fail(format!(
                    "clustertasks.tekton.dev \"{name}\" not found"
                ))),
                other => Err(fail(format!(
                    "kind {other:?} is not a Task kind the simulator runs"
                ))),
            },
            Some(resolver) => self.remote(resolver, r, namespace, "task").map_err(fail),
        }
    }

    /// Resolve a PipelineRun's pipeline. The error is the cause Tekton puts after
    /// `Error retrieving pipeline for pipelinerun <ns>/<name>: `.
    pub fn pipeline(&self, pr: &Value) -> Result<Resolved, String> {
        let ns = model::namespace(pr);
        if let Some(spec) = model::at(pr, &["spec", "pipelineSpec"]) {
            let mut r = Resolved::inline(spec);
            r.name = Some(model::name(pr).to_string());
            r.namespace = Some(ns.to_string());
            return Ok(r);
        }
        let Some(r) = model::at(pr, &["spec", "pipelineRef"]) else {
            return Err("no pipelineRef or pipelineSpec".to_string());
        };
        match model::str_at(r, &["resolver"]) {
            None => self.get(
                &gvr::PIPELINES,
                ns,
                model::str_at(r, &["name"]).unwrap_or(""),
                "pipelines",
            ),
            Some(resolver) => self.remote(resolver, r, ns, "pipeline"),
        }
    }

    fn get(&self, g: &Gvr, namespace: &str, name: &str, plural: &str) -> Result<Resolved, String> {
        self.cluster
            .get(g, Some(namespace), name)
            .map(|o| Resolved::from_object(&o))
            .ok_or_else(|| format!("{plural}.tekton.dev \"{name}\" not found"))
    }

    fn remote(
        &self,
        resolver: &str,
        r: &Value,
        namespace: &str,
        want_kind: &str,
    ) -> Result<Resolved, String> {
        let plural = if want_kind == "task" {
            "tasks"
        } else {
            "pipelines"
        };
        match resolver {
            "cluster" => {
                let kind = ref_param(r, "kind").unwrap_or("task");
                if kind != want_kind {
                    return Err(format!(
                        "error requesting remote resource: resolved kind {kind:?} is not a {want_kind}"
                    ));
                }
                let name = ref_param(r, "name").unwrap_or("");
                let ns = ref_param(r, "namespace").unwrap_or(namespace);
                let g = if want_kind == "task" {
                    gvr::TASKS
                } else {
                    gvr::PIPELINES
                };
                self.get(&g, ns, name, plural)
                    .map_err(|e| format!("error requesting remote resource: {e}"))
            }
            "git" | "hub" | "bundles" | "http" => {
                // The catalog stands in for the network: git paths look like
                // `task/<name>/<version>/<name>.yaml`, hub params are name + version.
                let (name, version) = match resolver {
                    "git" => {
                        let path = ref_param(r, "pathInRepo").unwrap_or("");
                        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                        match parts.as_slice() {
                            [k, n, v, _] if k.starts_with(want_kind) => {
                                (n.to_string(), Some(v.to_string()))
                            }
                            _ => (String::new(), None),
                        }
                    }
                    "hub" => (
                        ref_param(r, "name").unwrap_or("").to_string(),
                        ref_param(r, "version").map(String::from),
                    ),
                    _ => (String::new(), None),
                };
                let found = (want_kind == "task")
                    .then(|| {
                        self.catalog.iter().find(|t| {
                            model::name(t) == name
                                && version.as_deref().is_none_or(|v| {
                                    model::str_at(
                                        t,
                                        &["metadata", "labels", "app.kubernetes.io/version"],
                                    ) == Some(v)
                                })
                        })
                    })
                    .flatten();
                match found {
                    Some(t) => Ok(Resolved::from_object(t)),
                    None => Err(format!(
                        "error requesting remote resource: resolver {resolver:?} has no {want_kind} {name:?} (version {}) in the simulator's catalog",
                        version.as_deref().unwrap_or("any")
                    )),
                }
            }
            other => Err(format!(
                "error requesting remote resource: no resolver {other:?}"
            )),
        }
    }
}
