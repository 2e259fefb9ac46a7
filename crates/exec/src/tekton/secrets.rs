//! Secrets a run binds: one dockerconfigjson Secret per registry credential
//! *version* (so concurrent builds never overwrite each other's auth), the
//! operator-managed `docker-config` otherwise, and a git basic-auth Secret.

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

pub fn registry_secret_name(auth: &RegistryAuth) -> String {
    format!(
        "if-reg-{}-v{}",
        &auth.credential_id.simple().to_string()[..8],
        auth.version
    )
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
            labels: Some(labels("registry")),
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
/// `.git-credentials`. Named by a hash of its content so a changed password
/// gets a new Secret instead of racing running builds.
pub fn git_secret(source: &GitSource) -> Option<KubeSecret> {
    let credential = source.credential.as_ref()?;
    let host = git_host(&source.url)?;
    let scheme = if source.url.starts_with("http://") {
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
            name: Some(format!("if-git-{}", &digest[..16])),
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

/// Create a Secret unless one of that name exists. Names are unique per
/// content version, so an existing one already holds the right data.
pub async fn ensure_secret(
    client: &kube::Client,
    namespace: &str,
    secret: &KubeSecret,
) -> Result<String, TektonError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), secret).await {
        Ok(_) => Ok(name),
        Err(e) if is_already_exists(&e) => Ok(name),
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
        assert_eq!(registry_secret_name(&auth(1)), "if-reg-abcdef01-v1");
        assert_eq!(registry_secret_name(&auth(2)), "if-reg-abcdef01-v2");
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
            url: "https://git.example.com/team/app.git".into(),
            git_ref: "main".into(),
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
