use crate::*;
use futures::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams, PostParams};
use kube_sim::cluster::gvr;
use serde_json::json;
use std::time::Duration;

fn state(waiting: bool) -> serde_json::Value {
    let st = if waiting {
        json!({"waiting": {"reason": "PodInitializing"}})
    } else {
        json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}})
    };
    json!({"phase": "Running", "containerStatuses": [
        {"name": "step-build", "ready": !waiting, "restartCount": 0, "image": "x", "imageID": "", "state": st},
        {"name": "step-push", "ready": false, "restartCount": 0, "image": "x", "imageID": "", "state": {"waiting": {"reason": "PodInitializing"}}}
    ]})
}

#[tokio::test]
async fn pod_logs_options_waiting_and_follow() {
    let (sim, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "step-build", "image": "x"}, {"name": "step-push", "image": "x"}
        ]}}))
        .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let cluster = sim.cluster();
    cluster
        .update_status(&gvr::PODS, Some("default"), "p", state(true))
        .unwrap();

    let lp = |c: &str| LogParams {
        container: Some(c.to_string()),
        ..LogParams::default()
    };
    let e = api_error(pods.logs("p", &lp("step-build")).await);
    assert_eq!((e.code, e.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        e.message,
        "container \"step-build\" in pod \"p\" is waiting to start: PodInitializing"
    );
    let e = api_error(pods.logs("p", &LogParams::default()).await);
    assert_eq!(
        e.message,
        "a container name must be specified for pod p, choose one of: [step-build step-push]"
    );
    let e = api_error(pods.logs("p", &lp("step-nope")).await);
    assert_eq!(e.message, "container step-nope is not valid for pod p");

    cluster
        .update_status(&gvr::PODS, Some("default"), "p", state(false))
        .unwrap();
    for i in 1..=3 {
        cluster.append_pod_log("default", "p", "step-build", &format!("line {i}"));
    }
    assert_eq!(
        pods.logs("p", &lp("step-build")).await.unwrap(),
        "line 1\nline 2\nline 3\n"
    );
    let tail = LogParams {
        tail_lines: Some(1),
        ..lp("step-build")
    };
    assert_eq!(pods.logs("p", &tail).await.unwrap(), "line 3\n");
    let ts = LogParams {
        timestamps: true,
        ..lp("step-build")
    };
    let with_ts = pods.logs("p", &ts).await.unwrap();
    let first = with_ts.lines().next().unwrap();
    let (stamp, text) = first.split_once(' ').unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
        "{first}"
    );
    assert_eq!(text, "line 1");
    let future = LogParams {
        since_time: Some(
            (chrono::Utc::now() + chrono::Duration::hours(1))
                .to_rfc3339()
                .parse()
                .unwrap(),
        ),
        ..lp("step-build")
    };
    assert_eq!(pods.logs("p", &future).await.unwrap(), "");

    // follow: existing lines, new ones as they come, end when the container terminates.
    let follow = LogParams {
        follow: true,
        ..lp("step-build")
    };
    let mut lines = pods.log_stream("p", &follow).await.unwrap().lines();
    for want in ["line 1", "line 2", "line 3"] {
        assert_eq!(next(&mut lines).await.unwrap(), want);
    }
    cluster.append_pod_log("default", "p", "step-build", "line 4");
    assert_eq!(next(&mut lines).await.unwrap(), "line 4");
    let mut done = state(false);
    done["containerStatuses"][0]["state"] =
        json!({"terminated": {"exitCode": 0, "reason": "Completed"}});
    cluster
        .update_status(&gvr::PODS, Some("default"), "p", done)
        .unwrap();
    let end = tokio::time::timeout(Duration::from_secs(10), lines.next())
        .await
        .expect("stream ends after termination");
    assert!(end.is_none(), "{end:?}");
}
