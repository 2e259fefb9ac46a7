//! Fills the API's cluster seams (test-connection, Tekton Tasks) with the
//! Tekton executor's code.

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

/// Fills the API's Tekton seam (install, status) with the executor's
/// installer and readiness code.
pub struct TektonTaskOps {
    /// Where tenant providers may connect (the executor's policy).
    pub policy: Arc<AddressPolicy>,
}

fn provider(target: ConnectionTarget) -> ProviderConnection {
    ProviderConnection {
        provider_id: target.provider_id,
        name: target.name,
        tekton_enabled: target.tekton_enabled,
        config_version: target.config_version,
        config: parse_provider_config(&target.config, target.owner),
        owner: target.owner,
    }
}

impl imagefactory_api::tekton::TektonOps for TektonTaskOps {
    fn install(
        &self,
        target: ConnectionTarget,
        namespace: Option<String>,
        dry_run: bool,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send>> {
        let policy = self.policy.clone();
        Box::pin(async move {
            let reports = imagefactory_exec::tekton::install::install_for_provider(
                &provider(target),
                policy,
                namespace.as_deref(),
                dry_run,
            )
            .await
            .map_err(|e| e.to_string())?;
            serde_json::to_value(reports).map_err(|e| e.to_string())
        })
    }

    fn status(
        &self,
        target: ConnectionTarget,
        namespace: Option<String>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<serde_json::Value, String>> + Send>> {
        let policy = self.policy.clone();
        Box::pin(async move {
            let status = imagefactory_exec::tekton::install::status_for_provider(
                &provider(target),
                policy,
                namespace.as_deref(),
            )
            .await
            .map_err(|e| e.to_string())?;
            serde_json::to_value(status).map_err(|e| e.to_string())
        })
    }
}
