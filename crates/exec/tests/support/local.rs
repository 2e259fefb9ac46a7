//! Shared fixtures of the local executor tests: an in-memory sink, a git
//! repository, a `docker-registry` with htpasswd auth, /proc checks.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use imagefactory_domain::{BuildMethod, MethodConfig, Secret};
use imagefactory_exec::local::{ContainerCli, LocalSettings};
use imagefactory_exec::{
    Artifact, ExecutionContext, ExecutionRef, ExecutionSink, GitSource, LogLine, RegistryAuth,
    SinkError,
};
use uuid::Uuid;

/// True when every tool is on PATH; otherwise prints why the test is skipped.
pub fn have_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED {test}: {} not installed (run .ci/install-local-tools.sh)",
            missing.join(", ")
        );
    }
    missing.is_empty()
}

#[derive(Default)]
pub struct MemorySink {
    pub references: Mutex<Vec<ExecutionRef>>,
    pub lines: Mutex<Vec<LogLine>>,
    pub artifacts: Mutex<Vec<Artifact>>,
    pub progress: Mutex<Vec<String>>,
    pub log_calls: Mutex<usize>,
}

#[async_trait]
impl ExecutionSink for MemorySink {
    async fn reference(&self, reference: &ExecutionRef) -> Result<(), SinkError> {
        self.references.lock().unwrap().push(reference.clone());
        Ok(())
    }
    async fn logs(&self, lines: &[LogLine]) -> Result<(), SinkError> {
        *self.log_calls.lock().unwrap() += 1;
        self.lines.lock().unwrap().extend_from_slice(lines);
        Ok(())
    }
    async fn artifact(&self, artifact: &Artifact) -> Result<(), SinkError> {
        self.artifacts.lock().unwrap().push(artifact.clone());
        Ok(())
    }
    async fn progress(&self, message: &str) -> Result<(), SinkError> {
        self.progress.lock().unwrap().push(message.to_owned());
        Ok(())
    }
}

impl MemorySink {
    pub fn artifact(&self, name: &str) -> Option<String> {
        self.artifacts
            .lock()
            .unwrap()
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.clone())
    }

    pub fn log_text(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| format!("[{}:{}] {}", l.source, l.position, l.line))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every source's positions run 0, 1, 2... without gaps or repeats.
    pub fn assert_positions_contiguous(&self) {
        let lines = self.lines.lock().unwrap();
        let mut next: std::collections::HashMap<&str, i64> = Default::default();
        for l in lines.iter() {
            let expected = next.entry(l.source.as_str()).or_insert(0);
            assert_eq!(l.position, *expected, "position of {:?}", l);
            *expected += 1;
        }
    }

    pub fn sources(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .lines
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.source.clone())
            .collect();
        s.dedup();
        s.sort();
        s.dedup();
        s
    }
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository with the given files on branch `main` (one commit per call
/// of [`commit`]); returns the repository path.
pub fn git_repo(parent: &Path, files: &[(&str, &str)]) -> PathBuf {
    let repo = parent.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    commit(&repo, files, "initial");
    repo
}

/// Writes files and commits them; returns the commit sha.
pub fn commit(repo: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (name, body) in files {
        let path = repo.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

pub fn settings(workdir: &Path, cli: ContainerCli) -> LocalSettings {
    LocalSettings {
        workdir: workdir.to_path_buf(),
        container_cli: cli,
        git_protocols: ["file", "http", "https"].map(String::from).to_vec(),
        grace_period: Duration::from_secs(3),
        storage_driver: std::env::var("IF_TEST_STORAGE_DRIVER").ok(),
        ..LocalSettings::default()
    }
}

pub fn context(
    method: BuildMethod,
    repo: &Path,
    git_ref: &str,
    image: &str,
    config: MethodConfig,
    registry: Option<RegistryAuth>,
) -> ExecutionContext {
    ExecutionContext {
        build_id: Uuid::new_v4(),
        tenant_id: Uuid::new_v4(),
        project_id: Uuid::new_v4(),
        execution_id: Uuid::new_v4(),
        attempt: 1,
        method,
        source: GitSource {
            url: imagefactory_domain::GitUrl::parse(&format!("file://{}", repo.display()))
                .expect("a file:// URL of the test repository"),
            git_ref: imagefactory_domain::GitRef::parse(git_ref).expect("a valid test ref"),
            credential: None,
        },
        image: imagefactory_domain::ImageRef::parse(image).expect("a valid test image"),
        config,
        registry,
        provider: None,
        timeout: Duration::from_secs(300),
    }
}

/// A `docker-registry` on 127.0.0.1 with htpasswd auth, stopped on drop.
pub struct Registry {
    child: Child,
    _dir: tempfile::TempDir,
    pub host: String,
    pub user: String,
    pub password: String,
}

impl Registry {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (user, password) = ("builder".to_owned(), "s3cret-Pa55".to_owned());
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", &user, &password])
            .output()
            .expect("htpasswd runs");
        assert!(htpasswd.status.success());
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\nauth:\n  htpasswd:\n    realm: test\n    path: {root}/htpasswd\n",
            root = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .args([
                "serve",
                &dir.path().join("config.yml").display().to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not start on {host}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            _dir: dir,
            host,
            user,
            password,
        }
    }

    pub fn auth(&self, password: &str) -> RegistryAuth {
        RegistryAuth {
            credential_id: Uuid::new_v4(),
            version: 1,
            registry: self.host.clone(),
            username: self.user.clone(),
            password: Secret::new(password),
        }
    }

    /// `(Docker-Content-Digest, Content-Type, body)` the registry serves for a tag.
    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> (String, String, serde_json::Value) {
        let response = reqwest::Client::new()
            .get(format!(
                "http://{}/v2/{repo}/manifests/{reference}",
                self.host
            ))
            .basic_auth(&self.user, Some(&self.password))
            .header(
                "Accept",
                "application/vnd.oci.image.index.v1+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json, \
                 application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.docker.distribution.manifest.v2+json",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "manifest {repo}:{reference}");
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let digest = header("docker-content-digest");
        let content_type = header("content-type");
        let body = response.json().await.unwrap();
        (digest, content_type, body)
    }

    pub async fn blob(&self, repo: &str, digest: &str) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("http://{}/v2/{repo}/blobs/{digest}", self.host))
            .basic_auth(&self.user, Some(&self.password))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nothing is left in the executor's workdir: no workspace, no auth file.
pub fn assert_workdir_empty(workdir: &Path) {
    let left: Vec<_> = std::fs::read_dir(workdir)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind in the workdir: {left:?}");
}

/// `(state, pgrp)` of a process.
pub fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let mut fields = after.split(' ');
    let state = fields.next()?.chars().next()?;
    fields.next()?;
    Some((state, fields.next()?.parse().ok()?))
}

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Running (non-zombie) processes of a process group.
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|pid| matches!(proc_stat(*pid), Some((s, g)) if g == pgid && s != 'Z' && s != 'X'))
        .collect()
}

/// Running processes whose environment marks them as the execution's.
pub fn live_execution_processes(execution_id: Uuid) -> Vec<i32> {
    let marker = format!("IF_EXECUTION_ID={execution_id}");
    pids()
        .into_iter()
        .filter(|pid| matches!(proc_stat(*pid), Some((s, _)) if s != 'Z' && s != 'X'))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|v| v == marker.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// The execution's podman/buildah run root (outside the workspace) is gone.
pub fn assert_runroot_gone(settings: &LocalSettings, execution_id: Uuid) {
    let runroot = settings.runroot_dir.join(execution_id.simple().to_string());
    assert!(
        !runroot.exists(),
        "run root left behind: {}",
        runroot.display()
    );
}
