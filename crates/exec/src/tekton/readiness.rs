//! Whether a cluster and namespace are ready for builds: the Tekton API, the
//! shipped Tasks (present / current / outdated / modified), a default
//! StorageClass, the operator's registry Secret and the service account.
//! Read-only; every check says what it found instead of failing the report.

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, ListParams};
use serde::Serialize;

use super::bundle::{TaskState, bundle_version, task_states};
use super::client::{TektonVersion, tekton_versions};
use super::error::{TektonError, describe_kube_error};
use super::secrets::OPERATOR_DOCKER_CONFIG;

/// The message for a cluster without the `tekton.dev` API group.
pub const TEKTON_NOT_INSTALLED: &str = "Tekton Pipelines not installed: the cluster does not serve the API group tekton.dev (v1 or v1beta1); install Tekton Pipelines first";

const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const DEFAULT_CLASS_BETA: &str = "storageclass.beta.kubernetes.io/is-default-class";
/// Keys of a registry Secret the build steps can use.
pub const REGISTRY_KEYS: [&str; 2] = [".dockerconfigjson", "config.json"];

/// The Tekton API a cluster serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TektonApi {
    /// `tekton.dev` versions served.
    pub versions: Vec<String>,
    /// The version Image Factory uses, when there is one.
    pub using: Option<String>,
}

/// The Tekton API, or [`TEKTON_NOT_INSTALLED`] when none is served.
pub async fn tekton_api(client: &kube::Client) -> Result<(TektonApi, TektonVersion), TektonError> {
    let versions = tekton_versions(client)
        .await
        .map_err(|e| TektonError::kube("discovering the Tekton API", e))?;
    let Some(version) = TektonVersion::choose(&versions) else {
        return Err(TektonError::Build(TEKTON_NOT_INSTALLED.into()));
    };
    Ok((
        TektonApi {
            versions,
            using: Some(version.as_str().into()),
        },
        version,
    ))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskStatus {
    pub name: String,
    pub state: TaskState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    /// What was found, or why not.
    pub detail: String,
}

/// One namespace's readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceStatus {
    pub namespace: String,
    pub bundle_version: String,
    pub tasks: Vec<TaskStatus>,
    /// Registry Secret and service account.
    pub checks: Vec<Check>,
    /// A check that could not be made (e.g. no permission).
    pub errors: Vec<String>,
}

impl NamespaceStatus {
    pub fn ready(&self) -> bool {
        self.errors.is_empty()
            && self.checks.iter().all(|c| c.ok)
            && self.tasks.iter().all(|t| t.state == TaskState::Current)
    }
}

/// A cluster's readiness: cluster-wide checks and each namespace's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterStatus {
    /// `None` with [`TEKTON_NOT_INSTALLED`] in `error` when not served.
    pub tekton: Option<TektonApi>,
    pub default_storage_class: Check,
    pub namespaces: Vec<NamespaceStatus>,
    pub error: Option<String>,
}

impl ClusterStatus {
    pub fn ready(&self) -> bool {
        self.error.is_none()
            && self.default_storage_class.ok
            && self.namespaces.iter().all(NamespaceStatus::ready)
    }
}

/// Readiness of `namespaces` on the cluster of `client`, for builds whose
/// pods run as `service_account`.
pub async fn cluster_status(
    client: &kube::Client,
    namespaces: &[String],
    service_account: &str,
) -> ClusterStatus {
    let default_storage_class = default_storage_class(client).await;
    let (tekton, version) = match tekton_api(client).await {
        Ok((api, version)) => (api, version),
        Err(e) => {
            return ClusterStatus {
                tekton: None,
                default_storage_class,
                namespaces: Vec::new(),
                error: Some(e.to_string()),
            };
        }
    };
    let mut out = Vec::new();
    for namespace in namespaces {
        out.push(namespace_status(client, version, namespace, service_account).await);
    }
    ClusterStatus {
        tekton: Some(tekton),
        default_storage_class,
        namespaces: out,
        error: None,
    }
}

pub async fn namespace_status(
    client: &kube::Client,
    version: TektonVersion,
    namespace: &str,
    service_account: &str,
) -> NamespaceStatus {
    let mut status = NamespaceStatus {
        namespace: namespace.into(),
        bundle_version: bundle_version().into(),
        tasks: Vec::new(),
        checks: Vec::new(),
        errors: Vec::new(),
    };
    match task_states(client, version, namespace).await {
        Ok(states) => {
            status.tasks = states
                .into_iter()
                .map(|(name, state)| TaskStatus { name, state })
                .collect()
        }
        Err(e) => status.errors.push(e.to_string()),
    }
    status.checks.push(registry_secret(client, namespace).await);
    status
        .checks
        .push(service_account_check(client, namespace, service_account).await);
    status
}

async fn default_storage_class(client: &kube::Client) -> Check {
    let name = "default StorageClass".to_string();
    let api: Api<StorageClass> = Api::all(client.clone());
    match api.list_metadata(&ListParams::default()).await {
        Ok(list) => {
            let default = list.items.iter().find(|c| {
                c.metadata.annotations.as_ref().is_some_and(|a| {
                    a.get(DEFAULT_CLASS)
                        .or_else(|| a.get(DEFAULT_CLASS_BETA))
                        .map(String::as_str)
                        == Some("true")
                })
            });
            match default.and_then(|c| c.metadata.name.clone()) {
                Some(class) => Check { name, ok: true, detail: class },
                None => Check {
                    name,
                    ok: false,
                    detail: "none marked default (storageclass.kubernetes.io/is-default-class=true); set the provider's storage_class or mark one".into(),
                },
            }
        }
        Err(e) => Check {
            name,
            ok: false,
            detail: format!("could not list StorageClasses: {}", describe_kube_error(&e)),
        },
    }
}

async fn registry_secret(client: &kube::Client, namespace: &str) -> Check {
    let name = format!("registry Secret {OPERATOR_DOCKER_CONFIG}");
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(OPERATOR_DOCKER_CONFIG).await {
        // Only key names are looked at: the values are credentials.
        Ok(Some(secret)) => {
            let usable = secret.data.as_ref().and_then(|data| {
                REGISTRY_KEYS
                    .iter()
                    .find(|k| data.get(**k).is_some_and(|v| !v.0.is_empty()))
            });
            match usable {
                Some(key) => Check {
                    name,
                    ok: true,
                    detail: format!("present with key {key}"),
                },
                None => Check {
                    name,
                    ok: false,
                    detail: format!(
                        "present but has none of the keys {}",
                        REGISTRY_KEYS.join(", ")
                    ),
                },
            }
        }
        Ok(None) => Check {
            name,
            ok: false,
            detail: format!(
                "missing; builds without a registry credential need it (kubectl create secret docker-registry {OPERATOR_DOCKER_CONFIG} -n {namespace} ...)"
            ),
        },
        Err(e) => Check {
            name,
            ok: false,
            detail: format!("could not read it: {}", describe_kube_error(&e)),
        },
    }
}

async fn service_account_check(client: &kube::Client, namespace: &str, account: &str) -> Check {
    let name = format!("service account {account}");
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    match api.get_metadata_opt(account).await {
        Ok(Some(_)) => Check {
            name,
            ok: true,
            detail: "present".into(),
        },
        Ok(None) => Check {
            name,
            ok: false,
            detail: format!("missing (kubectl create serviceaccount {account} -n {namespace})"),
        },
        Err(e) => Check {
            name,
            ok: false,
            detail: format!("could not read it: {}", describe_kube_error(&e)),
        },
    }
}
