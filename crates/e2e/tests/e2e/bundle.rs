//! The managed Task bundle end to end: a brand-new tenant's first build on a
//! freshly registered provider succeeds with no operator step, the bundle is
//! applied once for its namespace (counted on kube-sim), and a Task edited in
//! the cluster shows as modified in the admin status and `install` repairs it.

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::*;

fn task_states(status: &Value, namespace: &str) -> Vec<(String, String)> {
    status["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["namespace"] == namespace)
        .unwrap_or_else(|| panic!("{namespace} not in {status}"))["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap().to_string(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The build once terminal, read as its own tenant.
async fn wait_build(app: &TestApp, token: &str, id: Uuid) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let b = app.get_as(token, &format!("/builds/{id}")).await;
        if TERMINAL.contains(&b["status"].as_str().unwrap()) {
            return b;
        }
        assert!(tokio::time::Instant::now() < deadline, "build {id}: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_job(app: &TestApp, provider: Uuid, job: &str) -> Value {
    for _ in 0..200 {
        let j = app
            .get_as(
                ADMIN_TOKEN,
                &format!("/admin/providers/{provider}/tekton/install/{job}"),
            )
            .await;
        if j["status"] != "running" {
            return j;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("install job {job} never finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_tenant_builds_with_no_operator_step_and_drift_is_shown_and_repaired() {
    let app = TestApp::start(Options::default()).await;
    let provider = app
        .create_global_provider("fresh-cluster", app.sim_config())
        .await;
    let tenant = app.bare_tenant("newcomer", 4).await;
    let namespace = imagefactory_exec::tekton::namespace::namespace_name(tenant.id);
    let applies = app
        .sim
        .faults()
        .count_requests(Some("patch"), Some("tasks"));

    let on_fresh = json!({"infrastructure_provider_id": provider});
    let first = app.submit_as(&tenant, on_fresh.clone()).await;
    let done = wait_build(&app, &tenant.token, first).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        app.sim.faults().counted(applies),
        5,
        "the bundle applied once, one per Task"
    );

    let second = app.submit_as(&tenant, on_fresh).await;
    let done = wait_build(&app, &tenant.token, second).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(
        app.sim.faults().counted(applies),
        5,
        "not applied again on the second build"
    );

    // Someone edits a Task in the cluster.
    let tasks: Api<DynamicObject> = Api::namespaced_with(
        app.kube().await,
        &namespace,
        &imagefactory_exec::tekton::submit::tekton_resource(
            imagefactory_exec::tekton::TektonVersion::V1,
            "Task",
            "tasks",
        ),
    );
    let task = serde_json::to_value(tasks.get("kaniko").await.unwrap()).unwrap();
    let shipped = task["spec"]["steps"][0]["image"].clone();
    let mut steps = task["spec"]["steps"].clone();
    steps[0]["image"] = json!("someone.example/kaniko:edited");
    tasks
        .patch(
            "kaniko",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"steps": steps}})),
        )
        .await
        .unwrap();

    let status_path = format!("/admin/providers/{provider}/tekton/status?namespace={namespace}");
    let status = app.get_as(ADMIN_TOKEN, &status_path).await;
    assert_eq!(status["tekton"]["using"], "v1", "{status}");
    let states = task_states(&status, &namespace);
    assert!(
        states.contains(&("kaniko".into(), "modified".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&("git-clone".into(), "current".into())),
        "{states:?}"
    );

    let job = app
        .post_as(
            ADMIN_TOKEN,
            &format!("/admin/providers/{provider}/tekton/install?namespace={namespace}"),
            None,
            202,
        )
        .await;
    let job = wait_job(&app, provider, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let objects = job["results"][0]["objects"].as_array().unwrap();
    let kaniko = objects.iter().find(|o| o["name"] == "kaniko").unwrap();
    assert_eq!(
        (kaniko["before"].as_str(), kaniko["action"].as_str()),
        (Some("modified"), Some("updated")),
        "{job}"
    );
    assert!(
        objects
            .iter()
            .filter(|o| o["kind"] == "Task" && o["name"] != "kaniko")
            .all(|o| o["action"] == "unchanged"),
        "{job}"
    );
    let task = serde_json::to_value(tasks.get("kaniko").await.unwrap()).unwrap();
    assert_eq!(task["spec"]["steps"][0]["image"], shipped);
    let states = task_states(&app.get_as(ADMIN_TOKEN, &status_path).await, &namespace);
    assert!(states.iter().all(|(_, s)| s == "current"), "{states:?}");
    app.finish().await;
}
