use crate::*;
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams, WatchParams};
use kube_sim::{FaultAction, FaultRule};
use serde_json::json;
use std::time::{Duration, Instant};

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

async fn raw_get(sim: &kube_sim::KubeSimHandle, path: &str) -> String {
    raw(sim, "GET", path, "").await
}

async fn raw(sim: &kube_sim::KubeSimHandle, method: &str, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = sim
        .http_endpoint()
        .unwrap()
        .trim_start_matches("http://")
        .to_string();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        sim.admin_token(),
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn injected_errors_by_verb_and_resource() {
    let (sim, client) = start_with(kube_sim::KubeSimOptions {
        http_port: Some(0),
        ..Default::default()
    })
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    sim.faults().add(
        FaultRule::new(
            Some("create"),
            Some("configmaps"),
            FaultAction::Error {
                code: 500,
                retry_after: None,
            },
        )
        .times(1),
    );
    let e = api_error(cms.create(&PostParams::default(), &cm("a")).await);
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    cms.create(&PostParams::default(), &cm("a"))
        .await
        .expect("fault used up");

    sim.faults().add(
        FaultRule::new(
            Some("get"),
            None,
            FaultAction::Error {
                code: 409,
                retry_after: None,
            },
        )
        .times(1),
    );
    let e = api_error(cms.get("a").await);
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));

    sim.faults().add(
        FaultRule::new(
            Some("list"),
            Some("configmaps"),
            FaultAction::Error {
                code: 429,
                retry_after: Some(7),
            },
        )
        .times(1),
    );
    // kube-rs retries 429 by itself, so look at the raw response over the plain-HTTP listener.
    let raw = raw_get(&sim, "/api/v1/namespaces/default/configmaps").await;
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("\r\nretry-after: 7\r\n"),
        "{raw}"
    );
    assert!(raw.contains("\"reason\":\"TooManyRequests\""), "{raw}");
    cms.list(&ListParams::default())
        .await
        .expect("fault used up");
}

/// The next ConfigMap create is carried out and answered 500.
fn acts_then_fails_once() -> FaultRule {
    FaultRule::new(
        Some("create"),
        Some("configmaps"),
        FaultAction::ErrorAfterActing { code: 500 },
    )
    .times(1)
}

/// A create the server carries out but answers 500: the object exists
/// though the client was told it failed, as after a lost reply.
#[tokio::test]
async fn an_error_after_acting_answers_the_error_but_keeps_the_write() {
    let (sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    sim.faults().add(acts_then_fails_once());
    let e = api_error(cms.create(&PostParams::default(), &cm("acted")).await);
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    cms.get("acted").await.expect("the create took effect");
    // Used up: the next create answers as the server would.
    let e = api_error(cms.create(&PostParams::default(), &cm("acted")).await);
    assert_eq!(e.code, 409);

    // The first error of the matching rules decides: acting, then 500,
    // though a plain 500 matches too; the next create only gets the 500.
    sim.faults().add(acts_then_fails_once());
    sim.faults().add(FaultRule::new(
        Some("create"),
        Some("configmaps"),
        FaultAction::Error {
            code: 500,
            retry_after: None,
        },
    ));
    for name in ["first", "second"] {
        let e = api_error(cms.create(&PostParams::default(), &cm(name)).await);
        assert_eq!(e.code, 500);
    }
    cms.get("first").await.expect("acted before failing");
    assert_eq!(api_error(cms.get("second").await).code, 404);
}

#[tokio::test]
async fn latency_dropped_watches_and_server_restart() {
    let (sim, client) = start().await;
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let id = sim.faults().add(FaultRule::new(
        Some("get"),
        Some("namespaces"),
        FaultAction::Latency(Duration::from_millis(300)),
    ));
    let ns: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let t = Instant::now();
    ns.get("default").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300), "latency applied");
    sim.faults().remove(id);

    sim.faults().add(
        FaultRule::new(
            Some("watch"),
            None,
            FaultAction::DropWatch {
                after: Duration::from_millis(200),
            },
        )
        .times(1),
    );
    let w = cms
        .watch(&WatchParams::default().disable_bookmarks(), "0")
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(10), w.collect::<Vec<_>>())
        .await
        .expect("watch dropped");
    assert!(events.is_empty());

    let w = cms
        .watch(&WatchParams::default().disable_bookmarks(), "0")
        .await
        .unwrap();
    sim.faults().drop_all_watches();
    tokio::time::timeout(Duration::from_secs(10), w.collect::<Vec<_>>())
        .await
        .expect("all watches dropped");

    cms.create(&PostParams::default(), &cm("kept"))
        .await
        .unwrap();
    sim.stop_server().await;
    assert!(
        matches!(
            cms.get("kept").await,
            Err(kube::Error::HyperError(_) | kube::Error::Service(_))
        ),
        "server is down"
    );
    sim.start_server().await.unwrap();
    cms.get("kept")
        .await
        .expect("same state after the server comes back");
}

#[tokio::test]
async fn faults_admin_endpoint_for_the_standalone_server() {
    let (sim, client) = start_with(kube_sim::KubeSimOptions {
        http_port: Some(0),
        ..Default::default()
    })
    .await;
    let r = raw(
        &sim,
        "POST",
        "/kube-sim/faults",
        r#"{"verb": "create", "resource": "configmaps", "error": 500, "times": 1}"#,
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 201"), "{r}");
    assert!(
        raw_get(&sim, "/kube-sim/faults")
            .await
            .contains(r#""error":500"#)
    );
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let e = api_error(cms.create(&PostParams::default(), &cm("x")).await);
    assert_eq!((e.code, e.reason.as_str()), (500, "InternalError"));
    cms.create(&PostParams::default(), &cm("x")).await.unwrap();
    assert!(sim.faults().list().is_empty(), "the counted rule was used");
    let bad = raw(&sim, "POST", "/kube-sim/faults", r#"{"verb": "get"}"#).await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    assert!(bad.contains("a fault needs one of"), "{bad}");
    raw(&sim, "POST", "/kube-sim/faults", r#"{"latencyMs": 1}"#).await;
    assert!(
        raw(&sim, "DELETE", "/kube-sim/faults", "")
            .await
            .starts_with("HTTP/1.1 200")
    );
    assert!(sim.faults().list().is_empty());
}
