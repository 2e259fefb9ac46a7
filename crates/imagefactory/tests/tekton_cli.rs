//! `imagefactory tekton install|status --kubeconfig` against kube-sim over
//! HTTPS, checked with the real kubectl: install into an empty namespace,
//! a second run changes nothing, `--dry-run` changes nothing, a Task edited
//! in the cluster shows as modified and install restores it, and a cluster
//! without `tekton.dev` is refused with that message.

use std::path::Path;
use std::process::{Command, Output};

use kube_sim::{KubeSim, KubeSimHandle, KubeSimOptions};

fn imagefactory(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_imagefactory"))
        .args(args)
        .env("IF_LOG", "warn")
        .output()
        .expect("imagefactory runs")
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .expect("kubectl runs (it is required by this test)")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn sim(options: KubeSimOptions) -> (KubeSimHandle, tempfile::TempDir) {
    let sim = KubeSim::start(options).await.expect("kube-sim starts");
    let dir = tempfile::tempdir().unwrap();
    sim.write_kubeconfig(&dir.path().join("kubeconfig"))
        .unwrap();
    (sim, dir)
}

const TASKS: [&str; 5] = ["buildx", "docker-build", "git-clone", "kaniko", "packer"];

/// The Task names kubectl lists in `ns`, sorted.
fn listed_tasks(kubeconfig: &Path, ns: &str) -> Vec<String> {
    let out = kubectl(kubeconfig, &["get", "tasks", "-n", ns, "-o", "name"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut names: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.rsplit('/').next())
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn kaniko_image(kubeconfig: &Path, ns: &str) -> String {
    let out = kubectl(
        kubeconfig,
        &[
            "get",
            "task",
            "kaniko",
            "-n",
            ns,
            "-o",
            "jsonpath={.spec.steps[0].image}",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    stdout(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_then_kubectl_lists_the_tasks_and_reruns_change_nothing() {
    let (sim, dir) = sim(KubeSimOptions {
        default_storage_class: Some("standard".into()),
        ..Default::default()
    })
    .await;
    let kubeconfig = dir.path().join("kubeconfig");
    let kc = kubeconfig.to_str().unwrap();
    let ns = "ci-tasks";

    // A dry run into a namespace that does not exist: all would be created,
    // nothing is.
    let out = imagefactory(&[
        "tekton",
        "install",
        "--kubeconfig",
        kc,
        "--namespace",
        ns,
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("(dry run)"), "{}", text(&out));
    assert_eq!(
        stdout(&out).matches(": created (was missing)").count(),
        6,
        "{}",
        text(&out)
    );
    let get_ns = kubectl(&kubeconfig, &["get", "namespace", ns]);
    assert!(
        !get_ns.status.success(),
        "dry run created the namespace: {}",
        text(&get_ns)
    );

    let out = imagefactory(&["tekton", "install", "--kubeconfig", kc, "--namespace", ns]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        stdout(&out).matches(": created (was missing)").count(),
        6,
        "{}",
        text(&out)
    );
    assert_eq!(listed_tasks(&kubeconfig, ns), TASKS);
    let shipped = kaniko_image(&kubeconfig, ns);

    // Again: every object unchanged.
    let out = imagefactory(&["tekton", "install", "--kubeconfig", kc, "--namespace", ns]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        stdout(&out).matches(": unchanged (was current)").count(),
        6,
        "{}",
        text(&out)
    );

    // Someone edits a Task: status says modified; a dry run would restore
    // it but changes nothing; install restores it.
    let patch = r#"[{"op":"replace","path":"/spec/steps/0/image","value":"someone.example/kaniko:edited"}]"#;
    let out = kubectl(
        &kubeconfig,
        &[
            "patch", "task", "kaniko", "-n", ns, "--type", "json", "-p", patch,
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let out = imagefactory(&["tekton", "status", "--kubeconfig", kc, "--namespace", ns]);
    assert!(
        !out.status.success(),
        "not ready with a modified Task: {}",
        text(&out)
    );
    assert!(
        stdout(&out).contains("Task kaniko: modified"),
        "{}",
        text(&out)
    );
    assert!(
        stdout(&out).contains("Task git-clone: current"),
        "{}",
        text(&out)
    );
    assert!(
        stdout(&out).contains("Tekton API: tekton.dev v1, v1beta1, v1alpha1 (using v1)"),
        "{}",
        text(&out)
    );

    let out = imagefactory(&[
        "tekton",
        "install",
        "--kubeconfig",
        kc,
        "--namespace",
        ns,
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("/kaniko: updated (was modified)"),
        "{}",
        text(&out)
    );
    assert_eq!(
        kaniko_image(&kubeconfig, ns),
        "someone.example/kaniko:edited"
    );

    let out = imagefactory(&["tekton", "install", "--kubeconfig", kc, "--namespace", ns]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("/kaniko: updated (was modified)"),
        "{}",
        text(&out)
    );
    assert_eq!(kaniko_image(&kubeconfig, ns), shipped);

    // Ready once the registry Secret exists too.
    let out = imagefactory(&["tekton", "status", "--kubeconfig", kc, "--namespace", ns]);
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("registry Secret docker-config: NOT OK (missing"),
        "{}",
        text(&out)
    );
    // kube-sim does not take kubectl's protobuf bodies for core types: the
    // Secret comes from the kube client.
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "docker-config"},
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            r#"{"auths":{"registry.example":{"auth":"dTpw"}}}"#,
        )},
    }))
    .unwrap();
    kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        sim.kube_client().await.unwrap(),
        ns,
    )
    .create(&Default::default(), &secret)
    .await
    .unwrap();
    let out = imagefactory(&[
        "tekton",
        "status",
        "--kubeconfig",
        kc,
        "--namespace",
        ns,
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["default_storage_class"]["detail"], "standard");
    let checks = status["namespaces"][0]["checks"].to_string();
    assert!(
        checks.contains("present with key .dockerconfigjson"),
        "{checks}"
    );
    assert!(!checks.contains("dTpw"), "a secret value leaked: {checks}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_without_tekton_is_refused_by_name_and_left_alone() {
    let (_sim, dir) = sim(KubeSimOptions {
        tekton_versions: Some(Vec::new()),
        ..Default::default()
    })
    .await;
    let kubeconfig = dir.path().join("kubeconfig");
    let kc = kubeconfig.to_str().unwrap();
    for command in ["install", "status"] {
        let out = imagefactory(&[
            "tekton",
            command,
            "--kubeconfig",
            kc,
            "--namespace",
            "ci-tasks",
        ]);
        assert!(!out.status.success(), "{command}: {}", text(&out));
        let all = text(&out);
        assert!(
            all.contains("Tekton Pipelines not installed"),
            "{command}: {all}"
        );
        assert!(!all.contains("404"), "{command}: {all}");
    }
    let get_ns = kubectl(&kubeconfig, &["get", "namespace", "ci-tasks"]);
    assert!(
        !get_ns.status.success(),
        "nothing created: {}",
        text(&get_ns)
    );
}
