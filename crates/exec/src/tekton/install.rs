//! The installer: Image Factory's Task bundle into a namespace, on demand
//! (`imagefactory tekton install`, the admin API). Unlike a managed build it
//! always repairs drift: running it is the operator saying so.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ObjectMeta, PostParams};
use serde::Serialize;

use super::bundle::{Action, ApplyOptions, ObjectResult, TaskState, apply_bundle, bundle_version};
use super::error::{TektonError, describe_kube_error, is_already_exists};
use super::readiness::tekton_api;

/// What one install did (or, dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstallReport {
    pub namespace: String,
    pub bundle_version: String,
    pub dry_run: bool,
    /// The Namespace first, then each Task.
    pub objects: Vec<ObjectResult>,
}

impl InstallReport {
    pub fn failed(&self) -> bool {
        self.objects.iter().any(|o| o.action == Action::Failed)
    }
}

/// Install the current bundle into `namespace`, creating the namespace when
/// missing. Errors when the cluster has no Tekton API (nothing is changed) or
/// the Tasks cannot be read; a failed object is reported in its result.
pub async fn install(
    client: &kube::Client,
    namespace: &str,
    dry_run: bool,
) -> Result<InstallReport, TektonError> {
    let (_, version) = tekton_api(client).await?;
    let namespace_result = ensure_namespace(client, namespace, dry_run).await;
    let mut objects = vec![namespace_result.clone()];
    if namespace_result.action == Action::Failed {
        return Ok(InstallReport {
            namespace: namespace.into(),
            bundle_version: bundle_version().into(),
            dry_run,
            objects,
        });
    }
    let options = ApplyOptions {
        repair_drift: true,
        dry_run,
    };
    if dry_run && namespace_result.action == Action::Created {
        // A dry run cannot apply into a namespace that does not exist yet;
        // every Task would be created.
        objects.extend(super::tasks::TASKS.iter().map(|(name, _)| ObjectResult {
            kind: "Task".into(),
            namespace: namespace.into(),
            name: name.to_string(),
            before: TaskState::Missing,
            action: Action::Created,
            detail: None,
        }));
    } else {
        objects.extend(apply_bundle(client, version, namespace, options).await?);
    }
    Ok(InstallReport {
        namespace: namespace.into(),
        bundle_version: bundle_version().into(),
        dry_run,
        objects,
    })
}

async fn ensure_namespace(client: &kube::Client, name: &str, dry_run: bool) -> ObjectResult {
    let mut result = ObjectResult {
        kind: "Namespace".into(),
        namespace: name.into(),
        name: name.into(),
        before: TaskState::Current,
        action: Action::Unchanged,
        detail: None,
    };
    let api: Api<Namespace> = Api::all(client.clone());
    match api.get_metadata_opt(name).await {
        Ok(Some(_)) => return result,
        Ok(None) => {}
        // Namespace-scoped credentials may not read namespaces: apply into it.
        Err(e) if super::error::status_code(&e) == Some(403) => return result,
        Err(e) => {
            result.action = Action::Failed;
            result.detail = Some(describe_kube_error(&e));
            return result;
        }
    }
    result.before = TaskState::Missing;
    let object = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("app".to_string(), "image-factory".to_string())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    if dry_run {
        result.action = Action::Created;
        return result;
    }
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => result.action = Action::Created,
        Err(e) if is_already_exists(&e) => {}
        Err(e) => {
            result.action = Action::Failed;
            result.detail = Some(describe_kube_error(&e));
        }
    }
    result
}

/// The namespaces a provider's builds use Tasks from: the one asked for,
/// else the shared Tasks namespace, else every Image Factory namespace on
/// the cluster (label `app=image-factory`, as tenant namespaces have).
pub async fn provider_namespaces(
    client: &kube::Client,
    settings: &super::client::ClusterSettings,
    namespace: Option<&str>,
) -> Result<Vec<String>, TektonError> {
    if let Some(ns) = namespace.or(settings.tasks_namespace()) {
        return Ok(vec![ns.to_string()]);
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let list = api
        .list_metadata(&kube::api::ListParams::default().labels("app=image-factory"))
        .await
        .map_err(|e| TektonError::kube("listing Image Factory namespaces", e))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect())
}

/// A provider's connection, for the installer and status (API and CLI).
pub async fn provider_client(
    provider: &crate::ProviderConnection,
    policy: std::sync::Arc<imagefactory_domain::AddressPolicy>,
) -> Result<(kube::Client, super::client::ClusterSettings), TektonError> {
    let settings = provider
        .settings()
        .map_err(TektonError::Build)?
        .with_address_policy(policy);
    let client = settings.client().await?;
    Ok((client, settings))
}

/// Install into each of a provider's namespaces (see [`provider_namespaces`]).
pub async fn install_for_provider(
    provider: &crate::ProviderConnection,
    policy: std::sync::Arc<imagefactory_domain::AddressPolicy>,
    namespace: Option<&str>,
    dry_run: bool,
) -> Result<Vec<InstallReport>, TektonError> {
    let (client, settings) = provider_client(provider, policy).await?;
    tekton_api(&client).await?;
    let mut reports = Vec::new();
    for ns in provider_namespaces(&client, &settings, namespace).await? {
        reports.push(install(&client, &ns, dry_run).await?);
    }
    Ok(reports)
}

/// Readiness of each of a provider's namespaces.
pub async fn status_for_provider(
    provider: &crate::ProviderConnection,
    policy: std::sync::Arc<imagefactory_domain::AddressPolicy>,
    namespace: Option<&str>,
) -> Result<super::readiness::ClusterStatus, TektonError> {
    let (client, settings) = provider_client(provider, policy).await?;
    let namespaces = provider_namespaces(&client, &settings, namespace).await?;
    Ok(super::readiness::cluster_status(&client, &namespaces, &settings.service_account).await)
}
