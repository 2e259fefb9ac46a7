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
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }
}

/// RBAC objects are stored and served (so manifests that carry them apply)
/// but not enforced: kube-sim's own per-user rules decide access.
pub const RBAC_ROLES: Gvr = Gvr::new("rbac.authorization.k8s.io", "v1", "roles");
pub const RBAC_ROLEBINDINGS: Gvr = Gvr::new("rbac.authorization.k8s.io", "v1", "rolebindings");
pub const RBAC_CLUSTERROLES: Gvr = Gvr::new("rbac.authorization.k8s.io", "v1", "clusterroles");
pub const RBAC_CLUSTERROLEBINDINGS: Gvr =
    Gvr::new("rbac.authorization.k8s.io", "v1", "clusterrolebindings");

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
        res(
            gvr::NAMESPACES,
            gvr::NAMESPACES,
            "Namespace",
            "namespace",
            false,
            true,
            false,
            &["ns"],
            &[],
        ),
        res(
            gvr::PODS,
            gvr::PODS,
            "Pod",
            "pod",
            true,
            true,
            false,
            &["po"],
            &["all"],
        ),
        res(
            gvr::SECRETS,
            gvr::SECRETS,
            "Secret",
            "secret",
            true,
            false,
            false,
            &[],
            &[],
        ),
        res(
            gvr::CONFIGMAPS,
            gvr::CONFIGMAPS,
            "ConfigMap",
            "configmap",
            true,
            false,
            false,
            &["cm"],
            &[],
        ),
        res(
            gvr::SERVICEACCOUNTS,
            gvr::SERVICEACCOUNTS,
            "ServiceAccount",
            "serviceaccount",
            true,
            false,
            false,
            &["sa"],
            &[],
        ),
        res(
            gvr::PVCS,
            gvr::PVCS,
            "PersistentVolumeClaim",
            "persistentvolumeclaim",
            true,
            true,
            false,
            &["pvc"],
            &[],
        ),
        res(
            gvr::EVENTS,
            gvr::EVENTS,
            "Event",
            "event",
            true,
            false,
            false,
            &["ev"],
            &[],
        ),
        res(
            gvr::STORAGECLASSES,
            gvr::STORAGECLASSES,
            "StorageClass",
            "storageclass",
            false,
            false,
            false,
            &["sc"],
            &[],
        ),
        res(
            gvr::CRDS,
            gvr::CRDS,
            "CustomResourceDefinition",
            "customresourcedefinition",
            false,
            true,
            false,
            &["crd", "crds"],
            &[],
        ),
        res(
            RBAC_ROLES,
            RBAC_ROLES,
            "Role",
            "role",
            true,
            false,
            false,
            &[],
            &[],
        ),
        res(
            RBAC_ROLEBINDINGS,
            RBAC_ROLEBINDINGS,
            "RoleBinding",
            "rolebinding",
            true,
            false,
            false,
            &[],
            &[],
        ),
        res(
            RBAC_CLUSTERROLES,
            RBAC_CLUSTERROLES,
            "ClusterRole",
            "clusterrole",
            false,
            false,
            false,
            &[],
            &[],
        ),
        res(
            RBAC_CLUSTERROLEBINDINGS,
            RBAC_CLUSTERROLEBINDINGS,
            "ClusterRoleBinding",
            "clusterrolebinding",
            false,
            false,
            false,
            &[],
            &[],
        ),
    ];
    let tekton: [(Gvr, &str, &str, &[&str]); 4] = [
        (gvr::TASKS, "Task", "task", &[]),
        (gvr::PIPELINES, "Pipeline", "pipeline", &[]),
        (
            gvr::PIPELINERUNS,
            "PipelineRun",
            "pipelinerun",
            &["pr", "prs"],
        ),
        (gvr::TASKRUNS, "TaskRun", "taskrun", &["tr", "trs"]),
    ];
    for version in ["v1", "v1beta1"] {
        for (storage, kind, singular, short) in tekton {
            let served = Gvr::new("tekton.dev", version, storage.plural);
            let mut r = res(
                served,
                storage,
                kind,
                singular,
                true,
                true,
                true,
                short,
                TEKTON_CATEGORIES,
            );
            r.printer_columns = crd_printer_columns(crds, "tekton.dev", storage.plural, version);
            out.push(r);
        }
    }
    out
}

fn crd_printer_columns(
    crds: &[Value],
    group: &str,
    plural: &str,
    version: &str,
) -> Vec<PrinterColumn> {
    let Some(crd) = crds
        .iter()
        .find(|c| c["spec"]["group"] == group && c["spec"]["names"]["plural"] == plural)
    else {
        return Vec::new();
    };
    let versions = crd["spec"]["versions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
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

/// The Tekton CRDs shipped with the crate: `crds/300-*.yaml` (Tekton's own,
/// see `crds/README.md`) converted once to JSON, because parsing 1.4 MB of YAML
/// takes seconds in debug builds and every test process would pay it. The
/// test `embedded_json_matches_yaml` keeps the two in step (run it with
/// `KUBE_SIM_REGENERATE_CRDS=1` after changing the YAML).
const EMBEDDED_CRDS_JSON: &str = include_str!("../crds/tekton-crds.json");

pub fn parse_crd(yaml: &str) -> Result<Value, String> {
    serde_saphyr::from_str::<Value>(yaml).map_err(|e| format!("invalid CRD YAML: {e}"))
}

/// The embedded CRDs, parsed once per process.
pub fn embedded_crds() -> &'static [Value] {
    static CRDS: std::sync::OnceLock<Vec<Value>> = std::sync::OnceLock::new();
    CRDS.get_or_init(|| serde_json::from_str(EMBEDDED_CRDS_JSON).expect("embedded CRD JSON parses"))
}

/// CRDs from `dir/300-*.yaml`.
pub fn load_crds(dir: &std::path::Path) -> Result<Vec<Value>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading CRD directory {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("300-") && n.ends_with(".yaml"))
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let text =
                std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))?;
            parse_crd(&text).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_json_matches_yaml() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        let from_yaml = super::load_crds(&dir).unwrap();
        if std::env::var_os("KUBE_SIM_REGENERATE_CRDS").is_some() {
            std::fs::write(
                dir.join("tekton-crds.json"),
                serde_json::to_string(&from_yaml).unwrap(),
            )
            .unwrap();
        }
        assert_eq!(
            super::embedded_crds(),
            from_yaml.as_slice(),
            "crds/tekton-crds.json is stale"
        );
    }

    #[test]
    fn registry_and_storage_agree() {
        for r in super::registry(&[]) {
            let k = crate::store::storage_kind(&r.gvr)
                .unwrap_or_else(|| panic!("{:?} has no storage", r.gvr));
            assert_eq!(k.gvr, r.storage, "{:?}", r.gvr);
            assert_eq!(
                (k.kind, k.namespaced, k.status_subresource, k.custom),
                (r.kind, r.namespaced, r.status_subresource, r.custom),
                "{:?}",
                r.gvr
            );
            assert!(
                crate::store::ALL_STORAGE.contains(&r.storage),
                "{:?}",
                r.storage
            );
        }
    }

    #[test]
    fn embedded_crds_give_printer_columns() {
        let crds = super::embedded_crds();
        assert_eq!(crds.len(), 8);
        let reg = super::registry(crds);
        let pr = reg
            .iter()
            .find(|r| r.gvr.plural == "pipelineruns" && r.gvr.version == "v1")
            .unwrap();
        let names: Vec<&str> = pr.printer_columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["Succeeded", "Reason", "StartTime", "CompletionTime"]
        );
    }
}
