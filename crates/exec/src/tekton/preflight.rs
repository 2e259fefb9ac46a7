//! Checks before a run is created, for the failures that would otherwise
//! leave it Pending until its timeout: missing Tasks, Secrets, StorageClass or
//! service account. Each failure names the missing thing and how to fix it.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{Api, DynamicObject, ListParams};
use serde_json::Value;

use super::client::TektonVersion;
use super::error::{TektonError, status_code};
use super::secrets::OPERATOR_DOCKER_CONFIG;
use super::submit::tekton_resource;
use super::validate::{bound_secrets, referenced_tasks};

const DEFAULT_CLASS: &str = "storageclass.kubernetes.io/is-default-class";
const DEFAULT_CLASS_BETA: &str = "storageclass.beta.kubernetes.io/is-default-class";

/// What preflight found; `notes` are checks it could not make (e.g. no
/// permission to list StorageClasses), reported as progress.
#[derive(Debug, Default)]
pub struct Preflight {
    pub notes: Vec<String>,
}

pub async fn preflight(
    client: &kube::Client,
    version: TektonVersion,
    namespace: &str,
    run: &Value,
    created_secrets: &[String],
) -> Result<Preflight, TektonError> {
    let mut report = Preflight::default();
    check_tasks(client, version, namespace, run).await?;
    check_secrets(client, namespace, run, created_secrets).await?;
    check_storage(client, run, &mut report).await?;
    check_service_account(client, namespace, run).await?;
    Ok(report)
}

fn forbidden(what: &str, e: &kube::Error) -> TektonError {
    TektonError::Build(format!(
        "preflight could not read {what}: {}",
        super::error::describe_kube_error(e)
    ))
}

async fn check_tasks(
    client: &kube::Client,
    version: TektonVersion,
    namespace: &str,
    run: &Value,
) -> Result<(), TektonError> {
    for (task_ns, name) in referenced_tasks(run, namespace) {
        let api: Api<DynamicObject> = Api::namespaced_with(
            client.clone(),
            &task_ns,
            &tekton_resource(version, "Task", "tasks"),
        );
        match api.get_metadata_opt(&name).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(TektonError::Build(format!(
                    "Tekton Task {name:?} not found in namespace {task_ns}; install Image Factory's Tasks there (kubectl apply -n {task_ns} -f tekton/tasks/, or the installer)"
                )));
            }
            Err(e) if status_code(&e) == Some(403) => {
                return Err(forbidden(&format!("Task {task_ns}/{name}"), &e));
            }
            Err(e) => {
                return Err(TektonError::kube(
                    format!("reading Task {task_ns}/{name}"),
                    e,
                ));
            }
        }
    }
    Ok(())
}

async fn check_secrets(
    client: &kube::Client,
    namespace: &str,
    run: &Value,
    created_secrets: &[String],
) -> Result<(), TektonError> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    // Secrets this submit just created (or found) need no second look.
    for name in bound_secrets(run)
        .into_iter()
        .filter(|s| !created_secrets.contains(s))
    {
        // The operator's registry Secret is read whole: made by hand, it
        // may lack the key the Tasks read (its keys are named, never its values).
        let found = if name == OPERATOR_DOCKER_CONFIG {
            api.get_opt(&name)
                .await
                .map(|s| s.map(|s| usable_registry_keys(&s, namespace)))
        } else {
            api.get_metadata_opt(&name).await.map(|m| m.map(|_| Ok(())))
        };
        match found {
            Ok(Some(Ok(()))) => {}
            Ok(Some(Err(message))) => return Err(TektonError::Build(message)),
            Ok(None) if name == OPERATOR_DOCKER_CONFIG => {
                return Err(TektonError::Build(format!(
                    "Secret {name:?} not found in namespace {namespace}: builds without a registry credential use the operator-managed docker config; create it (kubectl create secret docker-registry {name} -n {namespace} ...) or give the build a registry credential"
                )));
            }
            Ok(None) => {
                return Err(TektonError::Build(format!(
                    "Secret {name:?} bound by the run not found in namespace {namespace}; create it or fix the template"
                )));
            }
            Err(e) if status_code(&e) == Some(403) => {
                return Err(forbidden(&format!("Secret {namespace}/{name}"), &e));
            }
            Err(e) => {
                return Err(TektonError::kube(
                    format!("reading Secret {namespace}/{name}"),
                    e,
                ));
            }
        }
    }
    Ok(())
}

/// The keys the shipped Tasks read credentials from: `.dockerconfigjson`
/// (`kubectl create secret docker-registry`) or `config.json` (a generic
/// Secret made from a docker config file).
pub const REGISTRY_SECRET_KEYS: [&str; 2] = [".dockerconfigjson", "config.json"];

/// Ok when the Secret holds a non-empty registry key, else why not.
fn usable_registry_keys(secret: &Secret, namespace: &str) -> Result<(), String> {
    let name = secret
        .metadata
        .name
        .as_deref()
        .unwrap_or(OPERATOR_DOCKER_CONFIG);
    let mut keys: Vec<&str> = secret
        .data
        .iter()
        .flat_map(|d| {
            d.iter()
                .filter(|(_, v)| !v.0.is_empty())
                .map(|(k, _)| k.as_str())
        })
        .chain(secret.string_data.iter().flat_map(|d| {
            d.iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| k.as_str())
        }))
        .collect();
    if keys.iter().any(|k| REGISTRY_SECRET_KEYS.contains(k)) {
        return Ok(());
    }
    keys.sort_unstable();
    let has = if keys.is_empty() {
        "no non-empty key".to_string()
    } else {
        format!("only the keys {}", keys.join(", "))
    };
    Err(format!(
        "Secret {name:?} in namespace {namespace} has {has}; the Tasks read registry credentials from a non-empty .dockerconfigjson or config.json key: recreate it with kubectl create secret docker-registry {name} -n {namespace} --docker-server=... --docker-username=... --docker-password=... (or kubectl create secret generic {name} -n {namespace} --from-file=config.json=<docker config file>)"
    ))
}

async fn check_storage(
    client: &kube::Client,
    run: &Value,
    report: &mut Preflight,
) -> Result<(), TektonError> {
    let claims: Vec<&Value> = run
        .pointer("/spec/workspaces")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|w| w.get("volumeClaimTemplate"))
        .collect();
    if claims.is_empty() {
        return Ok(());
    }
    let api: Api<StorageClass> = Api::all(client.clone());
    for claim in claims {
        match claim
            .pointer("/spec/storageClassName")
            .and_then(Value::as_str)
        {
            Some(class) => match api.get_metadata_opt(class).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(TektonError::Build(format!(
                        "StorageClass {class:?} (the provider's storage_class) does not exist on the cluster; create it or change the provider's storage_class"
                    )));
                }
                Err(e) if status_code(&e) == Some(403) => {
                    report.notes.push(format!("could not verify StorageClass {class:?}: no permission to read StorageClasses"));
                }
                Err(e) => {
                    return Err(TektonError::kube(
                        format!("reading StorageClass {class}"),
                        e,
                    ));
                }
            },
            None => match api.list_metadata(&ListParams::default()).await {
                Ok(list) => {
                    let has_default = list.items.iter().any(|c| {
                        c.metadata.annotations.as_ref().is_some_and(|a| {
                            a.get(DEFAULT_CLASS)
                                .or_else(|| a.get(DEFAULT_CLASS_BETA))
                                .map(String::as_str)
                                == Some("true")
                        })
                    });
                    if !has_default {
                        return Err(TektonError::Build(
                            "no default StorageClass on the cluster, so the run's workspace claim would never bind; mark a StorageClass as default (annotation storageclass.kubernetes.io/is-default-class=true) or set the provider's storage_class".into(),
                        ));
                    }
                }
                Err(e) if status_code(&e) == Some(403) => {
                    report.notes.push("could not verify a default StorageClass exists: no permission to list StorageClasses".into());
                }
                Err(e) => return Err(TektonError::kube("listing StorageClasses", e)),
            },
        }
    }
    Ok(())
}

async fn check_service_account(
    client: &kube::Client,
    namespace: &str,
    run: &Value,
) -> Result<(), TektonError> {
    let name = run
        .pointer("/spec/taskRunTemplate/serviceAccountName")
        .or_else(|| run.pointer("/spec/serviceAccountName"))
        .and_then(Value::as_str)
        .unwrap_or("default");
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    // A namespace created moments ago gets its `default` account from a
    // controller shortly after; give it a few seconds.
    let attempts = if name == "default" { 10 } else { 1 };
    for attempt in 0..attempts {
        match api.get_metadata_opt(name).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if attempt + 1 < attempts => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            Ok(None) => break,
            Err(e) if status_code(&e) == Some(403) => {
                return Err(forbidden(&format!("ServiceAccount {namespace}/{name}"), &e));
            }
            Err(e) => {
                return Err(TektonError::kube(
                    format!("reading ServiceAccount {namespace}/{name}"),
                    e,
                ));
            }
        }
    }
    Err(TektonError::Build(format!(
        "service account {name:?} not found in namespace {namespace}; create it (kubectl create serviceaccount {name} -n {namespace}) or set the provider's service_account"
    )))
}
