//! Shared helpers for the Tekton simulation tests: a real kube-sim (HTTPS API server
//! with the controller plugged in) driven through kube-rs, YAML loading and waiting
//! for runs to finish.

#![allow(dead_code)]

mod dirs;
pub use dirs::*;

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams,
    PostParams,
};
use kube_sim::cluster::{Gvr, gvr};
use kube_sim::tekton::{ControllerOptions, Settled, model};
use kube_sim::{KubeSim, KubeSimHandle, KubeSimOptions};
use serde_json::{Value, json};

pub fn load_yaml(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    docs.into_iter().filter(|d| d.is_object()).collect()
}

/// The catalog Tasks of the set under test, which the simulated `git` and
/// `hub` resolvers serve.
pub fn catalog() -> Vec<Value> {
    yaml_files(&tekton_dir(), "catalog")
        .iter()
        .flat_map(|f| load_yaml(f))
        .collect()
}

/// A catalog file of the repository's own fixtures (tests that rely on the
/// Tasks' names and steps use these whatever set is under test).
pub fn own_catalog_file(file: &str) -> Vec<Value> {
    load_yaml(&own_dir().join("catalog").join(file))
}

pub fn gvr_of(kind: &str) -> Option<Gvr> {
    Some(match kind {
        "Task" => gvr::TASKS,
        "Pipeline" => gvr::PIPELINES,
        "PipelineRun" => gvr::PIPELINERUNS,
        "TaskRun" => gvr::TASKRUNS,
        "StepAction" => gvr::STEPACTIONS,
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

/// A real simulator (API server over HTTPS with the Tekton controller plugged in) and
/// an admin kube-rs client. Tests create, read and patch through the client, so
/// admission, conversion and storage are the server's own.
pub struct Env {
    pub sim: KubeSimHandle,
    pub client: kube::Client,
}

/// How long a run may take in real time on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

pub fn kind_of(g: &Gvr) -> &'static str {
    match g.plural {
        "tasks" => "Task",
        "pipelines" => "Pipeline",
        "pipelineruns" => "PipelineRun",
        "taskruns" => "TaskRun",
        "stepactions" => "StepAction",
        "secrets" => "Secret",
        "configmaps" => "ConfigMap",
        "persistentvolumeclaims" => "PersistentVolumeClaim",
        "serviceaccounts" => "ServiceAccount",
        "storageclasses" => "StorageClass",
        "pods" => "Pod",
        "events" => "Event",
        "namespaces" => "Namespace",
        p => panic!("no kind known for {p}"),
    }
}

fn api_resource(g: &Gvr) -> ApiResource {
    let api_version = if g.group.is_empty() {
        g.version.to_string()
    } else {
        format!("{}/{}", g.group, g.version)
    };
    ApiResource {
        group: g.group.to_string(),
        version: g.version.to_string(),
        api_version,
        kind: kind_of(g).to_string(),
        plural: g.plural.to_string(),
    }
}

impl Env {
    pub async fn start(opts: ControllerOptions) -> Env {
        let sim = KubeSim::start(KubeSimOptions {
            default_storage_class: None,
            tekton: Some(opts),
            ..KubeSimOptions::default()
        })
        .await
        .expect("kube-sim starts");
        let client = sim.kube_client().await.expect("kube-rs client");
        Env { sim, client }
    }

    /// A dynamic kube-rs API for `g` (`ns` `None`: cluster-scoped or all namespaces).
    pub fn api(&self, g: &Gvr, ns: Option<&str>) -> Api<DynamicObject> {
        let ar = api_resource(g);
        match ns {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &ar),
            None => Api::all_with(self.client.clone(), &ar),
        }
    }

    pub async fn namespace(&self, ns: &str) -> &Self {
        self.create(
            None,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .await;
        self
    }

    pub async fn default_storage_class(&self) {
        self.create(None, json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path",
        }))
        .await;
    }

    /// Create through the API (admission included); the object must be accepted.
    pub async fn create(&self, ns: Option<&str>, obj: Value) -> Value {
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let name = model::name(&obj).to_string();
        self.try_create(ns, obj)
            .await
            .unwrap_or_else(|e| panic!("create {kind} {name}: {e}"))
    }

    pub async fn try_create(&self, ns: Option<&str>, mut obj: Value) -> Result<Value, kube::Error> {
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let g = gvr_of(&kind)
            .or((kind == "Namespace").then_some(gvr::NAMESPACES))
            .unwrap_or_else(|| panic!("unsupported kind {kind}"));
        if obj.get("metadata").is_none() {
            obj["metadata"] = json!({});
        }
        let dynobj: DynamicObject = serde_json::from_value(obj).expect("object shape");
        let created = self
            .api(&g, ns)
            .create(&PostParams::default(), &dynobj)
            .await?;
        Ok(serde_json::to_value(created).unwrap())
    }

    /// Create every document the simulator knows (others, like RBAC, are skipped);
    /// returns the created runs.
    pub async fn apply(&self, ns: &str, docs: &[Value]) -> Vec<Value> {
        let mut runs = Vec::new();
        for d in docs {
            let kind = d["kind"].as_str().unwrap_or("");
            if gvr_of(kind).is_none() {
                continue;
            }
            let created = self.create(Some(ns), d.clone()).await;
            if kind == "PipelineRun" || kind == "TaskRun" {
                runs.push(created);
            }
        }
        runs
    }

    pub async fn get(&self, g: &Gvr, ns: &str, name: &str) -> Option<Value> {
        self.api(g, Some(ns))
            .get_opt(name)
            .await
            .unwrap_or_else(|e| panic!("get {} {ns}/{name}: {e}", g.plural))
            .map(|o| serde_json::to_value(o).unwrap())
    }

    pub async fn list(&self, g: &Gvr, ns: &str) -> Vec<Value> {
        self.api(g, Some(ns))
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|e| panic!("list {} in {ns}: {e}", g.plural))
            .items
            .into_iter()
            .map(|o| serde_json::to_value(o).unwrap())
            .collect()
    }

    /// `application/merge-patch+json` through the API (admission included).
    pub async fn merge_patch(
        &self,
        g: &Gvr,
        ns: &str,
        name: &str,
        patch: Value,
    ) -> Result<Value, kube::Error> {
        let o = self
            .api(g, Some(ns))
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(serde_json::to_value(o).unwrap())
    }

    pub async fn delete(&self, g: &Gvr, ns: &str, name: &str) {
        self.api(g, Some(ns))
            .delete(name, &DeleteParams::background())
            .await
            .unwrap_or_else(|e| panic!("delete {} {ns}/{name}: {e}", g.plural));
    }

    /// A container's log lines, read through `pods/{name}/log`.
    pub async fn logs(&self, ns: &str, pod: &str, container: &str) -> Vec<String> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let text = pods
            .logs(
                pod,
                &LogParams {
                    container: Some(container.to_string()),
                    ..LogParams::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("logs {ns}/{pod} -c {container}: {e}"));
        text.lines().map(str::to_string).collect()
    }

    /// Wait (up to 60 s real time) for `check` to hold on the object, polling the API.
    pub async fn wait_for(
        &self,
        g: &Gvr,
        ns: &str,
        name: &str,
        what: &str,
        check: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let current = self.get(g, ns, name).await;
            if let Some(o) = &current
                && check(o)
            {
                return o.clone();
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "timed out waiting for {} {ns}/{name} to be {what}: {:#}",
                    g.plural,
                    current.unwrap_or(Value::Null)
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn wait_gone(&self, g: &Gvr, ns: &str, name: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.get(g, ns, name).await.is_some() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} {ns}/{name} was not deleted",
                g.plural
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Wait until the controller has handled every change made so far and
    /// each live run rests (see `ControllerHandle::settled`).
    pub async fn settled(&self) -> Settled {
        self.sim
            .tekton()
            .expect("the simulator runs the Tekton controller")
            .settled()
            .await
    }

    pub async fn wait_done(&self, g: &Gvr, ns: &str, name: &str) -> Value {
        self.wait_for(g, ns, name, "done", model::is_done).await
    }

    /// The `Succeeded` reason of an object that must exist.
    pub async fn reason(&self, g: &Gvr, ns: &str, name: &str) -> String {
        let obj = self.get(g, ns, name).await;
        condition(&obj.unwrap_or_else(|| panic!("{} {ns}/{name} exists", g.plural))).1
    }

    pub async fn wait_reason(&self, g: &Gvr, ns: &str, name: &str, reason: &str) -> Value {
        self.wait_for(g, ns, name, reason, |o| condition(o).1 == reason)
            .await
    }
}

/// A v1 PipelineRun named `name` with `spec`.
pub fn pipelinerun(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": name}, "spec": spec})
}

/// A started simulator with the namespace `ci` the run tests work in.
pub async fn env_with(opts: ControllerOptions) -> Env {
    let env = Env::start(opts).await;
    env.namespace("ci").await;
    env
}

/// Create the PipelineRun `r` in `ci`.
pub async fn create_run(env: &Env, spec: Value) {
    env.create(Some("ci"), pipelinerun("r", spec)).await;
}

/// Create the PipelineRun `r` in `ci` and wait for it to end.
pub async fn run_to_end(env: &Env, spec: Value) -> Value {
    create_run(env, spec).await;
    env.wait_done(&gvr::PIPELINERUNS, "ci", "r").await
}

/// (status, reason, message) of the `Succeeded` condition.
pub fn condition(run: &Value) -> (String, String, String) {
    let c = model::succeeded_condition(run)
        .cloned()
        .unwrap_or(Value::Null);
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    (s("status"), s("reason"), s("message"))
}

/// The `(status, reason, message)` that [`condition`] should return.
pub fn cond(status: &str, reason: &str, message: &str) -> (String, String, String) {
    (status.into(), reason.into(), message.into())
}

/// The `condition` of a run that failed (status `False`).
pub fn failed(reason: &str, message: &str) -> (String, String, String) {
    cond("False", reason, message)
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
