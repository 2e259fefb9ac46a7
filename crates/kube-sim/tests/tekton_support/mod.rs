//! Shared helpers for the Tekton simulation tests: an in-memory cluster with the
//! controller running, YAML loading and waiting for runs to finish.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use kube_sim::cluster::Cluster as _;
use kube_sim::cluster::{Cluster, Gvr, gvr};
use kube_sim::tekton::testing::MemCluster;
use kube_sim::tekton::{Controller, ControllerOptions, admission, model};
use serde_json::{Value, json};

/// The project's copy of the Tekton reference data (CRDs, examples, catalog).
/// `KUBE_SIM_TEKTON_DIR` overrides; otherwise the nearest `shared/tekton` or
/// `testdata/tekton` above the crate.
pub fn tekton_dir() -> PathBuf {
    if let Ok(d) = std::env::var("KUBE_SIM_TEKTON_DIR") {
        return PathBuf::from(d);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in manifest.ancestors() {
        for candidate in [dir.join("testdata/tekton"), dir.join("shared/tekton")] {
            if candidate.join("examples").is_dir() {
                return candidate;
            }
        }
    }
    panic!("Tekton reference data not found; set KUBE_SIM_TEKTON_DIR");
}

pub fn load_yaml(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    docs.into_iter().filter(|d| d.is_object()).collect()
}

pub fn catalog() -> Vec<Value> {
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(tekton_dir().join("catalog"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        out.extend(load_yaml(&f));
    }
    out
}

pub fn gvr_of(kind: &str) -> Option<Gvr> {
    Some(match kind {
        "Task" => gvr::TASKS,
        "Pipeline" => gvr::PIPELINES,
        "PipelineRun" => gvr::PIPELINERUNS,
        "TaskRun" => gvr::TASKRUNS,
        "Secret" => gvr::SECRETS,
        "ConfigMap" => gvr::CONFIGMAPS,
        "PersistentVolumeClaim" => gvr::PVCS,
        "ServiceAccount" => gvr::SERVICEACCOUNTS,
        "StorageClass" => gvr::STORAGECLASSES,
        _ => return None,
    })
}

/// Options that make simulated time run 100× faster.
pub fn fast_options() -> ControllerOptions {
    ControllerOptions {
        time_scale: 0.01,
        catalog: catalog(),
        ..ControllerOptions::default()
    }
}

pub struct Env {
    pub cluster: Arc<MemCluster>,
    controller: tokio::task::JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

impl Env {
    pub fn start(opts: ControllerOptions) -> Env {
        let cluster = Arc::new(MemCluster::new());
        let dyn_cluster: Arc<dyn Cluster> = cluster.clone();
        let controller = Controller::spawn(dyn_cluster, opts);
        Env {
            cluster,
            controller,
        }
    }

    pub fn namespace(&self, ns: &str) -> &Self {
        self.cluster.add_namespace(ns);
        self
    }

    pub fn default_storage_class(&self) {
        self.create(None, json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path",
        }));
    }

    /// Create like the API server does: webhook defaulting and validation for Tekton
    /// kinds (which must accept the object). Returns the stored object.
    pub fn create(&self, ns: Option<&str>, mut obj: Value) -> Value {
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let g = gvr_of(&kind).unwrap_or_else(|| panic!("unsupported kind {kind}"));
        if g.group == "tekton.dev" {
            admission::apply_defaults(&g, &mut obj);
            if let Err(e) = admission::validate_create(&g, &obj) {
                panic!("{kind} {} rejected: {e}", model::name(&obj));
            }
        }
        self.cluster
            .create(&g, ns, obj)
            .unwrap_or_else(|e| panic!("create {kind}: {e}"))
    }

    /// Create every document the simulator knows (others, like RBAC, are skipped);
    /// returns the created runs.
    pub fn apply(&self, ns: &str, docs: &[Value]) -> Vec<Value> {
        let mut runs = Vec::new();
        for d in docs {
            let kind = d["kind"].as_str().unwrap_or("");
            if gvr_of(kind).is_none() {
                continue;
            }
            let created = self.create(Some(ns), d.clone());
            if kind == "PipelineRun" || kind == "TaskRun" {
                runs.push(created);
            }
        }
        runs
    }

    pub fn get(&self, g: &Gvr, ns: &str, name: &str) -> Option<Value> {
        self.cluster.get(g, Some(ns), name)
    }

    /// Wait (up to 20 s real time) for `check` to hold on the object.
    pub async fn wait_for(
        &self,
        g: &Gvr,
        ns: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(o) = self.get(g, ns, name)
                && check(&o)
            {
                return o;
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {} {ns}/{name} to be {what}: {:#}",
                    g.plural,
                    self.get(g, ns, name).unwrap_or(Value::Null)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn wait_gone(&self, g: &Gvr, ns: &str, name: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.get(g, ns, name).is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} {ns}/{name} was not deleted",
                g.plural
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn wait_done(&self, g: &Gvr, ns: &str, name: &str) -> Value {
        self.wait_for(g, ns, name, "done", model::is_done).await
    }

    pub async fn wait_reason(&self, g: &Gvr, ns: &str, name: &str, reason: &str) -> Value {
        self.wait_for(g, ns, name, reason, |o| condition(o).1 == reason)
            .await
    }
}

/// (status, reason, message) of the `Succeeded` condition.
pub fn condition(run: &Value) -> (String, String, String) {
    let c = model::succeeded_condition(run)
        .cloned()
        .unwrap_or(Value::Null);
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    (s("status"), s("reason"), s("message"))
}

pub fn result(run: &Value, name: &str) -> Option<String> {
    model::arr(run, &["status", "results"])
        .iter()
        .find(|r| r["name"] == name)
        .map(|r| model::param_value_to_string(&r["value"]))
}

pub fn pipeline_task_spec(task: &str, steps: Value) -> Value {
    json!({"name": task, "taskSpec": {"steps": steps}})
}
