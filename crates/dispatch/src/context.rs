//! Turning stored rows into an [`ExecutionContext`]: method config, git and
//! registry credentials and provider connection, secrets decrypted.

use std::collections::BTreeMap;
use std::time::Duration;

use imagefactory_domain::provider::ProviderOwner;
use imagefactory_domain::{MethodConfig, Secret};
use imagefactory_exec::{
    ExecutionContext, GitCredential, GitSource, ProviderConnection, RegistryAuth,
    parse_provider_config,
};
use imagefactory_store::crypto::Cipher;
use imagefactory_store::executions::{ExecutionInputs, ExecutionRow};

// The store's repositories own the labels each secret is sealed with.
use imagefactory_store::projects::GIT_PASSWORD_LABEL as LABEL_GIT_PASSWORD;
use imagefactory_store::providers::CONFIG_LABEL as LABEL_PROVIDER_CONFIG;
use imagefactory_store::registry_credentials::SECRET_LABEL as LABEL_REGISTRY_SECRET;

/// Build the context; an `Err` is a permanent problem with the build's stored
/// data, phrased for the user. The method, source and image arrive parsed
/// (the row decodes into domain types, see `imagefactory_store::decode`).
pub fn build_context(
    mut inputs: ExecutionInputs,
    execution: &ExecutionRow,
    cipher: Option<&Cipher>,
) -> Result<ExecutionContext, String> {
    let method = inputs.method;
    let secrets = Secrets { cipher };
    let credential = git_credential(&inputs, &secrets)?;
    let registry = registry_auth(&inputs, &secrets)?;
    let provider = provider_connection(&inputs, cipher)?;
    let config = method_config(&mut inputs)?;
    Ok(ExecutionContext {
        build_id: inputs.build_id,
        tenant_id: inputs.tenant_id,
        project_id: inputs.project_id,
        execution_id: execution.id,
        attempt: execution.attempt,
        method,
        source: GitSource {
            url: inputs.git_url,
            git_ref: inputs.git_ref,
            credential,
        },
        image: inputs.image,
        config,
        registry,
        provider,
        timeout: Duration::from_secs(inputs.timeout_seconds.max(1) as u64),
    })
}

/// Opens sealed secrets, or says why it cannot.
struct Secrets<'a> {
    cipher: Option<&'a Cipher>,
}

impl Secrets<'_> {
    fn open(&self, label: &str, what: &str, sealed: &[u8]) -> Result<Secret, String> {
        let cipher = self.cipher.ok_or_else(|| {
            format!("cannot decrypt the {what}: no IF_SECRET_KEY is configured on the dispatcher")
        })?;
        cipher
            .open_secret(label, sealed)
            .map_err(|e| format!("cannot decrypt the {what}: {e}"))
    }
}

fn git_credential(
    inputs: &ExecutionInputs,
    secrets: &Secrets,
) -> Result<Option<GitCredential>, String> {
    let (Some(username), Some(sealed)) = (&inputs.git_username, &inputs.git_password_enc) else {
        return Ok(None);
    };
    Ok(Some(GitCredential {
        username: username.clone(),
        password: secrets.open(LABEL_GIT_PASSWORD, "project's git password", sealed)?,
    }))
}

fn registry_auth(
    inputs: &ExecutionInputs,
    secrets: &Secrets,
) -> Result<Option<RegistryAuth>, String> {
    let (Some(id), Some(sealed), Some(registry), Some(username)) = (
        inputs.registry_credential_id,
        &inputs.registry_secret_enc,
        &inputs.registry,
        &inputs.registry_username,
    ) else {
        return Ok(None);
    };
    Ok(Some(RegistryAuth {
        credential_id: id,
        version: inputs.registry_version.unwrap_or(1),
        registry: registry.clone(),
        username: username.clone(),
        password: secrets.open(
            LABEL_REGISTRY_SECRET,
            "registry credential's secret",
            sealed,
        )?,
    }))
}

fn provider_connection(
    inputs: &ExecutionInputs,
    cipher: Option<&Cipher>,
) -> Result<Option<ProviderConnection>, String> {
    let (Some(id), Some(config)) = (inputs.provider_id, &inputs.provider_config) else {
        return Ok(None);
    };
    // Anything not known to be the platform admin's is a tenant's.
    let owner = if inputs.provider_is_global == Some(true) {
        ProviderOwner::Global
    } else {
        ProviderOwner::Tenant
    };
    Ok(Some(ProviderConnection {
        provider_id: id,
        name: inputs.provider_name.clone().unwrap_or_default(),
        tekton_enabled: inputs.provider_tekton_enabled.unwrap_or(false),
        config_version: inputs.provider_config_version.unwrap_or(1),
        // Parsed here, once; a row the rules refuse fails the build with
        // the reasons when the executor needs the cluster.
        config: parse_provider_config(&open_provider_config(config, cipher)?, owner),
        owner,
    }))
}

/// The provider config with its sealed fields opened; a config with nothing
/// sealed needs no key.
fn open_provider_config(
    config: &serde_json::Value,
    cipher: Option<&Cipher>,
) -> Result<serde_json::Value, String> {
    match cipher {
        Some(c) => c.open_fields(LABEL_PROVIDER_CONFIG, config).map_err(|e| {
            format!("cannot decrypt the infrastructure provider's configuration: {e}")
        }),
        None if !has_envelope(config) => Ok(config.clone()),
        None => Err(
            "cannot decrypt the infrastructure provider's configuration: \
                no IF_SECRET_KEY is configured on the dispatcher"
                .to_owned(),
        ),
    }
}

/// The method config, taken out of the stored columns.
fn method_config(inputs: &mut ExecutionInputs) -> Result<MethodConfig, String> {
    Ok(MethodConfig {
        dockerfile: inputs.dockerfile.take(),
        context: inputs.context.take(),
        build_args: string_map(inputs.build_args.take(), "build_args")?,
        platforms: inputs.platforms.take().unwrap_or_default(),
        target: inputs.target.take(),
        cache_enabled: inputs.cache_enabled.unwrap_or(false),
        cache_repo: inputs.cache_repo.take(),
        labels: string_map(inputs.labels.take(), "labels")?,
        packer_template: inputs.packer_template.take(),
        packer_vars: string_map(inputs.packer_vars.take(), "packer_vars")?,
        metadata: match inputs.metadata.take() {
            Some(serde_json::Value::Object(map)) => map,
            _ => Default::default(),
        },
    })
}

fn has_envelope(config: &serde_json::Value) -> bool {
    config.as_object().is_some_and(|m| {
        m.values()
            .any(|v| imagefactory_store::crypto::envelope(v).is_some())
    })
}

fn string_map(
    value: Option<serde_json::Value>,
    field: &str,
) -> Result<BTreeMap<String, String>, String> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(BTreeMap::new()),
        Some(v) => serde_json::from_value(v)
            .map_err(|e| format!("stored build config field {field} is not a string map: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use imagefactory_domain::BuildMethod;
    use imagefactory_domain::provider::KubernetesAuth;
    use serde_json::json;
    use uuid::Uuid;

    fn execution() -> ExecutionRow {
        ExecutionRow {
            id: Uuid::now_v7(),
            build_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            attempt: 2,
            executor: "tekton".into(),
            provider_id: None,
            cluster_namespace: None,
            pipeline_run_name: None,
            pipeline_run_uid: None,
            status: "running".into(),
            dispatcher_id: None,
            message: None,
            reference_at: None,
            started_at: Utc::now(),
            finished_at: None,
            age_ms: 0,
        }
    }

    fn inputs(cipher: &Cipher) -> ExecutionInputs {
        let mut config =
            json!({"auth_method": "token", "endpoint": "https://k8s:6443", "token": "tok-123"});
        cipher.seal_fields(LABEL_PROVIDER_CONFIG, &mut config, &["token"]);
        ExecutionInputs {
            build_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            project_id: Uuid::now_v7(),
            method: BuildMethod::Kaniko,
            infrastructure_type: imagefactory_domain::InfrastructureType::Kubernetes,
            git_url: imagefactory_domain::GitUrl::parse("https://git.example/app.git").unwrap(),
            git_ref: imagefactory_domain::GitRef::parse("v1").unwrap(),
            image: imagefactory_domain::ImageRef::parse("r.example/app:1").unwrap(),
            timeout_seconds: 90,
            dockerfile: Some("Dockerfile".into()),
            context: None,
            build_args: Some(json!({"A": "1"})),
            platforms: None,
            target: None,
            cache_enabled: None,
            cache_repo: None,
            labels: None,
            packer_template: None,
            packer_vars: None,
            metadata: Some(json!({"registry_repo": "r.example/cache"})),
            git_username: Some("bot".into()),
            git_password_enc: Some(cipher.seal(LABEL_GIT_PASSWORD, b"git-pw")),
            registry_credential_id: Some(Uuid::now_v7()),
            registry_version: Some(3),
            registry: Some("r.example".into()),
            registry_username: Some("pusher".into()),
            registry_secret_enc: Some(cipher.seal(LABEL_REGISTRY_SECRET, b"reg-pw")),
            provider_id: Some(Uuid::now_v7()),
            provider_name: Some("cluster-a".into()),
            provider_tekton_enabled: Some(true),
            provider_config_version: Some(7),
            provider_config: Some(config),
            local_builds_allowed: false,
            provider_is_global: Some(false),
            claimable_since: Utc::now(),
        }
    }

    #[test]
    fn secrets_are_opened_with_their_labels_and_config_is_carried_over() {
        let (cipher, _) = Cipher::random();
        let exec = execution();
        let ctx = build_context(inputs(&cipher), &exec, Some(&cipher)).unwrap();
        assert_eq!(ctx.execution_id, exec.id);
        assert_eq!(ctx.attempt, 2);
        assert_eq!(ctx.method, BuildMethod::Kaniko);
        assert_eq!(ctx.timeout, Duration::from_secs(90));
        assert_eq!(
            ctx.source.credential.as_ref().unwrap().password.expose(),
            "git-pw"
        );
        let registry = ctx.registry.as_ref().unwrap();
        assert_eq!(
            (registry.password.expose(), registry.version),
            ("reg-pw", 3)
        );
        let provider = ctx.provider.as_ref().unwrap();
        let config = provider.config.as_ref().unwrap();
        assert!(matches!(
            &config.auth,
            KubernetesAuth::Token { endpoint, token }
                if endpoint == "https://k8s:6443" && token.expose() == "tok-123"
        ));
        assert_eq!(provider.config_version, 7);
        assert_eq!(provider.owner, ProviderOwner::Tenant);
        assert_eq!(ctx.config.build_args["A"], "1");
        assert_eq!(ctx.config.metadata["registry_repo"], "r.example/cache");
        // Nothing secret prints.
        let printed = format!("{ctx:?}");
        assert!(
            !printed.contains("git-pw")
                && !printed.contains("reg-pw")
                && !printed.contains("tok-123")
        );
    }

    /// A stored row the rules refuse (written before them) still gives a
    /// context: the reasons travel to the executor, which fails the build
    /// with them when it needs the cluster.
    #[test]
    fn a_refused_stored_config_carries_its_reasons() {
        let (cipher, _) = Cipher::random();
        let mut global = inputs(&cipher);
        global.provider_is_global = Some(true);
        global.provider_config = Some(
            json!({"auth_method": "token", "endpoint": "https://k8s:6443", "token": "t", "namespace": "shared"}),
        );
        let ctx = build_context(global, &execution(), Some(&cipher)).unwrap();
        let provider = ctx.provider.unwrap();
        assert_eq!(provider.owner, ProviderOwner::Global);
        let err = provider.config.unwrap_err();
        assert!(err.contains("config.namespace"), "{err}");
        let mut file = inputs(&cipher);
        file.provider_config = Some(
            json!({"auth_method": "kubeconfig", "kubeconfig_path": "/etc/kubernetes/admin.conf"}),
        );
        let ctx = build_context(file, &execution(), Some(&cipher)).unwrap();
        let err = ctx.provider.unwrap().settings().unwrap_err();
        assert!(err.contains("config.kubeconfig_path"), "{err}");
    }

    #[test]
    fn undecryptable_or_keyless_secrets_fail_the_build_saying_which() {
        let (cipher, _) = Cipher::random();
        let (other, _) = Cipher::random();
        let err = build_context(inputs(&cipher), &execution(), Some(&other)).unwrap_err();
        assert!(err.contains("git password"), "{err}");
        let err = build_context(inputs(&cipher), &execution(), None).unwrap_err();
        assert!(err.contains("no IF_SECRET_KEY"), "{err}");
        let mut bad = inputs(&cipher);
        bad.build_args = Some(json!({"A": 1}));
        assert!(
            build_context(bad, &execution(), Some(&cipher))
                .unwrap_err()
                .contains("build_args")
        );
    }
}
