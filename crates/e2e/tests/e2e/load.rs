//! Many builds at once: several dispatchers with the Tekton executor, with
//! dispatchers crashing and tenants at their limits. Every build ends
//! succeeded, claimed exactly once per attempt, with one PipelineRun per
//! execution. (Injected cluster faults: `faults.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::harness::{CrashableDispatcher, Options, PATIENCE, TestApp, rule, step_lines};

/// `n` builds of the four methods in turn, 8 requests at a time.
async fn submit_many(app: &TestApp, n: usize) -> Vec<Uuid> {
    use futures::StreamExt;
    futures::stream::iter(0..n)
        .map(|i| {
            let method = ["docker", "kaniko", "buildx", "packer"][i % 4];
            let mut request = json!({"method": method, "git_ref": format!("branch-{i}")});
            if method == "packer" {
                request["config"] = json!({"packer_template": "image.pkr.hcl"});
            }
            app.submit(request)
        })
        .buffered(8)
        .collect()
        .await
}

/// Every build succeeded; per build, attempts are distinct and each execution
/// has at most one PipelineRun (exactly one for the one that succeeded), none
/// shared or orphaned. Returns the total number of executions.
async fn assert_each_ran_once(app: &TestApp, ids: &[Uuid]) -> usize {
    // Every build ends first: a run listed earlier could miss PipelineRuns
    // created after the list.
    for id in ids {
        app.wait_terminal(*id).await;
    }
    let mut runs_by_execution: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for run in app.pipelineruns(None).await {
        let execution = run["metadata"]["labels"]["imagefactory.io/execution-id"]
            .as_str()
            .unwrap()
            .to_owned();
        runs_by_execution
            .entry(execution)
            .or_default()
            .push(run["metadata"]["name"].as_str().unwrap().to_owned());
    }
    let mut executions_total = 0;
    let mut known_executions = BTreeSet::new();
    for id in ids {
        let build = app.wait_terminal(*id).await;
        assert_eq!(build["status"], "succeeded", "{build}");
        let executions: Vec<Value> = app.executions(*id).await;
        executions_total += executions.len();
        let attempts: BTreeSet<i64> = executions
            .iter()
            .map(|e| e["attempt"].as_i64().unwrap())
            .collect();
        assert_eq!(
            attempts.len(),
            executions.len(),
            "an attempt ran twice: {executions:?}"
        );
        let succeeded: Vec<&Value> = executions
            .iter()
            .filter(|e| e["status"] == "succeeded")
            .collect();
        assert_eq!(succeeded.len(), 1, "{build}: {executions:?}");
        for e in &executions {
            let eid = e["id"].as_str().unwrap().to_owned();
            let runs = runs_by_execution.get(&eid).cloned().unwrap_or_default();
            assert!(runs.len() <= 1, "execution {eid} has PipelineRuns {runs:?}");
            if e["status"] == "succeeded" {
                assert_eq!(
                    runs.len(),
                    1,
                    "the succeeded execution {eid} has its PipelineRun"
                );
                assert_eq!(e["pipeline_run_name"].as_str(), Some(runs[0].as_str()));
            }
            known_executions.insert(eid);
        }
        let artifacts = app.artifacts(*id).await;
        assert!(
            artifacts.contains_key("IMAGE_URL") && artifacts.contains_key("IMAGE_DIGEST"),
            "{artifacts:?}"
        );
    }
    for execution in runs_by_execution.keys() {
        assert!(
            known_executions.contains(execution),
            "PipelineRun of unknown execution {execution}"
        );
    }
    executions_total
}

/// Issue 5 (a) with the Tekton executor: 3 dispatchers on 2,000 builds.
/// Several executors on one namespace: builds used to stay `running` when
/// their PipelineRun ended before the executor followed it (regression test
/// at the executor level: `crates/exec/tests/tekton_watch_race.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_dispatchers_claim_each_build_exactly_once() {
    let app = TestApp::start(Options {
        dispatchers: 3,
        ..Default::default()
    })
    .await;
    let ids = submit_many(&app, 2000).await;
    let executions = assert_each_ran_once(&app, &ids).await;
    assert_eq!(executions, 2000, "one execution per build");
    let runs = app.pipelineruns(None).await;
    assert_eq!(runs.len(), 2000, "one PipelineRun per execution");
    // Leases are cleared when builds finish; executions keep who ran them.
    let owners: BTreeMap<String, i64> = sqlx::query_as(
        "SELECT dispatcher_id, count(*) FROM build_executions GROUP BY dispatcher_id",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap()
    .into_iter()
    .map(|(o, n): (Option<String>, i64)| (o.unwrap_or_default(), n))
    .collect();
    println!("claims by dispatcher: {owners:?}");
    app.finish().await;
}

/// Issue 5 (b) with the Tekton executor: dispatchers crash (every task of
/// theirs stopped where it stands, connections dropped, nothing handed
/// over) at random moments while 200 builds run, and fresh ones start.
/// After the takeovers every build succeeded with one execution (attempt 1,
/// re-attached, never restarted), one PipelineRun, and its log lines once each
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_dispatchers_lose_and_duplicate_no_tekton_build() {
    use rand::Rng;
    let layers: Vec<String> = (0..10).map(|i| format!("layer {i}")).collect();
    let refs: Vec<&str> = layers.iter().map(String::as_str).collect();
    let app = TestApp::start(Options {
        rules: vec![
            rule("clone", None, None, &["cloned"], None),
            // 3 simulated minutes = 1.8 s: runs span several crashes.
            rule("build", None, Some("3m"), &refs, None),
        ],
        dispatchers: 0,
        ..Default::default()
    })
    .await;
    let mut dispatchers: Vec<CrashableDispatcher> =
        (0..2).map(|_| app.start_crashable_dispatcher()).collect();
    let mut ids = Vec::new();
    for i in 0..200 {
        ids.push(
            app.submit(json!({"method": "kaniko", "git_ref": format!("branch-{i}")}))
                .await,
        );
    }
    let mut crashed: Vec<String> = Vec::new();
    let mut rounds = 0;
    while crashed.len() < 5 && rounds < 80 {
        rounds += 1;
        let pause = rand::rng().random_range(200..1_200);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let victim = rand::rng().random_range(0..dispatchers.len());
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM builds WHERE status = 'running' AND lease_owner = $1",
        )
        .bind(&dispatchers[victim].id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
        if held == 0 {
            continue;
        }
        dispatchers[victim].crash();
        crashed.push(dispatchers[victim].id.clone());
        dispatchers[victim] = app.start_crashable_dispatcher();
    }
    assert!(
        crashed.len() >= 3,
        "only {} crashes hit a dispatcher holding builds",
        crashed.len()
    );

    let executions = assert_each_ran_once(&app, &ids).await;
    assert_eq!(executions, 200, "one execution per build: none restarted");
    assert_eq!(
        app.pipelineruns(None).await.len(),
        200,
        "one PipelineRun per build"
    );
    let retried: i64 = sqlx::query_scalar("SELECT count(*) FROM builds WHERE attempts <> 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(retried, 0);
    let mut expected = vec!["cloned".to_owned()];
    expected.extend(layers.iter().cloned());
    for id in &ids {
        let logs = app.logs(*id).await;
        assert_eq!(
            step_lines(&logs),
            expected,
            "build {id}: logs complete, once each"
        );
        // The executors' own lines: the run named (created, or re-attached
        // to when the dispatcher crashed before saying it created it), and
        // a completion, always "succeeded". A dispatcher that crashes after
        // writing its completion line but before recording the outcome
        // leaves that line behind, and the one taking over writes its own:
        // operator lines say what each dispatcher saw, the step lines above
        // are the ones that must appear exactly once.
        assert!(
            logs.iter().any(|l| l.starts_with("Created PipelineRun: ")
                || l.starts_with("Re-attached to PipelineRun: ")),
            "build {id}: {logs:?}"
        );
        let completions: Vec<&String> = logs.iter().filter(|l| l.contains(" finished: ")).collect();
        assert!(
            !completions.is_empty()
                && completions
                    .iter()
                    .all(|l| l.contains(" finished: succeeded after ")),
            "build {id}: completion lines in {logs:?}"
        );
    }
    // Claimed by a dispatcher that crashed = finished by another, re-attached.
    let reattached: i64 =
        sqlx::query_scalar("SELECT count(*) FROM build_executions WHERE dispatcher_id = ANY($1)")
            .bind(&crashed)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(
        reattached > 0,
        "no build was taken over after {} crashes",
        crashed.len()
    );
    println!("crashes={} builds_taken_over={reattached}", crashed.len());
    drop(dispatchers);
    app.finish().await;
}

/// Issue 5 (c) with the Tekton executor: a tenant at its limit (2) with 30
/// builds queued does not hold back another tenant's build: that one is
/// claimed while the full tenant still has builds waiting, and the limit
/// holds throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_tenant_does_not_hold_back_another_tenants_tekton_build() {
    let app = TestApp::start(Options {
        // 10 simulated minutes = 6 s per build: the full tenant stays full.
        rules: vec![rule("build", None, Some("10m"), &["built"], None)],
        ..Default::default()
    })
    .await;
    let full = app.other_tenant("full", 2).await;
    let mut queued = Vec::new();
    for i in 0..30 {
        queued.push(
            app.submit_as(&full, json!({"git_ref": format!("branch-{i}")}))
                .await,
        );
    }
    // The full tenant's first two are running: it is at its limit.
    let running = "SELECT count(*) FROM builds WHERE status = 'running' AND id = ANY($1)";
    let count = |sql: &'static str, ids: Vec<Uuid>| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .bind(ids)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while count(running, queued.clone()).await < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the full tenant never ran 2 builds"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let other = app.submit(json!({"method": "kaniko"})).await;
    let build = app.wait_status(other, &["running", "succeeded"]).await;
    let waiting = count(
        "SELECT count(*) FROM builds WHERE status = 'queued' AND id = ANY($1)",
        queued.clone(),
    )
    .await;
    assert!(
        waiting >= 20,
        "the other tenant's build ran only after the full tenant drained ({waiting} still queued): {build}"
    );
    assert!(count(running, queued.clone()).await <= 2, "the limit holds");
    // Within one claim cycle: claimed before the full tenant's third build
    // (which could only start once one of its first two ended, seconds later).
    let starts: Vec<(Uuid, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("SELECT build_id, started_at FROM build_executions ORDER BY started_at")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let at = starts.iter().position(|(b, _)| *b == other).unwrap();
    assert!(
        at <= 2,
        "claimed after {at} builds of the full tenant: {starts:?}"
    );
    assert_eq!(app.wait_terminal(other).await["status"], "succeeded");
    app.finish().await;
}
