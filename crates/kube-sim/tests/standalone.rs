//! The standalone `kube-sim` binary: starts, writes a kubeconfig, serves kube-rs.

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PostParams};
use kube::core::GroupVersionKind;
use std::time::{Duration, Instant};

#[tokio::test]
async fn binary_writes_a_working_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--port", "0", "--time-scale", "0.01", "--kubeconfig-out"])
        .arg(&kubeconfig)
        .kill_on_drop(true)
        .spawn()
        .expect("kube-sim binary starts");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !kubeconfig.exists() {
        assert!(
            Instant::now() < deadline,
            "no kubeconfig written within 60s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&kubeconfig).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let names: Vec<String> = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");

    // The binary runs the Tekton controller by default: a PipelineRun finishes.
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("tekton.dev", "v1", "PipelineRun"),
        "pipelineruns",
    );
    let prs: Api<DynamicObject> = Api::namespaced_with(client, "default", &ar);
    let pr: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": "hello"},
        "spec": {"pipelineSpec": {"tasks": [{"name": "t", "taskSpec": {"steps": [{"name": "s", "image": "busybox", "script": "echo hi"}]}}]}}
    }))
    .unwrap();
    prs.create(&PostParams::default(), &pr).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let pr = prs.get("hello").await.unwrap();
        let reason = pr.data["status"]["conditions"][0]["reason"].clone();
        if reason == "Succeeded" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "run not Succeeded within 60s: {reason}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    child.kill().await.unwrap();
}
