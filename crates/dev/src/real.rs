//! `imagefactory-dev --real-steps`: what the quick start needs to build an
//! image for real on this host. kube-sim's host step runner runs the bundled
//! Tasks' scripts with the host's `git` and `buildah`; this module provides
//! what they reach: a sample git repository served over HTTP on loopback and
//! a `docker-registry` on loopback (both from `imagefactory-loopback`, the
//! implementation the tests use too), in one temporary directory that goes
//! with them.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, bail};
use imagefactory_loopback::{GitServer, Registry};
use kube_sim::tekton::HostSteps;
use tokio::process::Command;

/// The programs `--real-steps` runs and the Debian/Ubuntu package of each.
/// `git` also serves the repository (`git http-backend`).
pub const TOOLS: &[(&str, &str)] = &[
    ("git", "git"),
    ("buildah", "buildah"),
    ("docker-registry", "docker-registry"),
];

/// The sample repository's name on the git server (`/hello.git`).
pub const SAMPLE_REPO: &str = "hello.git";
/// The branch the sample repository has (a project's default branch).
pub const SAMPLE_BRANCH: &str = "main";
/// The sample repository's files: a Dockerfile that needs no base image (no
/// registry but the local one is reachable) and the file it copies.
pub const SAMPLE_FILES: &[(&str, &str)] = &[
    (
        "Dockerfile",
        "FROM scratch\nCOPY hello.txt /hello.txt\nLABEL org.opencontainers.image.title=\"Image Factory quick start\"\n",
    ),
    (
        "hello.txt",
        "Hello from the Image Factory quick start, built for real by buildah.\n",
    ),
];

/// The tools of [`TOOLS`] not found as executable files in the directories
/// of `path` (a `PATH` value): (program, Debian package).
pub fn missing_tools(path: Option<&OsStr>) -> Vec<(&'static str, &'static str)> {
    let dirs: Vec<PathBuf> = path
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    TOOLS
        .iter()
        .copied()
        .filter(|(tool, _)| !dirs.iter().any(|d| is_executable(&d.join(tool))))
        .collect()
}

fn is_executable(file: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// An error naming exactly what to install when a tool is missing from `PATH`.
pub fn check_tools() -> anyhow::Result<()> {
    let missing = missing_tools(std::env::var_os("PATH").as_deref());
    if missing.is_empty() {
        return Ok(());
    }
    let tools: Vec<&str> = missing.iter().map(|(t, _)| *t).collect();
    let packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    bail!(
        "--real-steps needs {} on PATH, not found: {}. Install {} (Debian/Ubuntu: apt-get install {}), or run without --real-steps for the simulated demo",
        TOOLS.iter().map(|(t, _)| *t).collect::<Vec<_>>().join(", "),
        tools.join(", "),
        if packages.len() == 1 { "it" } else { "them" },
        packages.join(" ")
    )
}

/// The local services of a `--real-steps` run, removed by [`RealSteps::shutdown`]
/// (or, less tidily, when dropped: the registry is killed, the directory removed).
pub struct RealSteps {
    /// Holds the registry's storage, the repositories and the step runner's
    /// pods and claims; removed last.
    dir: tempfile::TempDir,
    registry: Registry,
    git: GitServer,
}

impl RealSteps {
    /// Checks the tools, then starts the registry and the git server with
    /// the sample repository.
    pub async fn start() -> anyhow::Result<Self> {
        check_tools()?;
        let dir = tempfile::Builder::new()
            .prefix("imagefactory-dev-real-")
            .tempdir()
            .context("creating a temporary directory")?;
        let repos = dir.path().join("git");
        sample_repository(&repos, SAMPLE_REPO).await?;
        let registry = Registry::start(&dir.path().join("registry"), None).await?;
        let git = GitServer::start(repos, None).await?;
        Ok(Self { dir, registry, git })
    }

    /// Where kube-sim's host step runner keeps pods and claims.
    pub fn host_steps(&self) -> HostSteps {
        HostSteps {
            root: self.dir.path().join("steps"),
        }
    }

    /// `http://127.0.0.1:<port>/hello.git`
    pub fn repo_url(&self) -> String {
        format!("{}/{SAMPLE_REPO}", self.git.url())
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The temporary directory everything of the run is kept in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the registry (waiting for it) and the git server, then removes
    /// the directory.
    pub async fn shutdown(self) {
        self.git.stop().await;
        self.registry.stop().await;
        if let Err(e) = self.dir.close() {
            eprintln!("imagefactory-dev: cannot remove the temporary directory: {e}");
        }
    }
}

/// `git` with no user or system configuration, so the developer's settings
/// (signing, hooks, default branch) do not change the sample.
fn git() -> Command {
    let mut cmd = Command::new("git");
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Image Factory quick start")
        .env("GIT_AUTHOR_EMAIL", "quickstart@imagefactory.invalid")
        .env("GIT_COMMITTER_NAME", "Image Factory quick start")
        .env("GIT_COMMITTER_EMAIL", "quickstart@imagefactory.invalid")
        .stdin(Stdio::null());
    cmd
}

async fn run_git(dir: &Path, args: &[&OsStr]) -> anyhow::Result<()> {
    let out = git()
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A bare repository `<repos>/<name>` whose branch [`SAMPLE_BRANCH`] has one
/// commit of [`SAMPLE_FILES`].
pub async fn sample_repository(repos: &Path, name: &str) -> anyhow::Result<()> {
    let work = repos.join("work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    for (file, content) in SAMPLE_FILES {
        std::fs::write(work.join(file), content)
            .with_context(|| format!("writing {}", work.join(file).display()))?;
    }
    let os = |s: &'static str| OsStr::new(s);
    run_git(&work, &[os("init"), os("-q"), os("-b"), os(SAMPLE_BRANCH)]).await?;
    run_git(&work, &[os("add"), os("-A")]).await?;
    run_git(
        &work,
        &[os("commit"), os("-q"), os("-m"), os("Quick start sample")],
    )
    .await?;
    let bare = repos.join(name);
    run_git(
        repos,
        &[
            os("clone"),
            os("-q"),
            os("--bare"),
            work.as_os_str(),
            bare.as_os_str(),
        ],
    )
    .await?;
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_tools_are_the_ones_absent_from_path() {
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        for tool in ["git", "docker-registry"] {
            let f = dir.path().join(tool);
            std::fs::write(&f, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        // Present but not executable: not a usable tool.
        std::fs::write(dir.path().join("buildah"), "").unwrap();
        let path = std::env::join_paths([dir.path(), Path::new("/nonexistent")]).unwrap();
        assert_eq!(
            missing_tools(Some(path.as_os_str())),
            [("buildah", "buildah")]
        );
        assert_eq!(missing_tools(None), TOOLS);
    }

    /// The sample repository as the bundled git-clone Task fetches it: a
    /// shallow fetch of `main` over the git server.
    #[tokio::test]
    async fn the_sample_repository_clones_shallow_over_http() {
        let missing = missing_tools(std::env::var_os("PATH").as_deref());
        if missing.iter().any(|(tool, _)| *tool == "git") {
            eprintln!("SKIPPED: git is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let repos = dir.path().join("git");
        sample_repository(&repos, SAMPLE_REPO).await.unwrap();
        let server = GitServer::start(repos, None).await.unwrap();
        let url = format!("{}/{SAMPLE_REPO}", server.url());
        let clone = dir.path().join("clone");
        let os = OsStr::new;
        run_git(
            dir.path(),
            &[
                os("clone"),
                os("-q"),
                os("--depth=1"),
                os("--branch"),
                os(SAMPLE_BRANCH),
                os(&url),
                clone.as_os_str(),
            ],
        )
        .await
        .unwrap();
        for (file, content) in SAMPLE_FILES {
            assert_eq!(std::fs::read_to_string(clone.join(file)).unwrap(), *content);
        }
        server.stop().await;
    }
}
