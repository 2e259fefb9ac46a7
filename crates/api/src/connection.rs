//! The seam through which `test-connection` reaches a cluster. The API never
//! talks to Kubernetes itself: the binary fills [`AppState::connection_tester`]
//! with an implementation over the Tekton executor's client code.
//!
//! [`AppState::connection_tester`]: crate::AppState::connection_tester

use futures::future::BoxFuture;
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
}

impl std::fmt::Debug for ConnectionTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionTarget")
            .field("provider_id", &self.provider_id)
            .field("name", &self.name)
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
    /// The configuration problem or the cluster's own error text.
    pub error: Option<String>,
}

pub trait ConnectionTester: Send + Sync {
    fn test(&self, target: ConnectionTarget) -> BoxFuture<'static, ConnectionReport>;
}
