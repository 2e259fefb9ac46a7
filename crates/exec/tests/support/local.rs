//! Shared fixtures of the local executor tests: an in-memory sink,
//! execution contexts, /proc checks. Git repositories and the
//! `docker-registry` with htpasswd auth come from `imagefactory-test-support`
//! (kube-sim's and the end-to-end tests use the same ones).
#![allow(dead_code, unused_imports)]

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use imagefactory_domain::{BuildMethod, MethodConfig, Secret};
use imagefactory_exec::local::{ContainerCli, LocalSettings};
use imagefactory_exec::{
    Artifact, ExecutionContext, ExecutionRef, ExecutionSink, GitSource, LogLine, RegistryAuth,
    SinkError,
};
use uuid::Uuid;

pub use imagefactory_test_support::{GitServer, Registry, commit, git, git_repo, have_tools};

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

/// The registry's user with `password` as the local executor's registry auth.
pub trait RegistryAuthExt {
    fn auth(&self, password: &str) -> RegistryAuth;
}

impl RegistryAuthExt for Registry {
    fn auth(&self, password: &str) -> RegistryAuth {
        RegistryAuth {
            credential_id: Uuid::new_v4(),
            version: 1,
            registry: self.host.clone(),
            username: self.user.clone(),
            password: Secret::new(password),
        }
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
