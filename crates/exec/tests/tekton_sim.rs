//! The Tekton executor against kube-sim (HTTPS, kube-rs, simulated Tekton
//! controller): success per method, each failure mode, cancel, timeout and
//! re-attach.

mod tekton_support;

use std::sync::Arc;
use std::time::Duration;

use imagefactory_domain::BuildMethod;
use imagefactory_exec::tekton::namespace::namespace_name;
use imagefactory_exec::tekton::render::run_params;
use imagefactory_exec::tekton::{TektonExecutor, TektonSettings};
use imagefactory_exec::{ExecutionSink, Executor, Outcome, StopReason};
use serde_json::{Value, json};
use tekton_support::*;
use uuid::Uuid;

async fn wait_for<F: Fn() -> bool>(what: &str, f: F) {
    for _ in 0..400 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_method_succeeds_with_artifacts_params_and_ordered_logs() {
    let sim = Sim::start(SimOptions {
        rules: vec![
            rule(
                "clone",
                None,
                None,
                &["Cloning into '.'...", "HEAD is now at abc123"],
                None,
            ),
            rule(
                "build",
                None,
                None,
                &["step 1/3", "step 2/3", "step 3/3"],
                None,
            ),
        ],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let executor = executor().await;
    for method in BuildMethod::ALL {
        let ctx = context(*method, sim.provider(), tenant);
        let sink = MemorySink::new();
        let (_tx, stop) = no_stop();
        let outcome = executor.start(ctx.clone(), sink.clone(), stop).await;
        assert_eq!(
            outcome,
            Outcome::Succeeded,
            "{method}: {}",
            message(&outcome)
        );

        // The reference was persisted with the run's uid.
        let reference = sink.references.lock().unwrap()[0].clone();
        assert_eq!(
            reference.namespace.as_deref(),
            Some(namespace_name(tenant).as_str())
        );
        assert!(reference.uid.is_some());
        // Image artifacts from the pipeline results, plus task results.
        assert_eq!(
            sink.artifact("IMAGE_URL").as_deref(),
            Some("registry.example.com/team/app:1.0"),
            "{method}"
        );
        let digest = sink.artifact("IMAGE_DIGEST").unwrap();
        assert!(
            digest.starts_with("sha256:") && digest.len() == 71,
            "{method}: {digest}"
        );
        assert!(
            sink.artifact("clone.commit").is_some(),
            "{method}: task results kept"
        );
        // Logs: the operator's lines first, then clone before build, in
        // order, nothing twice.
        let sources = sink.sources();
        assert_eq!(sources[0], "imagefactory", "{method}: {sources:?}");
        assert!(sources[1].starts_with("clone/"), "{method}: {sources:?}");
        assert!(
            sources.iter().any(|s| s.starts_with("build/")),
            "{method}: {sources:?}"
        );
        assert_eq!(
            sink.text("clone/clone"),
            vec!["Cloning into '.'...", "HEAD is now at abc123"]
        );
        let build_source = sources.iter().find(|s| s.starts_with("build/")).unwrap();
        assert_eq!(
            sink.text(build_source),
            vec!["step 1/3", "step 2/3", "step 3/3"]
        );
        sink.assert_no_duplicates_or_gaps();

        // The PipelineRun in the cluster carries the right params and labels.
        let runs = sim.pipelineruns(tenant).await;
        let run = runs
            .iter()
            .find(|r| r["metadata"]["name"] == reference.name.clone().unwrap())
            .unwrap();
        let params = run_params(run);
        assert_eq!(params["git-url"], "https://git.example.com/team/app.git");
        assert_eq!(
            params["git-revision"], "feature/login",
            "{method}: the requested ref"
        );
        assert_eq!(params["image"], "registry.example.com/team/app:1.0");
        if *method == BuildMethod::Packer {
            assert_eq!(params["packer-template"], "image.pkr.hcl");
            assert_eq!(params["packer-vars"], json!(["region=eu"]));
        } else {
            assert_eq!(params["dockerfile"], "build/Dockerfile");
            assert_eq!(params["build-args"], json!(["VERSION=1.0"]));
        }
        if *method == BuildMethod::Buildx {
            assert_eq!(params["platforms"], json!(["linux/amd64", "linux/arm64"]));
        }
        assert_eq!(
            run["metadata"]["labels"]["imagefactory.io/build-id"],
            ctx.build_id.to_string()
        );
        assert_eq!(
            run["metadata"]["labels"]["imagefactory.io/execution-id"],
            ctx.execution_id.to_string()
        );
        assert_eq!(run["spec"]["timeouts"]["pipeline"], "1h0m0s");
        let registry_ws = run["spec"]["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "dockerconfig")
            .unwrap();
        assert_eq!(
            registry_ws["secret"]["secretName"],
            format!(
                "if-reg-{}-v1",
                ctx.registry.as_ref().unwrap().credential_id.simple()
            )
        );
    }
}

async fn failed_message(sim: &Sim, ctx: imagefactory_exec::ExecutionContext) -> Outcome {
    let _ = sim;
    let executor = executor().await;
    let (_tx, stop) = no_stop();
    executor.start(ctx, MemorySink::new(), stop).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_task_fails_before_submit() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    // Unmanaged: the operator brings the Tasks (managed providers get them applied).
    let mut config = sim.config();
    config["tasks"] = json!("unmanaged");
    let provider = sim.provider_with(config);
    let outcome = failed_message(&sim, context(BuildMethod::Kaniko, provider, tenant)).await;
    let text = message(&outcome);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(
        text.contains("Tekton Task \"git-clone\" not found in namespace"),
        "{text}"
    );
    assert!(
        sim.pipelineruns(tenant).await.is_empty(),
        "nothing submitted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_docker_config_secret_fails_with_how_to_fix() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let mut ctx = context(BuildMethod::Docker, sim.provider(), tenant);
    ctx.registry = None;
    let outcome = failed_message(&sim, ctx).await;
    let text = message(&outcome);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(
        text.contains("Secret \"docker-config\" not found"),
        "{text}"
    );
    assert!(
        text.contains("kubectl create secret docker-registry docker-config"),
        "{text}"
    );
    assert!(sim.pipelineruns(tenant).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_default_storage_class_fails() {
    let sim = Sim::start(SimOptions {
        default_storage_class: None,
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let outcome = failed_message(&sim, context(BuildMethod::Buildx, sim.provider(), tenant)).await;
    let text = message(&outcome);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(text.contains("no default StorageClass"), "{text}");
    // A configured class that does not exist is named.
    let mut config = sim.config();
    config["storage_class"] = json!("fast-ssd");
    let outcome = failed_message(
        &sim,
        context(BuildMethod::Buildx, sim.provider_with(config), tenant),
    )
    .await;
    assert!(
        message(&outcome).contains("StorageClass \"fast-ssd\""),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_service_account_fails() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let mut config = sim.config();
    config["service_account"] = json!("builder");
    let outcome = failed_message(
        &sim,
        context(BuildMethod::Kaniko, sim.provider_with(config), tenant),
    )
    .await;
    let text = message(&outcome);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(
        text.contains("service account \"builder\" not found"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_credentials_fail_with_the_clusters_401() {
    let sim = Sim::start(SimOptions::default()).await;
    let mut config = sim.config();
    config["token"] = json!("not-a-valid-token");
    let outcome = failed_message(
        &sim,
        context(
            BuildMethod::Kaniko,
            sim.provider_with(config),
            Uuid::new_v4(),
        ),
    )
    .await;
    let text = message(&outcome);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(
        text.contains("401") && text.contains("Unauthorized"),
        "{text}"
    );
    assert!(
        !text.contains("not-a-valid-token"),
        "the token never appears in messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_namespace_fails_clearly() {
    let sim = Sim::start(SimOptions::default()).await;
    let token = sim.handle.add_token_user(
        "tenant-bot",
        &[],
        vec![kube_sim::AccessRule::new(
            &["somewhere-else"],
            &["*"],
            &["*"],
        )],
    );
    let mut config = sim.config();
    config["token"] = json!(token);
    let tenant = Uuid::new_v4();
    let outcome = failed_message(
        &sim,
        context(BuildMethod::Kaniko, sim.provider_with(config), tenant),
    )
    .await;
    let text = message(&outcome);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(text.contains("403") && text.contains("Forbidden"), "{text}");
}

/// The full cluster-outage stress run: a build claimed while the API
/// server was down ended its attempts `Transient` and used them up. Nothing
/// of the attempt exists on an unreachable cluster, so it ends
/// `Unreachable`, which the dispatcher does not count as an attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_cluster_ends_the_attempt_unreachable() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sim = Sim::start(SimOptions::default()).await;
    let mut config = sim.config();
    config["endpoint"] = json!(format!("https://127.0.0.1:{port}"));
    let outcome = failed_message(
        &sim,
        context(
            BuildMethod::Kaniko,
            sim.provider_with(config),
            Uuid::new_v4(),
        ),
    )
    .await;
    let Outcome::Unreachable { message } = &outcome else {
        panic!("{outcome:?}");
    };
    assert!(message.contains("connection refused"), "{message}");
}

/// An executor that tries a submit twice before giving up on it.
async fn retrying_once() -> Arc<TektonExecutor> {
    Arc::new(
        TektonExecutor::new(TektonSettings {
            submit_retries: 1,
            address_policy: loopback_policy(),
            ..Default::default()
        })
        .await
        .unwrap(),
    )
}

/// `start` of the execution `ctx` on its own task.
fn start_on_a_task(
    executor: &Arc<TektonExecutor>,
    ctx: &imagefactory_exec::ExecutionContext,
    sink: &Arc<MemorySink>,
    stop: imagefactory_exec::StopSignal,
) -> tokio::task::JoinHandle<Outcome> {
    let (executor, sink, ctx) = (executor.clone(), sink.clone(), ctx.clone());
    tokio::spawn(async move {
        executor
            .start(ctx, sink as Arc<dyn ExecutionSink>, stop)
            .await
    })
}

/// Every create of the run answered `code`: what the attempt ends as.
async fn when_every_create_is_answered(code: u16) -> Outcome {
    use kube_sim::{FaultAction, FaultRule};
    let (sim, tenant) = a_failing_build(&["x"]).await;
    sim.handle.faults().add(FaultRule::new(
        Some("create"),
        Some("pipelineruns"),
        FaultAction::Error {
            code,
            retry_after: None,
        },
    ));
    let (_tx, stop) = no_stop();
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let outcome = start_on_a_task(&retrying_once().await, &ctx, &MemorySink::new(), stop)
        .await
        .unwrap();
    assert!(sim.pipelineruns(tenant).await.is_empty());
    outcome
}

/// A create turned away before it was handled (429, 503) created nothing:
/// the attempt is not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_creates_the_server_never_acted_on_end_the_attempt_unreachable() {
    for code in [429, 503] {
        let outcome = when_every_create_is_answered(code).await;
        assert!(
            matches!(outcome, Outcome::Unreachable { .. }),
            "{code}: {outcome:?}"
        );
    }
}

/// After a 500 the run may have been stored (a real API server can fail
/// after writing). The attempt ended `Transient` once its submit retries
/// were used up; the dispatcher's next attempt names its run differently
/// and ran the build beside the first run. Here the first create is
/// carried out and answered 500, and the run cannot be read to be adopted
/// (500) for longer than the attempt's retries: the attempt keeps trying,
/// adopts the run by its name once the cluster answers and follows it to
/// its end — one run. A handover asked meanwhile ends it, recording
/// nothing, with the run left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_that_may_have_acted_is_retried_until_the_run_is_adopted() {
    let (sim, tenant) = a_failing_build(&["x"]).await;
    let faults = sim.handle.faults();
    faults.add(acts_then_fails("create", "pipelineruns", 500).times(1));
    let unreadable = faults.add(fails("get", "pipelineruns", 500));
    let executor = retrying_once().await;
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);

    let (tx, stop) = no_stop();
    let handed_over = start_on_a_task(&executor, &ctx, &MemorySink::new(), stop);
    // Two tries are all the attempt's retries; wait for a third.
    wait_until_read_fails(faults, unreadable, 3, &handed_over).await;
    assert_eq!(sim.pipelineruns(tenant).await.len(), 1, "the create acted");
    tx.send(Some(StopReason::Handover)).unwrap();
    assert_eq!(handed_over.await.unwrap(), Outcome::HandedOver);

    // Whoever takes over starts the same execution again.
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    let adopted = start_on_a_task(&executor, &ctx, &sink, stop);
    let hits = faults.hits(unreadable);
    wait_until_read_fails(faults, unreadable, hits + 3, &adopted).await;
    faults.remove(unreadable);
    let outcome = adopted.await.unwrap();
    assert!(
        message(&outcome).contains("exited with code 3"),
        "the run's own end: {outcome:?}"
    );
    assert_eq!(sim.pipelineruns(tenant).await.len(), 1);
    assert_eq!(sink.references.lock().unwrap().len(), 1);
}

/// A cancel asked while the attempt cannot tell whether its run exists (every
/// create answered 500, the first after acting) cancels the run by its name
/// rather than leave it running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_while_the_create_is_uncertain_cancels_the_run_by_its_name() {
    let (sim, tenant) = a_long_build().await;
    let faults = sim.handle.faults();
    faults.add(acts_then_fails("create", "pipelineruns", 500).times(1));
    let failing = faults.add(fails("create", "pipelineruns", 500));
    let (tx, stop) = no_stop();
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let attempt = start_on_a_task(&retrying_once().await, &ctx, &MemorySink::new(), stop);
    wait_until_read_fails(faults, failing, 3, &attempt).await;
    tx.send(Some(StopReason::Cancel)).unwrap();
    let outcome = attempt.await.unwrap();
    assert!(matches!(outcome, Outcome::Cancelled { .. }), "{outcome:?}");
    let runs = sim.pipelineruns(tenant).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0]["spec"]["status"], "CancelledRunFinally",
        "{}",
        runs[0]
    );
}

/// The run was created but its reference could not be saved (the database
/// away) and cancelling it failed too: the attempt ended `Transient` and the
/// dispatcher's next attempt ran beside the run. It hands over instead; the
/// next holder starts the same execution, adopts the run and saves it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_neither_saved_nor_cancelled_is_handed_over_and_adopted() {
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, Some("3m"), &["building..."], None)],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let uncancellable = sim.handle.faults().add(fails("patch", "pipelineruns", 500));
    let sink = MemorySink::new();
    *sink.failing_references.lock().unwrap() = 1;
    let executor = retrying_once().await;
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let (_tx, stop) = no_stop();
    let outcome = start_on_a_task(&executor, &ctx, &sink, stop).await.unwrap();
    assert_eq!(outcome, Outcome::HandedOver, "{}", message(&outcome));
    sim.handle.faults().remove(uncancellable);
    let runs = sim.pipelineruns(tenant).await;
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0]["spec"]["status"].is_null(),
        "left running: {}",
        runs[0]
    );

    let (_tx, stop) = no_stop();
    let outcome = start_on_a_task(&executor, &ctx, &sink, stop).await.unwrap();
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    assert_eq!(sim.pipelineruns(tenant).await.len(), 1);
    assert_eq!(sink.references.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn step_failure_names_the_step_and_exit_code() {
    let sim = Sim::start(SimOptions {
        rules: vec![rule(
            "build",
            Some("build-and-push"),
            None,
            &["error: boom"],
            Some(3),
        )],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    let outcome = executor()
        .await
        .start(
            context(BuildMethod::Kaniko, sim.provider(), tenant),
            sink.clone(),
            stop,
        )
        .await;
    let text = message(&outcome);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(
        text.contains("step \"build-and-push\" exited with code 3"),
        "{text}"
    );
    assert!(text.contains("task \"build\""), "{text}");
    assert_eq!(sink.text("build/build-and-push"), vec!["error: boom"]);
}

/// kube-sim whose build step prints `lines` and exits with code 3, with
/// the Tasks installed for a new tenant.
/// kube-sim whose build task runs for an hour, logging "building...", with
/// the Tasks installed for a new tenant.
async fn a_long_build() -> (Sim, Uuid) {
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, Some("1h"), &["building..."], None)],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    (sim, tenant)
}

async fn a_failing_build(lines: &[&str]) -> (Sim, Uuid) {
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", Some("build-and-push"), None, lines, Some(3))],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    (sim, tenant)
}

/// Every `get` of `resource` answers 503 until the returned rule is removed.
/// Every `verb` on `resource` answered `code`, nothing done.
fn fails(verb: &str, resource: &str, code: u16) -> kube_sim::FaultRule {
    kube_sim::FaultRule::new(
        Some(verb),
        Some(resource),
        kube_sim::FaultAction::Error {
            code,
            retry_after: None,
        },
    )
}

/// `verb` on `resource` carried out, then answered `code`.
fn acts_then_fails(verb: &str, resource: &str, code: u16) -> kube_sim::FaultRule {
    kube_sim::FaultRule::new(
        Some(verb),
        Some(resource),
        kube_sim::FaultAction::ErrorAfterActing { code },
    )
}

fn unavailable(sim: &Sim, resource: &str) -> u64 {
    sim.handle.faults().add(fails("get", resource, 503))
}

/// Waits for the tenant's PipelineRun to end, then `after` more, then
/// removes the fault rule `failing` (the API server is back).
async fn remove_after_the_run_ends(sim: &Sim, tenant: Uuid, failing: u64, after: Duration) {
    the_run_has_ended(sim, tenant).await;
    tokio::time::sleep(after).await;
    sim.handle.faults().remove(failing);
}

/// Waits for the tenant's PipelineRun to end.
async fn the_run_has_ended(sim: &Sim, tenant: Uuid) {
    loop {
        let runs = sim.pipelineruns(tenant).await;
        let ended = runs.iter().any(|r| {
            r["status"]["conditions"]
                .as_array()
                .is_some_and(|c| c.iter().any(|c| c["status"] != "Unknown"))
        });
        if ended {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 14 (4): under injected 5xx/429s, the last read of a finished
/// step's log was tried once; when it failed, the step's tail (a failing
/// step's error message) was missing from the build's log. It is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_failed_steps_log_survives_failing_log_reads() {
    let (sim, tenant) = a_failing_build(&["building", "error: boom"]).await;
    // Every log read fails until the run has ended: the read of the tail
    // made as it ends fails; the API server is back a moment later.
    let failing = unavailable(&sim, "pods/log");
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    let executor = executor().await;
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let run = executor.start(ctx, sink.clone(), stop);
    let heal = remove_after_the_run_ends(&sim, tenant, failing, Duration::from_millis(100));
    let (outcome, ()) = tokio::join!(run, heal);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert_eq!(
        sink.text("build/build-and-push"),
        vec!["building", "error: boom"]
    );
    sink.assert_no_duplicates_or_gaps();
}

/// Issue 14 (4): when the API server failed at the moment a failed run
/// ended (a 30 s outage in the fault stress test), the TaskRun read for the
/// failing step was tried once and the build's message lost the step and
/// its exit code. It is retried until the server is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_failing_step_is_named_when_taskrun_reads_fail_at_the_end() {
    let (sim, tenant) = a_failing_build(&["error: boom"]).await;
    // No TaskRun can be read until well after the run has ended.
    let failing = unavailable(&sim, "taskruns");
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    // The log follower (which also reads TaskRuns) gives up draining after
    // a second, so the end's own read of the TaskRun is what must wait.
    let executor = TektonExecutor::new(TektonSettings {
        log_drain: Duration::from_secs(1),
        log_drain_patience: Duration::from_secs(1),
        address_policy: loopback_policy(),
        ..Default::default()
    })
    .await
    .unwrap();
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let run = executor.start(ctx, sink.clone(), stop);
    let heal = remove_after_the_run_ends(&sim, tenant, failing, Duration::from_secs(4));
    let (outcome, ()) = tokio::join!(run, heal);
    let text = message(&outcome);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(
        text.contains("step \"build-and-push\" exited with code 3"),
        "{text}"
    );
}

/// An executor whose end of a run drains the logs for a second, and waits
/// out failing log reads for `patience`.
async fn short_drain(patience: Duration) -> TektonExecutor {
    TektonExecutor::new(TektonSettings {
        log_drain: Duration::from_secs(1),
        log_drain_patience: patience,
        address_policy: loopback_policy(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The operator's lines saying log lines may be missing.
fn missing_notes(sink: &MemorySink) -> Vec<String> {
    sink.text("imagefactory")
        .into_iter()
        .filter(|l| l.contains("may be missing"))
        .collect()
}

/// The full cluster-outage stress run (a 30 s outage): a step that ran and
/// ended while the API server was down lost its lines. The end of the run
/// waited for the log follower `log_drain` only, then aborted it, though
/// the lines were still on the cluster. Here every log read fails until 3 s
/// after the run ended, three times `log_drain` (the run's own state, read
/// through the watch, is not delayed): the end waits while the reads fail
/// and the follower reads the lines once the server answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_read_to_its_end_when_log_reads_fail_longer_than_the_drain() {
    let (sim, tenant) = a_failing_build(&["building", "error: boom"]).await;
    let failing = unavailable(&sim, "pods/log");
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    let executor = short_drain(Duration::from_secs(300)).await;
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let run = executor.start(ctx, sink.clone(), stop);
    let heal = remove_after_the_run_ends(&sim, tenant, failing, Duration::from_secs(3));
    let (outcome, ()) = tokio::join!(run, heal);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(
        message(&outcome).contains("step \"build-and-push\" exited with code 3"),
        "{outcome:?}"
    );
    assert_eq!(
        sink.text("build/build-and-push"),
        vec!["building", "error: boom"]
    );
    sink.assert_no_duplicates_or_gaps();
    assert_eq!(missing_notes(&sink), Vec::<String>::new());
}

/// The full database-restart stress run (a 30 s outage): lines read while
/// the database was away waited in the sink (which retries until it is
/// back), the end of the run gave the follower `log_drain` only and aborted
/// it with the lines in hand ("push refused" missing, a note instead). A
/// batch the sink has not taken now counts like failing reads: here the
/// sink holds every line until 3 s after the run ended, three times
/// `log_drain`, and the whole log is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_is_stored_to_its_end_when_the_database_is_away_longer_than_the_drain() {
    use std::sync::atomic::Ordering;
    let (sim, tenant) = a_failing_build(&["building", "error: boom"]).await;
    let sink = MemorySink::new();
    sink.holding_logs.store(true, Ordering::SeqCst);
    let (_tx, stop) = no_stop();
    let executor = short_drain(Duration::from_secs(300)).await;
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let run = executor.start(ctx, sink.clone(), stop);
    let back = async {
        the_run_has_ended(&sim, tenant).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        sink.holding_logs.store(false, Ordering::SeqCst);
    };
    let (outcome, ()) = tokio::join!(run, back);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert_eq!(
        sink.text("build/build-and-push"),
        vec!["building", "error: boom"]
    );
    sink.assert_no_duplicates_or_gaps();
    assert_eq!(missing_notes(&sink), Vec::<String>::new());
}

/// The wait for failing log reads is bounded: past `log_drain_patience`
/// the build ends, and its log says which lines may be missing instead of
/// silently lacking them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_cannot_be_read_to_its_end_says_lines_may_be_missing() {
    let (sim, tenant) = a_failing_build(&["building", "error: boom"]).await;
    let failing = unavailable(&sim, "pods/log");
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    let executor = short_drain(Duration::from_secs(3)).await;
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let began = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(60),
        executor.start(ctx, sink.clone(), stop),
    )
    .await
    .expect("the end of the run does not wait for the log forever");
    sim.handle.faults().remove(failing);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(sink.text("build/build-and-push").is_empty());
    let notes = missing_notes(&sink);
    assert!(!notes.is_empty(), "{:?}", sink.text("imagefactory"));
    // Why, and from which step on (the follower may not have reached the
    // build step yet: "and of later steps").
    assert!(
        notes.iter().any(|n| n.contains("503")
            && (n.contains("build/build-and-push") || n.contains("later steps"))),
        "{notes:?}"
    );
    // Waited past `log_drain` (1 s) for the reads, but not without bound.
    let took = began.elapsed();
    assert!(took >= Duration::from_secs(3), "{took:?}");
    assert!(took < Duration::from_secs(30), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_cancels_the_pipelinerun() {
    let (sim, tenant) = a_long_build().await;
    let sink = MemorySink::new();
    let (tx, stop) = no_stop();
    let ctx = context(BuildMethod::Docker, sim.provider(), tenant);
    let executor = Arc::new(executor().await);
    let task = {
        let (executor, sink) = (executor.clone(), sink.clone());
        tokio::spawn(async move { executor.start(ctx, sink, stop).await })
    };
    let s = sink.clone();
    wait_for("the build step to log", move || {
        !s.text("build/build").is_empty()
    })
    .await;
    tx.send(Some(StopReason::Cancel)).unwrap();
    let outcome = task.await.unwrap();
    assert!(matches!(outcome, Outcome::Cancelled { .. }), "{outcome:?}");
    let runs = sim.pipelineruns(tenant).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["spec"]["status"], "Cancelled");
    let cond = &runs[0]["status"]["conditions"][0];
    assert_eq!(
        (cond["status"].as_str(), cond["reason"].as_str()),
        (Some("False"), Some("Cancelled"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_past_its_timeout_ends_timed_out() {
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, Some("1h"), &[], None)],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let mut ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    ctx.timeout = Duration::from_secs(60);
    let (_tx, stop) = no_stop();
    let outcome = executor().await.start(ctx, MemorySink::new(), stop).await;
    assert!(matches!(outcome, Outcome::TimedOut { .. }), "{outcome:?}");
    let runs = sim.pipelineruns(tenant).await;
    assert_eq!(
        runs[0]["status"]["conditions"][0]["reason"],
        "PipelineRunTimeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatcher_timeout_cancels_and_reports_timed_out() {
    let (sim, tenant) = a_long_build().await;
    let sink = MemorySink::new();
    let (tx, stop) = no_stop();
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let executor = Arc::new(executor().await);
    let task = {
        let (executor, sink) = (executor.clone(), sink.clone());
        tokio::spawn(async move { executor.start(ctx, sink, stop).await })
    };
    let s = sink.clone();
    wait_for("the build step to log", move || {
        !s.text("build/build-and-push").is_empty()
    })
    .await;
    tx.send(Some(StopReason::Timeout)).unwrap();
    let outcome = task.await.unwrap();
    assert!(matches!(outcome, Outcome::TimedOut { .. }), "{outcome:?}");
    assert_eq!(
        sim.pipelineruns(tenant).await[0]["spec"]["status"],
        "Cancelled"
    );
}

/// A kaniko build whose build step logs `lines` layers over `duration`,
/// started, and its executor lost (the dispatcher died) once `seen` lines
/// were read: what another dispatcher re-attaches to.
struct LostMidRun {
    sim: Sim,
    tenant: Uuid,
    sink: Arc<MemorySink>,
    ctx: imagefactory_exec::ExecutionContext,
    reference: imagefactory_exec::ExecutionRef,
    lines: Vec<String>,
}

async fn lose_the_executor_mid_run(lines: usize, duration: &str, seen: usize) -> LostMidRun {
    let lines: Vec<String> = (0..lines).map(|i| format!("layer {i}")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, Some(duration), &refs, None)],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let sink = MemorySink::new();
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let first = Arc::new(executor().await);
    let (_tx, stop) = no_stop();
    let task = {
        let (executor, sink, ctx) = (first.clone(), sink.clone(), ctx.clone());
        tokio::spawn(async move { executor.start(ctx, sink, stop).await })
    };
    let s = sink.clone();
    wait_for("some build log lines", move || {
        s.text("build/build-and-push").len() >= seen
    })
    .await;
    task.abort();
    let _ = task.await;
    drop(first);
    let reference = sink.references.lock().unwrap()[0].clone();
    LostMidRun {
        sim,
        tenant,
        sink,
        ctx,
        reference,
        lines,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_after_losing_the_executor_mid_run() {
    let LostMidRun {
        sim,
        tenant,
        sink,
        ctx,
        reference,
        lines: many,
    } = lose_the_executor_mid_run(40, "5m", 5).await;
    let before = sink.text("build/build-and-push").len();
    assert!(before < 40, "the run was still going ({before} lines)");

    // Another dispatcher (a fresh executor, fresh clients) re-attaches.
    let (_tx, stop) = no_stop();
    let outcome = executor()
        .await
        .reattach(
            ctx.clone(),
            reference,
            sink.clone() as Arc<dyn ExecutionSink>,
            stop,
        )
        .await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    let runs = sim.pipelineruns(tenant).await;
    assert_eq!(runs.len(), 1, "exactly one PipelineRun for the attempt");
    assert_eq!(
        sink.text("build/build-and-push"),
        many,
        "all lines, in order"
    );
    sink.assert_no_duplicates_or_gaps();
    assert!(sink.artifact("IMAGE_DIGEST").is_some());

    // Starting the same execution again adopts the run instead of creating another.
    let (_tx, stop) = no_stop();
    let again = MemorySink::new();
    let outcome = executor().await.start(ctx, again.clone(), stop).await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    assert_eq!(sim.pipelineruns(tenant).await.len(), 1);
}

/// A dispatcher that takes over a running build re-attaches to its run;
/// reading the run failed once (a 503) and the attempt ended `Transient`,
/// which the dispatcher requeues as a new attempt with a new PipelineRun
/// while the first one still runs: the build ran twice. The read is
/// retried until the cluster answers (or the dispatcher hands over), and
/// the same run is followed to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_waits_out_failing_reads_of_the_run_instead_of_ending_the_attempt() {
    let LostMidRun {
        sim,
        tenant,
        sink,
        ctx,
        reference,
        lines,
    } = lose_the_executor_mid_run(20, "3m", 3).await;
    let failing = unavailable(&sim, "pipelineruns");
    let faults = sim.handle.faults();

    // A handover asked while the reads fail ends the re-attach at once,
    // leaving the run alone.
    let (tx, stop) = no_stop();
    let handed_over = {
        let (sink, ctx, reference) = (sink.clone(), ctx.clone(), reference.clone());
        tokio::spawn(async move {
            executor()
                .await
                .reattach(ctx, reference, sink as Arc<dyn ExecutionSink>, stop)
                .await
        })
    };
    wait_until_read_fails(faults, failing, 2, &handed_over).await;
    tx.send(Some(StopReason::Handover)).unwrap();
    assert_eq!(handed_over.await.unwrap(), Outcome::HandedOver);

    // Another re-attach: the run is followed once the cluster answers again.
    let (_tx, stop) = no_stop();
    let reattached = {
        let (sink, ctx) = (sink.clone(), ctx.clone());
        tokio::spawn(async move {
            executor()
                .await
                .reattach(ctx, reference, sink as Arc<dyn ExecutionSink>, stop)
                .await
        })
    };
    let hits = faults.hits(failing);
    wait_until_read_fails(faults, failing, hits + 2, &reattached).await;
    faults.remove(failing);
    let outcome = reattached.await.unwrap();
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    assert_eq!(sim.pipelineruns(tenant).await.len(), 1);
    assert_eq!(sink.text("build/build-and-push"), lines);
    sink.assert_no_duplicates_or_gaps();
}

/// Waits until the fault rule `failing` has answered `hits` reads, failing
/// the test if `attempt` ends first (it gave up on the run).
async fn wait_until_read_fails(
    faults: &kube_sim::faults::Faults,
    failing: u64,
    hits: u64,
    attempt: &tokio::task::JoinHandle<Outcome>,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while faults.hits(failing) < hits {
        assert!(
            !attempt.is_finished(),
            "the attempt ended while its run could not be read or created (after {} failed \
             requests); the dispatcher would start another attempt beside a run that may exist",
            faults.hits(failing)
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "no read was retried"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_deleted_behind_our_back_fails_the_build() {
    let (sim, tenant) = a_long_build().await;
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let executor = Arc::new(executor().await);
    let task = {
        let (executor, sink) = (executor.clone(), sink.clone());
        tokio::spawn(async move { executor.start(ctx, sink, stop).await })
    };
    let s = sink.clone();
    wait_for("the build step to log", move || {
        !s.text("build/build-and-push").is_empty()
    })
    .await;
    let name = sink.references.lock().unwrap()[0].name.clone().unwrap();
    let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        sim.admin().await,
        &namespace_name(tenant),
        &imagefactory_exec::tekton::submit::pipelinerun_resource(
            imagefactory_exec::tekton::TektonVersion::V1,
        ),
    );
    api.delete(&name, &Default::default()).await.unwrap();
    let outcome = task.await.unwrap();
    let text = message(&outcome);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(text.contains("was deleted"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_connection_reports_versions_and_auth() {
    let sim = Sim::start(SimOptions::default()).await;
    let report =
        imagefactory_exec::tekton::test_connection(&sim.provider(), loopback_policy()).await;
    assert!(report.reachable && report.authenticated, "{report:?}");
    assert!(
        report.tekton_versions.contains(&"v1".to_string()),
        "{report:?}"
    );
    assert_eq!(report.error, None);
    let mut config = sim.config();
    config["token"] = json!("wrong");
    let report =
        imagefactory_exec::tekton::test_connection(&sim.provider_with(config), loopback_policy())
            .await;
    assert!(report.reachable && !report.authenticated, "{report:?}");
    assert!(report.error.unwrap().contains("401"));
    // Without the CA the server's certificate is not trusted: TLS is verified.
    let mut config: Value = sim.config();
    config.as_object_mut().unwrap().remove("ca_cert");
    let report = imagefactory_exec::tekton::test_connection(
        &sim.provider_with(config.clone()),
        loopback_policy(),
    )
    .await;
    assert!(!report.authenticated, "{report:?}");
    assert!(report.error.is_some());
    config["insecure_skip_tls_verify"] = json!(true);
    let report =
        imagefactory_exec::tekton::test_connection(&sim.provider_with(config), loopback_policy())
            .await;
    assert!(report.authenticated, "explicit opt-out works: {report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_leaves_the_run_going_and_another_executor_finishes_it() {
    let lines: Vec<String> = (0..30).map(|i| format!("progress {i}")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, Some("3m"), &refs, None)],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let sink = MemorySink::new();
    let (tx, stop) = no_stop();
    let ctx = context(BuildMethod::Buildx, sim.provider(), tenant);
    let executor = Arc::new(executor().await);
    let task = {
        let (executor, sink, ctx) = (executor.clone(), sink.clone(), ctx.clone());
        tokio::spawn(async move { executor.start(ctx, sink, stop).await })
    };
    let s = sink.clone();
    wait_for("build logs", move || {
        s.text("build/build-and-push").len() >= 3
    })
    .await;
    tx.send(Some(StopReason::Handover)).unwrap();
    assert_eq!(task.await.unwrap(), Outcome::HandedOver);
    let runs = sim.pipelineruns(tenant).await;
    assert_eq!(runs.len(), 1);
    assert!(
        runs[0]["spec"].get("status").is_none(),
        "handover does not cancel"
    );
    assert_eq!(
        runs[0]["status"]["conditions"][0]["status"], "Unknown",
        "still running"
    );

    let reference = sink.references.lock().unwrap()[0].clone();
    let (_tx, stop) = no_stop();
    let outcome = executor.reattach(ctx, reference, sink.clone(), stop).await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    assert_eq!(sink.text("build/build-and-push"), lines);
    sink.assert_no_duplicates_or_gaps();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reattach_to_a_deleted_run_fails_saying_so() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let reference = imagefactory_exec::ExecutionRef {
        executor: imagefactory_exec::ExecutorKind::Tekton,
        provider_id: ctx.provider.as_ref().map(|p| p.provider_id),
        namespace: Some(namespace_name(tenant)),
        name: Some("if-gone-1".into()),
        uid: Some("00000000-0000-0000-0000-000000000001".into()),
    };
    let (_tx, stop) = no_stop();
    let outcome = executor()
        .await
        .reattach(ctx, reference, MemorySink::new(), stop)
        .await;
    assert!(
        message(&outcome).contains("PipelineRun") && message(&outcome).contains("was deleted"),
        "{outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_namespace_is_never_used() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::parse_str("5eed0001-0000-4000-8000-000000000001").unwrap();
    let other = Uuid::parse_str("5eed0001-ffff-4000-8000-000000000002").unwrap();
    sim.install_tasks(other).await;
    let (_tx, stop) = no_stop();
    let outcome = executor()
        .await
        .start(
            context(BuildMethod::Kaniko, sim.provider(), tenant),
            MemorySink::new(),
            stop,
        )
        .await;
    assert!(
        message(&outcome).contains("belongs to another tenant"),
        "{outcome:?}"
    );
    assert!(sim.pipelineruns(other).await.is_empty());
}

/// Two tenants whose ids share the first 8 hex digits map to one namespace
/// name; the same executor (one cluster cache) building for both must not
/// let the first tenant's recent namespace check count for the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_checked_for_one_tenant_is_not_used_by_another() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    let mut bytes = *Uuid::new_v4().as_bytes();
    bytes[..4].copy_from_slice(&tenant.as_bytes()[..4]);
    let other = Uuid::from_bytes(bytes);
    assert_eq!(namespace_name(tenant), namespace_name(other));
    sim.install_tasks(tenant).await;
    let executor = executor().await;
    let provider = sim.provider();
    let (_tx, stop) = no_stop();
    let ctx = context(BuildMethod::Kaniko, provider.clone(), tenant);
    let outcome = executor.start(ctx, MemorySink::new(), stop).await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    let (_tx, stop) = no_stop();
    let ctx = context(BuildMethod::Kaniko, provider, other);
    let outcome = executor.start(ctx, MemorySink::new(), stop).await;
    assert!(
        message(&outcome).contains("belongs to another tenant"),
        "{outcome:?}"
    );
    assert_eq!(
        sim.pipelineruns(tenant).await.len(),
        1,
        "only the first run"
    );
}

/// Submit exactly once: a dispatcher that died after creating the run but
/// before saving its reference starts the *same* execution again; the
/// create answers 409 AlreadyExists, the run's labels match the execution,
/// so it is adopted — one PipelineRun, followed to its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_the_same_execution_again_adopts_its_run() {
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, Some("2m"), &["building..."], None)],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let executor = Arc::new(executor().await);
    let first_sink = MemorySink::new();
    let first = {
        let (executor, sink, ctx) = (executor.clone(), first_sink.clone(), ctx.clone());
        let (_tx, stop) = no_stop();
        tokio::spawn(async move {
            let _keep = _tx;
            executor.start(ctx, sink, stop).await
        })
    };
    let s = first_sink.clone();
    wait_for("the run to exist", move || {
        !s.references.lock().unwrap().is_empty()
    })
    .await;
    // The first dispatcher dies (its reference never reached the database).
    first.abort();
    let _ = first.await;
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    let outcome = executor.start(ctx, sink.clone(), stop).await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    let runs = sim.pipelineruns(tenant).await;
    assert_eq!(runs.len(), 1, "adopted, not created twice");
    let adopted = sink.references.lock().unwrap()[0].clone();
    let created = first_sink.references.lock().unwrap()[0].clone();
    assert_eq!(adopted.name, created.name);
    assert_eq!(adopted.uid, created.uid, "the same run, not a new one");
    assert!(
        sink.logged("building..."),
        "the adopted run's logs are followed"
    );
}

/// Several builds of a new tenant starting at once all create (or find) its
/// namespace: concurrent creation is not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_builds_of_a_tenant_share_its_new_namespace() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    let client = sim.admin().await;
    let results = futures::future::join_all(
        (0..8).map(|_| imagefactory_exec::tekton::namespace::ensure_namespace(&client, tenant)),
    )
    .await;
    for r in &results {
        assert!(r.is_ok(), "{r:?}");
    }
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    let ns = ns.get(&namespace_name(tenant)).await.unwrap();
    let labels = ns.metadata.labels.unwrap();
    assert_eq!(labels["tenant-id"], tenant.to_string());
    assert_eq!(labels["app"], "image-factory");
}

/// Cancel of a run whose pipeline has `finally` tasks (an operator's
/// template override adds one): the executor asks for `CancelledRunFinally`,
/// so the running build task stops and the finally task still runs; the
/// build ends `cancelled`. The templates directory override is used as is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_run_with_finally_tasks_lets_them_run() {
    let sim = Sim::start(SimOptions {
        rules: vec![
            rule("build", None, Some("1h"), &["building..."], None),
            rule("report", None, None, &["finally ran"], None),
        ],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tekton/templates/kaniko.yaml"
    ))
    .unwrap();
    let with_finally = format!(
        "{}    finally:\n      - name: report\n        taskSpec:\n          steps:\n            - name: report\n              image: alpine\n              script: echo finally ran\n",
        shipped.trim_end_matches('\n').to_owned() + "\n"
    );
    std::fs::write(dir.path().join("kaniko.yaml"), with_finally).unwrap();
    let executor = Arc::new(
        imagefactory_exec::tekton::TektonExecutor::new(imagefactory_exec::tekton::TektonSettings {
            templates_dir: Some(dir.path().to_path_buf()),
            log_drain: Duration::from_secs(20),
            cancel_grace: Duration::from_secs(30),
            address_policy: loopback_policy(),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    let sink = MemorySink::new();
    let (tx, stop) = no_stop();
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let task = {
        let (executor, sink) = (executor.clone(), sink.clone());
        tokio::spawn(async move { executor.start(ctx, sink, stop).await })
    };
    let s = sink.clone();
    wait_for("the build step to log", move || s.logged("building...")).await;
    tx.send(Some(StopReason::Cancel)).unwrap();
    let outcome = task.await.unwrap();
    assert!(matches!(outcome, Outcome::Cancelled { .. }), "{outcome:?}");
    let runs = sim.pipelineruns(tenant).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0]["spec"]["status"], "CancelledRunFinally",
        "{}",
        runs[0]
    );
    assert!(
        sink.logged("finally ran"),
        "the finally task ran and its log was followed: {:?}",
        sink.sources()
    );
}
