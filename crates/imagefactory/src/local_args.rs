//! `IF_LOCAL_*` flags/environment variables of the local executor, mapped
//! onto [`LocalSettings`] (crates/exec/README-local.md lists them).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use imagefactory_exec::local::{ContainerCli, LocalSettings};

#[derive(Debug, Args, Clone)]
pub struct LocalArgs {
    /// Parent of the per-build workspaces [default: $TMPDIR/imagefactory-local].
    #[arg(long = "local-workdir", env = "IF_LOCAL_WORKDIR")]
    pub workdir: Option<PathBuf>,
    /// Keep a failed build's workspace (its secrets are removed anyway).
    #[arg(long = "local-keep-failed", env = "IF_LOCAL_KEEP_FAILED", default_value_t = false, action = clap::ArgAction::Set)]
    pub keep_failed: bool,
    /// `docker`, `podman` or `buildah`.
    #[arg(
        long = "local-container-cli",
        env = "IF_LOCAL_CONTAINER_CLI",
        default_value = "podman"
    )]
    pub container_cli: ContainerCli,
    /// Path of the container CLI binary [default: the CLI's name on PATH].
    #[arg(long = "local-container-cli-bin", env = "IF_LOCAL_CONTAINER_CLI_BIN")]
    pub container_cli_bin: Option<PathBuf>,
    #[arg(
        long = "local-git-bin",
        env = "IF_LOCAL_GIT_BIN",
        default_value = "git"
    )]
    pub git_bin: PathBuf,
    /// The kaniko executor; unset = kaniko builds fail saying it is not installed.
    #[arg(long = "local-kaniko-bin", env = "IF_LOCAL_KANIKO_BIN")]
    pub kaniko_bin: Option<PathBuf>,
    #[arg(
        long = "local-packer-bin",
        env = "IF_LOCAL_PACKER_BIN",
        default_value = "packer"
    )]
    pub packer_bin: PathBuf,
    /// Local builds running at once; further ones wait for a slot.
    #[arg(long = "local-max-concurrent", env = "IF_LOCAL_MAX_CONCURRENT", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent: u32,
    /// Seconds between SIGTERM and SIGKILL on cancel/timeout/shutdown.
    #[arg(
        long = "local-grace-period-secs",
        env = "IF_LOCAL_GRACE_PERIOD_SECS",
        default_value_t = 10
    )]
    pub grace_period_secs: u64,
    /// Comma-separated registry hosts pushed to without TLS verification.
    #[arg(
        long = "local-insecure-registries",
        env = "IF_LOCAL_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// Git transports builds may clone from (`file` only on single-tenant machines).
    #[arg(
        long = "local-git-protocols",
        env = "IF_LOCAL_GIT_PROTOCOLS",
        value_delimiter = ',',
        default_value = "https,ssh,git,http"
    )]
    pub git_protocols: Vec<String>,
    /// podman/buildah keep images in the build's own workspace.
    #[arg(long = "local-isolated-storage", env = "IF_LOCAL_ISOLATED_STORAGE", default_value_t = true, action = clap::ArgAction::Set)]
    pub isolated_storage: bool,
    /// Parent of per-build podman/buildah run roots [default: $TMPDIR/if-run].
    #[arg(long = "local-runroot-dir", env = "IF_LOCAL_RUNROOT_DIR")]
    pub runroot_dir: Option<PathBuf>,
    /// `--storage-driver` for podman/buildah, e.g. `vfs`.
    #[arg(long = "local-storage-driver", env = "IF_LOCAL_STORAGE_DRIVER")]
    pub storage_driver: Option<String>,
    /// `--isolation` for podman/buildah builds, e.g. `chroot`.
    #[arg(long = "local-isolation", env = "IF_LOCAL_ISOLATION")]
    pub isolation: Option<String>,
    /// Extra environment variables handed to build tools (comma-separated).
    #[arg(
        long = "local-pass-env",
        env = "IF_LOCAL_PASS_ENV",
        value_delimiter = ','
    )]
    pub pass_env: Vec<String>,
}

impl LocalArgs {
    pub fn settings(&self) -> LocalSettings {
        let defaults = LocalSettings::default();
        let non_empty = |v: &[String]| -> Vec<String> {
            v.iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        LocalSettings {
            workdir: self.workdir.clone().unwrap_or(defaults.workdir),
            keep_failed: self.keep_failed,
            container_cli: self.container_cli,
            container_cli_bin: self.container_cli_bin.clone(),
            git_bin: self.git_bin.clone(),
            kaniko_bin: self.kaniko_bin.clone(),
            packer_bin: self.packer_bin.clone(),
            max_concurrent: self.max_concurrent as usize,
            grace_period: Duration::from_secs(self.grace_period_secs),
            insecure_registries: non_empty(&self.insecure_registries),
            git_protocols: non_empty(&self.git_protocols),
            isolated_storage: self.isolated_storage,
            runroot_dir: self.runroot_dir.clone().unwrap_or(defaults.runroot_dir),
            isolation: self.isolation.clone().filter(|s| !s.is_empty()),
            storage_driver: self.storage_driver.clone().filter(|s| !s.is_empty()),
            pass_env: non_empty(&self.pass_env),
            ..defaults
        }
    }
}
