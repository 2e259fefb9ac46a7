//! Findings 4 and 5 through the real server: hostile build args reach the
//! cluster as single param values (the Tasks then keep each one a single
//! argument: `crates/exec/tests/task_scripts.rs` runs their scripts), and two
//! registry credentials made back to back (time-ordered ids sharing a prefix)
//! get two Secrets, each holding its own auth.

use std::time::{Duration, Instant};

use base64::Engine;
use imagefactory_exec::tekton::namespace::{ensure_namespace, namespace_name};
use imagefactory_exec::tekton::tasks::install_tasks;
use imagefactory_exec::tekton::TektonVersion;
use kube_sim::cluster::gvr;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::server::{Target, Tenant};

const IMAGE: &str = "registry.example.com/team/app:1.0";

/// The operator's part: the tenant namespace with Image Factory's Tasks.
async fn prepare_namespace(target: &Target, tenant: &Tenant) -> String {
    let client = target.sim.kube_client().await.unwrap();
    let id = Uuid::parse_str(&tenant.id).unwrap();
    let namespace = ensure_namespace(&client, id).await.unwrap();
    install_tasks(&client, TektonVersion::V1, &namespace)
        .await
        .unwrap();
    assert_eq!(namespace, namespace_name(id));
    namespace
}

/// A tenant admin's provider pointing at kube-sim (loopback is allowed by the
/// Target's environment), and a project.
async fn provider_and_project(target: &Target, tenant: &Tenant) -> (String, String) {
    let config = json!({
        "auth_method": "token",
        "endpoint": target.sim.endpoint(),
        "token": target.sim.admin_token(),
        "ca_cert": target.sim.ca_pem(),
    });
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
        let runs = target.sim.cluster().list(&gvr::PIPELINERUNS, Some(namespace));
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
    let namespace = prepare_namespace(&target, &tenant).await;
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
    let namespace = prepare_namespace(&target, &tenant).await;
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
