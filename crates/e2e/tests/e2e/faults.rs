//! Issue 14 point 3: PostgreSQL stopped and started again while builds run
//! and requests arrive. Every build reaches its expected end state once,
//! with its complete log.
//!
//! The short variant runs with `cargo test`; `IF_STRESS_FULL=1` runs the
//! full figures (200 builds, a 30 s outage).

use std::collections::BTreeMap;
use std::time::Duration;

use imagefactory_test_support::PgServer;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{Options, TestApp, fast_settings, rule, step_lines};

/// The long variants' figures instead of the short ones.
fn full() -> bool {
    std::env::var("IF_STRESS_FULL").is_ok_and(|v| v == "1")
}

fn outage() -> Duration {
    Duration::from_secs(if full() { 30 } else { 5 })
}

const LAYERS: usize = 8;

/// Kaniko builds print `cloned` and the layers and succeed; docker builds
/// fail at their push step with exit code 3.
fn script() -> Vec<kube_sim::tekton::ScriptRule> {
    let layers: Vec<String> = (0..LAYERS).map(|i| format!("layer {i}")).collect();
    let refs: Vec<&str> = layers.iter().map(String::as_str).collect();
    vec![
        rule("clone", None, None, &["cloned"], None),
        // 1 simulated minute = 0.6 s: outages hit running builds.
        rule("build", Some("build-and-push"), Some("1m"), &refs, None),
        rule("build", Some("build"), None, &["compiled"], None),
        rule("build", Some("push"), None, &["push refused"], Some(3)),
    ]
}

fn expected_success_lines() -> Vec<String> {
    let mut lines = vec!["cloned".to_owned()];
    lines.extend((0..LAYERS).map(|i| format!("layer {i}")));
    lines
}

/// Every `fail_every`-th build is a docker build (fails), the others kaniko.
async fn submit(app: &TestApp, n: usize, fail_every: usize) -> Vec<(Uuid, bool)> {
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(|i| async move {
            let fails = i % fail_every == 0;
            let method = if fails { "docker" } else { "kaniko" };
            let id = app
                .submit(json!({"method": method, "git_ref": format!("branch-{i}")}))
                .await;
            (id, fails)
        })
        .buffered(8)
        .collect()
        .await
}

/// Let the tenant run many builds at once: outages must meet running ones.
async fn raise_tenant_limit(app: &TestApp, limit: i32) {
    sqlx::query("UPDATE tenants SET max_concurrent_builds = $1 WHERE id = $2")
        .bind(limit)
        .bind(app.tenant)
        .execute(&app.pool)
        .await
        .unwrap();
}

async fn count(app: &TestApp, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM builds WHERE status = $1")
        .bind(status)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Wait until at least `n` builds have `status` (a hang guard only).
async fn wait_count(app: &TestApp, status: &str, n: i64) {
    let deadline = tokio::time::Instant::now() + crate::harness::PATIENCE;
    while count(app, status).await < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {n} builds {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Each build ended as expected with exactly one execution that finished
/// it, one PipelineRun per execution that made one (none of unknown
/// executions), and its step lines complete, once each, in order.
/// Returns (executions, PipelineRuns) in all.
async fn assert_expected_ends(app: &TestApp, builds: &[(Uuid, bool)]) -> (usize, usize) {
    for (id, _) in builds {
        app.wait_terminal(*id).await;
    }
    let mut runs_by_build: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let all_runs = app.pipelineruns(None).await;
    for run in &all_runs {
        let build = run["metadata"]["labels"]["imagefactory.io/build-id"]
            .as_str()
            .unwrap()
            .to_owned();
        runs_by_build.entry(build).or_default().push(run.clone());
    }
    let mut executions_total = 0;
    for (id, fails) in builds {
        let build = app.build(*id).await;
        let executions = app.executions(*id).await;
        executions_total += executions.len();
        let runs = runs_by_build.remove(&id.to_string()).unwrap_or_default();
        let status = if *fails { "failed" } else { "succeeded" };
        check_runs(*id, status, &executions, &runs);
        let logs = app.logs(*id).await;
        let steps = step_lines(&logs);
        if *fails {
            assert_eq!(build["status"], "failed", "{build}");
            let message = build["error_message"].as_str().unwrap_or_default();
            assert!(
                message.contains("step \"push\" exited with code 3"),
                "{build}"
            );
            assert_eq!(
                steps.iter().filter(|l| *l == "cloned").count(),
                1,
                "build {id}: {logs:?}"
            );
            assert_eq!(
                steps.last().map(String::as_str),
                Some("push refused"),
                "{logs:?}"
            );
        } else {
            assert_eq!(build["status"], "succeeded", "{build}");
            assert_eq!(
                steps,
                expected_success_lines(),
                "build {id}: logs complete, once each, in order"
            );
        }
    }
    assert!(
        runs_by_build.is_empty(),
        "PipelineRuns of unknown builds: {:?}",
        runs_by_build.keys()
    );
    (executions_total, all_runs.len())
}

/// The last attempt ended the build with `status`; each execution has at
/// most one PipelineRun, the one named in its row, the last one has it, and
/// no PipelineRun belongs to an unknown execution.
fn check_runs(id: Uuid, status: &str, executions: &[Value], runs: &[Value]) {
    let last = executions
        .iter()
        .max_by_key(|e| e["attempt"].as_i64())
        .unwrap_or_else(|| panic!("build {id} has no execution"));
    assert_eq!(last["status"], status, "build {id}: {executions:?}");
    let mut by_execution: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for run in runs {
        by_execution
            .entry(
                run["metadata"]["labels"]["imagefactory.io/execution-id"]
                    .as_str()
                    .unwrap(),
            )
            .or_default()
            .push(run["metadata"]["name"].as_str().unwrap());
    }
    for e in executions {
        let eid = e["id"].as_str().unwrap();
        let mine = by_execution.remove(eid).unwrap_or_default();
        assert!(mine.len() <= 1, "execution {eid}: PipelineRuns {mine:?}");
        if let Some(name) = mine.first() {
            assert_eq!(e["pipeline_run_name"].as_str(), Some(*name), "{e}");
        } else {
            assert_ne!(e, last, "build {id}: the last execution has no PipelineRun");
        }
    }
    assert!(
        by_execution.is_empty(),
        "build {id}: PipelineRuns of unknown executions {by_execution:?}"
    );
}

/// A request while the database is down: 503 problem+json with
/// `Retry-After`, never a hang, a 500 or a 401.
async fn assert_answers_503(app: &TestApp, method: Method, path: &str, body: Option<Value>) {
    let mut request = app
        .client
        .http
        .request(method, app.client.url(&format!("/api/v1{path}")))
        .bearer_auth(&app.token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = tokio::time::timeout(Duration::from_secs(60), request.send())
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer while the database is down"))
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").cloned();
    let text = response.text().await.unwrap();
    assert_eq!(status, 503, "{path}: {text}");
    assert!(retry_after.is_some(), "{path}: no Retry-After");
    assert!(text.contains("the database is unavailable"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_and_requests_survive_a_database_restart() {
    let n = if full() { 200 } else { 40 };
    let mut server = PgServer::start();
    let mut settings = fast_settings();
    settings.max_attempts = 10;
    let app = TestApp::start(Options {
        rules: script(),
        dispatchers: 2,
        settings,
        database_server: Some(server.admin_url()),
        acquire_timeout: Duration::from_secs(2),
    })
    .await;
    raise_tenant_limit(&app, 100).await;
    let builds = submit(&app, n, 5).await;
    wait_count(&app, "running", 10).await;

    server.stop();
    let down = tokio::time::Instant::now();
    let mut refused = 0;
    while down.elapsed() < outage() {
        assert_answers_503(&app, Method::GET, &format!("/builds/{}", builds[0].0), None).await;
        let body = json!({"project_id": app.project, "method": "kaniko", "infrastructure_provider_id": app.provider,
                          "registry_credential_id": app.credential, "image": "registry.example.com/team/app:1.0"});
        assert_answers_503(&app, Method::POST, "/builds", Some(body)).await;
        refused += 2;
    }
    server.start_again();

    let (executions, runs) = assert_expected_ends(&app, &builds).await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM builds")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(total, n as i64, "a refused submission left a build");
    // Each build ran on the cluster once. An attempt claimed as the
    // database went away can end before reaching the cluster and be
    // requeued: an extra execution, never a second PipelineRun.
    assert_eq!(runs, n, "one PipelineRun per build");
    println!(
        "database restart: builds={n} outage_s={} refused_requests={refused} executions={executions} pipelineruns={runs}",
        outage().as_secs()
    );
    app.finish().await;
    drop(server);
}
