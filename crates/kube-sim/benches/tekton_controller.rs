//! Throughput of the simulated Tekton controller alone (in-memory cluster, no HTTP):
//! PipelineRun create→terminal rate and how many runs it holds in flight.
//! `cargo bench -p kube-sim --bench tekton_controller`; prints one summary line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_sim::cluster::{Cluster, EventKind, gvr};
use kube_sim::tekton::testing::MemCluster;
use kube_sim::tekton::{Controller, ControllerOptions, model};
use serde_json::json;

fn run(i: usize) -> serde_json::Value {
    json!({
        "apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
        "metadata": {"name": format!("run-{i}")},
        "spec": {"timeouts": {"pipeline": "1h0m0s"}, "taskRunTemplate": {"serviceAccountName": "default"},
            "pipelineSpec": {"tasks": [{"name": "build", "taskSpec": {"steps": [{"name": "s", "image": "busybox"}]}}]}}
    })
}

/// Create the runs `run-0` … `run-{n-1}` in `bench`, letting the controller
/// work between batches.
async fn create_runs(cluster: &MemCluster, n: usize) {
    for i in 0..n {
        cluster
            .create(&gvr::PIPELINERUNS, Some("bench"), run(i))
            .unwrap();
        if i % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

/// Create `n` runs and wait for all to finish; returns (create seconds, total seconds).
async fn throughput(n: usize) -> (f64, f64) {
    let cluster = Arc::new(MemCluster::new());
    cluster.add_namespace("bench");
    let mut events = cluster.subscribe();
    let opts = ControllerOptions {
        time_scale: 0.0,
        ..ControllerOptions::default()
    };
    let controller = Controller::spawn(cluster.clone(), opts);
    let start = Instant::now();
    // Count finished runs from the event stream (list+watch: after a lag, subscribe
    // afresh and look up only the runs not yet seen finished).
    let watcher = cluster.clone();
    let waiter = tokio::spawn(async move {
        let mut done = std::collections::HashSet::new();
        while done.len() < n {
            match events.recv().await {
                Ok(ev)
                    if ev.gvr == gvr::PIPELINERUNS
                        && ev.kind == EventKind::Modified
                        && model::is_done(&ev.object) =>
                {
                    done.insert(model::name(&ev.object).to_string());
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    events = watcher.subscribe();
                    for i in 0..n {
                        let name = format!("run-{i}");
                        if !done.contains(&name)
                            && watcher
                                .get(&gvr::PIPELINERUNS, Some("bench"), &name)
                                .is_some_and(|r| model::is_done(&r))
                        {
                            done.insert(name);
                        }
                    }
                }
                Err(_) => break,
            }
        }
    });
    create_runs(&cluster, n).await;
    let created = start.elapsed().as_secs_f64();
    waiter.await.unwrap();
    let total = start.elapsed().as_secs_f64();
    controller.abort();
    (created, total)
}

/// Create `n` runs whose step takes an hour; count how many are Running.
async fn inflight(n: usize) -> usize {
    let cluster = Arc::new(MemCluster::new());
    cluster.add_namespace("bench");
    let opts = ControllerOptions {
        time_scale: 1.0,
        pod_start_delay: Duration::ZERO,
        default_step_duration: Duration::from_secs(3600),
        ..ControllerOptions::default()
    };
    let controller = Controller::spawn(cluster.clone(), opts);
    create_runs(&cluster, n).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let is_running = |t: &serde_json::Value| {
        model::succeeded_condition(t)
            .and_then(|c| c.get("reason"))
            .and_then(|r| r.as_str())
            == Some("Running")
    };
    let mut running = 0;
    while Instant::now() < deadline {
        running = (0..n)
            .filter(|i| {
                cluster
                    .get(&gvr::TASKRUNS, Some("bench"), &format!("run-{i}-build"))
                    .is_some_and(|t| is_running(&t))
            })
            .count();
        if running == n {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    controller.abort();
    running
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let n: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let (created, total) = throughput(n).await;
        println!("tekton controller: {n} PipelineRuns created in {created:.2}s, all terminal after {total:.2}s");
        let per_s = n as f64 / total;
        let m: usize = std::env::var("BENCH_INFLIGHT").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let running = inflight(m).await;
        println!("tekton controller: {running}/{m} PipelineRuns running concurrently");
        println!("tekton-controller: creates_to_terminal_per_s={per_s:.0} inflight={running}");
    });
}
