//! Infrastructure providers: where builds run, and the rules for their
//! connection `config` (DESIGN.md "Configuration").

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use strum::{AsRefStr, Display, EnumString, IntoStaticStr, VariantArray, VariantNames};

use crate::address::AddressPolicy;
use crate::build::UnknownVariant;
use crate::names::{is_dns_label, is_dns_subdomain};
use crate::validation::Violations;

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

const KUBERNETES_FIELDS: &[&str] = &[
    "auth_method",
    "endpoint",
    "apiServer",
    "token",
    "ca_cert",
    "client_cert",
    "client_key",
    "kubeconfig",
    "kubeconfig_path",
    "insecure_skip_tls_verify",
    "namespace",
    "storage_class",
    "service_account",
    "retention",
];
const LOCAL_FIELDS: &[&str] = &["work_dir"];

/// Who owns a provider's config, which decides what it may reference. A
/// tenant's config is data only: it may not name files on the server, run
/// programs (kubeconfig `exec`) or point at addresses the [`AddressPolicy`]
/// refuses. The platform admin's global providers may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProviderOwner {
    Global,
    Tenant,
}

/// Validate a provider's config object as a user sent it (secrets in plain
/// text). Every problem names its field as `config.<key>`. `policy` applies
/// to tenant providers' endpoints only.
pub fn validate_provider_config(
    provider_type: ProviderType,
    config: &Value,
    owner: ProviderOwner,
    policy: &AddressPolicy,
) -> Result<(), Violations> {
    let mut v = Violations::new();
    let Some(map) = config.as_object() else {
        v.add("config", "must be a JSON object");
        return Err(v);
    };
    let allowed = match provider_type {
        ProviderType::Kubernetes => KUBERNETES_FIELDS,
        ProviderType::Local => LOCAL_FIELDS,
    };
    for key in map.keys() {
        if !allowed.contains(&key.as_str()) {
            v.add(
                format!("config.{key}"),
                format!(
                    "unknown field for a {provider_type} provider; expected one of: {}",
                    allowed.join(", ")
                ),
            );
        }
    }
    match provider_type {
        ProviderType::Kubernetes => {
            validate_kubernetes(map, &mut v);
            if owner == ProviderOwner::Tenant {
                check_tenant_kubernetes(map, policy, &mut v);
            }
        }
        ProviderType::Local => {
            if let Some(dir) = optional_string(map, "work_dir", &mut v)
                && !dir.starts_with('/')
            {
                v.add("config.work_dir", "must be an absolute path");
            }
        }
    }
    if v.is_empty() { Ok(()) } else { Err(v) }
}

/// The credential fields of a Kubernetes config, read once as strings (a
/// non-string is reported where it is read).
struct Credentials<'a> {
    token: Option<&'a str>,
    client_cert: Option<&'a str>,
    client_key: Option<&'a str>,
    kubeconfig: Option<&'a str>,
    kubeconfig_path: Option<&'a str>,
}

// The steps run in this order so the violations keep their order.
fn validate_kubernetes(map: &Map<String, Value>, v: &mut Violations) {
    let auth = optional_string(map, "auth_method", v);
    let has_endpoint = check_endpoint(map, v);
    let creds = Credentials {
        token: optional_string(map, "token", v),
        client_cert: optional_string(map, "client_cert", v),
        client_key: optional_string(map, "client_key", v),
        kubeconfig: optional_string(map, "kubeconfig", v),
        kubeconfig_path: optional_string(map, "kubeconfig_path", v),
    };
    check_pems(map, &creds, v);
    check_cluster_settings(map, v);
    check_retention(map.get("retention"), v);
    match auth {
        Some(auth) => check_auth_needs(auth, has_endpoint, &creds, v),
        None if !map.contains_key("auth_method") => v.add(
            "config.auth_method",
            format!("is required; one of: {}", AUTH_METHODS.join(", ")),
        ),
        None => {}
    }
}

/// `endpoint` or its alias `apiServer` (not both), an http(s) URL. Whether a
/// usable one was given.
fn check_endpoint(map: &Map<String, Value>, v: &mut Violations) -> bool {
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
    if let Some((field, url)) = endpoint
        && !(url.starts_with("https://") || url.starts_with("http://"))
    {
        v.add(
            field,
            "must be an https:// (or http://) URL of the Kubernetes API server",
        );
    }
    endpoint.is_some()
}

fn check_pems(map: &Map<String, Value>, creds: &Credentials, v: &mut Violations) {
    if let Some(ca) = optional_string(map, "ca_cert", v) {
        check_pem(ca, "CERTIFICATE", "config.ca_cert", v);
    }
    if let Some(cert) = creds.client_cert {
        check_pem(cert, "CERTIFICATE", "config.client_cert", v);
    }
    if let Some(key) = creds.client_key {
        check_pem(key, "PRIVATE KEY", "config.client_key", v);
    }
}

/// TLS verification switch and the Kubernetes object names builds use.
fn check_cluster_settings(map: &Map<String, Value>, v: &mut Violations) {
    if let Some(Value::Bool(_)) | None = map.get("insecure_skip_tls_verify") {
    } else {
        v.add("config.insecure_skip_tls_verify", "must be true or false");
    }
    if let Some(ns) = optional_string(map, "namespace", v)
        && !is_dns_label(ns)
    {
        v.add(
            "config.namespace",
            "must be a Kubernetes namespace name (DNS label)",
        );
    }
    for field in ["storage_class", "service_account"] {
        if let Some(name) = optional_string(map, field, v)
            && !is_dns_subdomain(name)
        {
            v.add(
                format!("config.{field}"),
                "must be a Kubernetes object name (DNS subdomain)",
            );
        }
    }
}

/// `retention`: an object of `keep_last` (<= 10000) and `ttl_seconds` (> 0).
fn check_retention(retention: Option<&Value>, v: &mut Violations) {
    let r = match retention {
        None | Some(Value::Null) => return,
        Some(Value::Object(r)) => r,
        Some(_) => {
            v.add(
                "config.retention",
                "must be an object {keep_last, ttl_seconds}",
            );
            return;
        }
    };
    for (key, value) in r {
        let ok = match key.as_str() {
            "keep_last" => value.as_u64().is_some_and(|n| n <= 10_000),
            "ttl_seconds" => value.as_u64().is_some_and(|n| n > 0),
            _ => {
                v.add(
                    format!("config.retention.{key}"),
                    "unknown field; expected keep_last or ttl_seconds",
                );
                continue;
            }
        };
        if !ok {
            v.add(
                format!("config.retention.{key}"),
                "must be a non-negative integer (ttl_seconds > 0, keep_last <= 10000)",
            );
        }
    }
}

/// What each `auth_method` needs beside it.
fn check_auth_needs(auth: &str, has_endpoint: bool, creds: &Credentials, v: &mut Violations) {
    let require = |present: bool, field: &str, v: &mut Violations| {
        if !present {
            v.add(
                format!("config.{field}"),
                format!("is required with auth_method {auth}"),
            );
        }
    };
    match auth {
        "token" => {
            require(has_endpoint, "endpoint", v);
            require(creds.token.is_some_and(|t| !t.is_empty()), "token", v);
        }
        "client-cert" => {
            require(has_endpoint, "endpoint", v);
            require(creds.client_cert.is_some(), "client_cert", v);
            require(creds.client_key.is_some(), "client_key", v);
        }
        "kubeconfig" => check_kubeconfig_source(creds, v),
        other => v.add(
            "config.auth_method",
            format!(
                "unknown auth_method {other:?}; expected one of: {}",
                AUTH_METHODS.join(", ")
            ),
        ),
    }
}

/// Exactly one of `kubeconfig` (non-empty) and `kubeconfig_path` (absolute).
fn check_kubeconfig_source(creds: &Credentials, v: &mut Violations) {
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
        _ => {}
    }
}

/// What a tenant's Kubernetes config may not do: reference server files, run
/// programs, use a proxy, or point at an address the policy refuses.
fn check_tenant_kubernetes(map: &Map<String, Value>, policy: &AddressPolicy, v: &mut Violations) {
    for field in ["endpoint", "apiServer"] {
        if let Some(Value::String(url)) = map.get(field)
            && (url.starts_with("https://") || url.starts_with("http://"))
            && let Err(why) = policy.check_url(url)
        {
            v.add(format!("config.{field}"), why);
        }
    }
    if map.get("kubeconfig_path").is_some_and(|p| !p.is_null()) {
        v.add(
            "config.kubeconfig_path",
            "a tenant's provider cannot reference files on the server; send the kubeconfig itself in `kubeconfig`",
        );
    }
    if let Some(Value::String(text)) = map.get("kubeconfig") {
        check_tenant_kubeconfig(text, policy, v);
    }
}

/// The parts of a kubeconfig document that matter here; everything else is
/// ignored, as kube's own parser (the same YAML library) ignores it.
#[derive(Deserialize)]
struct KubeconfigDoc {
    #[serde(default)]
    clusters: Option<Vec<NamedEntry>>,
    #[serde(default)]
    users: Option<Vec<NamedEntry>>,
}

#[derive(Deserialize)]
struct NamedEntry {
    #[serde(default)]
    cluster: Option<Map<String, Value>>,
    #[serde(default)]
    user: Option<Map<String, Value>>,
}

/// User fields that run a program or read a server file, and why each is refused.
pub const FORBIDDEN_USER_FIELDS: &[(&str, &str)] = &[
    (
        "exec",
        "runs a program on the server; not allowed in a tenant's provider (use token or client-certificate-data)",
    ),
    (
        "auth-provider",
        "runs an authentication plugin on the server; not allowed in a tenant's provider (use token or client-certificate-data)",
    ),
    (
        "tokenFile",
        "reads a file on the server; not allowed in a tenant's provider (use token)",
    ),
    (
        "token-file",
        "reads a file on the server; not allowed in a tenant's provider (use token)",
    ),
    (
        "client-certificate",
        "is a file on the server; not allowed in a tenant's provider (use client-certificate-data)",
    ),
    (
        "client-key",
        "is a file on the server; not allowed in a tenant's provider (use client-key-data)",
    ),
];

/// Cluster fields refused in a tenant's kubeconfig, and why.
pub const FORBIDDEN_CLUSTER_FIELDS: &[(&str, &str)] = &[
    (
        "certificate-authority",
        "is a file on the server; not allowed in a tenant's provider (use certificate-authority-data or config.ca_cert)",
    ),
    ("proxy-url", "a proxy is not allowed in a tenant's provider"),
];

fn check_tenant_kubeconfig(text: &str, policy: &AddressPolicy, v: &mut Violations) {
    // Never echo the parser's error: it quotes the document, which holds credentials.
    let Ok(docs) = serde_saphyr::from_multiple::<KubeconfigDoc>(text) else {
        v.add(
            "config.kubeconfig",
            "is not a valid kubeconfig document (YAML with clusters, users, contexts)",
        );
        return;
    };
    if docs.len() > 1 {
        v.add("config.kubeconfig", "must be a single YAML document");
        return;
    }
    let Some(doc) = docs.into_iter().next() else {
        return;
    };
    for (i, entry) in doc.users.iter().flatten().enumerate() {
        for (key, why) in FORBIDDEN_USER_FIELDS {
            if entry.user.as_ref().is_some_and(|u| u.contains_key(*key)) {
                v.add(format!("config.kubeconfig.users[{i}].user.{key}"), *why);
            }
        }
    }
    for (i, entry) in doc.clusters.iter().flatten().enumerate() {
        let Some(cluster) = &entry.cluster else {
            continue;
        };
        for (key, why) in FORBIDDEN_CLUSTER_FIELDS {
            if cluster.contains_key(*key) {
                v.add(
                    format!("config.kubeconfig.clusters[{i}].cluster.{key}"),
                    *why,
                );
            }
        }
        let field = format!("config.kubeconfig.clusters[{i}].cluster.server");
        match cluster.get("server") {
            None | Some(Value::Null) => {}
            Some(Value::String(url)) => {
                if let Err(why) = policy.check_url(url) {
                    v.add(field, why);
                }
            }
            Some(_) => v.add(field, "must be a string"),
        }
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

fn check_pem(text: &str, kind: &str, field: &str, v: &mut Violations) {
    let begins = text.contains("-----BEGIN ") && text.contains(kind);
    if !begins || !text.contains("-----END ") {
        v.add(field, format!("must be PEM text containing a {kind} block"));
    }
}

impl From<UnknownVariant> for Violations {
    fn from(err: UnknownVariant) -> Self {
        let mut v = Violations::new();
        v.add(err.kind, err.to_string());
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn fields(config: Value) -> Vec<String> {
        fields_as(ProviderOwner::Global, config)
    }

    fn fields_as(owner: ProviderOwner, config: Value) -> Vec<String> {
        validate_provider_config(
            ProviderType::Kubernetes,
            &config,
            owner,
            &AddressPolicy::new(false),
        )
        .err()
        .map(|v| v.into_vec().into_iter().map(|e| e.field).collect())
        .unwrap_or_default()
    }

    fn tenant_kubeconfig(user: &str, cluster: &str) -> Value {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n{cluster}\nusers:\n- name: u\n  user:\n{user}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        );
        json!({"auth_method": "kubeconfig", "kubeconfig": text})
    }

    #[test]
    fn tenant_kubeconfigs_are_data_only() {
        let server = "    server: https://k8s.example.com:6443";
        let tenant = |user: &str, cluster: &str| {
            fields_as(ProviderOwner::Tenant, tenant_kubeconfig(user, cluster))
        };
        assert!(tenant("    token: abc", server).is_empty());
        assert!(
            tenant(
                "    client-certificate-data: eA==\n    client-key-data: eA==",
                &format!("{server}\n    certificate-authority-data: eA==")
            )
            .is_empty()
        );
        assert_eq!(
            tenant(
                "    exec:\n      command: /bin/sh\n      args: [-c, id]\n      apiVersion: client.authentication.k8s.io/v1",
                server
            ),
            ["config.kubeconfig.users[0].user.exec"]
        );
        assert_eq!(
            tenant("    auth-provider: {name: gcp}", server),
            ["config.kubeconfig.users[0].user.auth-provider"]
        );
        assert_eq!(
            tenant("    tokenFile: /etc/passwd", server),
            ["config.kubeconfig.users[0].user.tokenFile"]
        );
        assert_eq!(
            tenant(
                "    client-certificate: /etc/c\n    client-key: /etc/k",
                server
            ),
            [
                "config.kubeconfig.users[0].user.client-certificate",
                "config.kubeconfig.users[0].user.client-key"
            ]
        );
        assert_eq!(
            tenant(
                "    token: t",
                &format!(
                    "{server}\n    certificate-authority: /etc/ca\n    proxy-url: http://p:3128"
                )
            ),
            [
                "config.kubeconfig.clusters[0].cluster.certificate-authority",
                "config.kubeconfig.clusters[0].cluster.proxy-url"
            ]
        );
        assert_eq!(
            tenant("    token: t", "    server: https://169.254.169.254"),
            ["config.kubeconfig.clusters[0].cluster.server"]
        );
        // The platform admin's providers may use all of it.
        let exec = tenant_kubeconfig(
            "    exec: {command: /bin/true}",
            "    server: https://127.0.0.1",
        );
        assert!(fields(exec).is_empty());
    }

    #[test]
    fn tenant_kubeconfig_shape_and_paths() {
        let t = |c: Value| fields_as(ProviderOwner::Tenant, c);
        assert_eq!(
            t(json!({"auth_method": "kubeconfig", "kubeconfig_path": "/etc/passwd"})),
            ["config.kubeconfig_path"]
        );
        assert_eq!(
            t(json!({"auth_method": "kubeconfig", "kubeconfig": "a: [unclosed"})),
            ["config.kubeconfig"]
        );
        assert_eq!(
            t(
                json!({"auth_method": "kubeconfig", "kubeconfig": "users: []\n---\nusers:\n- name: u\n  user: {exec: {command: x}}\n"})
            ),
            ["config.kubeconfig"]
        );
        let err = validate_provider_config(
            ProviderType::Kubernetes,
            &json!({"auth_method": "kubeconfig", "kubeconfig": "root:x:0:0:root:/root:/bin/bash\n- ["}),
            ProviderOwner::Tenant,
            &AddressPolicy::new(false),
        )
        .unwrap_err();
        assert!(!format!("{err:?}").contains("root:x"), "{err:?}");
    }

    #[test]
    fn tenant_endpoints_follow_the_address_policy() {
        let t = |e: &str| {
            fields_as(
                ProviderOwner::Tenant,
                json!({"auth_method": "token", "endpoint": e, "token": "t"}),
            )
        };
        assert_eq!(t("https://127.0.0.1:6443"), ["config.endpoint"]);
        assert_eq!(t("http://169.254.169.254"), ["config.endpoint"]);
        assert_eq!(t("https://localhost"), ["config.endpoint"]);
        assert!(t("https://k8s.example.com").is_empty());
        assert!(
            fields(json!({"auth_method": "token", "endpoint": "https://127.0.0.1", "token": "t"}))
                .is_empty()
        );
        let allowed = validate_provider_config(
            ProviderType::Kubernetes,
            &json!({"auth_method": "token", "apiServer": "https://127.0.0.1:6443", "token": "t"}),
            ProviderOwner::Tenant,
            &AddressPolicy::new(true),
        );
        assert!(allowed.is_ok());
    }

    #[test]
    fn token_auth() {
        assert!(
            fields(json!({"auth_method": "token", "endpoint": "https://k:6443", "token": "t"}))
                .is_empty()
        );
        assert!(
            fields(
                json!({"auth_method": "token", "apiServer": "https://k:6443", "token": "t",
            "namespace": "builds", "retention": {"keep_last": 5, "ttl_seconds": 3600}})
            )
            .is_empty()
        );
        assert_eq!(
            fields(json!({"auth_method": "token", "endpoint": "https://k"})),
            ["config.token"]
        );
        assert_eq!(
            fields(json!({"auth_method": "token", "endpoint": "k:6443", "token": "t"})),
            ["config.endpoint"]
        );
    }

    #[test]
    fn client_cert_and_kubeconfig() {
        let cert = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
        let key = "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n";
        assert!(fields(json!({"auth_method": "client-cert", "endpoint": "https://k", "client_cert": cert, "client_key": key})).is_empty());
        assert_eq!(
            fields(
                json!({"auth_method": "client-cert", "endpoint": "https://k", "client_cert": "nope"})
            ),
            ["config.client_cert", "config.client_key"]
        );
        assert!(
            fields(json!({"auth_method": "kubeconfig", "kubeconfig_path": "/etc/kube/config"}))
                .is_empty()
        );
        assert_eq!(
            fields(json!({"auth_method": "kubeconfig"})),
            ["config.kubeconfig"]
        );
    }

    #[test]
    fn unknown_fields_and_methods() {
        assert_eq!(
            fields(json!({"auth_method": "password", "endpoint": "https://k"})),
            ["config.auth_method"]
        );
        assert_eq!(
            fields(json!({"endpoint": "https://k"})),
            ["config.auth_method"]
        );
        assert_eq!(
            fields(
                json!({"auth_method": "token", "endpoint": "https://k", "token": "t", "tokn": "x"})
            ),
            ["config.tokn"]
        );
        assert_eq!(fields(json!("text")), ["config"]);
        let local = |c: Value| {
            validate_provider_config(
                ProviderType::Local,
                &c,
                ProviderOwner::Tenant,
                &AddressPolicy::default(),
            )
        };
        assert!(local(json!({})).is_ok());
        assert!(local(json!({"work_dir": "rel"})).is_err());
    }

    #[test]
    fn usable_understands_sealed_fields() {
        let sealed = json!({"auth_method": "token", "endpoint": "https://k", "token": {"$encrypted": "abc"}});
        assert!(is_usable_kubernetes_config(&sealed));
        assert!(!is_usable_kubernetes_config(
            &json!({"auth_method": "token", "endpoint": "https://k"})
        ));
        assert!(!is_usable_kubernetes_config(&json!({})));
    }

    proptest! {
        #[test]
        fn valid_token_configs_are_usable(host in "[a-z]{1,10}", port in 1u16.., token in "[A-Za-z0-9._-]{1,40}") {
            let config = json!({"auth_method": "token", "endpoint": format!("https://{host}:{port}"), "token": token});
            prop_assert!(validate_provider_config(ProviderType::Kubernetes, &config, ProviderOwner::Tenant, &AddressPolicy::default()).is_ok());
            prop_assert!(is_usable_kubernetes_config(&config));
        }
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;
    use serde_json::json;

    /// Every Kubernetes check reports, in the order the API has always
    /// listed them (clients and the bad-input tests read them in order).
    #[test]
    fn kubernetes_violations_keep_their_order() {
        let config = json!({
            "auth_method": "token",
            "endpoint": "ftp://x",
            "token": 7,
            "client_cert": "nope",
            "client_key": "nope",
            "kubeconfig": 1,
            "kubeconfig_path": 2,
            "ca_cert": "nope",
            "insecure_skip_tls_verify": "yes",
            "namespace": "Not_A_Label",
            "storage_class": "Bad Name",
            "service_account": "Bad Name",
            "retention": {"keep_last": 20000, "other": 1},
        });
        let fields: Vec<String> = validate_provider_config(
            ProviderType::Kubernetes,
            &config,
            ProviderOwner::Global,
            &AddressPolicy::new(false),
        )
        .unwrap_err()
        .into_vec()
        .into_iter()
        .map(|e| e.field)
        .collect();
        assert_eq!(
            fields,
            [
                "config.endpoint",
                "config.token",
                "config.kubeconfig",
                "config.kubeconfig_path",
                "config.ca_cert",
                "config.client_cert",
                "config.client_key",
                "config.insecure_skip_tls_verify",
                "config.namespace",
                "config.storage_class",
                "config.service_account",
                "config.retention.keep_last",
                "config.retention.other",
                "config.token",
            ]
        );
    }
}
