//! The managed Task bundle against kube-sim over HTTPS: a new namespace gets
//! the bundle once (counted requests), drift is reported and repaired only
//! with `repair_drift`, an outdated Task is upgraded, unmanaged providers get
//! nothing applied.

mod tekton_support;

use imagefactory_domain::BuildMethod;
use imagefactory_exec::tekton::bundle::{
    BUNDLE_LABEL, LOG_SOURCE, TaskState, bundle_version, task_states,
};
use imagefactory_exec::tekton::namespace::namespace_name;
use imagefactory_exec::{Executor, Outcome};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use tekton_support::*;
use uuid::Uuid;

async fn build(
    executor: &imagefactory_exec::tekton::TektonExecutor,
    provider: imagefactory_exec::ProviderConnection,
    tenant: Uuid,
) -> (Outcome, std::sync::Arc<MemorySink>) {
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    let outcome = executor
        .start(
            context(BuildMethod::Kaniko, provider, tenant),
            sink.clone(),
            stop,
        )
        .await;
    (outcome, sink)
}

fn tasks_api(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    let ar = imagefactory_exec::tekton::submit::tekton_resource(
        imagefactory_exec::tekton::TektonVersion::V1,
        "Task",
        "tasks",
    );
    Api::namespaced_with(client, namespace, &ar)
}

async fn states(sim: &Sim, namespace: &str) -> Vec<(String, TaskState)> {
    task_states(
        &sim.admin().await,
        imagefactory_exec::tekton::TektonVersion::V1,
        namespace,
    )
    .await
    .unwrap()
}

/// Someone edits a Task in the cluster: another step image.
async fn edit_task(sim: &Sim, namespace: &str, name: &str) {
    let api = tasks_api(sim.admin().await, namespace);
    let mut task = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
    task["spec"]["steps"][0]["image"] = json!("someone.example/edited:1");
    let patch = json!({ "spec": { "steps": task["spec"]["steps"] } });
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn step_image(sim: &Sim, namespace: &str, name: &str) -> String {
    let api = tasks_api(sim.admin().await, namespace);
    let task = serde_json::to_value(api.get(name).await.unwrap()).unwrap();
    task["spec"]["steps"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_namespace_gets_the_bundle_once_and_later_builds_cost_no_task_requests() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    let namespace = namespace_name(tenant);
    let applies = sim
        .handle
        .faults()
        .count_requests(Some("patch"), Some("tasks"));
    let lists = sim
        .handle
        .faults()
        .count_requests(Some("list"), Some("tasks"));
    let executor = executor().await;
    let provider = sim.provider();

    let (outcome, sink) = build(&executor, provider.clone(), tenant).await;
    assert!(matches!(outcome, Outcome::Succeeded), "{outcome:?}");
    assert_eq!(
        sim.handle.faults().counted(applies),
        5,
        "one apply per shipped Task"
    );
    assert_eq!(sim.handle.faults().counted(lists), 1);
    let log = sink.text(LOG_SOURCE);
    assert!(log[0].contains(bundle_version()), "{log:?}");
    assert_eq!(
        log.iter()
            .filter(|l| l.contains(": created (was missing)"))
            .count(),
        5,
        "{log:?}"
    );
    assert!(
        states(&sim, &namespace)
            .await
            .iter()
            .all(|(_, s)| *s == TaskState::Current)
    );

    let lists_before = sim.handle.faults().counted(lists);
    let (outcome, sink) = build(&executor, provider, tenant).await;
    assert!(matches!(outcome, Outcome::Succeeded), "{outcome:?}");
    assert_eq!(
        sim.handle.faults().counted(applies),
        5,
        "no apply on the second build"
    );
    assert_eq!(
        sim.handle.faults().counted(lists),
        lists_before,
        "not even a list"
    );
    assert!(sink.text(LOG_SOURCE).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_reported_and_repaired_only_with_repair_drift() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    let namespace = namespace_name(tenant);
    sim.install_tasks(tenant).await;
    let shipped = step_image(&sim, &namespace, "kaniko").await;
    edit_task(&sim, &namespace, "kaniko").await;
    let modified = states(&sim, &namespace).await;
    assert!(
        modified.contains(&("kaniko".into(), TaskState::Modified)),
        "{modified:?}"
    );

    // Default: reported in the build's log, left alone.
    let (outcome, sink) = build(&executor().await, sim.provider(), tenant).await;
    assert!(matches!(outcome, Outcome::Succeeded), "{outcome:?}");
    let log = sink.text(LOG_SOURCE);
    assert!(
        log.iter()
            .any(|l| l.starts_with("Task ") && l.contains("/kaniko: drifted (was modified)")),
        "{log:?}"
    );
    assert_eq!(
        step_image(&sim, &namespace, "kaniko").await,
        "someone.example/edited:1"
    );

    // repair_drift: restored.
    let mut config = sim.config();
    config["repair_drift"] = json!(true);
    let (outcome, sink) = build(&executor().await, sim.provider_with(config), tenant).await;
    assert!(matches!(outcome, Outcome::Succeeded), "{outcome:?}");
    assert!(
        sink.text(LOG_SOURCE)
            .iter()
            .any(|l| l.contains("/kaniko: updated (was modified)")),
        "{:?}",
        sink.text(LOG_SOURCE)
    );
    assert_eq!(step_image(&sim, &namespace, "kaniko").await, shipped);
    assert!(
        states(&sim, &namespace)
            .await
            .iter()
            .all(|(_, s)| *s == TaskState::Current)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outdated_task_is_upgraded() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    let namespace = namespace_name(tenant);
    sim.install_tasks(tenant).await;
    // As an older bundle left it: another version label, its own spec.
    let api = tasks_api(sim.admin().await, &namespace);
    let patch = json!({
        "metadata": { "labels": { BUNDLE_LABEL: "0123456789ab" } },
        "spec": { "description": "an older bundle" },
    });
    api.patch("git-clone", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    assert!(
        states(&sim, &namespace)
            .await
            .contains(&("git-clone".into(), TaskState::Outdated))
    );

    let (outcome, sink) = build(&executor().await, sim.provider(), tenant).await;
    assert!(matches!(outcome, Outcome::Succeeded), "{outcome:?}");
    assert!(
        sink.text(LOG_SOURCE)
            .iter()
            .any(|l| l.contains("/git-clone: updated (was outdated)")),
        "{:?}",
        sink.text(LOG_SOURCE)
    );
    let task: Value = serde_json::to_value(api.get("git-clone").await.unwrap()).unwrap();
    assert_eq!(task["metadata"]["labels"][BUNDLE_LABEL], bundle_version());
    assert_ne!(task["spec"]["description"], "an older bundle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_providers_get_no_tasks_and_preflight_says_what_is_missing() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    let applies = sim
        .handle
        .faults()
        .count_requests(Some("patch"), Some("tasks"));
    let mut config = sim.config();
    config["tasks"] = json!("unmanaged");
    let (outcome, _) = build(&executor().await, sim.provider_with(config), tenant).await;
    let Outcome::Failed { message } = outcome else {
        panic!("{outcome:?}");
    };
    assert!(
        message.contains("Tekton Task \"git-clone\" not found in namespace"),
        "{message}"
    );
    assert_eq!(sim.handle.faults().counted(applies), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builder_image_overrides_reach_the_step_and_defaults_stay_pinned() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    let namespace = namespace_name(tenant);
    let mut config = sim.config();
    config["builder_images"] = json!({"kaniko": "mirror.internal/kaniko:v1.23.2-debug"});
    let (outcome, _) = build(&executor().await, sim.provider_with(config), tenant).await;
    assert!(matches!(outcome, Outcome::Succeeded), "{outcome:?}");

    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(sim.admin().await, &namespace);
    let mut images: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .flat_map(|p| p.spec.as_ref().unwrap().containers.iter())
        .filter_map(|c| c.image.clone())
        .collect();
    images.sort();
    assert_eq!(
        images,
        [
            "docker.io/alpine/git:2.47.2",
            "mirror.internal/kaniko:v1.23.2-debug"
        ]
    );
    // The Task itself keeps its pinned default.
    assert_eq!(
        step_image(&sim, &namespace, "kaniko").await,
        "$(params.BUILDER_IMAGE)"
    );
}
