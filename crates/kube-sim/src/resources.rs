//! The table of served resources: which group/version/plural exists, its kind,
//! scope, subresources and names, and how it is printed as a `Table`.

use crate::cluster::{Gvr, gvr};
use serde_json::Value;

#[derive(Clone, Debug)]
pub struct PrinterColumn {
    pub name: String,
    pub kind: String,
    pub json_path: String,
}

#[derive(Clone, Debug)]
pub struct ResourceInfo {
    /// The group/version/plural clients address.
    pub gvr: Gvr,
    /// The group/version the object is stored in (differs for `tekton.dev/v1beta1`).
    pub storage: Gvr,
    pub kind: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub status_subresource: bool,
    /// Custom resources: `resourceVersion` required on PUT, no strategic merge.
    pub custom: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub printer_columns: Vec<PrinterColumn>,
}

impl ResourceInfo {
    pub fn api_version(&self) -> String {
        if self.gvr.group.is_empty() {
            self.gvr.version.to_string()
        } else {
            format!("{}/{}", self.gvr.group, self.gvr.version)
        }
    }

    pub fn verbs(&self) -> Vec<&'static str> {
        vec!["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    }
}

const TEKTON_CATEGORIES: &[&str] = &["tekton", "tekton-pipelines"];

#[allow(clippy::too_many_arguments)]
fn res(
    g: Gvr,
    storage: Gvr,
    kind: &'static str,
    singular: &'static str,
    namespaced: bool,
    status: bool,
    custom: bool,
    short: &'static [&'static str],
    categories: &'static [&'static str],
) -> ResourceInfo {
    ResourceInfo {
        gvr: g,
        storage,
        kind,
        singular,
        namespaced,
        status_subresource: status,
        custom,
        short_names: short,
        categories,
        printer_columns: Vec::new(),
    }
}

/// Every served resource. `crds` (the loaded Tekton CRDs) supply printer columns.
pub fn registry(crds: &[Value]) -> Vec<ResourceInfo> {
    let mut out = vec![
        res(gvr::NAMESPACES, gvr::NAMESPACES, "Namespace", "namespace", false, true, false, &["ns"], &[]),
        res(gvr::PODS, gvr::PODS, "Pod", "pod", true, true, false, &["po"], &["all"]),
        res(gvr::SECRETS, gvr::SECRETS, "Secret", "secret", true, false, false, &[], &[]),
        res(gvr::CONFIGMAPS, gvr::CONFIGMAPS, "ConfigMap", "configmap", true, false, false, &["cm"], &[]),
        res(gvr::SERVICEACCOUNTS, gvr::SERVICEACCOUNTS, "ServiceAccount", "serviceaccount", true, false, false, &["sa"], &[]),
        res(gvr::PVCS, gvr::PVCS, "PersistentVolumeClaim", "persistentvolumeclaim", true, true, false, &["pvc"], &[]),
        res(gvr::EVENTS, gvr::EVENTS, "Event", "event", true, false, false, &["ev"], &[]),
        res(gvr::STORAGECLASSES, gvr::STORAGECLASSES, "StorageClass", "storageclass", false, false, false, &["sc"], &[]),
        res(gvr::CRDS, gvr::CRDS, "CustomResourceDefinition", "customresourcedefinition", false, true, false, &["crd", "crds"], &[]),
    ];
    let tekton: [(Gvr, &str, &str, &[&str]); 4] = [
        (gvr::TASKS, "Task", "task", &[]),
        (gvr::PIPELINES, "Pipeline", "pipeline", &[]),
        (gvr::PIPELINERUNS, "PipelineRun", "pipelinerun", &["pr", "prs"]),
        (gvr::TASKRUNS, "TaskRun", "taskrun", &["tr", "trs"]),
    ];
    for version in ["v1", "v1beta1"] {
        for (storage, kind, singular, short) in tekton {
            let served = Gvr::new("tekton.dev", version, storage.plural);
            let mut r = res(served, storage, kind, singular, true, true, true, short, TEKTON_CATEGORIES);
            r.printer_columns = crd_printer_columns(crds, "tekton.dev", storage.plural, version);
            out.push(r);
        }
    }
    out
}

fn crd_printer_columns(crds: &[Value], group: &str, plural: &str, version: &str) -> Vec<PrinterColumn> {
    let Some(crd) = crds.iter().find(|c| c["spec"]["group"] == group && c["spec"]["names"]["plural"] == plural) else {
        return Vec::new();
    };
    let versions = crd["spec"]["versions"].as_array().cloned().unwrap_or_default();
    let Some(v) = versions.iter().find(|v| v["name"] == version) else {
        return Vec::new();
    };
    v["additionalPrinterColumns"]
        .as_array()
        .map(|cols| {
            cols.iter()
                .map(|c| PrinterColumn {
                    name: c["name"].as_str().unwrap_or_default().to_string(),
                    kind: c["type"].as_str().unwrap_or("string").to_string(),
                    json_path: c["jsonPath"].as_str().unwrap_or_default().to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The Tekton CRDs shipped with the crate (copied from shared/tekton/crds).
pub const EMBEDDED_CRDS: &[&str] = &[
    include_str!("../crds/300-customrun.yaml"),
    include_str!("../crds/300-pipeline.yaml"),
    include_str!("../crds/300-pipelinerun.yaml"),
    include_str!("../crds/300-resolutionrequest.yaml"),
    include_str!("../crds/300-stepaction.yaml"),
    include_str!("../crds/300-task.yaml"),
    include_str!("../crds/300-taskrun.yaml"),
    include_str!("../crds/300-verificationpolicy.yaml"),
];

pub fn parse_crd(yaml: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(yaml).map_err(|e| format!("invalid CRD YAML: {e}"))
}

/// The embedded CRDs, parsed once per process.
pub fn embedded_crds() -> &'static [Value] {
    static CRDS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    CRDS.get_or_init(|| EMBEDDED_CRDS.iter().map(|y| parse_crd(y).expect("embedded CRD parses")).collect())
}

/// CRDs from `dir/300-*.yaml`.
pub fn load_crds(dir: &std::path::Path) -> Result<Vec<Value>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading CRD directory {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("300-") && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text = std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
            parse_crd(&text).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}
