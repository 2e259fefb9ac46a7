//! The real kubectl against kube-sim with a generated kubeconfig.

use crate::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube_sim::cluster::gvr;
use serde_json::{Value, json};
use std::path::Path;

struct Kubectl {
    dir: tempfile::TempDir,
}

impl Kubectl {
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = tokio::process::Command::new("kubectl")
            .args(args)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .env("KUBECONFIG", self.dir.path().join("config"))
            .env("HOME", self.dir.path())
            .output()
            .await
            .expect("kubectl runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args).await;
        assert!(ok, "kubectl {args:?} failed: {err}\n{out}");
        out
    }

    fn write(&self, name: &str, content: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.to_string_lossy().into_owned()
    }
}

fn kubectl_available() -> bool {
    match std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    {
        Ok(o) => o.status.success(),
        Err(_) => false,
    }
}

const TASK: &str = "apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: hello\n  namespace: ci\nspec:\n  steps:\n    - name: build\n      image: alpine\n      script: echo MESSAGE\n";

#[tokio::test]
async fn kubectl_commands_work_against_kube_sim() {
    if !kubectl_available() {
        eprintln!("SKIPPED kubectl_commands_work_against_kube_sim: kubectl is not installed");
        return;
    }
    let (sim, client) = start().await;
    let k = Kubectl {
        dir: tempfile::tempdir().unwrap(),
    };
    std::fs::write(k.dir.path().join("config"), sim.kubeconfig_yaml()).unwrap();
    assert!(Path::new(&k.dir.path().join("config")).exists());
    namespace(&client, "ci").await;

    // kubectl get ns
    let out = k.ok(&["get", "ns"]).await;
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "AGE"]);
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().take(2).eq(["ci", "Active"])),
        "{out}"
    );

    // kubectl apply -f task.yaml: create, re-apply unchanged, re-apply changed
    let f = k.write("task.yaml", &TASK.replace("MESSAGE", "hi"));
    assert_eq!(
        k.ok(&["apply", "-f", &f]).await.trim(),
        "task.tekton.dev/hello created"
    );
    assert_eq!(
        k.ok(&["apply", "-f", &f]).await.trim(),
        "task.tekton.dev/hello unchanged"
    );
    let f = k.write("task.yaml", &TASK.replace("MESSAGE", "bye"));
    assert_eq!(
        k.ok(&["apply", "-f", &f]).await.trim(),
        "task.tekton.dev/hello configured"
    );
    let task = sim.cluster().get(&gvr::TASKS, Some("ci"), "hello").unwrap();
    assert_eq!(task["spec"]["steps"][0]["script"], "echo bye");
    assert_eq!(task["metadata"]["generation"], 2);

    // A PipelineRun with a pod whose step ran, as the controller would leave them.
    let prs = pipelineruns(&client, "ci");
    let pr = prs
        .create(&PostParams::default(), &pipelinerun("build-1"))
        .await
        .unwrap();
    sim.cluster()
        .update_status(&gvr::PIPELINERUNS, Some("ci"), "build-1", json!({
            "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded", "message": "Tasks Completed: 1"}],
            "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:01:00Z"
        }))
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "ci");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "build-1-build-pod", "ownerReferences": [{"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "name": "build-1", "uid": pr.metadata.uid.unwrap()}]},
        "spec": {"containers": [{"name": "step-build", "image": "alpine"}, {"name": "step-push", "image": "alpine"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    sim.cluster()
        .update_status(&gvr::PODS, Some("ci"), "build-1-build-pod", json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "step-build", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "step-push", "ready": false, "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ]}))
        .unwrap();
    sim.cluster().append_pod_log(
        "ci",
        "build-1-build-pod",
        "step-build",
        "STEP 1/2: FROM alpine",
    );
    sim.cluster()
        .append_pod_log("ci", "build-1-build-pod", "step-build", "COMMIT done");

    // kubectl get pipelineruns -n ci
    let out = k.ok(&["get", "pipelineruns", "-n", "ci"]).await;
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["NAME", "SUCCEEDED", "REASON", "STARTTIME", "COMPLETIONTIME"],
        "{out}"
    );
    assert_eq!(lines[1][..3], ["build-1", "True", "Succeeded"], "{out}");

    // kubectl get pipelinerun NAME -o yaml
    let out = k
        .ok(&["get", "pipelinerun", "build-1", "-n", "ci", "-o", "yaml"])
        .await;
    let v: Value = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(v["apiVersion"], "tekton.dev/v1");
    assert_eq!(v["metadata"]["name"], "build-1");
    assert_eq!(v["status"]["conditions"][0]["reason"], "Succeeded");

    // kubectl logs POD -c step-build
    let out = k
        .ok(&["logs", "build-1-build-pod", "-n", "ci", "-c", "step-build"])
        .await;
    assert_eq!(out, "STEP 1/2: FROM alpine\nCOMMIT done\n");

    // kubectl delete pipelinerun NAME (dependents go with it)
    let out = k
        .ok(&["delete", "pipelinerun", "build-1", "-n", "ci"])
        .await;
    assert_eq!(out.trim(), "pipelinerun.tekton.dev \"build-1\" deleted");
    assert!(
        sim.cluster()
            .get(&gvr::PIPELINERUNS, Some("ci"), "build-1")
            .is_none()
    );
    assert!(
        sim.cluster()
            .get(&gvr::PODS, Some("ci"), "build-1-build-pod")
            .is_none()
    );
    let (ok, _, err) = k.run(&["get", "pipelinerun", "build-1", "-n", "ci"]).await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): pipelineruns.tekton.dev \"build-1\" not found"
    );
}
