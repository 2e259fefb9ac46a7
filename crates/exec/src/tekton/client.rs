//! Kubernetes clients per provider: parse the provider's `config` (pure), build
//! a verified kube client from it, cache it per provider and config version,
//! and report whether a connection works.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use imagefactory_domain::address::AddressPolicy;
use imagefactory_domain::provider::{KubernetesConfig, ProviderOwner, TektonApiVersion};
use imagefactory_domain::task_bundle::{BuilderImages, TaskMode};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Serialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::connect::policy_client;
use super::error::{
    TektonError, describe_kube_error, describe_kubeconfig_error, is_kubernetes_status,
};
use super::kube_metrics::{GLOBAL_PROVIDER, KubeMetricsLayer};
use super::logclient::{KeepAlive, LogClients};
use super::monitor::WatchHub;
use crate::ProviderConnection;
use crate::context::parse_provider_config;

/// How Image Factory authenticates to one cluster (the provider config's
/// typed auth).
pub use imagefactory_domain::provider::KubernetesAuth as ClusterAuth;
pub use imagefactory_domain::provider::{KubeconfigSource, Retention};

/// A provider's cluster settings, built from its typed config
/// ([`KubernetesConfig`]) with the executor's defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub auth: ClusterAuth,
    /// PEM CA bundle the API server's certificate must chain to.
    pub ca_cert: Option<String>,
    pub insecure_skip_tls_verify: bool,
    /// Service account the build's pods run as (default `default`).
    pub service_account: String,
    /// StorageClass for the source workspace claim; `None` uses the default class.
    pub storage_class: Option<String>,
    /// Size of the source workspace claim (default 1Gi).
    pub workspace_size: String,
    /// Where the Tasks builds reference come from (`tasks`, `tasks_namespace`).
    pub task_mode: TaskMode,
    /// Re-apply managed Tasks that were changed on the cluster (`repair_drift`).
    pub repair_drift: bool,
    /// Per-Task builder image overrides (`builder_images`).
    pub builder_images: BuilderImages,
    /// Whether build steps verify the registry's TLS (`registry_tls_verify`,
    /// default true): the build Tasks' `TLS_VERIFY` param.
    pub registry_tls_verify: bool,
    /// The namespace a tenant provider's builds run in instead of the
    /// tenant's `image-factory-<id>` one (`namespace`).
    pub namespace: Option<String>,
    pub retention: Option<Retention>,
    /// Pin the Tekton API version instead of preferring v1 (`tekton_api_version`).
    pub tekton_version: Option<TektonVersion>,
    /// A tenant's settings are data only (see [`ProviderOwner`]).
    pub owner: ProviderOwner,
    /// Where a tenant's client may connect; strict unless replaced with
    /// [`ClusterSettings::with_address_policy`]. Unused for global providers.
    pub address_policy: Arc<AddressPolicy>,
    /// The `provider` label of this cluster's request metrics: the
    /// provider's id, or `global` for the global cluster.
    pub metrics_provider: String,
}

/// The workspace claim's size when the provider does not set `workspace_size`.
pub const DEFAULT_WORKSPACE_SIZE: &str = "1Gi";

impl ClusterSettings {
    /// The settings of a provider's parsed config.
    pub fn new(config: &KubernetesConfig, owner: ProviderOwner) -> Self {
        Self {
            auth: config.auth.clone(),
            ca_cert: config.ca_cert.clone(),
            insecure_skip_tls_verify: config.insecure_skip_tls_verify,
            service_account: config
                .service_account
                .clone()
                .unwrap_or_else(|| "default".into()),
            storage_class: config.storage_class.clone(),
            workspace_size: config
                .workspace_size
                .as_ref()
                .map_or(DEFAULT_WORKSPACE_SIZE.into(), |q| q.as_str().into()),
            task_mode: config.tasks.clone(),
            repair_drift: config.repair_drift,
            builder_images: config.builder_images.clone(),
            registry_tls_verify: config.registry_tls_verify,
            namespace: config.namespace.clone(),
            retention: config.retention,
            tekton_version: config.tekton_api_version.map(TektonVersion::from),
            owner,
            address_policy: Arc::default(),
            metrics_provider: "unknown".into(),
        }
    }

    /// Parse a provider's `config` object with the domain's parser
    /// ([`KubernetesConfig::parse`]) and build the settings. Errors name
    /// the fields and why.
    pub fn parse(config: &Value, owner: ProviderOwner) -> Result<Self, String> {
        let config = parse_provider_config(config, owner)?;
        Ok(Self::new(&config, owner))
    }

    /// The namespace the shared Tasks are resolved from (cluster resolver)
    /// when `tasks` is shared.
    pub fn tasks_namespace(&self) -> Option<&str> {
        match &self.task_mode {
            TaskMode::Shared { namespace } => Some(namespace),
            _ => None,
        }
    }

    /// The address policy a tenant's client connects under.
    pub fn with_address_policy(mut self, policy: Arc<AddressPolicy>) -> Self {
        self.address_policy = policy;
        self
    }

    /// The provider these settings are of (the request metrics' label).
    pub fn with_metrics_provider(mut self, provider: Uuid) -> Self {
        self.metrics_provider = provider.to_string();
        self
    }

    /// Defaults for the global cluster, which has no provider config.
    fn global(auth: ClusterAuth) -> Self {
        Self {
            auth,
            ca_cert: None,
            insecure_skip_tls_verify: false,
            service_account: "default".into(),
            storage_class: None,
            workspace_size: DEFAULT_WORKSPACE_SIZE.into(),
            task_mode: TaskMode::default(),
            repair_drift: false,
            builder_images: BuilderImages::default(),
            registry_tls_verify: true,
            namespace: None,
            retention: None,
            tekton_version: None,
            owner: ProviderOwner::Global,
            address_policy: Arc::default(),
            metrics_provider: GLOBAL_PROVIDER.into(),
        }
    }

    /// The kubeconfig this provider amounts to, and the context to use.
    fn to_kubeconfig(&self) -> Result<(Kubeconfig, Option<String>), String> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        let cluster = |endpoint: &str| {
            let mut cluster = json!({ "server": endpoint });
            if let Some(ca) = &self.ca_cert {
                cluster["certificate-authority-data"] = json!(b64(ca));
            }
            if self.insecure_skip_tls_verify {
                cluster["insecure-skip-tls-verify"] = json!(true);
            }
            cluster
        };
        let single = |cluster: Value, user: Value| {
            serde_json::from_value::<Kubeconfig>(json!({
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{ "name": "provider", "cluster": cluster }],
                "users": [{ "name": "provider", "user": user }],
                "contexts": [{ "name": "provider", "context": { "cluster": "provider", "user": "provider" } }],
                "current-context": "provider",
            }))
            .map_err(|e| format!("building the provider's client configuration failed: {e}"))
        };
        match &self.auth {
            ClusterAuth::Token { endpoint, token } => Ok((
                single(cluster(endpoint), json!({ "token": token.expose() }))?,
                None,
            )),
            ClusterAuth::ClientCert {
                endpoint,
                client_cert,
                client_key,
            } => Ok((
                single(
                    cluster(endpoint),
                    json!({
                        "client-certificate-data": b64(client_cert.expose()),
                        "client-key-data": b64(client_key.expose()),
                    }),
                )?,
                None,
            )),
            ClusterAuth::Kubeconfig { source, context } => {
                let mut kubeconfig = match source {
                    // Never echo the parse error's input: it holds credentials.
                    KubeconfigSource::Inline(text) => Kubeconfig::from_yaml(text.expose())
                        .map_err(|_| {
                            "provider config field `kubeconfig` is not a valid kubeconfig document"
                                .to_string()
                        })?,
                    // Not even the platform admin's file is quoted back.
                    KubeconfigSource::Path(path) => Kubeconfig::read_from(path).map_err(|e| {
                        format!(
                            "kubeconfig {}: {}",
                            path.display(),
                            describe_kubeconfig_error(&e)
                        )
                    })?,
                };
                if self.owner == ProviderOwner::Tenant {
                    refuse_host_access(&kubeconfig)?;
                }
                for named in &mut kubeconfig.clusters {
                    if let Some(cluster) = named.cluster.as_mut() {
                        if let Some(ca) = &self.ca_cert {
                            cluster.certificate_authority_data = Some(b64(ca));
                        }
                        if self.insecure_skip_tls_verify {
                            cluster.insecure_skip_tls_verify = Some(true);
                        }
                    }
                }
                Ok((kubeconfig, context.clone()))
            }
        }
    }

    /// A kube client for these settings. TLS is verified unless the provider
    /// explicitly says `insecure_skip_tls_verify: true`.
    pub async fn client(&self) -> Result<kube::Client, TektonError> {
        let config = self.kube_config().await?;
        self.client_for(config)
    }

    /// A tenant's client connects only where the address policy allows.
    fn client_for(&self, config: kube::Config) -> Result<kube::Client, TektonError> {
        match self.owner {
            ProviderOwner::Global => client_from(config, self.metrics_layer()),
            ProviderOwner::Tenant => {
                policy_client(&config, self.address_policy.clone(), self.metrics_layer()).map_err(
                    |e| {
                        TektonError::Build(format!(
                            "creating the cluster client failed: {}",
                            describe_kube_error(&e)
                        ))
                    },
                )
            }
        }
    }

    fn metrics_layer(&self) -> KubeMetricsLayer {
        KubeMetricsLayer::new(self.metrics_provider.clone())
    }

    fn log_policy(&self) -> Option<Arc<AddressPolicy>> {
        (self.owner == ProviderOwner::Tenant).then(|| self.address_policy.clone())
    }

    /// The client and the log-stream clients (HTTP/2 when the server offers it).
    pub async fn clients(&self) -> Result<(kube::Client, LogClients), TektonError> {
        self.clients_with(KeepAlive::default()).await
    }

    /// As [`ClusterSettings::clients`], with the log connections' HTTP/2
    /// keep-alive given.
    pub async fn clients_with(
        &self,
        keepalive: KeepAlive,
    ) -> Result<(kube::Client, LogClients), TektonError> {
        let config = self.kube_config().await?;
        let client = self.client_for(config.clone())?;
        let logs = LogClients::with_keepalive(
            &config,
            client.clone(),
            keepalive,
            self.log_policy(),
            self.metrics_layer(),
        );
        Ok((client, logs))
    }

    async fn kube_config(&self) -> Result<kube::Config, TektonError> {
        let (kubeconfig, context) = self.to_kubeconfig().map_err(TektonError::Build)?;
        let options = KubeConfigOptions {
            context,
            ..Default::default()
        };
        let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| {
                TektonError::Build(format!(
                    "invalid cluster configuration: {}",
                    describe_kubeconfig_error(&e)
                ))
            })?;
        config.connect_timeout = Some(Duration::from_secs(10));
        // Requests other than watches and log streams must not hang forever.
        config.write_timeout = Some(Duration::from_secs(30));
        Ok(config)
    }
}

/// Refuse what in a tenant's kubeconfig would run a program or read a file
/// on the server, or go through a proxy. Checked on kube's own parsed
/// document (all YAML documents merged), so no parser difference can slip
/// past the API's validation of the same thing.
fn refuse_host_access(kubeconfig: &Kubeconfig) -> Result<(), String> {
    let refuse = |field: String, why: &str| {
        Err(format!(
            "provider config field `kubeconfig`: {field} {why}; not allowed in a tenant's provider"
        ))
    };
    for (i, named) in kubeconfig.auth_infos.iter().enumerate() {
        let Some(user) = &named.auth_info else {
            continue;
        };
        let field = |key: &str| format!("users[{i}].user.{key}");
        if user.exec.is_some() {
            return refuse(field("exec"), "runs a program on the server");
        }
        if user.auth_provider.is_some() {
            return refuse(
                field("auth-provider"),
                "runs an authentication plugin on the server",
            );
        }
        for (key, set) in [
            ("tokenFile", user.token_file.is_some()),
            ("client-certificate", user.client_certificate.is_some()),
            ("client-key", user.client_key.is_some()),
        ] {
            if set {
                return refuse(field(key), "reads a file on the server");
            }
        }
    }
    for (i, named) in kubeconfig.clusters.iter().enumerate() {
        let Some(cluster) = &named.cluster else {
            continue;
        };
        if cluster.certificate_authority.is_some() {
            return refuse(
                format!("clusters[{i}].cluster.certificate-authority"),
                "reads a file on the server",
            );
        }
        if cluster.proxy_url.is_some() {
            return refuse(format!("clusters[{i}].cluster.proxy-url"), "sets a proxy");
        }
    }
    Ok(())
}

fn client_from(
    config: kube::Config,
    metrics: KubeMetricsLayer,
) -> Result<kube::Client, TektonError> {
    let built = kube::client::ClientBuilder::try_from(config)
        .map(|builder| builder.with_layer(&metrics).build());
    built.map_err(|e| {
        TektonError::Build(format!(
            "creating the cluster client failed: {}",
            describe_kube_error(&e)
        ))
    })
}

/// Which Tekton API version the cluster serves for our objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum TektonVersion {
    V1,
    V1beta1,
}

impl From<TektonApiVersion> for TektonVersion {
    fn from(pinned: TektonApiVersion) -> Self {
        match pinned {
            TektonApiVersion::V1 => Self::V1,
            TektonApiVersion::V1beta1 => Self::V1beta1,
        }
    }
}

impl TektonVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V1beta1 => "v1beta1",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Self::V1 => "tekton.dev/v1",
            Self::V1beta1 => "tekton.dev/v1beta1",
        }
    }

    /// Pick the version to use from the versions the cluster serves.
    pub fn choose(served: &[String]) -> Option<Self> {
        if served.iter().any(|v| v == "v1") {
            Some(Self::V1)
        } else if served.iter().any(|v| v == "v1beta1") {
            Some(Self::V1beta1)
        } else {
            None
        }
    }
}

/// Versions of the `tekton.dev` API group the cluster serves.
pub async fn tekton_versions(client: &kube::Client) -> Result<Vec<String>, kube::Error> {
    let groups = client.list_api_groups().await?;
    Ok(groups
        .groups
        .iter()
        .filter(|g| g.name == "tekton.dev")
        .flat_map(|g| g.versions.iter().map(|v| v.version.clone()))
        .collect())
}

/// One cluster as the executor uses it: the client, its settings, the Tekton
/// version it serves (discovered once) and its shared watches.
pub struct Cluster {
    /// The provider's id, or nil for the global fallback cluster.
    pub provider_id: Uuid,
    pub client: kube::Client,
    /// For `follow=true` log streams: multiplexed on HTTP/2 when possible.
    pub logs: LogClients,
    pub settings: ClusterSettings,
    version: tokio::sync::OnceCell<TektonVersion>,
    pub hub: WatchHub,
    /// Checks that passed recently (namespace exists, Secret created,
    /// preflight passed for a shape of run), so steady-state builds do not
    /// repeat them; see [`Cluster::recently_checked`].
    checked: Mutex<HashMap<String, std::time::Instant>>,
    /// `namespace:bundle version` pairs brought to the current Task bundle
    /// (no expiry: the bundle only changes with a new binary).
    bundles: Mutex<std::collections::HashSet<String>>,
}

/// How long a passed check is trusted.
pub const CHECK_TTL: Duration = Duration::from_secs(60);

impl Cluster {
    pub fn new(provider_id: Uuid, client: kube::Client, settings: ClusterSettings) -> Self {
        let logs = LogClients::http1(client.clone());
        Self::with_logs(provider_id, client, logs, settings)
    }

    pub fn with_logs(
        provider_id: Uuid,
        client: kube::Client,
        logs: LogClients,
        settings: ClusterSettings,
    ) -> Self {
        let hub = WatchHub::new(client.clone());
        Self {
            provider_id,
            logs,
            client,
            settings,
            version: tokio::sync::OnceCell::new(),
            hub,
            checked: Mutex::new(HashMap::new()),
            bundles: Mutex::default(),
        }
    }

    /// Whether `key` passed within [`CHECK_TTL`]. A Task or Secret deleted
    /// in that window still ends the build with Tekton's own clear reason.
    pub fn recently_checked(&self, key: &str) -> bool {
        let checked = self.checked.lock().unwrap();
        checked.get(key).is_some_and(|at| at.elapsed() < CHECK_TTL)
    }

    pub fn remember_check(&self, key: String) {
        let mut checked = self.checked.lock().unwrap();
        if checked.len() > 10_000 {
            checked.retain(|_, at| at.elapsed() < CHECK_TTL);
        }
        checked.insert(key, std::time::Instant::now());
    }

    /// Whether the Task bundle was ensured for `key` (see `bundle::ensure_bundle`).
    pub fn bundle_ensured(&self, key: &str) -> bool {
        self.bundles.lock().unwrap().contains(key)
    }

    pub fn remember_bundle(&self, key: String) {
        self.bundles.lock().unwrap().insert(key);
    }

    /// The Tekton API version to talk, discovered from the API groups once.
    pub async fn tekton_version(&self) -> Result<TektonVersion, TektonError> {
        self.version
            .get_or_try_init(|| async {
                let served = tekton_versions(&self.client)
                    .await
                    .map_err(|e| TektonError::kube("discovering the Tekton API", e))?;
                if let Some(pinned) = self.settings.tekton_version {
                    return if served.iter().any(|v| v == pinned.as_str()) {
                        Ok(pinned)
                    } else {
                        Err(TektonError::Build(format!(
                            "the provider pins tekton_api_version {} but the cluster serves tekton.dev {served:?}",
                            pinned.as_str()
                        )))
                    };
                }
                TektonVersion::choose(&served).ok_or_else(|| {
                    TektonError::Build(
                        "Tekton Pipelines is not installed on the cluster: the API group tekton.dev (v1 or v1beta1) is not served; install Tekton Pipelines first".into(),
                    )
                })
            })
            .await
            .copied()
    }
}

/// Clients cached per provider, rebuilt when the provider's config changes.
#[derive(Default)]
pub struct ClientCache {
    providers: Mutex<HashMap<Uuid, (i64, Arc<Cluster>)>>,
    global: Option<Arc<Cluster>>,
    /// Where tenant providers' clients may connect.
    policy: Arc<AddressPolicy>,
}

impl ClientCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tenant providers' clients connect under `policy` (default: strict).
    pub fn with_address_policy(mut self, policy: Arc<AddressPolicy>) -> Self {
        self.policy = policy;
        self
    }

    /// Add the global fallback cluster, used for builds without a provider.
    pub async fn with_global_kubeconfig(self, path: PathBuf) -> Result<Self, TektonError> {
        let settings = ClusterSettings::global(ClusterAuth::Kubeconfig {
            source: KubeconfigSource::Path(path),
            context: None,
        });
        let (client, logs) = settings.clients().await?;
        Ok(self.with_global(client, logs, settings))
    }

    /// Use the pod's own service account as the global cluster (in-cluster
    /// config), for dispatchers running inside the build cluster.
    pub fn with_global_in_cluster(self) -> Result<Self, TektonError> {
        let config = kube::Config::incluster().map_err(|e| {
            TektonError::Build(format!(
                "in-cluster Kubernetes configuration unavailable: {e}"
            ))
        })?;
        let metrics = KubeMetricsLayer::new(GLOBAL_PROVIDER);
        let client = kube::client::ClientBuilder::try_from(config.clone())
            .map(|builder| builder.with_layer(&metrics).build())
            .map_err(|e| {
                TektonError::Build(format!(
                    "creating the in-cluster client failed: {}",
                    describe_kube_error(&e)
                ))
            })?;
        let logs = LogClients::new(&config, client.clone(), None, metrics);
        // The settings only carry defaults here; the client above is what is used.
        let settings = ClusterSettings::global(ClusterAuth::Kubeconfig {
            source: KubeconfigSource::Path(PathBuf::from(
                "/var/run/secrets/kubernetes.io/serviceaccount",
            )),
            context: None,
        });
        Ok(self.with_global(client, logs, settings))
    }

    fn with_global(
        mut self,
        client: kube::Client,
        logs: LogClients,
        settings: ClusterSettings,
    ) -> Self {
        self.global = Some(Arc::new(Cluster::with_logs(
            Uuid::nil(),
            client,
            logs,
            settings,
        )));
        self
    }

    /// The cluster of a provider (or the global one when there is none).
    pub async fn cluster(
        &self,
        provider: Option<&ProviderConnection>,
    ) -> Result<Arc<Cluster>, TektonError> {
        let Some(provider) = provider else {
            return self.global.clone().ok_or_else(|| {
                TektonError::Build(
                    "the build has no Kubernetes provider and no global cluster is configured (IF_BUILD_TEKTON_KUBECONFIG)".into(),
                )
            });
        };
        if let Some((version, cluster)) = self.providers.lock().unwrap().get(&provider.provider_id)
            && *version == provider.config_version
        {
            return Ok(cluster.clone());
        }
        let settings = provider
            .settings()
            .map_err(|e| TektonError::Build(format!("provider {:?}: {e}", provider.name)))?
            .with_address_policy(self.policy.clone());
        let (client, logs) = settings.clients().await?;
        let cluster = Arc::new(Cluster::with_logs(
            provider.provider_id,
            client,
            logs,
            settings,
        ));
        let mut providers = self.providers.lock().unwrap();
        // Another build may have raced us to it; keep one client per version.
        match providers.get(&provider.provider_id) {
            Some((version, existing)) if *version == provider.config_version => {
                Ok(existing.clone())
            }
            _ => {
                providers.insert(
                    provider.provider_id,
                    (provider.config_version, cluster.clone()),
                );
                Ok(cluster)
            }
        }
    }
}

/// What a connection test found, for the API's test-connection endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ConnectionReport {
    /// The API server answered at all.
    pub reachable: bool,
    /// It accepted our credentials.
    pub authenticated: bool,
    pub server_version: Option<String>,
    /// `tekton.dev` versions served, e.g. `["v1", "v1beta1"]`.
    pub tekton_versions: Vec<String>,
    /// The configuration problem, or what failed as a category and a short
    /// cause (status code and Kubernetes reason, "connection refused", ...).
    pub error: Option<String>,
}

/// Check a provider's connection: configuration, reachability, credentials and
/// the Tekton API. A tenant's provider connects under `policy`. Never returns
/// secrets, a non-Kubernetes response body or a tool's output.
pub async fn test_connection(
    provider: &ProviderConnection,
    policy: Arc<AddressPolicy>,
) -> ConnectionReport {
    let mut report = ConnectionReport::default();
    let settings = match provider.settings() {
        Ok(s) => s.with_address_policy(policy),
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    };
    let client = match settings.client().await {
        Ok(c) => c,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    match tekton_versions(&client).await {
        Ok(versions) => {
            report.reachable = true;
            report.authenticated = true;
            if versions.is_empty() {
                report.error = Some(
                    "Tekton Pipelines is not installed: the API group tekton.dev is not served"
                        .into(),
                );
            }
            report.tekton_versions = versions;
        }
        Err(kube::Error::Api(status)) => {
            report.reachable = true;
            // A body that is not a Kubernetes Status says nothing about our credentials.
            report.authenticated = status.code != 401 && is_kubernetes_status(&status);
            report.error = Some(describe_kube_error(&kube::Error::Api(status)));
            return report;
        }
        Err(e) => {
            report.error = Some(describe_kube_error(&e));
            return report;
        }
    }
    if let Ok(info) = client.apiserver_version().await {
        report.server_version = Some(info.git_version);
    }
    report
}
