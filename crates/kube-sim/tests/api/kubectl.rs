//! The real kubectl against kube-sim with a generated kubeconfig.

use crate::*;
use kube::api::{DynamicObject, PostParams};
use kube_sim::KubeSimOptions;
use kube_sim::cluster::gvr;
use kube_sim::resources::{
    RBAC_CLUSTERROLEBINDINGS, RBAC_CLUSTERROLES, RBAC_ROLEBINDINGS, RBAC_ROLES,
};
use kube_sim::tekton::ControllerOptions;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

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
    let (sim, client) = start_with(KubeSimOptions {
        tekton: Some(ControllerOptions {
            time_scale: 0.01,
            ..ControllerOptions::default()
        }),
        ..KubeSimOptions::default()
    })
    .await;
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

    // A PipelineRun the Tekton controller runs to completion, using the applied Task.
    let prs = pipelineruns(&client, "ci");
    let pr: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": "build-1"},
        "spec": {"pipelineSpec": {"tasks": [{"name": "build", "taskRef": {"name": "hello"}}]}}
    }))
    .unwrap();
    prs.create(&PostParams::default(), &pr).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pr = prs.get("build-1").await.unwrap();
        if pr.data["status"]["completionTime"].is_string() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "build-1 not done within 60s: {:?}",
            pr.data["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

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
    assert_eq!(v["status"]["childReferences"][0]["name"], "build-1-build");
    assert!(v["status"]["completionTime"].is_string(), "{out}");

    // kubectl logs POD -c step-build
    let out = k
        .ok(&["logs", "build-1-build-pod", "-n", "ci", "-c", "step-build"])
        .await;
    assert_eq!(out, "bye\n");

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

/// kubectl's typed `create` commands send protobuf (and take it back); `get`
/// and `delete` use JSON. Every object lands in the store as the JSON a
/// cluster would show, and the docker-registry Secret holds the
/// `.dockerconfigjson` a push step reads.
#[tokio::test]
async fn kubectl_creates_core_objects_over_protobuf() {
    if !kubectl_available() {
        eprintln!("SKIPPED kubectl_creates_core_objects_over_protobuf: kubectl is not installed");
        return;
    }
    let (sim, _client) = start().await;
    let k = Kubectl {
        dir: tempfile::tempdir().unwrap(),
    };
    std::fs::write(k.dir.path().join("config"), sim.kubeconfig_yaml()).unwrap();
    let c = sim.cluster();

    // A server-side dry run answers the object as it would be, no more.
    let out = k
        .ok(&[
            "create",
            "namespace",
            "dry",
            "--dry-run=server",
            "-o",
            "json",
        ])
        .await;
    let dry: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["metadata"]["name"], "dry");
    assert!(dry["metadata"]["creationTimestamp"].is_null(), "{out}");
    assert!(c.get(&gvr::NAMESPACES, None, "dry").is_none());

    let out = k.ok(&["create", "namespace", "team-a"]).await;
    assert_eq!(out.trim(), "namespace/team-a created");
    let ns = c
        .get(&gvr::NAMESPACES, None, "team-a")
        .expect("namespace stored");
    assert_eq!(ns["status"]["phase"], "Active");
    assert!(ns["metadata"].get("generateName").is_none(), "{ns}");
    // The namespace gets its default ServiceAccount, as on a cluster.
    assert!(
        c.get(&gvr::SERVICEACCOUNTS, Some("team-a"), "default")
            .is_some()
    );

    let out = k
        .ok(&[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "-n",
            "team-a",
            "--docker-server=registry.local:5000",
            "--docker-username=builder",
            "--docker-password=s3cret",
        ])
        .await;
    assert_eq!(out.trim(), "secret/regcred created");
    let s = c
        .get(&gvr::SECRETS, Some("team-a"), "regcred")
        .expect("secret stored");
    assert_eq!(s["type"], "kubernetes.io/dockerconfigjson");
    let cfg = decoded(&s["data"][".dockerconfigjson"]);
    let cfg: Value = serde_json::from_slice(&cfg).unwrap();
    let entry = &cfg["auths"]["registry.local:5000"];
    assert_eq!(entry["username"], "builder");
    assert_eq!(entry["password"], "s3cret");
    assert_eq!(decoded(&entry["auth"]), b"builder:s3cret");
    // Byte for byte what kubectl builds offline (`--dry-run=client`): the
    // Secret crates/exec's task_registry_auth tests hand to each bundled
    // Task's push step, so the protobuf path loses nothing a push needs.
    let offline = k
        .ok(&[
            "create",
            "secret",
            "docker-registry",
            "regcred",
            "-n",
            "team-a",
            "--docker-server=registry.local:5000",
            "--docker-username=builder",
            "--docker-password=s3cret",
            "--dry-run=client",
            "-o",
            "json",
        ])
        .await;
    let offline: Value = serde_json::from_str(&offline).unwrap();
    assert_eq!(s["data"], offline["data"]);
    assert_eq!(s["type"], offline["type"]);

    let out = k
        .ok(&[
            "create",
            "secret",
            "generic",
            "plain",
            "-n",
            "team-a",
            "--from-literal=token=abc",
        ])
        .await;
    assert_eq!(out.trim(), "secret/plain created");
    let s = c.get(&gvr::SECRETS, Some("team-a"), "plain").unwrap();
    assert_eq!(s["type"], "Opaque");
    assert_eq!(decoded(&s["data"]["token"]), b"abc");

    let out = k
        .ok(&[
            "create",
            "configmap",
            "settings",
            "-n",
            "team-a",
            "--from-literal=mode=fast",
        ])
        .await;
    assert_eq!(out.trim(), "configmap/settings created");
    let cm = c.get(&gvr::CONFIGMAPS, Some("team-a"), "settings").unwrap();
    assert_eq!(cm["data"], json!({"mode": "fast"}));

    let out = k
        .ok(&["create", "serviceaccount", "builder", "-n", "team-a"])
        .await;
    assert_eq!(out.trim(), "serviceaccount/builder created");
    assert!(
        c.get(&gvr::SERVICEACCOUNTS, Some("team-a"), "builder")
            .is_some()
    );

    // RBAC objects (stored, not enforced) go the same way.
    let rbac = [
        (
            vec![
                "create",
                "role",
                "reader",
                "-n",
                "team-a",
                "--verb=get,list",
                "--resource=pipelineruns.tekton.dev",
            ],
            "role.rbac.authorization.k8s.io/reader created",
        ),
        (
            vec![
                "create",
                "rolebinding",
                "reads",
                "-n",
                "team-a",
                "--role=reader",
                "--serviceaccount=team-a:builder",
            ],
            "rolebinding.rbac.authorization.k8s.io/reads created",
        ),
        (
            vec![
                "create",
                "clusterrole",
                "viewer",
                "--verb=get",
                "--resource=namespaces",
            ],
            "clusterrole.rbac.authorization.k8s.io/viewer created",
        ),
        (
            vec![
                "create",
                "clusterrolebinding",
                "views",
                "--clusterrole=viewer",
                "--user=alice",
            ],
            "clusterrolebinding.rbac.authorization.k8s.io/views created",
        ),
    ];
    for (args, want) in rbac {
        assert_eq!(k.ok(&args).await.trim(), want);
    }
    let role = c.get(&RBAC_ROLES, Some("team-a"), "reader").unwrap();
    assert_eq!(
        role["rules"],
        json!([{"verbs": ["get", "list"], "apiGroups": ["tekton.dev"], "resources": ["pipelineruns"]}])
    );
    let rb = c.get(&RBAC_ROLEBINDINGS, Some("team-a"), "reads").unwrap();
    assert_eq!(
        rb["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"})
    );
    assert_eq!(
        rb["subjects"],
        json!([{"kind": "ServiceAccount", "name": "builder", "namespace": "team-a"}])
    );
    let crb = c.get(&RBAC_CLUSTERROLEBINDINGS, None, "views").unwrap();
    assert_eq!(crb["subjects"][0]["name"], "alice");
    assert!(c.get(&RBAC_CLUSTERROLES, None, "viewer").is_some());
    let out = k
        .ok(&["get", "role", "reader", "-n", "team-a", "-o", "yaml"])
        .await;
    let v: Value = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(v["rules"], role["rules"]);

    // Errors come back as protobuf Status objects kubectl prints as usual.
    let (ok, _, err) = k.run(&["create", "namespace", "team-a"]).await;
    assert!(!ok);
    assert_eq!(
        err.trim(),
        "Error from server (AlreadyExists): namespaces \"team-a\" already exists"
    );

    let out = k
        .ok(&["get", "secret", "regcred", "-n", "team-a", "-o", "yaml"])
        .await;
    let v: Value = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(v["kind"], "Secret");
    assert_eq!(v["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(v["data"], s_data(&c, "regcred"));
    let out = k
        .ok(&["get", "configmap,serviceaccount", "-n", "team-a"])
        .await;
    for name in [
        "configmap/settings",
        "serviceaccount/builder",
        "serviceaccount/default",
    ] {
        assert!(out.lines().any(|l| l.starts_with(name)), "{name} in {out}");
    }

    for (kind, name) in [
        ("secret", "regcred"),
        ("configmap", "settings"),
        ("serviceaccount", "builder"),
    ] {
        let out = k.ok(&["delete", kind, name, "-n", "team-a"]).await;
        assert_eq!(out.trim(), format!("{kind} \"{name}\" deleted"));
    }
    assert!(c.get(&gvr::SECRETS, Some("team-a"), "regcred").is_none());
    assert!(
        c.get(&gvr::CONFIGMAPS, Some("team-a"), "settings")
            .is_none()
    );
    let out = k.ok(&["delete", "namespace", "team-a"]).await;
    assert_eq!(out.trim(), "namespace \"team-a\" deleted");
    assert!(c.get(&gvr::NAMESPACES, None, "team-a").is_none());
}

fn decoded(v: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(v.as_str().expect("base64 string"))
        .expect("valid base64")
}

fn s_data(c: &std::sync::Arc<dyn kube_sim::cluster::Cluster>, name: &str) -> Value {
    c.get(&gvr::SECRETS, Some("team-a"), name).unwrap()["data"].clone()
}
