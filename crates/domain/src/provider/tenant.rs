//! What a tenant's Kubernetes config may not do (DESIGN.md "Configuration"):
//! its config is data only, so it may not name files on the server, run
//! programs (kubeconfig `exec`), use a proxy, or point at an address the
//! [`AddressPolicy`] refuses. Also the inline kubeconfig's context names.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::address::AddressPolicy;
use crate::validation::Violations;

/// `policy` is `None` when a stored row is re-read at use: the client then
/// checks every address it actually connects to, which is stricter than a
/// look at the URL.
pub(super) fn check_tenant_kubernetes(
    map: &Map<String, Value>,
    policy: Option<&AddressPolicy>,
    v: &mut Violations,
) {
    if let Some(policy) = policy {
        for field in ["endpoint", "apiServer"] {
            if let Some(Value::String(url)) = map.get(field)
                && (url.starts_with("https://") || url.starts_with("http://"))
                && let Err(why) = policy.check_url(url)
            {
                v.add(format!("config.{field}"), why);
            }
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
    #[serde(default)]
    contexts: Option<Vec<NamedEntry>>,
}

#[derive(Deserialize)]
struct NamedEntry {
    #[serde(default)]
    name: Option<String>,
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

/// The single document of an inline kubeconfig, or the violation. Never
/// echoes the parser's error: it quotes the document, which holds credentials.
fn parse_doc(text: &str, v: &mut Violations) -> Option<KubeconfigDoc> {
    let Ok(docs) = serde_saphyr::from_multiple::<KubeconfigDoc>(text) else {
        v.add(
            "config.kubeconfig",
            "is not a valid kubeconfig document (YAML with clusters, users, contexts)",
        );
        return None;
    };
    if docs.len() > 1 {
        v.add("config.kubeconfig", "must be a single YAML document");
        return None;
    }
    docs.into_iter().next()
}

fn check_tenant_kubeconfig(text: &str, policy: Option<&AddressPolicy>, v: &mut Violations) {
    let Some(doc) = parse_doc(text, v) else {
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
                if let Some(Err(why)) = policy.map(|p| p.check_url(url)) {
                    v.add(field, why);
                }
            }
            Some(_) => v.add(field, "must be a string"),
        }
    }
}

/// `context` must name a context of the inline kubeconfig (a file's is
/// checked when it is read). A document that does not parse is reported by
/// the tenant checks or, for a global provider, when the client is built.
pub(super) fn check_context(kubeconfig: &str, context: &str, v: &mut Violations) {
    let Ok(docs) = serde_saphyr::from_multiple::<KubeconfigDoc>(kubeconfig) else {
        return;
    };
    let names: Vec<&str> = docs
        .iter()
        .flat_map(|d| d.contexts.iter().flatten())
        .filter_map(|c| c.name.as_deref())
        .collect();
    if !names.contains(&context) {
        v.add(
            "config.context",
            format!(
                "the kubeconfig has no context {context:?}; it has: {}",
                names.join(", ")
            ),
        );
    }
}
