//! Integration tests: kube-sim driven over real HTTPS by the kube-rs client
//! (and by the real kubectl in `kubectl`).

mod auth;
mod crud;
mod examples;
mod faults;
mod kubectl;
mod logs;
mod patch;
mod protobuf;
mod step_actions;
mod watch;

#[path = "../tekton_support/dirs.rs"]
mod tekton_dirs;

use kube::api::{Api, DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube_sim::{KubeSim, KubeSimHandle, KubeSimOptions};
use serde_json::json;

pub async fn start() -> (KubeSimHandle, kube::Client) {
    start_with(KubeSimOptions::default()).await
}

pub async fn start_with(opts: KubeSimOptions) -> (KubeSimHandle, kube::Client) {
    let sim = KubeSim::start(opts).await.expect("kube-sim starts");
    let client = sim.kube_client().await.expect("client");
    (sim, client)
}

pub fn pipelinerun_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tekton.dev", version, "PipelineRun"),
        "pipelineruns",
    )
}

pub fn pipelineruns(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &pipelinerun_resource("v1"))
}

pub fn pipelinerun(name: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": name},
        "spec": {"pipelineRef": {"name": "build"}}
    }))
    .unwrap()
}

/// The `Status` a kube-rs call failed with.
pub fn api_error<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(s)) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The next item of a stream (a watch event, a log line), which must come within 10 s.
pub async fn next<S: futures::Stream + Unpin>(s: &mut S) -> S::Item {
    use futures::StreamExt;
    tokio::time::timeout(std::time::Duration::from_secs(10), s.next())
        .await
        .expect("an item within 10s")
        .expect("stream open")
}

pub async fn namespace(client: &kube::Client, name: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns)
        .await
        .expect("namespace created");
}
