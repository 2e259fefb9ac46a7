//! Issue 14 points 3 and 4: PostgreSQL stopped and started again while
//! builds run and requests arrive; kube-sim failing about 10 % of all
//! requests and dropping watches every few seconds, with and without being
//! stopped for a while. Every build reaches its expected end state, with one
//! PipelineRun and its complete log.
//!
//! The short variants run with `cargo test`; `IF_STRESS_FULL=1` runs the
//! full figures (database: 200 builds, a 30 s outage; cluster: 500 builds
//! over 3 dispatchers, a 30 s outage).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use imagefactory_test_support::PgServer;
use kube_sim::{FaultAction, FaultRule, KubeSimHandle};
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

fn expected_failure_lines() -> Vec<String> {
    ["cloned", "compiled", "push refused"]
        .map(str::to_owned)
        .to_vec()
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

/// Wait until every build has ended (a hang guard only).
async fn wait_all_ended(app: &TestApp, builds: &[(Uuid, bool)]) {
    for (id, _) in builds {
        app.wait_terminal(*id).await;
    }
}

/// What [`assert_expected_ends`] counted.
struct Ends {
    executions: usize,
    pipelineruns: usize,
}

/// Each build ended as expected (succeeded with its artifacts, or failed at
/// its push step), its last execution ended it, it has exactly one
/// PipelineRun — its last execution's; an earlier attempt that ended before
/// its run reached the cluster has none (`check_runs`) — no PipelineRun
/// belongs to an unknown build, and its step lines are exactly the
/// expected ones, once each, in order.
async fn assert_expected_ends(app: &TestApp, builds: &[(Uuid, bool)]) -> Ends {
    wait_all_ended(app, builds).await;
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
        assert_eq!(runs.len(), 1, "build {id}: one PipelineRun: {executions:?}");
        let logs = app.logs(*id).await;
        let steps = step_lines(&logs);
        assert_eq!(build["status"], status, "{build}");
        if *fails {
            let message = build["error_message"].as_str().unwrap_or_default();
            assert!(
                message.contains("step \"push\" exited with code 3"),
                "{build}"
            );
            assert_eq!(
                steps,
                expected_failure_lines(),
                "build {id}: logs complete, once each, in order; the whole log: {logs:?}"
            );
        } else {
            assert_eq!(
                steps,
                expected_success_lines(),
                "build {id}: logs complete, once each, in order; the whole log: {logs:?}"
            );
            let artifacts = app.artifacts(*id).await;
            assert!(
                artifacts.contains_key("IMAGE_URL") && artifacts.contains_key("IMAGE_DIGEST"),
                "build {id}: {artifacts:?}"
            );
        }
    }
    assert!(
        runs_by_build.is_empty(),
        "PipelineRuns of unknown builds: {:?}",
        runs_by_build.keys()
    );
    Ends {
        executions: executions_total,
        pipelineruns: all_runs.len(),
    }
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
        host_steps: false,
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

    let ends = assert_expected_ends(&app, &builds).await;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM builds")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(total, n as i64, "a refused submission left a build");
    // Each build ran once: an attempt claimed as the database went away
    // waits the outage out (loading its settings, writing its log and
    // outcome) instead of ending and being requeued.
    assert_eq!(ends.executions, n, "one execution per build");
    assert_eq!(ends.pipelineruns, n, "one PipelineRun per build");
    println!(
        "database restart: builds={n} outage_s={} refused_requests={refused} executions={} pipelineruns={}",
        outage().as_secs(),
        ends.executions,
        ends.pipelineruns
    );
    app.finish().await;
    drop(server);
}

/// Every open watch is closed this often while faults are injected.
const WATCH_DROP_EVERY: Duration = Duration::from_secs(2);

/// The draws of the injected faults: `IF_FAULTS_SEED` to repeat a run's
/// (requests still interleave differently), else a fresh one, printed.
fn fault_seed() -> u64 {
    std::env::var("IF_FAULTS_SEED")
        .ok()
        .map(|s| s.parse().expect("IF_FAULTS_SEED is a number"))
        .unwrap_or_else(rand::random)
}

/// What [`under_cluster_faults`] injected.
#[derive(Debug)]
struct Injected {
    seed: u64,
    requests: u64,
    errors_5xx: u64,
    errors_429: u64,
    watch_410s: u64,
    watch_drops: u64,
}

/// Run `work` while kube-sim answers about 10 % of all requests, of every
/// verb and resource, with an error (drawn independently: 4 % 500, 4 %
/// 503, 2 % 429 with `Retry-After: 1`), expires 5 % of watches at once
/// (410) and closes every open watch every [`WATCH_DROP_EVERY`].
async fn under_cluster_faults<T>(
    sim: &KubeSimHandle,
    work: impl Future<Output = T>,
) -> (Injected, T) {
    let faults = sim.faults();
    let seed = fault_seed();
    faults.seed(seed);
    let requests = faults.count_requests(None, None);
    let error = |code: u16, p: f64| {
        let retry_after = (code == 429).then_some(1);
        faults.add(
            FaultRule::new(None, None, FaultAction::Error { code, retry_after }).probability(p),
        )
    };
    let errors_5xx = [error(500, 0.04), error(503, 0.04)];
    let errors_429 = error(429, 0.02);
    let expiries =
        faults.add(FaultRule::new(Some("watch"), None, FaultAction::ExpireWatch).probability(0.05));
    let mut watch_drops = 0;
    let mut drops = tokio::time::interval(WATCH_DROP_EVERY);
    drops.tick().await;
    tokio::pin!(work);
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = drops.tick() => {
                faults.drop_all_watches();
                watch_drops += 1;
            }
        }
    };
    let injected = Injected {
        seed,
        requests: faults.hits(requests),
        errors_5xx: errors_5xx.iter().map(|id| faults.hits(*id)).sum(),
        errors_429: faults.hits(errors_429),
        watch_410s: faults.hits(expiries),
        watch_drops,
    };
    for id in [requests, errors_429, expiries]
        .into_iter()
        .chain(errors_5xx)
    {
        faults.remove(id);
    }
    (injected, out)
}

/// The app the cluster fault tests run: 3 dispatchers, and a tenant that
/// may run many builds at once so faults meet running ones.
async fn three_dispatchers() -> TestApp {
    let mut settings = fast_settings();
    settings.max_attempts = 10;
    let app = TestApp::start(Options {
        rules: script(),
        dispatchers: 3,
        settings,
        ..Default::default()
    })
    .await;
    raise_tenant_limit(&app, 100).await;
    app
}

fn cluster_builds() -> usize {
    if full() { 500 } else { 80 }
}

fn report(test: &str, n: usize, injected: &Injected, ends: &Ends, extra: &str) {
    println!(
        "{test}: builds={n} dispatchers=3{extra} executions={} pipelineruns={} requests={} injected_5xx={} injected_429={} watch_drops={} watch_410s={} seed={}",
        ends.executions,
        ends.pipelineruns,
        injected.requests,
        injected.errors_5xx,
        injected.errors_429,
        injected.watch_drops,
        injected.watch_410s,
        injected.seed
    );
}

/// Issue 14 point 4: about 10 % of every verb failing with 5xx/429 and
/// watches dropped every few seconds: every build still ends as it should,
/// with one PipelineRun and its complete log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_survive_injected_cluster_faults() {
    let n = cluster_builds();
    let app = three_dispatchers().await;
    let (injected, builds) = under_cluster_faults(&app.sim, async {
        let builds = submit(&app, n, 5).await;
        wait_all_ended(&app, &builds).await;
        builds
    })
    .await;
    assert!(
        injected.errors_5xx > 0 && injected.errors_429 > 0 && injected.watch_drops > 0,
        "{injected:?}"
    );
    let ends = assert_expected_ends(&app, &builds).await;
    report("cluster faults", n, &injected, &ends, "");
    app.finish().await;
}

fn cluster_outage() -> Duration {
    Duration::from_secs(if full() { 30 } else { 5 })
}

/// Issue 14 point 4, with the API server gone for a while mid-run (its
/// state kept; every open connection and watch cut, new ones refused)
/// under the same injected faults: the same ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_survive_a_cluster_outage_under_faults() {
    let n = cluster_builds();
    let app = three_dispatchers().await;
    let (injected, (builds, at_stop)) = under_cluster_faults(&app.sim, async {
        let builds = submit(&app, n, 5).await;
        wait_count(&app, "running", 10).await;
        app.sim.stop_server().await;
        let at_stop = [
            count(&app, "queued").await,
            count(&app, "running").await,
            count(&app, "succeeded").await + count(&app, "failed").await,
        ];
        tokio::time::sleep(cluster_outage()).await;
        app.sim.start_server().await.unwrap();
        wait_all_ended(&app, &builds).await;
        (builds, at_stop)
    })
    .await;
    assert!(
        at_stop[1] > 0,
        "no build was running at the stop: {at_stop:?}"
    );
    let ends = assert_expected_ends(&app, &builds).await;
    let [queued, running, ended] = at_stop;
    let extra = format!(
        " outage_s={} at_stop_queued={queued} at_stop_running={running} at_stop_ended={ended}",
        cluster_outage().as_secs()
    );
    report("cluster outage", n, &injected, &ends, &extra);
    app.finish().await;
}

/// The full cluster-outage run: a build claimed while the API server was
/// down used up its attempts on refused connections within seconds and
/// failed. An attempt that could not reach the cluster is not counted (the
/// dispatcher allows a single attempt here): the build waits the outage out
/// and runs once, on one PipelineRun, with its whole log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_claimed_while_the_cluster_is_down_runs_once_it_is_back() {
    let mut settings = fast_settings();
    settings.max_attempts = 1;
    let app = TestApp::start(Options {
        rules: script(),
        settings,
        ..Default::default()
    })
    .await;
    app.sim.stop_server().await;
    let id = app
        .submit(json!({"method": "kaniko", "git_ref": "main"}))
        .await;
    // Longer than an attempt's own retries of the submit (about 7.5 s).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = app.executions(id).await;
    app.sim.start_server().await.unwrap();
    let build = app.wait_terminal(id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    assert!(
        during.iter().any(|e| e["message"]
            .as_str()
            .is_some_and(|m| m.contains("could not be reached") && m.contains("not counted"))),
        "{during:?}"
    );
    let executions = app.executions(id).await;
    check_runs(
        id,
        "succeeded",
        &executions,
        &app.pipelineruns(Some(id)).await,
    );
    assert_eq!(app.pipelineruns(Some(id)).await.len(), 1);
    assert_eq!(step_lines(&app.logs(id).await), expected_success_lines());
    app.finish().await;
}

/// The API server carried out the create of a build's PipelineRun but
/// answered 500, and the run could not be read to adopt it (500) for
/// longer than the attempt's own retries of the submit: the attempt ended
/// `Transient`, the dispatcher requeued it, and the next attempt created a
/// second PipelineRun (named for attempt 2) beside the first — the build
/// ran twice. The attempt keeps trying to create or adopt its run by its
/// name until the cluster answers: one attempt, one PipelineRun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_may_have_acted_never_starts_another_attempt() {
    let app = TestApp::start(Options {
        rules: script(),
        ..Default::default()
    })
    .await;
    let faults = app.sim.faults();
    faults.add(
        FaultRule::new(
            Some("create"),
            Some("pipelineruns"),
            FaultAction::ErrorAfterActing { code: 500 },
        )
        .times(1),
    );
    // Not 503 or 429: kube's client retries those itself for a while.
    let unreadable = faults.add(FaultRule::new(
        Some("get"),
        Some("pipelineruns"),
        FaultAction::Error {
            code: 500,
            retry_after: None,
        },
    ));
    let id = app
        .submit(json!({"method": "kaniko", "git_ref": "main"}))
        .await;
    // Longer than an attempt's own retries of the submit (about 7.5 s), a
    // requeue's backoff and the next attempt's start.
    let failing_for = tokio::time::Instant::now() + Duration::from_secs(12);
    while tokio::time::Instant::now() < failing_for {
        let runs = app.pipelineruns(Some(id)).await;
        assert!(
            runs.len() <= 1,
            "a second PipelineRun beside one that may be running; executions: {:?}",
            app.executions(id).await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        app.pipelineruns(Some(id)).await.len(),
        1,
        "the create acted"
    );
    assert!(
        faults.hits(unreadable) >= 2,
        "the run was not read to be adopted"
    );
    faults.remove(unreadable);
    let build = app.wait_terminal(id).await;
    assert_eq!(build["status"], "succeeded", "{build}");
    let executions = app.executions(id).await;
    assert_eq!(executions.len(), 1, "{executions:?}");
    check_runs(
        id,
        "succeeded",
        &executions,
        &app.pipelineruns(Some(id)).await,
    );
    assert_eq!(step_lines(&app.logs(id).await), expected_success_lines());
    app.finish().await;
}
