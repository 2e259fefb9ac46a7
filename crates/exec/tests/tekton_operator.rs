//! What an operator finds for a Tekton build, against kube-sim: the
//! operator lines in the build's log (namespace, PipelineRun created,
//! adopted or re-attached to, completion with outcome and duration), and the
//! operator's `docker-config` Secret made with the real `kubectl` as the
//! preflight message says, accepted with either registry key and refused
//! clearly without one.

mod tekton_support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use imagefactory_domain::BuildMethod;
use imagefactory_exec::tekton::namespace::namespace_name;
use imagefactory_exec::tekton::oplog::OPERATOR_SOURCE;
use imagefactory_exec::{ExecutionSink, Executor, Outcome};
use serde_json::json;
use tekton_support::*;
use uuid::Uuid;

/// `line` is `<prefix><seconds with one decimal> s`; the seconds.
fn seconds_after(line: &str, prefix: &str) -> f64 {
    let rest = line
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?}"));
    let secs = rest
        .strip_suffix(" s")
        .unwrap_or_else(|| panic!("{line:?} does not end with \" s\""));
    assert_eq!(secs.split('.').nth(1).map(str::len), Some(1), "{line:?}");
    secs.parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_log_holds_the_operator_lines_in_order() {
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, Some("10s"), &["building"], None)],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let (outcome, sink) = run_to_end(context(BuildMethod::Kaniko, sim.provider(), tenant)).await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    let run = sink.references.lock().unwrap()[0].name.clone().unwrap();
    let lines = sink.text(OPERATOR_SOURCE);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(
        lines[0],
        format!("Using Kubernetes namespace: {}", namespace_name(tenant))
    );
    assert_eq!(lines[1], format!("Created PipelineRun: {run}"));
    // 10 simulated seconds of build at 20 ms each, plus clone and pods.
    let secs = seconds_after(
        &lines[2],
        &format!("PipelineRun {run} finished: succeeded after "),
    );
    assert!((0.1..60.0).contains(&secs), "{secs}");
    sink.assert_no_duplicates_or_gaps();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_step_and_a_failure_before_the_run_say_so_in_the_log() {
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, None, &["boom"], Some(3))],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let (outcome, sink) = run_to_end(context(BuildMethod::Kaniko, sim.provider(), tenant)).await;
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let run = sink.references.lock().unwrap()[0].name.clone().unwrap();
    let lines = sink.text(OPERATOR_SOURCE);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    let prefix = format!(
        "PipelineRun {run} finished: failed ({}) after ",
        message(&outcome)
    );
    seconds_after(&lines[2], &prefix);

    // No Tasks in this tenant's namespace and an unmanaged provider (a
    // managed one would apply them): preflight fails before any run.
    let other = Uuid::new_v4();
    let mut config = sim.config();
    config["tasks"] = json!("unmanaged");
    let (outcome, sink) = run_to_end(context(
        BuildMethod::Kaniko,
        sim.provider_with(config),
        other,
    ))
    .await;
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    let lines = sink.text(OPERATOR_SOURCE);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(
        lines[0],
        format!("Using Kubernetes namespace: {}", namespace_name(other))
    );
    let prefix = format!(
        "Finished before a PipelineRun was created: failed ({}) after ",
        message(&outcome)
    );
    seconds_after(&lines[1], &prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopting_and_reattaching_say_so_in_the_log() {
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, Some("2m"), &["building..."], None)],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let executor = Arc::new(executor().await);
    let sink = MemorySink::new();
    let first = {
        let (executor, sink, ctx) = (executor.clone(), sink.clone(), ctx.clone());
        let (tx, stop) = no_stop();
        tokio::spawn(async move {
            let _keep = tx;
            executor.start(ctx, sink, stop).await
        })
    };
    for _ in 0..400 {
        if !sink.references.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The dispatcher dies after creating the run.
    first.abort();
    let _ = first.await;
    let reference = sink.references.lock().unwrap()[0].clone();
    let run = reference.name.clone().unwrap();
    let ns = namespace_name(tenant);

    // Another dispatcher re-attaches: its lines follow the stored ones.
    let (_tx, stop) = no_stop();
    let outcome = executor
        .reattach(
            ctx.clone(),
            reference,
            sink.clone() as Arc<dyn ExecutionSink>,
            stop,
        )
        .await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    let lines = sink.text(OPERATOR_SOURCE);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(lines[0], format!("Using Kubernetes namespace: {ns}"));
    assert_eq!(lines[1], format!("Created PipelineRun: {run}"));
    assert_eq!(
        lines[2],
        format!("Re-attached to PipelineRun: {run} in namespace {ns}")
    );
    // Counted from the run's creation, not from the re-attach.
    seconds_after(
        &lines[3],
        &format!("PipelineRun {run} finished: succeeded after "),
    );
    sink.assert_no_duplicates_or_gaps();

    // The same execution started again adopts the run it had created.
    let again = MemorySink::new();
    let (_tx, stop) = no_stop();
    let outcome = executor.start(ctx, again.clone(), stop).await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    assert_eq!(
        again.text(OPERATOR_SOURCE)[1],
        format!(
            "Created PipelineRun: {run} (adopted: an earlier try of this attempt had created it)"
        )
    );
}

fn run_kubectl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("kubectl")
        .args(args)
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The Secret the real `kubectl create secret <args>` makes, created in the
/// tenant's namespace on kube-sim by the real kubectl (made client-side and
/// sent as JSON: kube-sim does not speak protobuf, which kubectl's typed
/// `create secret` sends).
fn kubectl_create_secret(sim: &Sim, dir: &std::path::Path, namespace: &str, args: &[&str]) {
    let config = dir.join("kubeconfig");
    sim.handle.write_kubeconfig(&config).unwrap();
    let mut made = vec!["create", "secret"];
    made.extend_from_slice(args);
    made.extend_from_slice(&["--dry-run=client", "-o", "json"]);
    let secret = dir.join("secret.json");
    std::fs::write(&secret, run_kubectl(&made)).unwrap();
    run_kubectl(&[
        &format!("--kubeconfig={}", config.display()),
        "-n",
        namespace,
        "create",
        "-f",
        &secret.display().to_string(),
    ]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_docker_config_works_with_either_key_and_is_refused_without_one() {
    let sim = Sim::start(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let docker_config = dir.path().join("config.json");
    std::fs::write(
        &docker_config,
        r#"{"auths":{"registry.example.com":{"auth":"Ym90OnMzY3JldA=="}}}"#,
    )
    .unwrap();
    let from_file = format!("--from-file=config.json={}", docker_config.display());
    let made: [(&str, Vec<&str>, Option<&str>); 3] = [
        (
            "docker-registry",
            vec![
                "docker-registry",
                "docker-config",
                "--docker-server=registry.example.com",
                "--docker-username=bot",
                "--docker-password=s3cret",
            ],
            None,
        ),
        (
            "config.json",
            vec!["generic", "docker-config", &from_file],
            None,
        ),
        (
            "neither key",
            vec![
                "generic",
                "docker-config",
                "--from-literal=auth=Ym90OnMzY3JldA==",
            ],
            Some("Secret \"docker-config\" in namespace"),
        ),
    ];
    for (what, args, refused) in made {
        // A tenant per case: a passed preflight is remembered per namespace.
        let tenant = Uuid::new_v4();
        sim.install_tasks(tenant).await;
        let ns = namespace_name(tenant);
        kubectl_create_secret(&sim, dir.path(), &ns, &args);
        let mut ctx = context(BuildMethod::Docker, sim.provider(), tenant);
        ctx.registry = None;
        let (_tx, stop) = no_stop();
        let outcome = executor().await.start(ctx, MemorySink::new(), stop).await;
        match refused {
            None => assert_eq!(outcome, Outcome::Succeeded, "{what}: {}", message(&outcome)),
            Some(start) => {
                let text = message(&outcome);
                assert!(
                    matches!(outcome, Outcome::Failed { .. }),
                    "{what}: {outcome:?}"
                );
                assert!(text.starts_with(start), "{what}: {text}");
                assert!(text.contains("has only the keys auth"), "{what}: {text}");
                assert!(
                    text.contains(".dockerconfigjson or config.json"),
                    "{what}: {text}"
                );
                assert!(
                    !text.contains("Ym90OnMzY3JldA=="),
                    "a value of the Secret is never shown: {text}"
                );
                assert!(sim.pipelineruns(tenant).await.is_empty(), "{what}");
            }
        }
    }
}
