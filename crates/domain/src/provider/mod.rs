//! Infrastructure providers: where builds run, and the rules for their
//! connection `config` (DESIGN.md "Configuration").

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strum::{AsRefStr, Display, EnumString, IntoStaticStr, VariantArray, VariantNames};

use crate::address::AddressPolicy;
use crate::build::UnknownVariant;
use crate::validation::Violations;

mod kubernetes;
mod quantity;
mod tenant;
#[cfg(test)]
mod tests;

pub use kubernetes::{
    KubeconfigSource, KubernetesAuth, KubernetesConfig, Retention, TektonApiVersion,
};
pub use quantity::Quantity;
pub use tenant::{FORBIDDEN_CLUSTER_FIELDS, FORBIDDEN_USER_FIELDS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray, VariantNames)]
#[strum(serialize_all = "snake_case")]
#[strum(parse_err_ty = UnknownVariant, parse_err_fn = UnknownVariant::of::<Self>)]
pub enum ProviderType {
    Kubernetes,
    Local,
}

impl ProviderType {
    pub const ALL: &'static [Self] = <Self as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
#[derive(Display, EnumString, AsRefStr, IntoStaticStr, VariantArray, VariantNames)]
#[strum(serialize_all = "snake_case")]
#[strum(parse_err_ty = UnknownVariant, parse_err_fn = UnknownVariant::of::<Self>)]
pub enum ProviderStatus {
    Active,
    Disabled,
}

impl ProviderStatus {
    pub const ALL: &'static [Self] = <Self as VariantArray>::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Config fields that hold credentials: sealed at rest, redacted in responses.
pub const SECRET_FIELDS: &[&str] = &["token", "client_key", "kubeconfig"];

/// The accepted `auth_method` values.
pub const AUTH_METHODS: &[&str] = &["token", "client-cert", "kubeconfig"];

/// Every key a Kubernetes provider's config accepts (README "Provider config
/// keys" lists the same set; `tests/provider_keys.rs` holds them equal).
pub const KUBERNETES_KEYS: &[&str] = &[
    "auth_method",
    "endpoint",
    "apiServer",
    "token",
    "ca_cert",
    "client_cert",
    "client_key",
    "kubeconfig",
    "kubeconfig_path",
    "context",
    "insecure_skip_tls_verify",
    "namespace",
    "storage_class",
    "service_account",
    "workspace_size",
    "tekton_api_version",
    "retention",
    "tasks",
    "tasks_namespace",
    "repair_drift",
    "builder_images",
    "registry_tls_verify",
];

/// A local provider takes no config keys: it stands for the server's own
/// host, whose settings are the server's (`IF_LOCAL_*`).
pub const LOCAL_KEYS: &[&str] = &[];

/// Who owns a provider's config, which decides what it may reference. A
/// tenant's config is data only: it may not name files on the server, run
/// programs (kubeconfig `exec`) or point at addresses the [`AddressPolicy`]
/// refuses. The platform admin's global providers may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderOwner {
    Global,
    Tenant,
}

/// A provider's config, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    // Boxed: the Kubernetes config is large, Local carries nothing.
    Kubernetes(Box<KubernetesConfig>),
    /// Nothing to configure (see [`LOCAL_KEYS`]).
    Local,
}

impl ProviderConfig {
    /// Parse a provider's config object as a user sent it (secrets in plain
    /// text): the typed config, or every problem naming its field as
    /// `config.<key>`. `policy` checks tenant providers' endpoints.
    pub fn parse(
        provider_type: ProviderType,
        config: &Value,
        owner: ProviderOwner,
        policy: Option<&AddressPolicy>,
    ) -> Result<Self, Violations> {
        match provider_type {
            ProviderType::Kubernetes => KubernetesConfig::parse(config, owner, policy)
                .map(|c| Self::Kubernetes(Box::new(c))),
            ProviderType::Local => parse_local(config).map(|()| Self::Local),
        }
    }
}

/// Validate a provider's config as the API receives it: [`ProviderConfig::parse`]
/// under the address policy.
pub fn validate_provider_config(
    provider_type: ProviderType,
    config: &Value,
    owner: ProviderOwner,
    policy: &AddressPolicy,
) -> Result<(), Violations> {
    ProviderConfig::parse(provider_type, config, owner, Some(policy)).map(|_| ())
}

fn parse_local(config: &Value) -> Result<(), Violations> {
    let mut v = Violations::new();
    match config.as_object() {
        None => v.add("config", "must be a JSON object"),
        Some(map) if map.contains_key("work_dir") => v.add(
            "config.work_dir",
            "is not supported: the local executor's work directory is the server's \
             setting (IF_LOCAL_WORKDIR); a provider cannot choose a path on the server",
        ),
        Some(map) => check_known_keys(map, LOCAL_KEYS, "local", &mut v),
    }
    if v.is_empty() { Ok(()) } else { Err(v) }
}

/// One violation per key not in `allowed`.
fn check_known_keys(map: &Map<String, Value>, allowed: &[&str], kind: &str, v: &mut Violations) {
    for key in map.keys() {
        if allowed.contains(&key.as_str()) {
            continue;
        }
        let expected = if allowed.is_empty() {
            "it takes no config keys".to_owned()
        } else {
            format!("expected one of: {}", allowed.join(", "))
        };
        v.add(
            format!("config.{key}"),
            format!("unknown field for a {kind} provider; {expected}"),
        );
    }
}

/// Whether a *stored* Kubernetes config (secret fields may be sealed
/// envelopes) has what its auth method needs: the test for "usable" when a
/// build is given the default global provider.
pub fn is_usable_kubernetes_config(config: &Value) -> bool {
    let Some(map) = config.as_object() else {
        return false;
    };
    let present = |k: &str| {
        map.get(k)
            .is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
    };
    let endpoint = present("endpoint") || present("apiServer");
    match map.get("auth_method").and_then(Value::as_str) {
        Some("token") => endpoint && present("token"),
        Some("client-cert") => endpoint && present("client_cert") && present("client_key"),
        Some("kubeconfig") => present("kubeconfig") || present("kubeconfig_path"),
        _ => false,
    }
}

fn optional_string<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    v: &mut Violations,
) -> Option<&'a str> {
    match map.get(key) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            v.add(format!("config.{key}"), "must be a string");
            None
        }
    }
}

impl From<UnknownVariant> for Violations {
    fn from(err: UnknownVariant) -> Self {
        let mut v = Violations::new();
        v.add(err.kind, err.to_string());
        v
    }
}
