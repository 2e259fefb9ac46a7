//! Re-attach: a dispatcher that dies mid-run (or hands over on shutdown) and
//! another that takes over → one PipelineRun per attempt, every log line once,
//! the build finishes.

use std::time::Duration;

use kube_sim::{FaultAction, FaultRule};
use serde_json::json;
use uuid::Uuid;

use crate::harness::{Options, PATIENCE, TestApp, rule, step_lines};

fn layers() -> Vec<String> {
    (0..40).map(|i| format!("layer {i}")).collect()
}

async fn app() -> TestApp {
    app_building_for("5m").await
}

/// The build step logs [`layers`] over `duration` (simulated; 1 m = 0.6 s).
async fn app_building_for(duration: &str) -> TestApp {
    let layers = layers();
    let refs: Vec<&str> = layers.iter().map(String::as_str).collect();
    TestApp::start(Options {
        rules: vec![
            rule("clone", None, None, &["cloned"], None),
            rule("build", None, Some(duration), &refs, None),
        ],
        dispatchers: 0,
        ..Default::default()
    })
    .await
}

/// Wait until the build step has logged a few lines (the run is mid-way).
async fn wait_mid_run(app: &TestApp, id: Uuid) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.logs(id).await.len() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "build never logged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.build(id).await["status"], "running");
}

async fn assert_finished_once(app: &TestApp, id: Uuid) {
    let build = app.wait_terminal(id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    let executions = app.executions(id).await;
    assert_eq!(
        executions.len(),
        1,
        "the attempt was re-attached, not restarted: {executions:?}"
    );
    assert_eq!(
        app.pipelineruns(Some(id)).await.len(),
        1,
        "one PipelineRun per attempt"
    );
    let mut expected = vec!["cloned".to_owned()];
    expected.extend(layers());
    // The executors' operator lines (namespace, created, re-attached,
    // finished) interleave with the steps'; the steps' come complete.
    let logs = app.logs(id).await;
    assert_eq!(step_lines(&logs), expected, "logs complete, no duplicates");
    assert!(
        logs.iter()
            .any(|l| l.starts_with("Re-attached to PipelineRun: ")),
        "{logs:?}"
    );
    assert_eq!(
        logs.iter()
            .filter(|l| l.contains(" finished: succeeded after "))
            .count(),
        1,
        "one completion line: {logs:?}"
    );
    assert!(app.artifacts(id).await.contains_key("IMAGE_DIGEST"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_dispatchers_build_is_reattached_by_another() {
    let mut app = app().await;
    let mut first = app.start_crashable_dispatcher();
    let id = app.submit(json!({"method": "kaniko"})).await;
    wait_mid_run(&app, id).await;
    first.crash();
    let lease_owner: Option<String> =
        sqlx::query_scalar("SELECT lease_owner FROM builds WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        lease_owner.as_deref(),
        Some(first.id.as_str()),
        "the dead one still holds it"
    );

    let second = app.start_dispatcher().await;
    assert_finished_once(&app, id).await;
    let finished_by: Option<String> =
        sqlx::query_scalar("SELECT lease_owner FROM builds WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_ne!(finished_by.as_deref(), Some(first.id.as_str()));
    let _ = second;
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_dispatcher_hands_its_build_over() {
    let mut app = app().await;
    app.start_dispatcher().await;
    let id = app.submit(json!({"method": "kaniko"})).await;
    wait_mid_run(&app, id).await;
    let first = app.dispatchers.remove(0);
    first.token.cancel();
    first.task.await.unwrap();
    app.start_dispatcher().await;
    assert_finished_once(&app, id).await;
    app.finish().await;
}

/// The dispatcher that took over a crashed one's build could not read the
/// build's PipelineRun (a 500) when it re-attached; the attempt ended
/// `Transient` and was requeued as a new attempt, whose new PipelineRun ran
/// beside the first: the build ran twice. The takeover keeps trying to read
/// the run and follows it once the cluster answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_that_cannot_read_the_run_yet_never_starts_another() {
    // 12 s of build step: the first run is still going throughout.
    let mut app = app_building_for("20m").await;
    let mut first = app.start_crashable_dispatcher();
    let id = app.submit(json!({"method": "kaniko"})).await;
    wait_mid_run(&app, id).await;
    first.crash();
    let failing = app.sim.faults().add(FaultRule::new(
        Some("get"),
        Some("pipelineruns"),
        // Not 503 or 429: kube's client retries those itself for a while
        // (its default retry layer on the global provider's client).
        FaultAction::Error {
            code: 500,
            retry_after: None,
        },
    ));
    app.start_dispatcher().await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while app.sim.faults().hits(failing) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the build was never taken over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Longer than a requeue's backoff and the new attempt's start.
    let failing_for = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < failing_for {
        let runs = app.pipelineruns(Some(id)).await;
        assert_eq!(
            runs.len(),
            1,
            "a second PipelineRun while the first still runs; executions: {:?}",
            app.executions(id).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        app.sim.faults().hits(failing) >= 2,
        "the read of the run was not retried"
    );
    app.sim.faults().remove(failing);
    assert_finished_once(&app, id).await;
    app.finish().await;
}
