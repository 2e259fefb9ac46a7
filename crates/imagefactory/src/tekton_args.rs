//! `IF_BUILD_TEKTON_*` flags/environment variables, mapped onto
//! [`TektonSettings`]. (`IF_BUILD_TEKTON_ENABLED` itself lives in the
//! dispatcher settings: one flag, one place.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use imagefactory_domain::AddressPolicy;
use imagefactory_exec::tekton::TektonSettings;
use imagefactory_exec::tekton::connect::host_addresses;

#[derive(Debug, Args, Clone, Default)]
pub struct TektonArgs {
    /// Directory of `<method>.yaml` PipelineRun templates overriding the shipped ones.
    #[arg(
        long = "build-tekton-templates-dir",
        env = "IF_BUILD_TEKTON_TEMPLATES_DIR"
    )]
    pub templates_dir: Option<PathBuf>,
    /// Kubeconfig of the global cluster, for builds whose provider gives none.
    #[arg(long = "build-tekton-kubeconfig", env = "IF_BUILD_TEKTON_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The global cluster is the one this process runs in (service account).
    #[arg(long = "build-tekton-in-cluster", env = "IF_BUILD_TEKTON_IN_CLUSTER", default_value_t = false, action = clap::ArgAction::Set)]
    pub in_cluster: bool,
    /// Allow tenant providers' endpoints on loopback (127.0.0.0/8, ::1,
    /// `localhost`), e.g. a local test cluster. Link-local (cloud metadata),
    /// the host's other addresses and the API's own address stay refused
    /// (the host's addresses are allowed with loopback). Global providers
    /// are never restricted.
    #[arg(long = "provider-allow-loopback", env = "IF_PROVIDER_ALLOW_LOOPBACK", default_value_t = false, action = clap::ArgAction::Set)]
    pub provider_allow_loopback: bool,
    /// The API's own listen address (set by `serve`, not a flag): refused as
    /// a tenant provider's endpoint.
    #[arg(skip)]
    pub api_listen_addr: Option<SocketAddr>,
}

impl TektonArgs {
    /// A global cluster is configured for Kubernetes builds without a provider.
    pub fn global_cluster(&self) -> bool {
        self.kubeconfig.is_some() || self.in_cluster
    }

    pub fn settings(&self) -> TektonSettings {
        TektonSettings {
            templates_dir: self.templates_dir.clone(),
            global_kubeconfig: self.kubeconfig.clone(),
            global_in_cluster: self.in_cluster,
            address_policy: self.address_policy(),
            ..TektonSettings::default()
        }
    }

    /// The address policy for tenant providers: `IF_PROVIDER_ALLOW_LOOPBACK`,
    /// this host's interface addresses (as of start-up) and the API's address.
    pub fn address_policy(&self) -> Arc<AddressPolicy> {
        let mut policy =
            AddressPolicy::new(self.provider_allow_loopback).with_host_addresses(host_addresses());
        if let Some(addr) = self.api_listen_addr {
            policy = policy.with_listen_address(addr);
        }
        Arc::new(policy)
    }
}
