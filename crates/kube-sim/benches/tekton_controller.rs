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
    // Count finished runs from the event stream; `true` if it lagged and lost count.
    let waiter = tokio::spawn(async move {
        let mut done = 0;
        while done < n {
            match events.recv().await {
                Ok(ev)
                    if ev.gvr == gvr::PIPELINERUNS
                        && ev.kind == EventKind::Modified
                        && model::is_done(&ev.object) =>
                {
                    done += 1
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return true,
                Err(_) => return true,
            }
        }
        false
    });
    for i in 0..n {
        cluster
            .create(&gvr::PIPELINERUNS, Some("bench"), run(i))
            .unwrap();
        if i % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let created = start.elapsed().as_secs_f64();
    if waiter.await.unwrap_or(true) {
        // Fall back to polling the store.
        while cluster
            .list(&gvr::PIPELINERUNS, Some("bench"))
            .iter()
            .filter(|r| model::is_done(r))
            .count()
            < n
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
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
    for i in 0..n {
        cluster
            .create(&gvr::PIPELINERUNS, Some("bench"), run(i))
            .unwrap();
        if i % 256 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut running = 0;
    while Instant::now() < deadline {
        running = cluster
            .list(&gvr::TASKRUNS, Some("bench"))
            .iter()
            .filter(|t| {
                model::str_at(
                    model::succeeded_condition(t).unwrap_or(&serde_json::Value::Null),
                    &["reason"],
                ) == Some("Running")
            })
            .count();
        if running == n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
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
        let n: usize = std::env::var("BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        let (created, total) = throughput(n).await;
        println!("tekton controller: {n} PipelineRuns created in {created:.2}s, all terminal after {total:.2}s");
        let per_s = n as f64 / total;
        let m: usize = std::env::var("BENCH_INFLIGHT").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let running = inflight(m).await;
        println!("tekton controller: {running}/{m} PipelineRuns running concurrently");
        println!("tekton-controller: creates_to_terminal_per_s={per_s:.0} inflight={running}");
    });
}
