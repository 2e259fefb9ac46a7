//! A Kubernetes provider's config, typed: parsed once from the JSON object
//! (README "Provider config keys") by the API when it is written and by the
//! dispatcher when a build uses it, with the same rules both times.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value};

use super::quantity::Quantity;
use super::tenant::{check_context, check_tenant_kubernetes};
use super::{AUTH_METHODS, KUBERNETES_KEYS, ProviderOwner, check_known_keys, optional_string};
use crate::address::AddressPolicy;
use crate::image::ImageRef;
use crate::names::{is_dns_label, is_dns_subdomain};
use crate::secret::Secret;
use crate::task_bundle::{BUILDER_IMAGE_KEYS, BuilderImages, TASK_MODES, TaskMode};
use crate::validation::Violations;

/// How Image Factory authenticates to the cluster (`auth_method`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubernetesAuth {
    Token {
        endpoint: String,
        token: Secret,
    },
    ClientCert {
        endpoint: String,
        client_cert: Secret,
        client_key: Secret,
    },
    Kubeconfig {
        source: KubeconfigSource,
        /// The kubeconfig context to use (`context`); its current one when `None`.
        context: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeconfigSource {
    Inline(Secret),
    /// A file on the server: global providers only.
    Path(PathBuf),
}

/// How long finished PipelineRuns are kept on the cluster (`retention`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep at most this many finished runs per namespace.
    pub keep_last: Option<usize>,
    /// Delete finished runs older than this.
    pub ttl: Option<Duration>,
}

/// A pinned Tekton API version (`tekton_api_version`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TektonApiVersion {
    V1,
    V1beta1,
}

/// A Kubernetes provider's config. Secrets are [`Secret`]s: `Debug` never
/// shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesConfig {
    pub auth: KubernetesAuth,
    /// PEM CA bundle the API server's certificate must chain to.
    pub ca_cert: Option<String>,
    pub insecure_skip_tls_verify: bool,
    /// Service account the build's pods run as (`None`: `default`).
    pub service_account: Option<String>,
    /// StorageClass of the source workspace claim (`None`: the cluster's default).
    pub storage_class: Option<String>,
    /// Size of the source workspace claim (`None`: 1Gi).
    pub workspace_size: Option<Quantity>,
    pub tekton_api_version: Option<TektonApiVersion>,
    pub retention: Option<Retention>,
    /// The namespace a tenant provider's builds run in (`None`: the
    /// tenant's `image-factory-<id>` namespace). Refused on global providers.
    pub namespace: Option<String>,
    /// `tasks` and `tasks_namespace` combined.
    pub tasks: TaskMode,
    pub repair_drift: bool,
    pub builder_images: BuilderImages,
    /// Whether build steps verify the image registry's TLS certificate
    /// (`registry_tls_verify`); only an explicit `false` turns it off.
    pub registry_tls_verify: bool,
}

impl KubernetesConfig {
    /// Parse a Kubernetes provider's config object (secrets in plain text).
    /// Every problem is returned, each naming its field as `config.<key>`.
    /// `policy` checks a tenant's endpoints at the API; at use it is `None`,
    /// since the client checks every address it connects to.
    pub fn parse(
        config: &Value,
        owner: ProviderOwner,
        policy: Option<&AddressPolicy>,
    ) -> Result<Self, Violations> {
        let mut v = Violations::new();
        let Some(map) = config.as_object() else {
            v.add("config", "must be a JSON object");
            return Err(v);
        };
        check_known_keys(map, KUBERNETES_KEYS, "kubernetes", &mut v);
        let parsed = parse_fields(map, owner, &mut v);
        if owner == ProviderOwner::Tenant {
            check_tenant_kubernetes(map, policy, &mut v);
        }
        match parsed {
            Some(config) if v.is_empty() => Ok(config),
            _ => Err(v),
        }
    }

    /// The namespace the shared Tasks live in, for `tasks: shared`.
    pub fn tasks_namespace(&self) -> Option<&str> {
        match &self.tasks {
            TaskMode::Shared { namespace } => Some(namespace),
            _ => None,
        }
    }
}

/// The credential fields, read once as strings (a non-string is reported
/// where it is read).
struct Credentials<'a> {
    token: Option<&'a str>,
    client_cert: Option<&'a str>,
    client_key: Option<&'a str>,
    kubeconfig: Option<&'a str>,
    kubeconfig_path: Option<&'a str>,
}

/// The object names and switches of the cluster side.
struct ClusterNames {
    insecure_skip_tls_verify: bool,
    namespace: Option<String>,
    storage_class: Option<String>,
    service_account: Option<String>,
}

// The steps run in this order so the violations keep the order the API has
// always listed them in; newer keys come after `retention`.
fn parse_fields(
    map: &Map<String, Value>,
    owner: ProviderOwner,
    v: &mut Violations,
) -> Option<KubernetesConfig> {
    let auth_method = optional_string(map, "auth_method", v);
    let endpoint = check_endpoint(map, v);
    let creds = Credentials {
        token: optional_string(map, "token", v),
        client_cert: optional_string(map, "client_cert", v),
        client_key: optional_string(map, "client_key", v),
        kubeconfig: optional_string(map, "kubeconfig", v),
        kubeconfig_path: optional_string(map, "kubeconfig_path", v),
    };
    let ca_cert = check_pems(map, &creds, v);
    let names = cluster_names(map, owner, v);
    let retention = parse_retention(map.get("retention"), v);
    let workspace_size = optional_string(map, "workspace_size", v)
        .and_then(|s| v.check("config.workspace_size", Quantity::parse(s)));
    let tekton_api_version = tekton_api_version(map, v);
    let tasks = task_mode(map, v);
    let repair_drift = optional_bool(map, "repair_drift", v).unwrap_or(false);
    let builder_images = builder_images(map.get("builder_images"), v);
    let registry_tls_verify = optional_bool(map, "registry_tls_verify", v).unwrap_or(true);
    let context = optional_string(map, "context", v);
    if context.is_some_and(|c| c.trim().is_empty()) {
        v.add("config.context", "must not be empty");
    }
    let auth = match auth_method {
        Some(method) => auth(method, endpoint, &creds, context, v),
        None if !map.contains_key("auth_method") => {
            v.add(
                "config.auth_method",
                format!("is required; one of: {}", AUTH_METHODS.join(", ")),
            );
            None
        }
        None => None,
    };
    Some(KubernetesConfig {
        auth: auth?,
        ca_cert,
        insecure_skip_tls_verify: names.insecure_skip_tls_verify,
        service_account: names.service_account,
        storage_class: names.storage_class,
        workspace_size,
        tekton_api_version,
        retention,
        namespace: names.namespace,
        tasks,
        repair_drift,
        builder_images,
        registry_tls_verify,
    })
}

/// What the endpoint check found: whether one was given at all, and the
/// usable URL.
struct Endpoint {
    given: bool,
    url: Option<String>,
}

/// `endpoint` or its alias `apiServer` (not both), an http(s) URL.
fn check_endpoint(map: &Map<String, Value>, v: &mut Violations) -> Endpoint {
    let endpoint = match (map.get("endpoint"), map.get("apiServer")) {
        (Some(_), Some(_)) => {
            v.add(
                "config.apiServer",
                "give either endpoint or apiServer, not both",
            );
            None
        }
        (Some(_), None) => optional_string(map, "endpoint", v).map(|e| ("config.endpoint", e)),
        (None, Some(_)) => optional_string(map, "apiServer", v).map(|e| ("config.apiServer", e)),
        (None, None) => None,
    };
    let Some((field, url)) = endpoint else {
        return Endpoint {
            given: false,
            url: None,
        };
    };
    let usable = url.starts_with("https://") || url.starts_with("http://");
    if !usable {
        v.add(
            field,
            "must be an https:// (or http://) URL of the Kubernetes API server",
        );
    }
    Endpoint {
        given: true,
        url: usable.then(|| url.to_owned()),
    }
}

/// The PEM fields; the CA bundle when it is one.
fn check_pems(map: &Map<String, Value>, creds: &Credentials, v: &mut Violations) -> Option<String> {
    let ca = optional_string(map, "ca_cert", v)
        .filter(|ca| check_pem(ca, "CERTIFICATE", "config.ca_cert", v));
    if let Some(cert) = creds.client_cert {
        check_pem(cert, "CERTIFICATE", "config.client_cert", v);
    }
    if let Some(key) = creds.client_key {
        check_pem(key, "PRIVATE KEY", "config.client_key", v);
    }
    ca.map(str::to_owned)
}

fn check_pem(text: &str, kind: &str, field: &str, v: &mut Violations) -> bool {
    let begins = text.contains("-----BEGIN ") && text.contains(kind);
    let ok = begins && text.contains("-----END ");
    if !ok {
        v.add(field, format!("must be PEM text containing a {kind} block"));
    }
    ok
}

/// TLS verification switch and the Kubernetes object names builds use.
fn cluster_names(
    map: &Map<String, Value>,
    owner: ProviderOwner,
    v: &mut Violations,
) -> ClusterNames {
    let insecure_skip_tls_verify = match map.get("insecure_skip_tls_verify") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            v.add("config.insecure_skip_tls_verify", "must be true or false");
            false
        }
    };
    let namespace = optional_string(map, "namespace", v).filter(|ns| {
        let why = if !is_dns_label(ns) {
            "must be a Kubernetes namespace name (DNS label)"
        } else if owner == ProviderOwner::Global {
            "a global provider's builds run in each tenant's own namespace \
             (image-factory-<tenant id>); one namespace would put tenants together. \
             Set namespace on a tenant's provider instead"
        } else {
            return true;
        };
        v.add("config.namespace", why);
        false
    });
    let mut name = |field: &str| {
        optional_string(map, field, v).filter(|name| {
            let ok = is_dns_subdomain(name);
            if !ok {
                v.add(
                    format!("config.{field}"),
                    "must be a Kubernetes object name (DNS subdomain)",
                );
            }
            ok
        })
    };
    let storage_class = name("storage_class").map(str::to_owned);
    let service_account = name("service_account").map(str::to_owned);
    ClusterNames {
        insecure_skip_tls_verify,
        namespace: namespace.map(str::to_owned),
        storage_class,
        service_account,
    }
}

/// `retention`: an object of `keep_last` (<= 10000) and `ttl_seconds` (> 0).
fn parse_retention(retention: Option<&Value>, v: &mut Violations) -> Option<Retention> {
    let r = match retention {
        None | Some(Value::Null) => return None,
        Some(Value::Object(r)) => r,
        Some(_) => {
            v.add(
                "config.retention",
                "must be an object {keep_last, ttl_seconds}",
            );
            return None;
        }
    };
    let mut parsed = Retention::default();
    for (key, value) in r {
        let ok = match key.as_str() {
            "keep_last" => value
                .as_u64()
                .filter(|n| *n <= 10_000)
                .map(|n| parsed.keep_last = Some(n as usize)),
            "ttl_seconds" => value
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| parsed.ttl = Some(Duration::from_secs(n))),
            _ => {
                v.add(
                    format!("config.retention.{key}"),
                    "unknown field; expected keep_last or ttl_seconds",
                );
                continue;
            }
        };
        if ok.is_none() {
            v.add(
                format!("config.retention.{key}"),
                "must be a non-negative integer (ttl_seconds > 0, keep_last <= 10000)",
            );
        }
    }
    Some(parsed)
}

fn tekton_api_version(map: &Map<String, Value>, v: &mut Violations) -> Option<TektonApiVersion> {
    match optional_string(map, "tekton_api_version", v)? {
        "v1" => Some(TektonApiVersion::V1),
        "v1beta1" => Some(TektonApiVersion::V1beta1),
        _ => {
            v.add("config.tekton_api_version", "must be v1 or v1beta1");
            None
        }
    }
}

/// `tasks` and `tasks_namespace` combine: `tasks_namespace` alone means
/// `shared`; `shared` needs `tasks_namespace`; `managed` and `unmanaged`
/// refuse it (it would be ignored).
fn task_mode(map: &Map<String, Value>, v: &mut Violations) -> TaskMode {
    let tasks = optional_string(map, "tasks", v);
    let namespace = optional_string(map, "tasks_namespace", v);
    if let Some(ns) = namespace
        && !is_dns_label(ns)
    {
        v.add(
            "config.tasks_namespace",
            "must be a Kubernetes namespace name (DNS label)",
        );
    }
    match (tasks, namespace) {
        (None | Some("managed"), None) => TaskMode::Managed,
        (Some("unmanaged"), None) => TaskMode::Unmanaged,
        (None | Some("shared"), Some(ns)) => TaskMode::Shared {
            namespace: ns.to_owned(),
        },
        (Some("shared"), None) => {
            v.add(
                "config.tasks_namespace",
                "is required with tasks shared: the namespace the shared Tasks are installed in",
            );
            TaskMode::Managed
        }
        (Some(mode @ ("managed" | "unmanaged")), Some(_)) => {
            v.add(
                "config.tasks_namespace",
                format!("only applies to tasks shared; tasks is {mode}"),
            );
            TaskMode::Managed
        }
        (Some(_), _) => {
            v.add(
                "config.tasks",
                format!("must be one of: {}", TASK_MODES.join(", ")),
            );
            TaskMode::Managed
        }
    }
}

/// `builder_images`: an object of image references keyed by Task.
fn builder_images(value: Option<&Value>, v: &mut Violations) -> BuilderImages {
    let mut images = BuilderImages::default();
    let keys = || {
        BUILDER_IMAGE_KEYS
            .iter()
            .map(|(k, _)| *k)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let map = match value {
        None | Some(Value::Null) => return images,
        Some(Value::Object(map)) => map,
        Some(_) => {
            v.add(
                "config.builder_images",
                format!(
                    "must be an object of image references keyed by Task ({})",
                    keys()
                ),
            );
            return images;
        }
    };
    for (key, image) in map {
        let field = format!("config.builder_images.{key}");
        if !BUILDER_IMAGE_KEYS.iter().any(|(k, _)| k == key) {
            v.add(field, format!("unknown Task; expected one of: {}", keys()));
            continue;
        }
        let Some(text) = image.as_str() else {
            v.add(field, "must be a string (an image reference)");
            continue;
        };
        if let Some(image) = v.check(&field, ImageRef::parse(text)) {
            images.set(key, image);
        }
    }
    images
}

fn optional_bool(map: &Map<String, Value>, key: &str, v: &mut Violations) -> Option<bool> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            v.add(format!("config.{key}"), "must be true or false");
            None
        }
    }
}

/// The auth method and what it needs beside it.
fn auth(
    method: &str,
    endpoint: Endpoint,
    creds: &Credentials,
    context: Option<&str>,
    v: &mut Violations,
) -> Option<KubernetesAuth> {
    let require = |value: Option<&str>, field: &str, v: &mut Violations| {
        let value = value.filter(|s| !s.is_empty());
        if value.is_none() {
            v.add(
                format!("config.{field}"),
                format!("is required with auth_method {method}"),
            );
        }
        value.map(Secret::new)
    };
    let need_endpoint = |v: &mut Violations| {
        if !endpoint.given {
            v.add(
                "config.endpoint",
                format!("is required with auth_method {method}"),
            );
        }
    };
    if method != "kubeconfig" && context.is_some() {
        v.add(
            "config.context",
            "only applies to auth_method kubeconfig: it picks one of the kubeconfig's contexts",
        );
    }
    match method {
        "token" => {
            need_endpoint(v);
            let token = require(creds.token, "token", v);
            Some(KubernetesAuth::Token {
                endpoint: endpoint.url?,
                token: token?,
            })
        }
        "client-cert" => {
            need_endpoint(v);
            let client_cert = require(creds.client_cert, "client_cert", v);
            let client_key = require(creds.client_key, "client_key", v);
            Some(KubernetesAuth::ClientCert {
                endpoint: endpoint.url?,
                client_cert: client_cert?,
                client_key: client_key?,
            })
        }
        "kubeconfig" => {
            let source = kubeconfig_source(creds, v)?;
            if let (KubeconfigSource::Inline(text), Some(context)) = (&source, context) {
                check_context(text.expose(), context, v);
            }
            Some(KubernetesAuth::Kubeconfig {
                source,
                context: context.map(str::to_owned),
            })
        }
        other => {
            v.add(
                "config.auth_method",
                format!(
                    "unknown auth_method {other:?}; expected one of: {}",
                    AUTH_METHODS.join(", ")
                ),
            );
            None
        }
    }
}

/// Exactly one of `kubeconfig` (non-empty) and `kubeconfig_path` (absolute).
fn kubeconfig_source(creds: &Credentials, v: &mut Violations) -> Option<KubeconfigSource> {
    match (creds.kubeconfig, creds.kubeconfig_path) {
        (None, None) => v.add(
            "config.kubeconfig",
            "auth_method kubeconfig needs kubeconfig or kubeconfig_path",
        ),
        (Some(_), Some(_)) => v.add(
            "config.kubeconfig_path",
            "give either kubeconfig or kubeconfig_path, not both",
        ),
        (Some(k), None) if k.trim().is_empty() => v.add("config.kubeconfig", "must not be empty"),
        (None, Some(p)) if !p.starts_with('/') => {
            v.add("config.kubeconfig_path", "must be an absolute path")
        }
        (Some(k), None) => return Some(KubeconfigSource::Inline(Secret::new(k))),
        (None, Some(p)) => return Some(KubeconfigSource::Path(PathBuf::from(p))),
    }
    None
}
