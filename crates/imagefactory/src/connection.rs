//! Fills the API's test-connection seam with the Tekton executor's client code.

use std::sync::Arc;

use imagefactory_api::{ConnectionReport, ConnectionTarget, ConnectionTester};
use imagefactory_domain::AddressPolicy;
use imagefactory_exec::tekton::test_connection;
use imagefactory_exec::{ProviderConnection, parse_provider_config};

pub struct TektonConnectionTester {
    /// Where tenant providers may connect (the executor's policy).
    pub policy: Arc<AddressPolicy>,
}

impl ConnectionTester for TektonConnectionTester {
    fn test(
        &self,
        target: ConnectionTarget,
    ) -> std::pin::Pin<Box<dyn Future<Output = ConnectionReport> + Send>> {
        let policy = self.policy.clone();
        Box::pin(async move {
            let provider = ProviderConnection {
                provider_id: target.provider_id,
                name: target.name,
                tekton_enabled: target.tekton_enabled,
                config_version: target.config_version,
                config: parse_provider_config(&target.config, target.owner),
                owner: target.owner,
            };
            let r = test_connection(&provider, policy).await;
            ConnectionReport {
                reachable: r.reachable,
                authenticated: r.authenticated,
                server_version: r.server_version,
                tekton_versions: r.tekton_versions,
                error: r.error,
            }
        })
    }
}
