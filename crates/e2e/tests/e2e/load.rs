//! Many builds at once: several dispatchers with the Tekton executor, with
//! and without injected cluster faults. Every build ends succeeded, claimed
//! exactly once per attempt, with one PipelineRun per execution.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube_sim::{FaultAction, FaultRule};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::harness::{Options, TestApp, fast_settings};

/// What the chaos driver did, for the report line and sanity checks.
#[derive(Debug, Default)]
struct Chaos {
    requests: u64,
    errors_5xx: u64,
    errors_429: u64,
    watch_drops: u64,
    watch_expiries: u64,
}

/// Counts every request kube-sim serves: a zero-latency rule with a huge
/// budget; the budget used is the number of requests it matched.
struct Counter {
    id: u64,
}

impl Counter {
    fn start(sim: &kube_sim::KubeSimHandle) -> Counter {
        let rule = FaultRule::new(None, None, FaultAction::Latency(Duration::ZERO)).times(u32::MAX);
        Counter {
            id: sim.faults().add(rule),
        }
    }

    fn count(&self, sim: &kube_sim::KubeSimHandle) -> u64 {
        let left = sim
            .faults()
            .list()
            .into_iter()
            .find(|(id, _)| *id == self.id)
            .and_then(|(_, r)| r.times)
            .unwrap_or(0);
        u64::from(u32::MAX - left)
    }
}

/// Until `stop`: fail 10 % of all requests with 500/503 and 2 % with 429
/// (one-shot rules sized from the request count), end every open watch
/// every 700 ms and expire (410) the next watch every 450 ms.
async fn chaos(sim: &kube_sim::KubeSimHandle, stop: &CancellationToken) -> Chaos {
    let counter = Counter::start(sim);
    let mut report = Chaos::default();
    let mut tick = tokio::time::interval(Duration::from_millis(25));
    let mut n: u64 = 0;
    while !stop.is_cancelled() {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        let seen = counter.count(sim);
        let due_5xx = seen / 10;
        if due_5xx > report.errors_5xx {
            let code = if n.is_multiple_of(2) { 500 } else { 503 };
            let k = (due_5xx - report.errors_5xx) as u32;
            sim.faults().add(
                FaultRule::new(
                    None,
                    None,
                    FaultAction::Error {
                        code,
                        retry_after: None,
                    },
                )
                .times(k),
            );
            report.errors_5xx = due_5xx;
        }
        let due_429 = seen / 50;
        if due_429 > report.errors_429 {
            let k = (due_429 - report.errors_429) as u32;
            sim.faults().add(
                FaultRule::new(
                    None,
                    None,
                    FaultAction::Error {
                        code: 429,
                        retry_after: Some(1),
                    },
                )
                .times(k),
            );
            report.errors_429 = due_429;
        }
        if n.is_multiple_of(28) {
            sim.faults().drop_all_watches();
            report.watch_drops += 1;
        }
        if n.is_multiple_of(18) {
            sim.faults()
                .add(FaultRule::new(Some("watch"), None, FaultAction::ExpireWatch).times(1));
            report.watch_expiries += 1;
        }
        report.requests = seen;
    }
    sim.faults().clear();
    report
}

async fn submit_many(app: &TestApp, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let method = ["docker", "kaniko", "buildx", "packer"][i % 4];
        let mut request = json!({"method": method, "git_ref": format!("branch-{i}")});
        if method == "packer" {
            request["config"] = json!({"packer_template": "image.pkr.hcl"});
        }
        ids.push(app.submit(request).await);
    }
    ids
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_builds_survive_injected_cluster_faults() {
    let mut settings = fast_settings();
    settings.max_attempts = 10;
    let app = TestApp::start(Options {
        dispatchers: 2,
        settings,
        ..Default::default()
    })
    .await;
    let stop = CancellationToken::new();
    let (report, ids) = tokio::join!(chaos(&app.sim, &stop), async {
        let ids = submit_many(&app, 200).await;
        for id in &ids {
            app.wait_terminal(*id).await;
        }
        stop.cancel();
        ids
    });
    assert!(report.errors_5xx > 0 && report.errors_429 > 0, "{report:?}");
    let executions = assert_each_ran_once(&app, &ids).await;
    println!(
        "faults: builds=200 executions={executions} requests={} injected_5xx={} injected_429={} watch_drops={} watch_410s={}",
        report.requests,
        report.errors_5xx,
        report.errors_429,
        report.watch_drops,
        report.watch_expiries
    );
    app.finish().await;
}

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
    let ids = submit_many(&app, 300).await;
    let executions = assert_each_ran_once(&app, &ids).await;
    assert_eq!(executions, 300, "one execution per build");
    let runs = app.pipelineruns(None).await;
    assert_eq!(runs.len(), 300, "one PipelineRun per execution");
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
