//! Findings 4 and 5 through the real server: hostile build args reach the
//! cluster as single param values, and the build step of the Task installed
//! there hands each to the build tool as a single argument (the step script
//! is run here with a fake `buildah`, see `crates/exec/tests/task_runner`);
//! two registry credentials made back to back (time-ordered ids sharing a
//! prefix) get two Secrets, each holding its own auth.

#[path = "../../../exec/tests/task_runner/mod.rs"]
mod task_runner;

use std::collections::BTreeMap;

use std::time::{Duration, Instant};

use base64::Engine;
use kube_sim::cluster::gvr;
use serde_json::{Value, json};

use crate::server::{Target, Tenant};

const IMAGE: &str = "registry.example.com/team/app:1.0";

/// A tenant admin's provider pointing at kube-sim (loopback is allowed by the
/// Target's environment), and a project.
async fn provider_and_project(target: &Target, tenant: &Tenant) -> (String, String) {
    let config = target.sim_provider_config();
    let provider = target
        .http
        .created(
            "/api/v1/providers",
            &tenant.admin,
            json!({"name": "sim", "provider_type": "kubernetes", "config": config}),
        )
        .await;
    let project = target
        .http
        .created(
            "/api/v1/projects",
            &tenant.admin,
            json!({"name": "app", "git_url": "https://git.example.com/team/app.git"}),
        )
        .await;
    (
        provider["id"].as_str().unwrap().to_owned(),
        project["id"].as_str().unwrap().to_owned(),
    )
}

/// The PipelineRun of `build`, once the dispatcher has submitted it.
async fn pipelinerun(target: &Target, namespace: &str, build: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let runs = target
            .sim
            .cluster()
            .list(&gvr::PIPELINERUNS, Some(namespace));
        if let Some(run) = runs
            .into_iter()
            .find(|r| r["metadata"]["labels"]["imagefactory.io/build-id"] == build)
        {
            return run;
        }
        assert!(
            Instant::now() < deadline,
            "no PipelineRun for build {build}:\n{}",
            target.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The params the PipelineRun gives its `build` task: `$(params.x)` and
/// `["$(params.x[*])"]` resolved from the run's own params.
fn build_task_params(run: &Value) -> BTreeMap<String, task_runner::Param> {
    let tasks = run["spec"]["pipelineSpec"]["tasks"].as_array().unwrap();
    let build = tasks.iter().find(|t| t["name"] == "build").unwrap();
    let reference = |v: &str| -> String {
        let name = v.strip_prefix("$(params.").unwrap();
        name.trim_end_matches(')')
            .trim_end_matches("[*]")
            .to_owned()
    };
    let mut out = BTreeMap::new();
    for p in build["params"].as_array().unwrap() {
        let value = match &p["value"] {
            // A literal (e.g. `TLS_VERIFY` from the provider's setting) is its own value.
            Value::String(v) if !v.starts_with("$(params.") => task_runner::s(v),
            Value::String(v) => task_runner::s(param(run, &reference(v)).as_str().unwrap()),
            Value::Array(items) => {
                let items = param(run, &reference(items[0].as_str().unwrap()));
                task_runner::Param::A(
                    items
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|i| i.as_str().unwrap().to_owned())
                        .collect(),
                )
            }
            other => panic!("unexpected param value {other}"),
        };
        out.insert(p["name"].as_str().unwrap().to_owned(), value);
    }
    out
}

/// Run kube-sim's docker-build Task with the run's params; buildah's argv.
fn buildah_argv(target: &Target, namespace: &str, run: &Value) -> Vec<String> {
    let task = target
        .sim
        .cluster()
        .get(&gvr::TASKS, Some(namespace), "docker-build")
        .expect("docker-build Task installed");
    let params = build_task_params(run);
    let params = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    let runner = task_runner::Run::new(task_runner::Shell::Sh);
    let code = runner.task("docker-build", &task["spec"], &params);
    assert_eq!(code, 0, "the docker-build steps ran");
    let calls = runner.calls();
    let (tool, argv) = calls.first().expect("buildah was called");
    assert_eq!(tool, "buildah");
    argv.clone()
}

fn param<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["spec"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| &p["value"])
        .unwrap_or_else(|| panic!("no param {name} in {run}"))
}

#[tokio::test]
async fn hostile_build_args_reach_the_cluster_as_single_values() {
    let target = Target::start(&[]).await;
    let tenant = target.tenant("attack-args").await;
    let namespace = target.prepare_namespace(&tenant.id).await;
    let (provider, project) = provider_and_project(&target, &tenant).await;
    let credential = target
        .http
        .created(
            "/api/v1/registry-credentials",
            &tenant.admin,
            json!({"name": "push", "registry": "registry.example.com",
                   "username": "bot", "password": "pw-args"}),
        )
        .await;
    let hostile = json!({
        "A": "a b --volume=/:/host",
        "JAVA_OPTS": "-Xmx1g -Xms1g",
        "Q": "\"double\" 'single' $(id) `id` *",
        "NL": "line one\nline two",
    });
    let build = target
        .http
        .created(
            "/api/v1/builds",
            &tenant.developer,
            json!({
                "project_id": project,
                "method": "docker",
                "infrastructure_type": "kubernetes",
                "infrastructure_provider_id": provider,
                "registry_credential_id": credential["id"],
                "image": IMAGE,
                "config": {
                    "build_args": hostile,
                    "labels": {"org.example.note": "x --privileged"},
                },
            }),
        )
        .await;
    let run = pipelinerun(&target, &namespace, build["id"].as_str().unwrap()).await;
    assert_eq!(
        param(&run, "build-args"),
        &json!([
            "A=a b --volume=/:/host",
            "JAVA_OPTS=-Xmx1g -Xms1g",
            "NL=line one\nline two",
            "Q=\"double\" 'single' $(id) `id` *",
        ]),
        "each build arg is one array item, unchanged"
    );
    assert_eq!(
        param(&run, "labels"),
        &json!(["org.example.note=x --privileged"])
    );
    // What the build tool gets from the Task the cluster holds.
    let argv = buildah_argv(&target, &namespace, &run);
    for arg in [
        "--build-arg=A=a b --volume=/:/host",
        "--build-arg=JAVA_OPTS=-Xmx1g -Xms1g",
        "--build-arg=NL=line one\nline two",
        "--build-arg=Q=\"double\" 'single' $(id) `id` *",
        "--label=org.example.note=x --privileged",
    ] {
        let count = argv.iter().filter(|a| *a == arg).count();
        assert_eq!(count, 1, "{arg:?} once, as one argument, in {argv:#?}");
    }
    for injected in ["--volume=/:/host", "--privileged", "-Xms1g", "b"] {
        assert!(
            !argv.iter().any(|a| a == injected),
            "{injected:?} became an argument of its own: {argv:#?}"
        );
    }
    target.stop().await;
}

/// The password in a dockerconfigjson Secret as kube-sim stores it.
fn secret_password(secret: &Value) -> String {
    let data = secret["data"][".dockerconfigjson"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    let config: Value = serde_json::from_slice(&bytes).unwrap();
    config["auths"]["registry.example.com"]["password"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn two_credentials_made_back_to_back_push_with_their_own_secrets() {
    let target = Target::start(&[]).await;
    let tenant = target.tenant("attack-creds").await;
    let namespace = target.prepare_namespace(&tenant.id).await;
    let (provider, project) = provider_and_project(&target, &tenant).await;
    let mut credentials = Vec::new();
    for (name, password) in [("first", "pw-first"), ("second", "pw-second")] {
        let created = target
            .http
            .created(
                "/api/v1/registry-credentials",
                &tenant.admin,
                json!({"name": name, "registry": "registry.example.com",
                       "username": "bot", "password": password}),
            )
            .await;
        credentials.push((created["id"].as_str().unwrap().to_owned(), password));
    }
    let mut bound = Vec::new();
    for (id, _) in &credentials {
        let build = target
            .http
            .created(
                "/api/v1/builds",
                &tenant.developer,
                json!({
                    "project_id": project,
                    "method": "docker",
                    "infrastructure_type": "kubernetes",
                    "infrastructure_provider_id": provider,
                    "registry_credential_id": id,
                    "image": IMAGE,
                }),
            )
            .await;
        let run = pipelinerun(&target, &namespace, build["id"].as_str().unwrap()).await;
        let name = run["spec"]["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "dockerconfig")
            .unwrap()["secret"]["secretName"]
            .as_str()
            .unwrap()
            .to_owned();
        let secret = target
            .sim
            .cluster()
            .get(&gvr::SECRETS, Some(&namespace), &name)
            .unwrap_or_else(|| panic!("Secret {name} missing"));
        bound.push((name, secret));
    }
    for ((id, password), (name, secret)) in credentials.iter().zip(&bound) {
        assert_eq!(
            secret_password(secret),
            *password,
            "the build with credential {id} binds Secret {name}, which must hold that credential's auth"
        );
    }
    for ((id, _), (_, secret)) in credentials.iter().zip(&bound) {
        assert_eq!(
            secret["metadata"]["labels"]["imagefactory.io/credential-id"],
            id.as_str()
        );
    }
    let registry_secrets = target
        .sim
        .cluster()
        .list(&gvr::SECRETS, Some(&namespace))
        .into_iter()
        .filter(|s| s["metadata"]["labels"]["imagefactory.io/secret-kind"] == "registry")
        .count();
    assert_eq!(registry_secrets, 2, "one Secret per credential");
    target.stop().await;
}
