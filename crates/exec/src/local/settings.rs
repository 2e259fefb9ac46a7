//! Configuration of the local executor. Plain data: the binary maps the
//! `IF_LOCAL_*` environment variables and flags onto it (see README-local.md).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Which docker-compatible CLI builds and pushes images (`IF_LOCAL_CONTAINER_CLI`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerCli {
    /// Needs a Docker daemon; multi-platform builds go through `docker buildx`.
    Docker,
    /// Daemonless; multi-platform builds use `--manifest` + `manifest push --all`.
    Podman,
    /// Daemonless; same command shapes as podman.
    Buildah,
}

impl ContainerCli {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Docker => "docker",
            Self::Podman => "podman",
            Self::Buildah => "buildah",
        }
    }
}

impl fmt::Display for ContainerCli {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown container CLI {0:?}; expected one of: docker, podman, buildah")]
pub struct UnknownContainerCli(pub String);

impl FromStr for ContainerCli {
    type Err = UnknownContainerCli;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "docker" => Ok(Self::Docker),
            "podman" => Ok(Self::Podman),
            "buildah" => Ok(Self::Buildah),
            other => Err(UnknownContainerCli(other.to_owned())),
        }
    }
}

/// Settings of one dispatcher's local executor.
#[derive(Debug, Clone)]
pub struct LocalSettings {
    /// `IF_LOCAL_WORKDIR`: parent of the per-execution workspaces.
    pub workdir: PathBuf,
    /// `IF_LOCAL_KEEP_FAILED`: keep a failed build's workspace (minus its
    /// secrets) for inspection instead of removing it.
    pub keep_failed: bool,
    /// `IF_LOCAL_CONTAINER_CLI`.
    pub container_cli: ContainerCli,
    /// `IF_LOCAL_CONTAINER_CLI_BIN`: path or name of the CLI binary; defaults
    /// to the CLI's own name looked up on `PATH`.
    pub container_cli_bin: Option<PathBuf>,
    /// `IF_LOCAL_GIT_BIN` (default `git`).
    pub git_bin: PathBuf,
    /// `IF_LOCAL_KANIKO_BIN`: the kaniko executor; unset means kaniko builds
    /// fail with "kaniko is not installed on this dispatcher".
    pub kaniko_bin: Option<PathBuf>,
    /// `IF_LOCAL_PACKER_BIN` (default `packer`).
    pub packer_bin: PathBuf,
    /// `IF_LOCAL_MAX_CONCURRENT`: local builds running at once on this
    /// dispatcher; further executions wait for a slot.
    pub max_concurrent: usize,
    /// `IF_LOCAL_GRACE_PERIOD` (deprecated: `IF_LOCAL_GRACE_PERIOD_SECS`):
    /// time between SIGTERM and SIGKILL when a build is cancelled or times out.
    pub grace_period: Duration,
    /// `IF_LOCAL_INSECURE_REGISTRIES` (comma-separated hosts, e.g.
    /// `127.0.0.1:5000`): registries reached over plain HTTP / without TLS
    /// verification (podman/buildah `--tls-verify=false`, kaniko `--insecure`).
    pub insecure_registries: Vec<String>,
    /// `IF_LOCAL_GIT_PROTOCOLS` (comma-separated, default `https,ssh,git,http`):
    /// git transports a build may clone from. `file` exposes the dispatcher's
    /// own disk to tenants, so it is off unless listed.
    pub git_protocols: Vec<String>,
    /// `IF_LOCAL_ISOLATED_STORAGE` (default true): podman/buildah keep images
    /// in the execution's workspace (`--root`/`--runroot`), so tenants never
    /// share layers or cache and everything goes with the workspace.
    pub isolated_storage: bool,
    /// `IF_LOCAL_RUNROOT_DIR` (default `<tmp>/if-run`): parent of the
    /// per-execution podman/buildah run roots; podman refuses run roots longer
    /// than 50 characters, so keep it short.
    pub runroot_dir: PathBuf,
    /// `IF_LOCAL_ISOLATION`: `--isolation` of podman/buildah builds; `chroot`
    /// runs `RUN` steps where an OCI runtime cannot create containers (e.g.
    /// inside another container); unset = the tool's default (`oci`).
    pub isolation: Option<String>,
    /// `IF_LOCAL_STORAGE_DRIVER`: `--storage-driver` for podman/buildah
    /// (e.g. `vfs` where overlay mounts are not allowed); unset = host default.
    pub storage_driver: Option<String>,
    /// `IF_LOCAL_PASS_ENV` (comma-separated): extra environment variables of
    /// the dispatcher handed to build tools. Everything else is withheld, so
    /// the dispatcher's own secrets never reach a build.
    pub pass_env: Vec<String>,
    /// Log lines sent to the sink in one call at most.
    pub log_batch_lines: usize,
    /// Longest a produced log line waits before it is sent.
    pub log_flush_interval: Duration,
}

impl Default for LocalSettings {
    fn default() -> Self {
        Self {
            workdir: std::env::temp_dir().join("imagefactory-local"),
            keep_failed: false,
            container_cli: ContainerCli::Podman,
            container_cli_bin: None,
            git_bin: PathBuf::from("git"),
            kaniko_bin: None,
            packer_bin: PathBuf::from("packer"),
            max_concurrent: 2,
            grace_period: Duration::from_secs(10),
            insecure_registries: Vec::new(),
            git_protocols: ["https", "ssh", "git", "http"].map(String::from).to_vec(),
            isolated_storage: true,
            runroot_dir: std::env::temp_dir().join("if-run"),
            isolation: None,
            storage_driver: None,
            pass_env: Vec::new(),
            log_batch_lines: 200,
            log_flush_interval: Duration::from_millis(100),
        }
    }
}

impl LocalSettings {
    /// The container CLI binary to run.
    pub fn container_cli_program(&self) -> PathBuf {
        self.container_cli_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from(self.container_cli.as_str()))
    }

    pub fn is_insecure_registry(&self, host: &str) -> bool {
        self.insecure_registries.iter().any(|h| h == host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_cli_parses_its_names_only() {
        for cli in [
            ContainerCli::Docker,
            ContainerCli::Podman,
            ContainerCli::Buildah,
        ] {
            assert_eq!(cli.as_str().parse::<ContainerCli>().unwrap(), cli);
        }
        let err = "nerdctl".parse::<ContainerCli>().unwrap_err();
        assert!(err.to_string().contains("docker, podman, buildah"));
    }

    #[test]
    fn file_transport_is_off_by_default() {
        let s = LocalSettings::default();
        assert!(!s.git_protocols.iter().any(|p| p == "file"));
        assert!(s.max_concurrent >= 1);
    }
}
