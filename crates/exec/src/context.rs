//! What an executor is given and what it reports: plain data, prepared by the
//! dispatcher from the store (secrets already decrypted, wrapped in `Secret`).

use std::sync::Arc;
use std::time::Duration;

use imagefactory_domain::provider::{KubernetesConfig, ProviderOwner};
use imagefactory_domain::{
    BuildMethod, ExecutorKind, GitRef, GitUrl, ImageRef, MethodConfig, Secret,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::tekton::ClusterSettings;

/// Everything one execution needs. Built by the dispatcher, consumed by executors.
#[derive(Debug, Clone)]
pub struct ExecutionContext {
    pub build_id: Uuid,
    pub tenant_id: Uuid,
    pub project_id: Uuid,
    pub execution_id: Uuid,
    /// 1 for the first attempt, counting up with each retry/requeue.
    pub attempt: i32,
    pub method: BuildMethod,
    pub source: GitSource,
    /// Destination image reference, e.g. `registry.example.com/team/app:1.2`;
    /// parsed once from the stored row, so no executor re-checks its shape.
    pub image: ImageRef,
    pub config: MethodConfig,
    pub registry: Option<RegistryAuth>,
    pub provider: Option<ProviderConnection>,
    /// The build's own timeout; the dispatcher enforces it too.
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct GitSource {
    /// A URL `GitUrl` accepted: no option-like host or user, no whitespace,
    /// no embedded password.
    pub url: GitUrl,
    /// Branch, tag or commit, exactly as the user asked (`git
    /// check-ref-format` rules: never option-like).
    pub git_ref: GitRef,
    pub credential: Option<GitCredential>,
}

#[derive(Debug, Clone)]
pub struct GitCredential {
    pub username: String,
    pub password: Secret,
}

#[derive(Debug, Clone)]
pub struct RegistryAuth {
    pub credential_id: Uuid,
    /// Bumped whenever the secret changes, so per-version cluster Secrets never race.
    pub version: i32,
    /// Registry host, e.g. `ghcr.io` or `127.0.0.1:5000`.
    pub registry: String,
    pub username: String,
    pub password: Secret,
}

/// A provider's connection: its typed config, parsed once by the dispatcher
/// from the stored row (secrets decrypted, held as `Secret`s).
#[derive(Clone)]
pub struct ProviderConnection {
    pub provider_id: Uuid,
    pub name: String,
    pub tekton_enabled: bool,
    /// Changes whenever the provider's config changes (cache key for clients).
    pub config_version: i64,
    /// The parsed config, or why the stored row is unusable (it was written
    /// before today's rules, or by hand). Only the Tekton executor reads it,
    /// so the reason fails the build when the cluster is needed, not before.
    pub config: Result<Arc<KubernetesConfig>, String>,
    /// A tenant's config is data only: no server files, no kubeconfig
    /// `exec`, endpoints under the address policy (checked again at use,
    /// whatever the stored row says).
    pub owner: ProviderOwner,
}

impl ProviderConnection {
    /// The cluster settings of this provider's config.
    pub fn settings(&self) -> Result<ClusterSettings, String> {
        let config = self.config.as_ref().map_err(Clone::clone)?;
        Ok(ClusterSettings::new(config, self.owner).with_metrics_provider(self.provider_id))
    }
}

/// Parse a stored provider config (secrets opened) with the API's rules for
/// its owner. The address policy is left to the client, which checks every
/// address it connects to. Errors list each field and why.
pub fn parse_provider_config(
    config: &serde_json::Value,
    owner: ProviderOwner,
) -> Result<Arc<KubernetesConfig>, String> {
    KubernetesConfig::parse(config, owner, None)
        .map(Arc::new)
        .map_err(|v| {
            let problems: Vec<String> = v.into_vec().iter().map(ToString::to_string).collect();
            format!("invalid provider config: {}", problems.join("; "))
        })
}

impl std::fmt::Debug for ProviderConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderConnection")
            .field("provider_id", &self.provider_id)
            .field("name", &self.name)
            .field("tekton_enabled", &self.tekton_enabled)
            .field("config_version", &self.config_version)
            .field("owner", &self.owner)
            .field("config", &"[redacted]")
            .finish()
    }
}

/// Where an execution lives, persisted in its `build_executions` row as soon as
/// the work exists, so another dispatcher can re-attach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRef {
    pub executor: ExecutorKind,
    pub provider_id: Option<Uuid>,
    pub namespace: Option<String>,
    /// PipelineRun name (tekton) or process description (local).
    pub name: Option<String>,
    pub uid: Option<String>,
}

/// One log line. `source` says where it came from (`clone/step-clone`,
/// `build`, `push`...); `position` is its 0-based line number within that
/// source, which makes re-sent lines idempotent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub source: String,
    pub position: i64,
    pub line: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    ImageUrl,
    ImageDigest,
    Result,
}

impl ArtifactKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImageUrl => "image_url",
            Self::ImageDigest => "image_digest",
            Self::Result => "result",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    /// `IMAGE_URL`, `IMAGE_DIGEST`, or `<task>.<result>` for other results.
    pub name: String,
    pub value: String,
    pub kind: ArtifactKind,
}
