//! `IF_BUILD_TEKTON_*` flags/environment variables, mapped onto
//! [`TektonSettings`]. (`IF_BUILD_TEKTON_ENABLED` itself lives in the
//! dispatcher settings: one flag, one place.)

use std::path::PathBuf;

use clap::Args;
use imagefactory_exec::tekton::TektonSettings;

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
}

impl TektonArgs {
    pub fn settings(&self) -> TektonSettings {
        TektonSettings {
            templates_dir: self.templates_dir.clone(),
            global_kubeconfig: self.kubeconfig.clone(),
            global_in_cluster: self.in_cluster,
            ..TektonSettings::default()
        }
    }
}
