//! The repository's bundled Tasks (`tekton/tasks/`) run by the host step
//! runner: their scripts, workspaces and results for real.

mod tekton_support;

use std::path::Path;

use imagefactory_test_support::{GitServer, Registry, git, git_repo, have_tools, on_path};
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

#[tokio::test]
async fn bundled_git_clone_clones_a_real_repository() {
    if !have_tools("bundled git-clone", &["git"]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let repo = git_repo(root.path(), &[("Dockerfile", "FROM scratch\n")]);
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

#[tokio::test]
async fn bundled_docker_build_builds_with_buildah_and_pushes_to_a_registry_with_htpasswd() {
    if !have_tools(
        "bundled docker-build",
        &["buildah", "docker-registry", "htpasswd"],
    ) {
        return;
    }
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let registry = Registry::start();
    let root = tempfile::tempdir().unwrap();
    let env = env_with(ControllerOptions {
        // Real builds take real seconds: keep simulated time real.
        time_scale: 1.0,
        pod_start_delay: std::time::Duration::ZERO,
        host_steps: Some(HostSteps {
            root: root.path().join("sim"),
        }),
        ..ControllerOptions::default()
    })
    .await;
    env.default_storage_class().await;
    env.create(Some("ci"), bundled_task("docker-build")).await;
    // As `kubectl create secret docker-registry` makes it: `.dockerconfigjson`.
    let config = registry.docker_config(&registry.password);
    env.create(
        Some("ci"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "reg"},
        "type": "kubernetes.io/dockerconfigjson", "data": {".dockerconfigjson": b64(&config)}}),
    )
    .await;
    let image = format!("{}/team/app:1", registry.host);
    let spec = json!({
        "workspaces": [{"name": "w", "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}},
                       {"name": "d", "secret": {"secretName": "reg"}}],
        "pipelineSpec": {"workspaces": [{"name": "w"}, {"name": "d"}],
          "results": [{"name": "digest", "value": "$(tasks.build.results.IMAGE_DIGEST)"}],
          "tasks": [
            {"name": "prep", "workspaces": [{"name": "s", "workspace": "w"}], "taskSpec": {"workspaces": [{"name": "s"}],
                "steps": [{"name": "p", "image": "busybox", "script": "cd $(workspaces.s.path)\nprintf 'FROM scratch\\nCOPY f /f\\n' > Dockerfile\necho hello > f\n"}]}},
            {"name": "build", "runAfter": ["prep"], "taskRef": {"name": "docker-build"},
             "params": [{"name": "IMAGE", "value": image}, {"name": "TLS_VERIFY", "value": "false"}],
             "workspaces": [{"name": "source", "workspace": "w"}, {"name": "dockerconfig", "workspace": "d"}]}]}
    });
    let run = run_to_end(&env, spec).await;
    let trs = env.list(&gvr::TASKRUNS, "ci").await;
    let steps: Vec<&Value> = trs.iter().map(|t| &t["status"]["steps"]).collect();
    assert_eq!(condition(&run).1, "Succeeded", "{steps:#?}");
    let digest = result(&run, "digest").unwrap();
    assert!(digest.starts_with("sha256:"), "{digest}");
    assert_eq!(
        digest,
        registry.digest("team/app", "1").await,
        "the recorded digest is the registry's"
    );
}

/// Run PipelineRun `r`: a `prep` step (`script`, in the source workspace)
/// then the bundled Task `task` with `params`; returns the run and its TaskRuns.
async fn prep_and_run(env: &Env, script: &str, task: &str, params: Value) -> (Value, Vec<Value>) {
    env.default_storage_class().await;
    env.create(Some("ci"), bundled_task(task)).await;
    env.create(
        Some("ci"),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "reg"},
        "data": {"config.json": "eyJhdXRocyI6e319"}}),
    )
    .await;
    let spec = json!({
        "workspaces": [{"name": "w", "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}},
                       {"name": "d", "secret": {"secretName": "reg"}}],
        "pipelineSpec": {"workspaces": [{"name": "w"}, {"name": "d"}], "tasks": [
            {"name": "prep", "workspaces": [{"name": "s", "workspace": "w"}], "taskSpec": {"workspaces": [{"name": "s"}],
                "steps": [{"name": "p", "image": "busybox", "script": format!("cd $(workspaces.s.path)\n{script}")}]}},
            {"name": "build", "runAfter": ["prep"], "taskRef": {"name": task}, "params": params,
             "workspaces": [{"name": "source", "workspace": "w"}, {"name": "dockerconfig", "workspace": "d"}]}]}
    });
    let run = run_to_end(env, spec).await;
    (run, env.list(&gvr::TASKRUNS, "ci").await)
}

fn build_run(trs: &[Value]) -> &Value {
    trs.iter()
        .find(|t| {
            model::str_at(t, &["metadata", "labels", "tekton.dev/pipelineTask"]) == Some("build")
        })
        .expect("the build TaskRun")
}

async fn host_env(root: &Path) -> Env {
    env_with(ControllerOptions {
        time_scale: 1.0,
        pod_start_delay: std::time::Duration::ZERO,
        host_steps: Some(HostSteps {
            root: root.join("sim"),
        }),
        ..ControllerOptions::default()
    })
    .await
}

/// BuildKit's `buildctl-daemonless.sh` is not packaged for this host: the
/// bundled buildx Task fails with the runner's clear message.
#[tokio::test]
async fn bundled_buildx_without_buildkit_fails_naming_the_missing_tool() {
    if on_path("buildctl-daemonless.sh") {
        eprintln!("SKIPPED: buildctl-daemonless.sh is installed; this test covers its absence");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let env = host_env(root.path()).await;
    let params = json!([{"name": "IMAGE", "value": "127.0.0.1:5000/team/app:1"},
        {"name": "PLATFORMS", "value": ["linux/amd64", "linux/arm64"]}]);
    let (run, trs) = prep_and_run(
        &env,
        "printf 'FROM scratch\\n' > Dockerfile",
        "buildx",
        params,
    )
    .await;
    assert_eq!(condition(&run).1, "Failed");
    let tr = build_run(&trs);
    let message = "buildctl-daemonless.sh is not available on this host";
    assert_eq!(tr["status"]["steps"][0]["terminated"]["exitCode"], 127);
    assert_eq!(tr["status"]["steps"][0]["terminated"]["message"], message);
    let pod = model::str_at(tr, &["status", "podName"])
        .unwrap()
        .to_string();
    let logs = env.logs("ci", &pod, "step-build-and-push").await;
    assert_eq!(logs.last().map(String::as_str), Some(message), "{logs:?}");
}

/// The bundled packer Task runs a `null`-builder template with packer's
/// `-var image=…` and records `IMAGE_URL`.
#[tokio::test]
async fn bundled_packer_runs_a_null_builder_template() {
    if !have_tools("bundled packer", &["packer"]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let env = host_env(root.path()).await;
    let template = r#"cat > image.pkr.hcl <<'HCL'
variable "image" {
  type = string
}
source "null" "local" {
  communicator = "none"
}
build {
  sources = ["source.null.local"]
  provisioner "shell-local" {
    inline = ["echo built ${var.image}"]
  }
}
HCL"#;
    let image = "127.0.0.1:5000/team/packer:1";
    let params =
        json!([{"name": "IMAGE", "value": image}, {"name": "TEMPLATE", "value": "image.pkr.hcl"}]);
    let (run, trs) = prep_and_run(&env, template, "packer", params).await;
    let tr = build_run(&trs);
    let pod = model::str_at(tr, &["status", "podName"])
        .unwrap_or("")
        .to_string();
    let logs = env.logs("ci", &pod, "step-build").await;
    assert_eq!(condition(&run).1, "Succeeded", "{logs:#?}");
    assert_eq!(result(tr, "IMAGE_URL").as_deref(), Some(image));
    assert!(
        logs.iter().any(|l| l.contains(&format!("built {image}"))),
        "{logs:#?}"
    );
}

/// git-clone behind HTTP Basic auth: the credential arrives through the
/// `basic-auth` workspace (a Secret with `.gitconfig` and `.git-credentials`).
#[tokio::test]
async fn bundled_git_clone_uses_the_basic_auth_workspace() {
    if !have_tools("bundled git-clone with basic-auth", &["git"]) {
        return;
    }
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let root = tempfile::tempdir().unwrap();
    let repo = git_repo(root.path(), &[("README", "private\n")]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    let server = GitServer::start(&repo, Some(("alice", "pa55-w0rd")));

    let env = host_env(root.path()).await;
    env.create(Some("ci"), bundled_task("git-clone")).await;
    let with_auth = server.url_with("alice", "pa55-w0rd");
    let origin = with_auth.trim_end_matches("/app.git");
    env.create(Some("ci"), json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "git-auth"},
        "data": {".gitconfig": b64("[credential]\n\thelper = store\n"), ".git-credentials": b64(&format!("{origin}\n"))}})).await;
    let clone = |name: &str, auth: bool| {
        let mut ws = vec![json!({"name": "output", "emptyDir": {}})];
        if auth {
            ws.push(json!({"name": "basic-auth", "secret": {"secretName": "git-auth"}}));
        }
        json!({"apiVersion": "tekton.dev/v1", "kind": "TaskRun", "metadata": {"name": name}, "spec": {
            "taskRef": {"name": "git-clone"}, "workspaces": ws,
            "params": [{"name": "url", "value": server.url}, {"name": "revision", "value": "main"}]}})
    };
    env.create(Some("ci"), clone("with-auth", true)).await;
    env.create(Some("ci"), clone("without-auth", false)).await;
    let ok = env.wait_done(&gvr::TASKRUNS, "ci", "with-auth").await;
    assert_eq!(condition(&ok).1, "Succeeded", "{:#}", ok["status"]["steps"]);
    assert_eq!(result(&ok, "commit").as_deref(), Some(commit.as_str()));
    let denied = env.wait_done(&gvr::TASKRUNS, "ci", "without-auth").await;
    assert_eq!(
        condition(&denied).1,
        "StepFailed",
        "no credential, no clone"
    );
    assert!(
        server.denied() > 0,
        "the server refused the anonymous clone"
    );
}
