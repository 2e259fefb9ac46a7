//! Failure modes as a user sees them through the API: the build's state and
//! `error_message` name the cause; permanent errors are not retried,
//! transient ones are.

use std::time::Duration;

use imagefactory_exec::tekton::TektonVersion;
use imagefactory_exec::tekton::submit::tekton_resource;
use kube::api::{ApiResource, DeleteParams, DynamicObject};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Options, PATIENCE, TestApp, rule};

/// Submit, wait for the end, and check it failed once without a retry.
async fn fails_once(app: &TestApp, request: Value) -> (Uuid, String) {
    let id = app.submit(request).await;
    let build = app.wait_terminal(id).await;
    assert_eq!(build["status"], "failed", "{build}");
    let executions = app.executions(id).await;
    assert_eq!(
        executions.len(),
        1,
        "permanent errors are not retried: {executions:?}"
    );
    (
        id,
        build["error_message"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

async fn app_with_provider_config(edit: impl FnOnce(&mut Value)) -> (TestApp, Value) {
    let mut app = TestApp::start(Options::default()).await;
    let mut config = app.sim_config();
    edit(&mut config);
    app.provider = app.create_tenant_provider("edited", config.clone()).await;
    (app, config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_task_fails_at_once_naming_it() {
    let app = TestApp::start(Options::default()).await;
    let tasks: kube::Api<DynamicObject> = kube::Api::namespaced_with(
        app.kube().await,
        &app.namespace(),
        &tekton_resource(TektonVersion::V1, "Task", "tasks"),
    );
    tasks
        .delete("kaniko", &DeleteParams::default())
        .await
        .unwrap();

    // Unmanaged: the operator brings the Tasks (a managed provider would
    // apply the missing one again before the build).
    let mut config = app.sim_config();
    config["tasks"] = json!("unmanaged");
    let unmanaged = app.create_global_provider("unmanaged", config).await;
    let (id, message) = fails_once(
        &app,
        json!({"method": "kaniko", "infrastructure_provider_id": unmanaged}),
    )
    .await;
    assert!(
        message.contains("Tekton Task \"kaniko\" not found"),
        "{message}"
    );
    assert!(
        app.pipelineruns(Some(id)).await.is_empty(),
        "nothing submitted"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_storage_class_and_service_account_fail_clearly() {
    let app = TestApp::start(Options::default()).await;
    // No registry credential: the run needs the operator's docker-config Secret.
    let (_, message) = fails_once(&app, json!({"registry_credential_id": null})).await;
    assert!(
        message.contains("Secret \"docker-config\" not found"),
        "{message}"
    );

    // No StorageClass can serve the workspace claim.
    let classes: kube::Api<DynamicObject> = kube::Api::all_with(
        app.kube().await,
        &ApiResource {
            group: "storage.k8s.io".into(),
            version: "v1".into(),
            api_version: "storage.k8s.io/v1".into(),
            kind: "StorageClass".into(),
            plural: "storageclasses".into(),
        },
    );
    classes
        .delete("standard", &DeleteParams::default())
        .await
        .unwrap();
    let (_, message) = fails_once(&app, json!({"method": "buildx"})).await;
    assert!(message.contains("no default StorageClass"), "{message}");
    app.finish().await;

    let (app, _) = app_with_provider_config(|c| c["service_account"] = json!("builder")).await;
    let (_, message) = fails_once(&app, json!({})).await;
    assert!(
        message.contains("service account \"builder\" not found"),
        "{message}"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_fail_with_the_clusters_401() {
    let (app, _) = app_with_provider_config(|c| c["token"] = json!("not-a-valid-token")).await;
    let (_, message) = fails_once(&app, json!({})).await;
    assert!(
        message.contains("401") && message.contains("Unauthorized"),
        "{message}"
    );
    assert!(
        !message.contains("not-a-valid-token"),
        "the token never appears"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_namespace_fails_with_the_clusters_403() {
    let mut app = TestApp::start(Options::default()).await;
    let token = app.sim.add_token_user(
        "tenant-bot",
        &[],
        vec![kube_sim::AccessRule::new(
            &["somewhere-else"],
            &["*"],
            &["*"],
        )],
    );
    let mut config = app.sim_config();
    config["token"] = json!(token);
    app.provider = app.create_tenant_provider("restricted", config).await;
    let (_, message) = fails_once(&app, json!({})).await;
    assert!(
        message.contains("403") && message.contains("Forbidden"),
        "{message}"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_step_is_named_with_its_exit_code() {
    let app = TestApp::start(Options {
        rules: vec![rule(
            "build",
            Some("build-and-push"),
            None,
            &["error building image"],
            Some(3),
        )],
        ..Default::default()
    })
    .await;
    let (id, message) = fails_once(&app, json!({"method": "kaniko"})).await;
    assert!(
        message.contains("step \"build-and-push\" exited with code 3"),
        "{message}"
    );
    assert!(message.contains("task \"build\""), "{message}");
    let logs = app.logs(id).await;
    // The step's last line, then the executor's completion line.
    assert!(logs.len() >= 2, "{logs:?}");
    assert_eq!(logs[logs.len() - 2], "error building image", "{logs:?}");
    let last = &logs[logs.len() - 1];
    assert!(
        last.starts_with("PipelineRun ") && last.contains(" finished: failed ("),
        "{logs:?}"
    );
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_is_retried_until_it_comes_back() {
    let app = TestApp::start(Options::default()).await;
    app.sim.stop_server().await;
    let id = app.submit(json!({})).await;

    // Wait for the first attempt to end without reaching the cluster.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let first = loop {
        let executions = app.executions(id).await;
        if let Some(done) = executions.iter().find(|e| !e["finished_at"].is_null()) {
            break done.clone();
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempt ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(first["status"], "succeeded", "{first}");
    assert!(
        first["message"].as_str().is_some_and(|m| !m.is_empty()),
        "the attempt keeps its error: {first}"
    );
    let build = app.build(id).await;
    assert!(
        ["queued", "running"].contains(&build["status"].as_str().unwrap()),
        "transient: requeued, not failed: {build}"
    );

    app.sim.start_server().await.unwrap();
    let build = app.wait_terminal(id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    let executions = app.executions(id).await;
    assert!(executions.len() >= 2, "retried: {executions:?}");
    assert_eq!(app.pipelineruns(Some(id)).await.len(), 1);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_running_build_cancels_its_pipelinerun() {
    let app = TestApp::start(Options {
        rules: vec![rule("build", None, Some("1h"), &["building..."], None)],
        ..Default::default()
    })
    .await;
    let id = app.submit(json!({})).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !app.logs(id).await.contains(&"building...".to_owned()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "build step never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(app.build(id).await["status"], "running");

    let requested = app.post(&format!("/builds/{id}/cancel"), None, 202).await;
    assert_eq!(requested["status"], "running");
    let build = app.wait_terminal(id).await;
    assert_eq!(build["status"], "cancelled", "{build}");

    let runs = app.pipelineruns(Some(id)).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["spec"]["status"], "Cancelled", "{}", runs[0]);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_over_its_timeout_ends_timed_out() {
    let app = TestApp::start(Options {
        rules: vec![rule("build", None, Some("1h"), &["building..."], None)],
        ..Default::default()
    })
    .await;
    let id = app.submit(json!({"timeout_seconds": 2})).await;
    let build = app.wait_terminal(id).await;
    assert_eq!(build["status"], "timed_out", "{build}");
    let runs = app.pipelineruns(Some(id)).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0]["spec"]["timeouts"]["pipeline"], "0h0m2s",
        "{}",
        runs[0]
    );
    app.finish().await;
}

/// Retention through the dispatcher: with `keep_last: 0` a build's
/// PipelineRun is deleted once the build's end is recorded (never before:
/// a takeover in between must still find it), and its logs and artifacts
/// stay in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_run_is_deleted_per_retention_after_the_build_is_recorded() {
    let (app, _) = app_with_provider_config(|c| c["retention"] = json!({"keep_last": 0})).await;
    let id = app.submit(json!({"method": "kaniko"})).await;
    assert_eq!(app.wait_terminal(id).await["status"], "succeeded");
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !app.pipelineruns(Some(id)).await.is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the finished run was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!app.logs(id).await.is_empty(), "logs stay");
    assert!(
        app.artifacts(id).await.contains_key("IMAGE_DIGEST"),
        "artifacts stay"
    );
    app.finish().await;
}

/// Issue 5 (d) with the Tekton executor, queued side: a build cancelled
/// before any dispatcher claimed it ends `cancelled` at once and never
/// reaches the cluster, also once a dispatcher runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_cancelled_while_queued_never_reaches_the_cluster() {
    let mut app = TestApp::start(Options {
        dispatchers: 0,
        ..Default::default()
    })
    .await;
    let cancelled = app.submit(json!({})).await;
    let build = app
        .post(&format!("/builds/{cancelled}/cancel"), None, 200)
        .await;
    assert_eq!(build["status"], "cancelled", "{build}");
    // A build submitted after it runs once a dispatcher is there: by then
    // the cancelled one would have been claimed too, had it been.
    let later = app.submit(json!({})).await;
    app.start_dispatcher().await;
    assert_eq!(app.wait_terminal(later).await["status"], "succeeded");
    assert_eq!(app.build(cancelled).await["status"], "cancelled");
    assert!(app.executions(cancelled).await.is_empty(), "never claimed");
    assert!(
        app.pipelineruns(Some(cancelled)).await.is_empty(),
        "no PipelineRun"
    );
    app.finish().await;
}
