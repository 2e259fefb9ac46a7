//! Log streams multiplexed on HTTP/2 against kube-sim over HTTPS: many
//! concurrent `follow=true` streams share a few connections (at most
//! `STREAMS_PER_CONNECTION` streams each), every stream gets its lines, and a
//! server reached without TLS (no HTTP/2 negotiation) keeps HTTP/1.1.

mod tekton_support;

use std::time::Duration;

use futures::{AsyncBufReadExt, StreamExt};
use imagefactory_exec::tekton::client::ClusterSettings;
use imagefactory_exec::tekton::logclient::STREAMS_PER_CONNECTION;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};
use kube_sim::cluster::gvr;
use serde_json::json;
use tekton_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_follow_streams_share_a_few_http2_connections() {
    let sim = Sim::start(SimOptions::default()).await;
    let cluster = sim.handle.cluster();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": "step-a", "image": "x"}]},
        "status": {"phase": "Running", "containerStatuses": [
            {"name": "step-a", "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}
    });
    cluster.create(&gvr::PODS, Some("default"), pod).unwrap();
    cluster.append_pod_log("default", "p", "step-a", "first");

    let settings = ClusterSettings::parse(&sim.config()).unwrap();
    let (_client, logs) = settings.clients().await.unwrap();
    assert!(logs.multiplexed(), "kube-sim offers h2: log streams use it");

    let streams = STREAMS_PER_CONNECTION + STREAMS_PER_CONNECTION / 2;
    let mut readers = Vec::new();
    for _ in 0..streams {
        let pods: Api<Pod> = Api::namespaced(logs.client(), "default");
        let params = LogParams {
            container: Some("step-a".into()),
            follow: true,
            ..Default::default()
        };
        let stream = pods.log_stream("p", &params).await.expect("follow opens");
        readers.push(tokio::spawn(async move {
            stream
                .lines()
                .map(|l| l.unwrap())
                .collect::<Vec<String>>()
                .await
        }));
    }
    // Every stream is open at once: more than one connection's worth.
    let (connections, open) = logs.usage().await;
    assert_eq!(open, streams);
    assert_eq!(connections, 2, "{streams} streams need two connections");

    cluster.append_pod_log("default", "p", "step-a", "second");
    let mut done = cluster.get(&gvr::PODS, Some("default"), "p").unwrap();
    done["status"]["containerStatuses"][0]["state"] =
        json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
    cluster
        .update_status(&gvr::PODS, Some("default"), "p", done["status"].clone())
        .unwrap();
    for reader in readers {
        let lines = tokio::time::timeout(Duration::from_secs(30), reader)
            .await
            .expect("the follow ends with the container")
            .unwrap();
        assert_eq!(lines, vec!["first".to_string(), "second".to_string()]);
    }
    // Streams give their slots back when they end.
    let (_, open) = logs.usage().await;
    assert_eq!(open, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_endpoint_keeps_http1_for_logs() {
    let sim = kube_sim::KubeSim::start(kube_sim::KubeSimOptions {
        http_port: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    let config = json!({
        "auth_method": "token",
        "endpoint": sim.http_endpoint().unwrap(),
        "token": sim.admin_token(),
    });
    let (_client, logs) = ClusterSettings::parse(&config)
        .unwrap()
        .clients()
        .await
        .unwrap();
    assert!(!logs.multiplexed());
    // The fallback client works: the pods of a namespace can be listed.
    let pods: Api<Pod> = Api::namespaced(logs.client(), "default");
    assert!(
        pods.list(&Default::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}
