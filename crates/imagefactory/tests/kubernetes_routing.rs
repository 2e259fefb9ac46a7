//! Where `imagefactory serve` runs a Kubernetes build, as a process: with
//! no provider, on the global cluster of `IF_BUILD_TEKTON_KUBECONFIG`
//! (kube-sim), its log holding the operator lines; with Tekton disabled, on
//! the local executor (saying why), or failed under
//! `IF_BUILD_TEKTON_DISABLED=fail`.

mod common;

use std::time::{Duration, Instant};

use common::{ADMIN_TOKEN, Http, Proc, ReservedDb, free_port, fresh_database, serve_env};
use imagefactory_exec::tekton::TektonVersion;
use imagefactory_exec::tekton::namespace::ensure_namespace;
use imagefactory_exec::tekton::secrets::operator_docker_config;
use imagefactory_exec::tekton::tasks::install_tasks;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, PostParams};
use kube_sim::tekton::ControllerOptions;
use kube_sim::{KubeSim, KubeSimOptions};
use serde_json::{Value, json};

struct Server {
    proc: Proc,
    http: Http,
    /// Dropped (the database with it) after the process stopped.
    _db: ReservedDb,
    _workdir: tempfile::TempDir,
}

async fn serve(extra: &[(&str, String)]) -> Server {
    let db = fresh_database("routing");
    let port = free_port();
    let workdir = tempfile::tempdir().unwrap();
    let mut env = serve_env(&db.url, port, workdir.path(), "info");
    env.extend(extra.iter().cloned());
    let mut proc = Proc::spawn(&["serve"], &env);
    let http = Http::new(port);
    http.wait_ready(&mut proc, Duration::from_secs(60)).await;
    Server {
        proc,
        http,
        _db: db,
        _workdir: workdir,
    }
}

impl Server {
    /// A tenant (local builds allowed or not), its admin token and a
    /// project whose git URL fails at once (nothing listens on port 1).
    async fn tenant(&self, name: &str, allow_local: bool) -> (String, String, String) {
        let (tenant, token) = self.http.tenant_with_token(name).await;
        let id = tenant["id"].as_str().unwrap().to_owned();
        if allow_local {
            self.http.allow_local_builds(&id).await;
        }
        let project = self
            .http
            .created(
                "/api/v1/projects",
                &token,
                json!({"name": "web", "git_url": "https://127.0.0.1:1/team/web.git"}),
            )
            .await;
        (id, token, project["id"].as_str().unwrap().to_owned())
    }

    async fn submit(&self, token: &str, project: &str) -> (u16, Value) {
        self.http
            .post(
                "/api/v1/builds",
                token,
                json!({"project_id": project, "method": "docker",
                       "image": "registry.example.com/team/web:1.0"}),
            )
            .await
    }

    async fn wait_end(&self, token: &str, build: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (status, b) = self
                .http
                .get(&format!("/api/v1/builds/{build}"), token)
                .await;
            assert_eq!(status, 200, "{b}");
            if ["succeeded", "failed", "cancelled", "timed_out"]
                .contains(&b["status"].as_str().unwrap())
            {
                return b;
            }
            assert!(
                Instant::now() < deadline,
                "build did not end: {b}\n{}",
                self.proc.output()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn executions(&self, token: &str, build: &str) -> Vec<Value> {
        let (status, page) = self
            .http
            .get(&format!("/api/v1/builds/{build}/executions"), token)
            .await;
        assert_eq!(status, 200, "{page}");
        page["items"].as_array().cloned().unwrap()
    }

    /// The build's log as the plain `GET …/logs` gives it, one line each.
    async fn log(&self, token: &str, build: &str) -> Vec<String> {
        let text = reqwest::Client::new()
            .get(format!("{}/api/v1/builds/{build}/logs", self.http.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines().map(str::to_owned).collect()
    }

    async fn stop(mut self) {
        self.proc.signal(libc::SIGTERM);
        assert!(
            self.proc
                .wait_for_exit(Duration::from_secs(20))
                .await
                .is_some(),
            "serve did not stop\n{}",
            self.proc.output()
        );
    }
}

/// The text of a colored log line.
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC '[' parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn a_build_without_a_provider_runs_on_the_global_cluster_of_the_kubeconfig() {
    let sim = KubeSim::start(KubeSimOptions {
        tekton: Some(ControllerOptions {
            time_scale: 0.05,
            ..ControllerOptions::default()
        }),
        ..KubeSimOptions::default()
    })
    .await
    .expect("kube-sim starts");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    sim.write_kubeconfig(&kubeconfig).unwrap();

    // Without a global cluster the API refuses it, naming the field.
    let plain = serve(&[]).await;
    let (_, token, project) = plain.tenant("no-global", false).await;
    let (status, problem) = plain.submit(&token, &project).await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(
        problem["errors"][0]["field"], "infrastructure_provider_id",
        "{problem}"
    );
    let message = problem["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("IF_BUILD_TEKTON_KUBECONFIG"), "{message}");
    plain.stop().await;

    let server = serve(&[(
        "IF_BUILD_TEKTON_KUBECONFIG",
        kubeconfig.display().to_string(),
    )])
    .await;
    let (tenant, token, project) = server.tenant("global", false).await;
    // The operator's part: namespace, Tasks, registry Secret.
    let client = sim.kube_client().await.unwrap();
    let namespace = ensure_namespace(&client, tenant.parse().unwrap())
        .await
        .unwrap();
    install_tasks(&client, TektonVersion::V1, &namespace)
        .await
        .unwrap();
    let secret = operator_docker_config(&namespace, br#"{"auths":{}}"#);
    Api::<Secret>::namespaced(client.clone(), &namespace)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let (status, build) = server.submit(&token, &project).await;
    assert_eq!(status, 201, "{build}");
    assert_eq!(build["infrastructure_provider_id"], Value::Null, "{build}");
    let id = build["id"].as_str().unwrap().to_owned();
    let ended = server.wait_end(&token, &id).await;
    assert_eq!(
        ended["status"],
        "succeeded",
        "{ended}\n{}",
        server.proc.output()
    );
    let executions = server.executions(&token, &id).await;
    assert_eq!(executions.len(), 1, "{executions:?}");
    assert_eq!(executions[0]["executor"], "tekton", "{executions:?}");
    assert_eq!(executions[0]["provider_id"], Value::Null, "{executions:?}");

    // The run is on the kubeconfig's cluster, and the log names it.
    let runs = Api::<DynamicObject>::namespaced_with(
        client,
        &namespace,
        &imagefactory_exec::tekton::submit::pipelinerun_resource(TektonVersion::V1),
    )
    .list(&Default::default())
    .await
    .unwrap();
    assert_eq!(runs.items.len(), 1);
    let run = runs.items[0].metadata.name.clone().unwrap();
    let log = server.log(&token, &id).await;
    let at = |prefix: &str| {
        log.iter()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in {log:#?}"))
    };
    let ns = at(&format!("Using Kubernetes namespace: {namespace}"));
    let created = at(&format!("Created PipelineRun: {run}"));
    let finished = at(&format!("PipelineRun {run} finished: succeeded after "));
    assert!(ns < created && created < finished, "{log:#?}");
    // The dispatcher logged the claim with what an operator needs.
    let output = strip_ansi(&server.proc.output());
    let claim = output
        .lines()
        .find(|l| l.contains("build claimed") && l.contains(&id))
        .unwrap_or_else(|| panic!("no claim line for {id}:\n{output}"));
    for field in [
        "method=docker",
        "infrastructure=kubernetes",
        "provider.id=None",
        "executor=tekton",
    ] {
        assert!(claim.contains(field), "{field} in {claim}");
    }
    server.stop().await;
}

#[tokio::test]
async fn with_tekton_disabled_a_kubernetes_build_runs_locally_or_fails_as_configured() {
    let server = serve(&[("IF_BUILD_TEKTON_ENABLED", "false".into())]).await;
    // Without a provider: the API needs one (or a global cluster) to accept
    // a Kubernetes build, so the platform admin's global provider it is.
    let provider = server
        .http
        .created(
            "/api/v1/admin/providers",
            ADMIN_TOKEN,
            json!({"name": "global", "provider_type": "kubernetes",
                   "config": {"auth_method": "token", "endpoint": "https://10.0.0.1:6443", "token": "t"}}),
        )
        .await;
    assert!(provider["id"].is_string(), "{provider}");
    let (_, token, project) = server.tenant("allowed", true).await;
    let (status, build) = server.submit(&token, &project).await;
    assert_eq!(status, 201, "{build}");
    let id = build["id"].as_str().unwrap().to_owned();
    let ended = server.wait_end(&token, &id).await;
    // The local executor ran it: git fails on port 1, as no cluster would.
    assert_eq!(ended["status"], "failed", "{ended}");
    let message = ended["error_message"].as_str().unwrap_or_default();
    assert!(
        message.contains("git") && message.contains("127.0.0.1"),
        "{ended}"
    );
    let executions = server.executions(&token, &id).await;
    assert_eq!(executions[0]["executor"], "local", "{executions:?}");
    let log = server.log(&token, &id).await;
    assert!(
        log[0].starts_with("Tekton is disabled on this installation (IF_BUILD_TEKTON_ENABLED=false): this Kubernetes build runs on the local executor"),
        "{log:#?}"
    );

    // A tenant without allow_local_builds: not run, saying why.
    let (_, token, project) = server.tenant("not-allowed", false).await;
    let (status, build) = server.submit(&token, &project).await;
    assert_eq!(status, 201, "{build}");
    let id = build["id"].as_str().unwrap().to_owned();
    let ended = server.wait_end(&token, &id).await;
    assert_eq!(ended["status"], "failed", "{ended}");
    let message = ended["error_message"].as_str().unwrap_or_default();
    assert!(
        message.contains("IF_BUILD_TEKTON_ENABLED=false") && message.contains("allow_local_builds"),
        "{ended}"
    );
    server.stop().await;

    // "Fail instead": the build fails at claim time, saying so.
    let server = serve(&[
        ("IF_BUILD_TEKTON_ENABLED", "false".into()),
        ("IF_BUILD_TEKTON_DISABLED", "fail".into()),
    ])
    .await;
    server
        .http
        .created(
            "/api/v1/admin/providers",
            ADMIN_TOKEN,
            json!({"name": "global", "provider_type": "kubernetes",
                   "config": {"auth_method": "token", "endpoint": "https://10.0.0.1:6443", "token": "t"}}),
        )
        .await;
    let (_, token, project) = server.tenant("failing", true).await;
    let (_, build) = server.submit(&token, &project).await;
    let id = build["id"].as_str().unwrap().to_owned();
    let ended = server.wait_end(&token, &id).await;
    assert_eq!(ended["status"], "failed", "{ended}");
    let message = ended["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("IF_BUILD_TEKTON_DISABLED=fail"), "{ended}");
    assert!(server.executions(&token, &id).await.is_empty());
    server.stop().await;
}
