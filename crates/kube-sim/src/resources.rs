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

/// A resource as served at one version.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    /// The group/version/plural clients address.
    pub gvr: Gvr,
    /// The table's entry: kind, scope, subresources, names and the
    /// group/version objects are stored in (differs for `tekton.dev/v1beta1`).
    pub resource: Resource,
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

/// One stored resource as the table declares it: built with named steps
/// (`Resource::namespaced(..).with_status()`), so no flag is positional.
#[derive(Clone, Copy, Debug)]
pub struct Resource {
    /// Where objects are stored (the first served version).
    pub storage: Gvr,
    pub kind: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub status_subresource: bool,
    pub custom: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Versions served besides the storage one (converted on the way in and out).
    pub also_served: &'static [&'static str],
}

impl Resource {
    const fn new(storage: Gvr, kind: &'static str, singular: &'static str) -> Self {
        Resource {
            storage,
            kind,
            singular,
            namespaced: false,
            status_subresource: false,
            custom: false,
            short_names: &[],
            categories: &[],
            also_served: &[],
        }
    }

    /// A resource that lives in a namespace.
    pub const fn namespaced(storage: Gvr, kind: &'static str, singular: &'static str) -> Self {
        Resource {
            namespaced: true,
            ..Self::new(storage, kind, singular)
        }
    }

    /// A cluster-scoped resource.
    pub const fn cluster(storage: Gvr, kind: &'static str, singular: &'static str) -> Self {
        Self::new(storage, kind, singular)
    }

    /// Serves a `status` subresource (and keeps status out of main-resource writes).
    pub const fn with_status(self) -> Self {
        Resource {
            status_subresource: true,
            ..self
        }
    }

    /// A custom resource: `resourceVersion` required on PUT, no strategic merge.
    pub const fn custom(self) -> Self {
        Resource {
            custom: true,
            ..self
        }
    }

    pub const fn short_names(self, short_names: &'static [&'static str]) -> Self {
        Resource {
            short_names,
            ..self
        }
    }

    pub const fn categories(self, categories: &'static [&'static str]) -> Self {
        Resource { categories, ..self }
    }

    pub const fn also_served(self, also_served: &'static [&'static str]) -> Self {
        Resource {
            also_served,
            ..self
        }
    }

    /// The table entry clients see at `version`.
    fn info(&self, version: &'static str, crds: &[Value]) -> ResourceInfo {
        let gvr = Gvr::new(self.storage.group, version, self.storage.plural);
        let printer_columns = if self.custom {
            crd_printer_columns(crds, gvr.group, gvr.plural, version)
        } else {
            Vec::new()
        };
        ResourceInfo {
            gvr,
            resource: *self,
            printer_columns,
        }
    }
}

/// Every stored resource, in the order discovery lists them.
pub const RESOURCES: &[Resource] = &[
    Resource::cluster(gvr::NAMESPACES, "Namespace", "namespace")
        .with_status()
        .short_names(&["ns"]),
    Resource::namespaced(gvr::PODS, "Pod", "pod")
        .with_status()
        .short_names(&["po"])
        .categories(&["all"]),
    Resource::namespaced(gvr::SECRETS, "Secret", "secret"),
    Resource::namespaced(gvr::CONFIGMAPS, "ConfigMap", "configmap").short_names(&["cm"]),
    Resource::namespaced(gvr::SERVICEACCOUNTS, "ServiceAccount", "serviceaccount")
        .short_names(&["sa"]),
    Resource::namespaced(gvr::PVCS, "PersistentVolumeClaim", "persistentvolumeclaim")
        .with_status()
        .short_names(&["pvc"]),
    Resource::namespaced(gvr::EVENTS, "Event", "event").short_names(&["ev"]),
    Resource::cluster(gvr::STORAGECLASSES, "StorageClass", "storageclass").short_names(&["sc"]),
    Resource::cluster(
        gvr::CRDS,
        "CustomResourceDefinition",
        "customresourcedefinition",
    )
    .with_status()
    .short_names(&["crd", "crds"]),
    Resource::namespaced(RBAC_ROLES, "Role", "role"),
    Resource::namespaced(RBAC_ROLEBINDINGS, "RoleBinding", "rolebinding"),
    Resource::cluster(RBAC_CLUSTERROLES, "ClusterRole", "clusterrole"),
    Resource::cluster(
        RBAC_CLUSTERROLEBINDINGS,
        "ClusterRoleBinding",
        "clusterrolebinding",
    ),
    tekton(gvr::TASKS, "Task", "task", &[]),
    tekton(gvr::PIPELINES, "Pipeline", "pipeline", &[]),
    tekton(
        gvr::PIPELINERUNS,
        "PipelineRun",
        "pipelinerun",
        &["pr", "prs"],
    ),
    tekton(gvr::TASKRUNS, "TaskRun", "taskrun", &["tr", "trs"]),
    Resource::namespaced(gvr::STEPACTIONS, "StepAction", "stepaction")
        .with_status()
        .custom()
        .categories(TEKTON_CATEGORIES)
        .also_served(&["v1alpha1"]),
];

/// Tekton's kinds: custom, with status, stored as v1 and served as v1beta1 too.
const fn tekton(
    storage: Gvr,
    kind: &'static str,
    singular: &'static str,
    short_names: &'static [&'static str],
) -> Resource {
    Resource::namespaced(storage, kind, singular)
        .with_status()
        .custom()
        .short_names(short_names)
        .categories(TEKTON_CATEGORIES)
        .also_served(&["v1beta1"])
}

/// The stored resource clients address as `group`/`plural` (any served version).
pub fn find(group: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.storage.plural == plural && r.storage.group == group)
}

/// Every served resource: each storage version, then each further version
/// (so a group's preferred version comes first). `crds` (the loaded Tekton
/// CRDs) supply printer columns.
pub fn registry(crds: &[Value]) -> Vec<ResourceInfo> {
    let storage = RESOURCES.iter().map(|r| r.info(r.storage.version, crds));
    let further = RESOURCES
        .iter()
        .flat_map(|r| r.also_served.iter().map(move |v| r.info(v, crds)));
    storage.chain(further).collect()
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

    /// The table as the positional one before it declared it: scope and
    /// behaviour per kind, and the served order (discovery lists in it).
    #[test]
    fn table_declares_each_kind() {
        let expected = [
            ("Namespace", "status"),
            ("Pod", "namespaced status"),
            ("Secret", "namespaced"),
            ("ConfigMap", "namespaced"),
            ("ServiceAccount", "namespaced"),
            ("PersistentVolumeClaim", "namespaced status"),
            ("Event", "namespaced"),
            ("StorageClass", ""),
            ("CustomResourceDefinition", "status"),
            ("Role", "namespaced"),
            ("RoleBinding", "namespaced"),
            ("ClusterRole", ""),
            ("ClusterRoleBinding", ""),
            ("Task", "namespaced status custom"),
            ("Pipeline", "namespaced status custom"),
            ("PipelineRun", "namespaced status custom"),
            ("TaskRun", "namespaced status custom"),
            ("StepAction", "namespaced status custom"),
        ];
        let flags = |r: &super::Resource| {
            [
                (r.namespaced, "namespaced"),
                (r.status_subresource, "status"),
                (r.custom, "custom"),
            ]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, name)| *name)
            .collect::<Vec<_>>()
            .join(" ")
        };
        let got: Vec<(&str, String)> = super::RESOURCES
            .iter()
            .map(|r| (r.kind, flags(r)))
            .collect();
        let want: Vec<(&str, String)> = expected.iter().map(|(k, f)| (*k, f.to_string())).collect();
        assert_eq!(got, want);
        let served: Vec<String> = super::registry(&[])
            .iter()
            .map(|r| format!("{}/{}", r.api_version(), r.gvr.plural))
            .collect();
        assert_eq!(served.len(), 23);
        assert_eq!(
            served[13..],
            [
                "tekton.dev/v1/tasks",
                "tekton.dev/v1/pipelines",
                "tekton.dev/v1/pipelineruns",
                "tekton.dev/v1/taskruns",
                "tekton.dev/v1beta1/stepactions",
                "tekton.dev/v1beta1/tasks",
                "tekton.dev/v1beta1/pipelines",
                "tekton.dev/v1beta1/pipelineruns",
                "tekton.dev/v1beta1/taskruns",
                "tekton.dev/v1alpha1/stepactions",
            ]
        );
        let pr = super::registry(&[])
            .into_iter()
            .find(|r| r.gvr.version == "v1beta1" && r.gvr.plural == "pipelineruns")
            .unwrap();
        assert_eq!(pr.resource.storage, crate::cluster::gvr::PIPELINERUNS);
        assert_eq!(pr.resource.short_names, ["pr", "prs"]);
        assert_eq!(pr.resource.categories, ["tekton", "tekton-pipelines"]);
    }

    #[test]
    fn registry_and_storage_agree() {
        for r in super::registry(&[]) {
            let k = crate::store::storage_kind(&r.gvr)
                .unwrap_or_else(|| panic!("{:?} has no storage", r.gvr));
            assert_eq!(k.gvr, r.resource.storage, "{:?}", r.gvr);
            assert_eq!(
                (k.kind, k.namespaced, k.status_subresource, k.custom),
                (
                    r.resource.kind,
                    r.resource.namespaced,
                    r.resource.status_subresource,
                    r.resource.custom
                ),
                "{:?}",
                r.gvr
            );
            assert!(
                crate::store::ALL_STORAGE.contains(&r.resource.storage),
                "{:?}",
                r.resource.storage
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
