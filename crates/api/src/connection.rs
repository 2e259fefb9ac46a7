//! The seam through which `test-connection` reaches a cluster. The API never
//! talks to Kubernetes itself: the binary fills [`AppState::connection_tester`]
//! with an implementation over the Tekton executor's client code.
//!
//! [`AppState::connection_tester`]: crate::AppState::connection_tester

use futures::future::BoxFuture;
use imagefactory_domain::provider::ProviderOwner;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;
use uuid::Uuid;

/// A provider to test, its secret fields decrypted. Never log it.
#[derive(Clone)]
pub struct ConnectionTarget {
    pub provider_id: Uuid,
    pub name: String,
    pub tekton_enabled: bool,
    pub config_version: i64,
    pub config: Value,
    /// A tenant's provider is tested under the address policy and may not
    /// reference server files, whatever its stored config says.
    pub owner: ProviderOwner,
}

impl std::fmt::Debug for ConnectionTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionTarget")
            .field("provider_id", &self.provider_id)
            .field("name", &self.name)
            .field("owner", &self.owner)
            .field("config", &"[redacted]")
            .finish()
    }
}

/// What a connection test found.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct ConnectionReport {
    /// The API server answered at all.
    pub reachable: bool,
    /// It accepted the provider's credentials.
    pub authenticated: bool,
    pub server_version: Option<String>,
    /// `tekton.dev` API versions served, e.g. `["v1", "v1beta1"]`.
    pub tekton_versions: Vec<String>,
    /// The configuration problem, or what failed as a category and a short
    /// cause: the HTTP status with the Kubernetes reason (and the cluster's
    /// message, shortened, only when the answer was a Kubernetes `Status`),
    /// "connection refused", "TLS: unknown certificate authority", "address
    /// not allowed by the provider address policy", ... Never a response
    /// body or a tool's output.
    pub error: Option<String>,
}

pub trait ConnectionTester: Send + Sync {
    fn test(&self, target: ConnectionTarget) -> BoxFuture<'static, ConnectionReport>;
}
