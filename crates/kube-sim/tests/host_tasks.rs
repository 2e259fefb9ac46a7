//! The repository's bundled Tasks (`tekton/tasks/`) run by the host step
//! runner: their scripts, workspaces and results for real.

mod tekton_support;

use std::path::Path;
use std::process::Command;

use kube_sim::cluster::gvr;
use kube_sim::tekton::{ControllerOptions, HostSteps, model};
use serde_json::{Value, json};
use tekton_support::*;

fn bundled_task(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tekton/tasks")
        .join(format!("{name}.yaml"));
    load_yaml(&path).remove(0)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test]
async fn bundled_git_clone_clones_a_real_repository() {
    if Command::new("git").arg("--version").output().is_err() {
        eprintln!("SKIPPED: git is not installed");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("Dockerfile"), "FROM scratch\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);

    let env = env_with(ControllerOptions {
        time_scale: 0.01,
        host_steps: Some(HostSteps {
            root: root.path().join("sim"),
        }),
        ..ControllerOptions::default()
    })
    .await;
    env.default_storage_class().await;
    env.create(Some("ci"), bundled_task("git-clone")).await;
    let url = format!("file://{}", repo.display());
    let spec = json!({
        "workspaces": [{"name": "src", "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}}],
        "pipelineSpec": {
            "workspaces": [{"name": "src"}],
            "results": [{"name": "commit", "value": "$(tasks.clone.results.commit)"}, {"name": "found", "value": "$(tasks.check.results.found)"}],
            "tasks": [
                {"name": "clone", "taskRef": {"name": "git-clone"},
                 "params": [{"name": "url", "value": url}, {"name": "revision", "value": "main"}],
                 "workspaces": [{"name": "output", "workspace": "src"}]},
                {"name": "check", "runAfter": ["clone"], "workspaces": [{"name": "s", "workspace": "src"}],
                 "taskSpec": {"workspaces": [{"name": "s"}], "results": [{"name": "found"}],
                    "steps": [{"name": "ls", "image": "busybox", "script": "cat $(workspaces.s.path)/Dockerfile > $(results.found.path)"}]}}
            ]
        }
    });
    let run = run_to_end(&env, spec).await;
    let trs = env.list(&gvr::TASKRUNS, "ci").await;
    let steps: Vec<&Value> = trs.iter().map(|t| &t["status"]["steps"]).collect();
    assert_eq!(condition(&run).1, "Succeeded", "{steps:#?}");
    assert_eq!(
        result(&run, "commit").as_deref(),
        Some(commit.as_str()),
        "the commit checked out"
    );
    assert_eq!(
        result(&run, "found").as_deref(),
        Some("FROM scratch\n"),
        "the clone is in the shared workspace"
    );
    let clone = trs
        .iter()
        .find(|t| {
            model::str_at(t, &["metadata", "labels", "tekton.dev/pipelineTask"]) == Some("clone")
        })
        .unwrap();
    assert_eq!(result(clone, "url").as_deref(), Some(url.as_str()));
}
