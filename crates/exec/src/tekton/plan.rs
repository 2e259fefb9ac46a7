//! From an execution to the objects it needs: the render context (pure).

use imagefactory_domain::BuildMethod;
use serde_json::Value;

use super::client::ClusterSettings;
use super::render::{
    BuildValues, MethodValues, ProviderValues, RenderContext, SourceValues, TaskRefs, TenantValues,
    go_duration, key_values,
};
use super::submit::{run_labels, run_name};
use crate::ExecutionContext;

/// Secrets the run binds, as created in the namespace.
#[derive(Debug, Clone)]
pub struct BoundSecrets {
    pub registry: String,
    pub git_basic_auth: Option<String>,
}

pub fn render_context(
    ctx: &ExecutionContext,
    settings: &ClusterSettings,
    namespace: &str,
    secrets: &BoundSecrets,
) -> RenderContext {
    let config = &ctx.config;
    let text = |v: &Option<String>, default: &str| {
        v.clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    let registry_repo = config
        .metadata
        .get("registry_repo")
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default();
    RenderContext {
        build: BuildValues {
            id: ctx.build_id.to_string(),
            execution_id: ctx.execution_id.to_string(),
            attempt: ctx.attempt.to_string(),
            run_name: run_name(ctx.build_id, ctx.attempt),
            timeout: go_duration(ctx.timeout),
        },
        tenant: TenantValues {
            id: ctx.tenant_id.to_string(),
            namespace: namespace.to_string(),
        },
        provider: ProviderValues {
            id: ctx
                .provider
                .as_ref()
                .map(|p| p.provider_id.to_string())
                .unwrap_or_default(),
            name: ctx
                .provider
                .as_ref()
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            service_account: settings.service_account.clone(),
            storage_class: settings.storage_class.clone().unwrap_or_default(),
            workspace_size: settings.workspace_size.clone(),
            registry_tls_verify: settings.registry_tls_verify.to_string(),
        },
        source: SourceValues {
            url: ctx.source.url.to_string(),
            revision: ctx.source.git_ref.to_string(),
            basic_auth_secret: secrets.git_basic_auth.clone().unwrap_or_default(),
        },
        method: ctx.method.to_string(),
        config: MethodValues {
            dockerfile: text(&config.dockerfile, "Dockerfile"),
            context: text(&config.context, "."),
            build_args: key_values(&config.build_args),
            platforms: config.platforms.clone(),
            target: text(&config.target, ""),
            cache: config.cache_enabled.to_string(),
            cache_repo: text(&config.cache_repo, ""),
            labels: key_values(&config.labels),
            packer_template: text(
                &config.packer_template,
                if ctx.method == BuildMethod::Packer {
                    "template.pkr.hcl"
                } else {
                    ""
                },
            ),
            packer_vars: key_values(&config.packer_vars),
            registry_repo,
        },
        image: ctx.image.to_string(),
        registry_secret: secrets.registry.clone(),
        tasks: TaskRefs::new(ctx.method, settings.tasks_namespace())
            .with_images(ctx.method, &settings.builder_images),
        labels: run_labels(ctx.build_id, ctx.tenant_id, ctx.execution_id),
    }
}
