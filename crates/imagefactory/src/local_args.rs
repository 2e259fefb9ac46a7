//! `IF_LOCAL_*` flags/environment variables of the local executor, mapped
//! onto [`LocalSettings`] (crates/exec/README-local.md lists them).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use imagefactory_dispatch::settings::parse_duration;
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
    /// Time between SIGTERM and SIGKILL on cancel/timeout/shutdown, e.g.
    /// `10s`, `1m` [default: 10s].
    #[arg(
        long = "local-grace-period",
        env = "IF_LOCAL_GRACE_PERIOD",
        value_parser = parse_duration
    )]
    pub grace_period: Option<Duration>,
    /// Deprecated spelling of `--local-grace-period` in whole seconds; kept
    /// so existing deployments work. Setting both is an error.
    #[arg(
        long = "local-grace-period-secs",
        env = "IF_LOCAL_GRACE_PERIOD_SECS",
        conflicts_with = "grace_period"
    )]
    pub grace_period_secs: Option<u64>,
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
            grace_period: self
                .grace_period
                .or(self.grace_period_secs.map(Duration::from_secs))
                .unwrap_or(defaults.grace_period),
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

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        local: LocalArgs,
    }

    fn grace(args: &[&str]) -> Result<Duration, clap::Error> {
        let argv = std::iter::once("test").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.local.settings().grace_period)
    }

    #[test]
    fn grace_period_takes_units_and_the_old_seconds_still_work() {
        assert_eq!(grace(&[]).unwrap(), Duration::from_secs(10));
        assert_eq!(
            grace(&["--local-grace-period", "1m30s"]).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(
            grace(&["--local-grace-period", "500ms"]).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            grace(&["--local-grace-period-secs", "3"]).unwrap(),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn grace_period_refuses_garbage_and_both_spellings_at_once() {
        let err = grace(&["--local-grace-period", "soon"]).unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
        let err = grace(&["--local-grace-period-secs", "10s"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let err = grace(&[
            "--local-grace-period",
            "5s",
            "--local-grace-period-secs",
            "3",
        ])
        .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}
