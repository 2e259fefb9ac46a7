//! Turning stored rows into an [`ExecutionContext`]: method config, git and
//! registry credentials and provider connection, secrets decrypted.

use std::collections::BTreeMap;
use std::time::Duration;

use imagefactory_domain::{BuildMethod, MethodConfig};
use imagefactory_exec::{
    ExecutionContext, GitCredential, GitSource, ProviderConnection, RegistryAuth,
};
use imagefactory_store::crypto::Cipher;
use imagefactory_store::executions::{ExecutionInputs, ExecutionRow};

/// Associated-data labels the API seals these secrets with.
pub const LABEL_REGISTRY_SECRET: &str = "registry_credentials.secret";
pub const LABEL_GIT_PASSWORD: &str = "projects.git_password";
pub const LABEL_PROVIDER_CONFIG: &str = "providers.config";

/// Build the context; an `Err` is a permanent problem with the build's stored
/// data, phrased for the user.
pub fn build_context(
    inputs: ExecutionInputs,
    execution: &ExecutionRow,
    cipher: Option<&Cipher>,
) -> Result<ExecutionContext, String> {
    let method: BuildMethod = inputs.method.parse().map_err(|e| format!("{e}"))?;
    let open = |label: &str, what: &str, sealed: &[u8]| {
        let cipher = cipher.ok_or_else(|| {
            format!("cannot decrypt the {what}: no IF_SECRET_KEY is configured on the dispatcher")
        })?;
        cipher
            .open_secret(label, sealed)
            .map_err(|e| format!("cannot decrypt the {what}: {e}"))
    };

    let credential = match (&inputs.git_username, &inputs.git_password_enc) {
        (Some(username), Some(sealed)) => Some(GitCredential {
            username: username.clone(),
            password: open(LABEL_GIT_PASSWORD, "project's git password", sealed)?,
        }),
        _ => None,
    };
    let registry = match (
        inputs.registry_credential_id,
        &inputs.registry_secret_enc,
        &inputs.registry,
        &inputs.registry_username,
    ) {
        (Some(id), Some(sealed), Some(registry), Some(username)) => Some(RegistryAuth {
            credential_id: id,
            version: inputs.registry_version.unwrap_or(1),
            registry: registry.clone(),
            username: username.clone(),
            password: open(
                LABEL_REGISTRY_SECRET,
                "registry credential's secret",
                sealed,
            )?,
        }),
        _ => None,
    };
    let provider = match (inputs.provider_id, &inputs.provider_config) {
        (Some(id), Some(config)) => {
            let opened = match cipher {
                Some(c) => c.open_fields(LABEL_PROVIDER_CONFIG, config).map_err(|e| {
                    format!("cannot decrypt the infrastructure provider's configuration: {e}")
                })?,
                None if !has_envelope(config) => config.clone(),
                None => {
                    return Err(
                        "cannot decrypt the infrastructure provider's configuration: \
                                no IF_SECRET_KEY is configured on the dispatcher"
                            .to_owned(),
                    );
                }
            };
            Some(ProviderConnection {
                provider_id: id,
                name: inputs.provider_name.clone().unwrap_or_default(),
                tekton_enabled: inputs.provider_tekton_enabled.unwrap_or(false),
                config_version: inputs.provider_config_version.unwrap_or(1),
                config: opened,
            })
        }
        _ => None,
    };

    let config = MethodConfig {
        dockerfile: inputs.dockerfile,
        context: inputs.context,
        build_args: string_map(inputs.build_args, "build_args")?,
        platforms: inputs.platforms.unwrap_or_default(),
        target: inputs.target,
        cache_enabled: inputs.cache_enabled.unwrap_or(false),
        cache_repo: inputs.cache_repo,
        labels: string_map(inputs.labels, "labels")?,
        packer_template: inputs.packer_template,
        packer_vars: string_map(inputs.packer_vars, "packer_vars")?,
        metadata: match inputs.metadata {
            Some(serde_json::Value::Object(map)) => map,
            _ => Default::default(),
        },
    };

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
