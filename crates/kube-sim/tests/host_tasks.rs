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

/// A `docker-registry` on 127.0.0.1 with htpasswd auth, stopped on drop.
struct Registry {
    child: std::process::Child,
    host: String,
    _dir: tempfile::TempDir,
}

const USER: &str = "builder";
const PASSWORD: &str = "s3cret-Pa55";

impl Registry {
    fn start() -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let htpasswd = Command::new("htpasswd")
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .unwrap();
        std::fs::write(dir.path().join("htpasswd"), &htpasswd.stdout).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {root}/data\nhttp:\n  addr: {host}\nauth:\n  htpasswd:\n    realm: test\n    path: {root}/htpasswd\n",
            root = dir.path().display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("docker-registry starts");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "registry did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Registry {
            child,
            host,
            _dir: dir,
        }
    }

    /// The `Docker-Content-Digest` the registry serves for `repo:tag`.
    fn digest(&self, repo: &str, tag: &str) -> String {
        use base64::Engine;
        use std::io::{Read, Write};
        let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        let mut s = std::net::TcpStream::connect(&self.host).unwrap();
        write!(
            s,
            "HEAD /v2/{repo}/manifests/{tag} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\nAccept: application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n",
            self.host
        )
        .unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        text.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("docker-content-digest")
                    .then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no digest header: {text}"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn on_path(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn bundled_docker_build_builds_with_buildah_and_pushes_to_a_registry_with_htpasswd() {
    let missing: Vec<&str> = ["buildah", "docker-registry", "htpasswd"]
        .into_iter()
        .filter(|t| !on_path(t))
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED: {} not installed (run .ci/install-local-tools.sh)",
            missing.join(", ")
        );
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
    let config =
        json!({"auths": {registry.host.clone(): {"auth": b64(&format!("{USER}:{PASSWORD}"))}}})
            .to_string();
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
        registry.digest("team/app", "1"),
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
    if !on_path("packer") {
        eprintln!("SKIPPED: packer is not installed (run .ci/install-local-tools.sh)");
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

/// A "dumb HTTP" git server behind Basic auth (python3, static files of a
/// bare repository), stopped on drop.
struct GitHttp {
    child: std::process::Child,
    url: String,
}

impl Drop for GitHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const GIT_HTTP_SERVER: &str = r#"
import base64, http.server, sys
root, port, expected = sys.argv[1], int(sys.argv[2]), sys.argv[3]
class H(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *a, **k): super().__init__(*a, directory=root, **k)
    def log_message(self, *a): pass
    def do_GET(self):
        if self.headers.get("Authorization") != "Basic " + base64.b64encode(expected.encode()).decode():
            self.send_response(401); self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0"); self.end_headers(); return
        super().do_GET()
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
"#;

fn serve_git_over_http(repo: &Path, credential: &str) -> GitHttp {
    let root = repo.parent().unwrap().join("http");
    std::fs::create_dir_all(&root).unwrap();
    let bare = root.join("app.git");
    git(
        &root,
        &[
            "clone",
            "-q",
            "--bare",
            &repo.display().to_string(),
            &bare.display().to_string(),
        ],
    );
    git(&bare, &["update-server-info"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("python3")
        .args([
            "-c",
            GIT_HTTP_SERVER,
            &root.display().to_string(),
            &port.to_string(),
            credential,
        ])
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "git http server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    GitHttp {
        child,
        url: format!("http://127.0.0.1:{port}/app.git"),
    }
}

/// git-clone behind HTTP Basic auth: the credential arrives through the
/// `basic-auth` workspace (a Secret with `.gitconfig` and `.git-credentials`).
#[tokio::test]
async fn bundled_git_clone_uses_the_basic_auth_workspace() {
    if !on_path("git") || !on_path("python3") {
        eprintln!("SKIPPED: git or python3 is not installed");
        return;
    }
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "private\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "one"]);
    let commit = git(&repo, &["rev-parse", "HEAD"]);
    let server = serve_git_over_http(&repo, "alice:pa55-w0rd");

    let env = host_env(root.path()).await;
    env.create(Some("ci"), bundled_task("git-clone")).await;
    let with_auth = server.url.replace("http://", "http://alice:pa55-w0rd@");
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
            // Dumb HTTP cannot serve shallow fetches: full history.
            "params": [{"name": "url", "value": server.url}, {"name": "revision", "value": "main"}, {"name": "depth", "value": "0"}]}})
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
}
