//! Secrets a run binds: one dockerconfigjson Secret per registry credential
//! *version* (so concurrent builds never overwrite each other's auth), the
//! operator-managed `docker-config` otherwise, and a git basic-auth Secret.
//!
//! Names carry the whole identity (credential id and version, or the full
//! content hash): credential ids are time-ordered UUIDs, so any prefix of one
//! is shared by credentials made close together. An existing Secret of that
//! name is used only if its labels and content are exactly what we would
//! have created; anything else is refused, never pushed with.

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::error::{TektonError, describe_kube_error, is_already_exists, status_code};
use crate::{GitSource, RegistryAuth};

/// The Secret operators manage themselves for builds without a credential.
pub const OPERATOR_DOCKER_CONFIG: &str = "docker-config";

/// The operator's `docker-config` Secret as `kubectl create secret
/// docker-registry` makes it (type `kubernetes.io/dockerconfigjson`, one key
/// `.dockerconfigjson`), holding `docker_config` (a docker `config.json`).
/// For the demo and tests that play the operator; Image Factory never writes
/// this Secret in a cluster it builds on.
pub fn operator_docker_config(namespace: &str, docker_config: &[u8]) -> KubeSecret {
    KubeSecret {
        metadata: ObjectMeta {
            name: Some(OPERATOR_DOCKER_CONFIG.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(
            [(
                ".dockerconfigjson".to_owned(),
                ByteString(docker_config.to_vec()),
            )]
            .into(),
        ),
        ..Default::default()
    }
}

/// Label naming the registry credential a Secret holds.
pub const CREDENTIAL_ID_LABEL: &str = "imagefactory.io/credential-id";
/// Label naming the credential version a Secret holds.
pub const CREDENTIAL_VERSION_LABEL: &str = "imagefactory.io/credential-version";

/// `if-reg-<32 hex of the credential id>-v<version>` (at most 52 characters).
pub fn registry_secret_name(auth: &RegistryAuth) -> String {
    format!("if-reg-{}-v{}", auth.credential_id.simple(), auth.version)
}

fn labels(kind: &str) -> BTreeMap<String, String> {
    [
        (
            "app.kubernetes.io/managed-by".to_string(),
            "image-factory".to_string(),
        ),
        ("imagefactory.io/secret-kind".to_string(), kind.to_string()),
    ]
    .into()
}

fn registry_labels(auth: &RegistryAuth) -> BTreeMap<String, String> {
    let mut labels = labels("registry");
    labels.insert(
        CREDENTIAL_ID_LABEL.to_string(),
        auth.credential_id.hyphenated().to_string(),
    );
    labels.insert(
        CREDENTIAL_VERSION_LABEL.to_string(),
        auth.version.to_string(),
    );
    labels
}

/// `{"auths": {"<registry>": {"username", "password", "auth"}}}` as bytes.
pub fn docker_config_json(auth: &RegistryAuth) -> Vec<u8> {
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        auth.username,
        auth.password.expose()
    ));
    serde_json::to_vec(&json!({
        "auths": {
            auth.registry.clone(): {
                "username": auth.username,
                "password": auth.password.expose(),
                "auth": basic,
            }
        }
    }))
    .expect("a JSON object always serializes")
}

pub fn registry_secret(auth: &RegistryAuth) -> KubeSecret {
    let config = docker_config_json(auth);
    KubeSecret {
        metadata: ObjectMeta {
            name: Some(registry_secret_name(auth)),
            labels: Some(registry_labels(auth)),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(
            [
                (".dockerconfigjson".to_string(), ByteString(config.clone())),
                // Tasks mount the workspace as a docker config directory.
                ("config.json".to_string(), ByteString(config)),
            ]
            .into(),
        ),
        ..Default::default()
    }
}

/// A basic-auth workspace for the git-clone Task: `.gitconfig` and
/// `.git-credentials`. Named by the SHA-256 of its content (all 64 hex
/// digits) so a changed password gets a new Secret instead of racing running
/// builds, and two credentials never share a name.
pub fn git_secret(source: &GitSource) -> Option<KubeSecret> {
    let credential = source.credential.as_ref()?;
    let host = git_host(source.url.as_str())?;
    let scheme = if source.url.as_str().starts_with("http://") {
        "http"
    } else {
        "https"
    };
    let user = percent_encode(&credential.username);
    let pass = percent_encode(credential.password.expose());
    let credentials = format!("{scheme}://{user}:{pass}@{host}\n");
    let gitconfig = "[credential]\n\thelper = store\n".to_string();
    let mut hasher = Sha256::new();
    hasher.update(credentials.as_bytes());
    let digest = hex::encode(hasher.finalize());
    Some(KubeSecret {
        metadata: ObjectMeta {
            name: Some(format!("if-git-{digest}")),
            labels: Some(labels("git")),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(
            [
                (
                    ".git-credentials".to_string(),
                    ByteString(credentials.into_bytes()),
                ),
                (".gitconfig".to_string(), ByteString(gitconfig.into_bytes())),
            ]
            .into(),
        ),
        ..Default::default()
    })
}

fn git_host(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = authority.rsplit('@').next()?;
    (!host.is_empty()).then(|| host.to_string())
}

fn percent_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Create a Secret, or use the one of that name if it is exactly ours: a
/// Secret someone else made (other labels, other content) is refused, so a
/// build never runs with another credential's auth.
pub async fn ensure_secret(
    client: &kube::Client,
    namespace: &str,
    secret: &KubeSecret,
) -> Result<String, TektonError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), secret).await {
        Ok(_) => Ok(name),
        Err(e) if is_already_exists(&e) => adopt_existing(&api, namespace, secret).await,
        Err(e) if status_code(&e) == Some(403) => Err(TektonError::Build(format!(
            "the provider's credentials may not create Secret {name} in namespace {namespace}: {}",
            describe_kube_error(&e)
        ))),
        Err(e) => Err(TektonError::kube(
            format!("creating Secret {namespace}/{name}"),
            e,
        )),
    }
}

/// The existing Secret's name if it matches `ours`; never its content in
/// an error.
async fn adopt_existing(
    api: &Api<KubeSecret>,
    namespace: &str,
    ours: &KubeSecret,
) -> Result<String, TektonError> {
    let name = ours.metadata.name.clone().unwrap_or_default();
    let existing = match api.get(&name).await {
        Ok(existing) => existing,
        Err(e) if status_code(&e) == Some(403) => {
            return Err(TektonError::Build(format!(
                "Secret {namespace}/{name} already exists and the provider's credentials may not \
                 read it to check that it is Image Factory's: {}",
                describe_kube_error(&e)
            )));
        }
        Err(e) => {
            return Err(TektonError::kube(
                format!("reading existing Secret {namespace}/{name}"),
                e,
            ));
        }
    };
    if is_same_secret(&existing, ours) {
        Ok(name)
    } else {
        Err(TektonError::Build(format!(
            "Secret {namespace}/{name} already exists but does not hold what Image Factory \
             would have put there (its labels or content differ); refusing to use it. \
             Delete it and retry the build."
        )))
    }
}

/// Every label of `ours` with the same value, the same type and the same data.
pub fn is_same_secret(existing: &KubeSecret, ours: &KubeSecret) -> bool {
    let empty = BTreeMap::new();
    let labels = existing.metadata.labels.as_ref().unwrap_or(&empty);
    let labels_match = ours
        .metadata
        .labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    labels_match
        && existing.type_.as_deref().unwrap_or("Opaque")
            == ours.type_.as_deref().unwrap_or("Opaque")
        && existing.data == ours.data
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagefactory_domain::Secret;
    use uuid::Uuid;

    fn auth(version: i32) -> RegistryAuth {
        RegistryAuth {
            credential_id: Uuid::parse_str("abcdef01-0000-0000-0000-000000000000").unwrap(),
            version,
            registry: "registry.example.com".into(),
            username: "bot".into(),
            password: Secret::new("s3cret"),
        }
    }

    #[test]
    fn each_credential_version_gets_its_own_secret() {
        assert_eq!(
            registry_secret_name(&auth(1)),
            "if-reg-abcdef01000000000000000000000000-v1"
        );
        assert_eq!(
            registry_secret_name(&auth(2)),
            "if-reg-abcdef01000000000000000000000000-v2"
        );
    }

    #[test]
    fn credentials_sharing_an_id_prefix_get_distinct_secrets_and_labels() {
        // Time-ordered ids made in the same millisecond share their first 12 hex digits.
        let a = auth(1);
        let mut b = auth(1);
        b.credential_id = Uuid::parse_str("abcdef01-0000-0000-0000-000000000001").unwrap();
        assert_ne!(registry_secret_name(&a), registry_secret_name(&b));
        let labels = registry_secret(&b).metadata.labels.unwrap();
        assert_eq!(
            labels[CREDENTIAL_ID_LABEL],
            "abcdef01-0000-0000-0000-000000000001"
        );
        assert_eq!(labels[CREDENTIAL_VERSION_LABEL], "1");
        assert!(!is_same_secret(&registry_secret(&a), &registry_secret(&b)));
    }

    #[test]
    fn only_an_identical_secret_is_the_same() {
        let ours = registry_secret(&auth(1));
        assert!(is_same_secret(&ours, &ours));
        let mut other_labels = ours.clone();
        other_labels
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(CREDENTIAL_VERSION_LABEL.into(), "2".into());
        assert!(!is_same_secret(&other_labels, &ours));
        let mut unlabelled = ours.clone();
        unlabelled.metadata.labels = None;
        assert!(!is_same_secret(&unlabelled, &ours));
        let mut other_data = ours.clone();
        other_data.data = registry_secret(&RegistryAuth {
            password: Secret::new("other"),
            ..auth(1)
        })
        .data;
        assert!(!is_same_secret(&other_data, &ours));
        let mut extra_label = ours.clone();
        extra_label
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "a".into());
        assert!(is_same_secret(&extra_label, &ours));
    }

    #[test]
    fn registry_secret_holds_exactly_that_credential_under_both_keys() {
        let secret = registry_secret(&auth(3));
        assert_eq!(
            secret.type_.as_deref(),
            Some("kubernetes.io/dockerconfigjson")
        );
        let data = secret.data.unwrap();
        assert_eq!(data[".dockerconfigjson"], data["config.json"]);
        let config: serde_json::Value = serde_json::from_slice(&data["config.json"].0).unwrap();
        let entry = &config["auths"]["registry.example.com"];
        assert_eq!(entry["username"], "bot");
        assert_eq!(entry["password"], "s3cret");
        assert_eq!(
            entry["auth"],
            base64::engine::general_purpose::STANDARD.encode("bot:s3cret")
        );
        assert_eq!(config["auths"].as_object().unwrap().len(), 1);
    }

    #[test]
    fn git_secret_escapes_the_password_and_changes_name_with_it() {
        let source = |password: &str| GitSource {
            url: imagefactory_domain::GitUrl::parse("https://git.example.com/team/app.git")
                .unwrap(),
            git_ref: imagefactory_domain::GitRef::parse("main").unwrap(),
            credential: Some(crate::GitCredential {
                username: "me".into(),
                password: Secret::new(password),
            }),
        };
        let a = git_secret(&source("p@ss:word")).unwrap();
        let b = git_secret(&source("other")).unwrap();
        assert_ne!(a.metadata.name, b.metadata.name);
        let creds = String::from_utf8(a.data.unwrap()[".git-credentials"].0.clone()).unwrap();
        assert_eq!(creds, "https://me:p%40ss%3Aword@git.example.com\n");
    }
}
