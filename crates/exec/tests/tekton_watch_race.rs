//! Regression tests for the lost-build bug seen with three dispatchers
//! (e2e `three_dispatchers_claim_each_build_exactly_once`): a PipelineRun
//! that changes — here: runs to its end — while the executor is between
//! creating (or reading) it and following it must still be followed to its
//! end. The shared namespace watch is already running (a first build started
//! it), so its events for the new run arrive before anyone follows the run.

mod tekton_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use imagefactory_domain::BuildMethod;
use imagefactory_exec::tekton::namespace::namespace_name;
use imagefactory_exec::tekton::submit::pipelinerun_resource;
use imagefactory_exec::tekton::{TektonExecutor, TektonSettings, TektonVersion};
use imagefactory_exec::{
    Artifact, ExecutionRef, ExecutionSink, Executor, LogLine, Outcome, SinkError,
};
use kube::api::{Api, DynamicObject};
use kube_sim::{FaultAction, FaultRule};
use serde_json::Value;
use tekton_support::*;
use uuid::Uuid;

/// Much longer than the simulated build (well under a second): an executor
/// that lost track of its run waits forever, so this is only a hang guard.
const PATIENCE: Duration = Duration::from_secs(60);

/// A sink whose `reference` (the first thing the executor persists after
/// creating the run) returns only once the run has finished in the cluster,
/// plus a margin for the shared watch to have delivered every event of it:
/// the database write being slow under load, made deterministic.
struct SlowReferenceSink {
    inner: Arc<MemorySink>,
    runs: Api<DynamicObject>,
}

async fn wait_succeeded(runs: &Api<DynamicObject>, name: &str) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let run = runs.get_opt(name).await.expect("read the run");
        let status = run
            .map(|r| serde_json::to_value(r).unwrap())
            .and_then(|r| {
                r.pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find(|c| c["type"] == "Succeeded").cloned())
            })
            .map(|c| c["status"].as_str().unwrap_or("").to_owned());
        if status.as_deref() == Some("True") {
            // Let the executor's shared watch receive the last events first.
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {name} never succeeded in the sim"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[async_trait]
impl ExecutionSink for SlowReferenceSink {
    async fn reference(&self, reference: &ExecutionRef) -> Result<(), SinkError> {
        wait_succeeded(&self.runs, reference.name.as_deref().unwrap()).await;
        self.inner.reference(reference).await
    }
    async fn logs(&self, lines: &[LogLine]) -> Result<(), SinkError> {
        self.inner.logs(lines).await
    }
    async fn artifact(&self, artifact: &Artifact) -> Result<(), SinkError> {
        ExecutionSink::artifact(self.inner.as_ref(), artifact).await
    }
    async fn progress(&self, message: &str) -> Result<(), SinkError> {
        self.inner.progress(message).await
    }
    async fn log_positions(&self) -> Result<HashMap<String, i64>, SinkError> {
        self.inner.log_positions().await
    }
}

async fn executor_with(resync_after: Duration) -> TektonExecutor {
    TektonExecutor::new(TektonSettings {
        log_drain: Duration::from_secs(20),
        cancel_grace: Duration::from_secs(30),
        resync_after,
        address_policy: loopback_policy(),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn runs_api(sim: &Sim, tenant: Uuid) -> Api<DynamicObject> {
    Api::namespaced_with(
        sim.admin().await,
        &namespace_name(tenant),
        &pipelinerun_resource(TektonVersion::V1),
    )
}

/// Start one build to the end so the executor's shared watch of the tenant
/// namespace is running before the build under test.
async fn warm_up(
    executor: &TektonExecutor,
    sim: &Sim,
    tenant: Uuid,
) -> imagefactory_exec::ProviderConnection {
    let provider = sim.provider();
    let (_tx, stop) = no_stop();
    let outcome = executor
        .start(
            context(BuildMethod::Docker, provider.clone(), tenant),
            MemorySink::new(),
            stop,
        )
        .await;
    assert_eq!(outcome, Outcome::Succeeded, "warm-up build");
    provider
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_ends_before_its_reference_is_saved_is_still_followed_to_its_end() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    // No resync within the test's patience: only following the run from
    // before it was created can see it end.
    let executor = executor_with(Duration::from_secs(3600)).await;
    let provider = warm_up(&executor, &sim, tenant).await;

    let inner = MemorySink::new();
    let sink = Arc::new(SlowReferenceSink {
        inner: inner.clone(),
        runs: runs_api(&sim, tenant).await,
    });
    let (_tx, stop) = no_stop();
    let outcome = tokio::time::timeout(
        PATIENCE,
        executor.start(context(BuildMethod::Kaniko, provider, tenant), sink, stop),
    )
    .await
    .expect("the executor follows the run to its end (it finished while the reference was saved)");
    assert_eq!(outcome, Outcome::Succeeded);
    assert!(inner.artifact("IMAGE_DIGEST").is_some(), "results read");
    assert!(
        inner.sources().iter().any(|s| s.starts_with("build/")),
        "step logs read: {:?}",
        inner.sources()
    );
    inner.assert_no_duplicates_or_gaps();
}

/// The safety net: a watch that stalls (a real API server may hold a watch
/// open and send nothing) must not leave a build running forever. Every
/// PipelineRun watch hangs for ten minutes from the moment the build starts;
/// the executor reads its silent run and sees it end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_ends_while_the_shared_watch_is_stalled() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let executor = executor_with(Duration::from_millis(300)).await;
    let provider = warm_up(&executor, &sim, tenant).await;

    sim.handle.faults().add(FaultRule::new(
        Some("watch"),
        Some("pipelineruns"),
        FaultAction::Latency(Duration::from_secs(600)),
    ));
    sim.handle.faults().drop_all_watches();
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    let outcome = tokio::time::timeout(
        PATIENCE,
        executor.start(
            context(BuildMethod::Buildx, provider, tenant),
            sink.clone(),
            stop,
        ),
    )
    .await
    .expect("the executor notices the end of its run without the watch");
    assert_eq!(outcome, Outcome::Succeeded);
    assert!(sink.artifact("IMAGE_DIGEST").is_some(), "results read");
    assert!(
        sink.sources().iter().any(|s| s.starts_with("build/")),
        "step logs read: {:?}",
        sink.sources()
    );
    sink.assert_no_duplicates_or_gaps();
}
