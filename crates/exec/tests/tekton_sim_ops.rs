//! The Tekton executor against kube-sim, continued: v1beta1 clusters,
//! retention, fault injection, each auth mode, the global fallback cluster,
//! client caching, per-version registry Secrets and Task installation.

mod tekton_support;

use std::sync::Arc;
use std::time::Duration;

use imagefactory_domain::provider::ProviderOwner;
use imagefactory_domain::{BuildMethod, Secret};
use imagefactory_exec::tekton::client::ClientCache;
use imagefactory_exec::tekton::namespace::namespace_name;
use imagefactory_exec::tekton::retention::PERSISTED;
use imagefactory_exec::tekton::tasks::install_tasks;
use imagefactory_exec::tekton::{TektonExecutor, TektonSettings, TektonVersion, test_connection};
use imagefactory_exec::{Executor, GitCredential, Outcome};
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube_sim::{Credentials, FaultAction, FaultRule};
use serde_json::json;
use tekton_support::*;
use uuid::Uuid;

fn message(outcome: &Outcome) -> String {
    format!("{outcome:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1beta1_run_succeeds_with_pipeline_results() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let mut config = sim.config();
    config["tekton_api_version"] = json!("v1beta1");
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    let ctx = context(BuildMethod::Kaniko, sim.provider_with(config), tenant);
    let outcome = executor().await.start(ctx, sink.clone(), stop).await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    assert_eq!(
        sink.artifact("IMAGE_URL").as_deref(),
        Some("registry.example.com/team/app:1.0")
    );
    assert!(
        sink.artifact("IMAGE_DIGEST")
            .unwrap()
            .starts_with("sha256:")
    );
    assert!(sink.artifact("clone.commit").is_some(), "taskResults read");
    sink.assert_no_duplicates_or_gaps();
    assert!(!sink.sources().is_empty());
}

/// A cluster whose Tekton serves only `tekton.dev/v1beta1`: with no
/// `tekton_api_version` in the provider config the executor discovers it
/// and runs the build as a v1beta1 PipelineRun (results from
/// `pipelineResults`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_serving_only_v1beta1_is_discovered() {
    let sim = Sim::start(SimOptions {
        tekton_versions: Some(vec!["v1beta1".into()]),
        ..Default::default()
    })
    .await;
    assert_eq!(sim.version().await, TektonVersion::V1beta1);
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let sink = MemorySink::new();
    let (_tx, stop) = no_stop();
    let config = sim.config();
    assert!(config.get("tekton_api_version").is_none());
    let ctx = context(BuildMethod::Kaniko, sim.provider_with(config), tenant);
    let outcome = executor().await.start(ctx, sink.clone(), stop).await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    let runs = sim.pipelineruns(tenant).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["apiVersion"], "tekton.dev/v1beta1", "{}", runs[0]);
    assert!(
        sink.artifact("IMAGE_DIGEST")
            .unwrap()
            .starts_with("sha256:")
    );
    sink.assert_no_duplicates_or_gaps();
    // The v1 API is not there at all on this cluster.
    let v1: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        sim.admin().await,
        &namespace_name(tenant),
        &imagefactory_exec::tekton::submit::pipelinerun_resource(TektonVersion::V1),
    );
    let err = v1.list(&Default::default()).await.unwrap_err();
    assert!(format!("{err:?}").contains("404"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_persisted_runs_beyond_keep_last() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let mut config = sim.config();
    config["retention"] = json!({"keep_last": 2});
    let provider = sim.provider_with(config);
    let executor = executor().await;
    let runs = || async {
        let mut names: Vec<(String, bool)> = sim
            .pipelineruns(tenant)
            .await
            .iter()
            .map(|r| {
                let persisted = r["metadata"]["annotations"][PERSISTED] == "true";
                (
                    r["metadata"]["name"].as_str().unwrap().to_string(),
                    persisted,
                )
            })
            .collect();
        names.sort();
        names
    };
    let mut names = Vec::new();
    for i in 0..4 {
        let sink = MemorySink::new();
        let (_tx, stop) = no_stop();
        let ctx = context(BuildMethod::Docker, provider.clone(), tenant);
        let execution = ctx.execution_id;
        let outcome = executor.start(ctx, sink.clone(), stop).await;
        assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
        let name = sink.references.lock().unwrap()[0].name.clone().unwrap();
        names.push(name.clone());
        // Until the dispatcher says the outcome is committed, the run is
        // neither marked persisted nor deleted: a takeover before the commit
        // must still find it.
        assert!(
            runs().await.contains(&(name.clone(), false)),
            "run {name} untouched"
        );
        // The first one's outcome was not recorded (lease lost): it is left
        // as it is for the dispatcher that takes over (which re-attaches and
        // cleans up after recording it).
        executor.outcome_recorded(execution, i > 0).await;
        // completionTime has second resolution; keep runs apart.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    // Of the three marked persisted, the two newest are kept.
    let mut newest: Vec<(String, bool)> = names[2..].iter().map(|n| (n.clone(), true)).collect();
    newest.push((names[0].clone(), false));
    newest.sort();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while runs().await != newest {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the unrecorded run and the two newest persisted ones are kept: {:?}",
            runs().await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_survive_api_faults_without_duplicates() {
    let lines: Vec<String> = (0..20).map(|i| format!("line {i}")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, Some("1m"), &refs, None)],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let faults = sim.handle.faults();
    // Watches: forced 410 Expired (relist) and dropped connections.
    faults.add(
        FaultRule::new(
            Some("watch"),
            Some("pipelineruns"),
            FaultAction::ExpireWatch,
        )
        .times(3),
    );
    faults.add(FaultRule::new(
        Some("watch"),
        Some("pipelineruns"),
        FaultAction::DropWatch {
            after: Duration::from_millis(300),
        },
    ));
    // Errors on submit and on reads: 500s and 429s.
    faults.add(
        FaultRule::new(
            Some("create"),
            Some("pipelineruns"),
            FaultAction::Error {
                code: 500,
                retry_after: None,
            },
        )
        .times(1),
    );
    faults.add(
        FaultRule::new(
            Some("get"),
            Some("taskruns"),
            FaultAction::Error {
                code: 500,
                retry_after: None,
            },
        )
        .times(2),
    );
    faults.add(
        FaultRule::new(
            Some("get"),
            Some("pods/log"),
            FaultAction::Error {
                code: 429,
                retry_after: Some(1),
            },
        )
        .times(2),
    );
    // Log streams cut mid-way must resume without duplicates or gaps.
    faults.add(FaultRule::new(
        Some("get"),
        Some("pods/log"),
        FaultAction::DropWatch {
            after: Duration::from_millis(250),
        },
    ));
    let executor = executor().await;
    let mut sinks = Vec::new();
    let mut tasks = Vec::new();
    let executor = Arc::new(executor);
    for method in BuildMethod::ALL {
        let sink = MemorySink::new();
        sinks.push(sink.clone());
        let ctx = context(*method, sim.provider(), tenant);
        let executor = executor.clone();
        tasks.push(tokio::spawn(async move {
            let (_tx, stop) = no_stop();
            executor.start(ctx, sink, stop).await
        }));
    }
    for (task, sink) in tasks.into_iter().zip(&sinks) {
        let outcome = task.await.unwrap();
        assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
        sink.assert_no_duplicates_or_gaps();
        let build = sink
            .sources()
            .into_iter()
            .find(|s| s.starts_with("build/"))
            .unwrap();
        assert_eq!(sink.text(&build), lines, "{build}");
    }
    assert_eq!(
        sim.pipelineruns(tenant).await.len(),
        4,
        "one run per build, none duplicated"
    );
    // Every counted fault was hit (only the unlimited ones remain), and the
    // failed create was retried.
    let left: Vec<FaultAction> = faults.list().into_iter().map(|(_, r)| r.action).collect();
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter()
            .all(|a| matches!(a, FaultAction::DropWatch { .. })),
        "{left:?}"
    );
    let retried = sinks.iter().any(|s| {
        s.progress
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.starts_with("retrying after a transient error"))
    });
    assert!(retried);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cert_and_kubeconfig_auth_work_and_tls_is_verified() {
    let sim = Sim::start(SimOptions::default()).await;
    let cert = sim
        .handle
        .add_cert_user("ci-bot", &["builders"], vec![kube_sim::AccessRule::all()])
        .unwrap();
    let provider = sim.provider_with(json!({
        "auth_method": "client-cert",
        "apiServer": sim.handle.endpoint(),
        "client_cert": cert.cert_pem,
        "client_key": cert.key_pem,
        "ca_cert": sim.handle.ca_pem(),
    }));
    let report = test_connection(&provider, loopback_policy()).await;
    assert!(
        report.authenticated && report.tekton_versions.contains(&"v1".to_string()),
        "{report:?}"
    );

    let inline = sim.provider_with(
        json!({"auth_method": "kubeconfig", "kubeconfig": sim.handle.kubeconfig_yaml()}),
    );
    let report = test_connection(&inline, loopback_policy()).await;
    assert!(report.authenticated, "{report:?}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(
        &path,
        sim.handle
            .kubeconfig_yaml_for(Credentials::ClientCert(&cert), "default"),
    )
    .unwrap();
    // A file on the server: only the platform admin's (global) provider may name one.
    let by_path_config =
        json!({"auth_method": "kubeconfig", "kubeconfig_path": path, "context": "kube-sim"});
    let by_path = sim.provider_with(by_path_config.clone());
    let report = test_connection(&by_path, loopback_policy()).await;
    assert!(!report.reachable, "{report:?}");
    assert!(
        report.error.as_deref().unwrap().contains("kubeconfig_path"),
        "{report:?}"
    );
    let by_path = sim.provider_owned(by_path_config, ProviderOwner::Global);
    let report = test_connection(&by_path, loopback_policy()).await;
    assert!(report.authenticated, "{report:?}");
    let wrong_context = sim.provider_owned(
        json!({"auth_method": "kubeconfig", "kubeconfig_path": path, "context": "nope"}),
        ProviderOwner::Global,
    );
    let report = test_connection(&wrong_context, loopback_policy()).await;
    assert!(!report.reachable && report.error.is_some(), "{report:?}");

    // A CA that did not sign the server's certificate is refused.
    let other = Sim::start(SimOptions::default()).await;
    let mut config = sim.config();
    config["ca_cert"] = json!(other.handle.ca_pem());
    let report = test_connection(&sim.provider_with(config.clone()), loopback_policy()).await;
    assert!(!report.authenticated, "{report:?}");
    assert_eq!(
        report.error.as_deref(),
        Some("TLS: unknown certificate authority"),
        "{report:?}"
    );
    // ...and a build against it fails (not transient: the config is wrong).
    let (_tx, stop) = no_stop();
    let outcome = executor()
        .await
        .start(
            context(
                BuildMethod::Kaniko,
                sim.provider_with(config),
                Uuid::new_v4(),
            ),
            MemorySink::new(),
            stop,
        )
        .await;
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_without_a_provider_use_the_global_cluster_only_when_configured() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let mut ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    ctx.provider = None;
    let (_tx, stop) = no_stop();
    let outcome = executor()
        .await
        .start(ctx.clone(), MemorySink::new(), stop)
        .await;
    assert!(
        message(&outcome).contains("no global cluster is configured"),
        "{outcome:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config");
    std::fs::write(&path, sim.handle.kubeconfig_yaml()).unwrap();
    let executor = TektonExecutor::new(TektonSettings {
        global_kubeconfig: Some(path),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_tx, stop) = no_stop();
    let outcome = executor.start(ctx, MemorySink::new(), stop).await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_cached_per_provider_and_rebuilt_on_config_change() {
    let sim = Sim::start(SimOptions::default()).await;
    let cache = ClientCache::new().with_address_policy(loopback_policy());
    let mut provider = sim.provider();
    let a = cache.cluster(Some(&provider)).await.unwrap();
    let b = cache.cluster(Some(&provider)).await.unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    // The same provider, its config changed (and so its version).
    let mut config = sim.config();
    config["tekton_api_version"] = json!("v1beta1");
    let (id, version) = (provider.provider_id, provider.config_version + 1);
    provider = sim.provider_with(config);
    (provider.provider_id, provider.config_version) = (id, version);
    let c = cache.cluster(Some(&provider)).await.unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
    assert_eq!(c.tekton_version().await.unwrap(), TektonVersion::V1beta1);
    assert_eq!(a.tekton_version().await.unwrap(), TektonVersion::V1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_secrets_are_per_credential_version_and_git_credentials_bind_basic_auth() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let executor = executor().await;
    let mut ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    ctx.source.credential = Some(GitCredential {
        username: "me".into(),
        password: Secret::new("git-pass"),
    });
    let (_tx, stop) = no_stop();
    let sink = MemorySink::new();
    assert_eq!(
        executor.start(ctx.clone(), sink.clone(), stop).await,
        Outcome::Succeeded
    );
    // Same credential, new version (password changed): a second Secret; the first is untouched.
    let mut ctx2 = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let mut auth = ctx.registry.clone().unwrap();
    auth.version = 2;
    auth.password = Secret::new("rotated");
    ctx2.registry = Some(auth.clone());
    let (_tx, stop) = no_stop();
    assert_eq!(
        executor.start(ctx2, MemorySink::new(), stop).await,
        Outcome::Succeeded
    );

    let secrets: kube::Api<KubeSecret> =
        kube::Api::namespaced(sim.admin().await, &namespace_name(tenant));
    let id = auth.credential_id.simple();
    let v1 = secrets.get(&format!("if-reg-{id}-v1")).await.unwrap();
    let v2 = secrets.get(&format!("if-reg-{id}-v2")).await.unwrap();
    assert_eq!(password(&v1), "s3cret");
    assert_eq!(password(&v2), "rotated");
    assert_eq!(v1.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));

    let run = &sim
        .pipelineruns(tenant)
        .await
        .into_iter()
        .find(|r| r["metadata"]["name"] == sink.references.lock().unwrap()[0].name.clone().unwrap())
        .unwrap();
    let ws = run["spec"]["workspaces"].as_array().unwrap();
    let basic = ws
        .iter()
        .find(|w| w["name"] == "basic-auth")
        .expect("basic-auth workspace");
    let git = secrets
        .get(basic["secret"]["secretName"].as_str().unwrap())
        .await
        .unwrap();
    let creds = String::from_utf8(git.data.unwrap()[".git-credentials"].0.clone()).unwrap();
    assert_eq!(creds, "https://me:git-pass@git.example.com\n");
}

fn password(s: &KubeSecret) -> String {
    let config: serde_json::Value =
        serde_json::from_slice(&s.data.as_ref().unwrap()[".dockerconfigjson"].0).unwrap();
    config["auths"]["registry.example.com"]["password"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Two UUIDv7 ids of the same millisecond: they share the first 12 hex digits.
fn ids_sharing_a_prefix() -> (Uuid, Uuid) {
    let a = uuid::Builder::from_unix_timestamp_millis(1_780_000_000_000, &[1; 10]).into_uuid();
    let b = uuid::Builder::from_unix_timestamp_millis(1_780_000_000_000, &[2; 10]).into_uuid();
    assert_eq!(a.simple().to_string()[..12], b.simple().to_string()[..12]);
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_made_in_the_same_millisecond_get_their_own_secrets() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let executor = executor().await;
    let (id_a, id_b) = ids_sharing_a_prefix();
    let mut names = Vec::new();
    for (id, pass) in [(id_a, "pass-a"), (id_b, "pass-b")] {
        let mut ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
        let auth = ctx.registry.as_mut().unwrap();
        auth.credential_id = id;
        auth.password = Secret::new(pass);
        let sink = MemorySink::new();
        let (_tx, stop) = no_stop();
        let outcome = executor.start(ctx, sink.clone(), stop).await;
        assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
        let run_name = sink.references.lock().unwrap()[0].name.clone().unwrap();
        let run = sim
            .pipelineruns(tenant)
            .await
            .into_iter()
            .find(|r| r["metadata"]["name"] == run_name.as_str())
            .unwrap();
        let bound = run["spec"]["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "dockerconfig")
            .unwrap()["secret"]["secretName"]
            .as_str()
            .unwrap()
            .to_string();
        names.push((bound, pass, id));
    }
    assert_ne!(
        names[0].0, names[1].0,
        "each credential binds its own Secret"
    );
    let secrets: kube::Api<KubeSecret> =
        kube::Api::namespaced(sim.admin().await, &namespace_name(tenant));
    for (name, pass, id) in &names {
        let secret = secrets.get(name).await.unwrap();
        assert_eq!(password(&secret), *pass, "{name} holds its own auth");
        let labels = secret.metadata.labels.unwrap();
        assert_eq!(labels["imagefactory.io/credential-id"], id.to_string());
        assert_eq!(labels["imagefactory.io/credential-version"], "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_secret_with_our_name_is_refused_not_used() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let auth = ctx.registry.clone().unwrap();
    let name = format!("if-reg-{}-v1", auth.credential_id.simple());
    // Someone else's auth under the name the build would use, labelled as
    // another credential.
    let mut foreign =
        imagefactory_exec::tekton::secrets::registry_secret(&imagefactory_exec::RegistryAuth {
            credential_id: Uuid::new_v4(),
            password: Secret::new("someone-elses"),
            ..auth.clone()
        });
    foreign.metadata.name = Some(name.clone());
    let secrets: kube::Api<KubeSecret> =
        kube::Api::namespaced(sim.admin().await, &namespace_name(tenant));
    secrets.create(&Default::default(), &foreign).await.unwrap();

    let (_tx, stop) = no_stop();
    let sink = MemorySink::new();
    let outcome = executor().await.start(ctx, sink.clone(), stop).await;
    let Outcome::Failed { message: text } = &outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    assert!(
        text.contains(&name) && text.contains("refusing to use it"),
        "{text}"
    );
    assert!(!text.contains("someone-elses"), "{text}");
    assert!(
        sim.pipelineruns(tenant).await.is_empty(),
        "nothing submitted"
    );
    let still = secrets.get(&name).await.unwrap();
    assert_eq!(password(&still), "someone-elses", "left as it was");

    // Our own Secret under that name (a second dispatcher created it) is used.
    secrets.delete(&name, &Default::default()).await.unwrap();
    let ours = imagefactory_exec::tekton::secrets::registry_secret(&auth);
    secrets.create(&Default::default(), &ours).await.unwrap();
    let ctx = context(BuildMethod::Kaniko, sim.provider(), tenant);
    let ctx = imagefactory_exec::ExecutionContext {
        registry: Some(auth),
        ..ctx
    };
    let (_tx, stop) = no_stop();
    let outcome = executor().await.start(ctx, MemorySink::new(), stop).await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installing_tasks_twice_is_idempotent() {
    let sim = Sim::start(SimOptions::default()).await;
    let settings = tenant_settings(&sim.config());
    let client = settings.client().await.unwrap();
    let tenant = Uuid::new_v4();
    imagefactory_exec::tekton::namespace::ensure_namespace(&client, tenant)
        .await
        .unwrap();
    // Concurrent creation of the namespace is fine too.
    imagefactory_exec::tekton::namespace::ensure_namespace(&client, tenant)
        .await
        .unwrap();
    let ns = namespace_name(tenant);
    let first = install_tasks(&client, TektonVersion::V1, &ns)
        .await
        .unwrap();
    let second = install_tasks(&client, TektonVersion::V1, &ns)
        .await
        .unwrap();
    assert_eq!(
        first,
        vec!["git-clone", "docker-build", "buildx", "kaniko", "packer"]
    );
    assert_eq!(first, second);
    let ns_obj: k8s_openapi::api::core::v1::Namespace =
        kube::Api::all(client.clone()).get(&ns).await.unwrap();
    let labels = ns_obj.metadata.labels.unwrap();
    assert_eq!(labels["tenant-id"], tenant.to_string());
    assert_eq!(labels["app"], "image-factory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_builds_skip_checks_that_passed_recently() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let executor = executor().await;
    let provider = sim.provider();
    let (_tx, stop) = no_stop();
    assert_eq!(
        executor
            .start(
                context(BuildMethod::Kaniko, provider.clone(), tenant),
                MemorySink::new(),
                stop
            )
            .await,
        Outcome::Succeeded
    );
    // Count what the second build asks: a zero-latency fault rule with a budget.
    let faults = sim.handle.faults();
    let counters: Vec<(&str, &str, u64)> = [
        ("get", "tasks"),
        ("list", "storageclasses"),
        ("get", "serviceaccounts"),
        ("get", "namespaces"),
        ("create", "pipelineruns"),
    ]
    .into_iter()
    .map(|(verb, resource)| {
        (
            verb,
            resource,
            faults.add(
                FaultRule::new(
                    Some(verb),
                    Some(resource),
                    FaultAction::Latency(Duration::ZERO),
                )
                .times(1000),
            ),
        )
    })
    .collect();
    let mut ctx = context(BuildMethod::Kaniko, provider, tenant);
    ctx.registry = ctx.registry.map(|mut r| {
        r.credential_id = Uuid::nil();
        r
    });
    let (_tx, stop) = no_stop();
    assert_eq!(
        executor.start(ctx, MemorySink::new(), stop).await,
        Outcome::Succeeded
    );
    let used = |id: u64| {
        1000 - faults
            .list()
            .iter()
            .find(|(i, _)| *i == id)
            .and_then(|(_, r)| r.times)
            .unwrap_or(0)
    };
    for (verb, resource, id) in counters {
        let expected = if resource == "pipelineruns" { 1 } else { 0 };
        assert_eq!(used(id), expected, "{verb} {resource}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_that_may_not_watch_runs_fails_the_build_clearly() {
    let sim = Sim::start(SimOptions {
        rules: vec![rule("build", None, Some("10m"), &[], None)],
        ..Default::default()
    })
    .await;
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let token = sim.handle.add_token_user(
        "no-watch",
        &[],
        vec![kube_sim::AccessRule::new(
            &["*"],
            &["get", "create", "patch", "update", "delete"],
            &["*"],
        )],
    );
    let mut config = sim.config();
    config["token"] = json!(token);
    let (_tx, stop) = no_stop();
    let outcome = executor()
        .await
        .start(
            context(BuildMethod::Kaniko, sim.provider_with(config), tenant),
            MemorySink::new(),
            stop,
        )
        .await;
    let text = message(&outcome);
    assert!(matches!(outcome, Outcome::Failed { .. }), "{outcome:?}");
    assert!(
        text.contains("cannot watch PipelineRuns") && text.contains("403"),
        "{text}"
    );
}

/// A kubeconfig for the sim whose user runs `script` as its exec plugin,
/// answering with the admin token (so the plugin works when it is run).
fn exec_kubeconfig(sim: &Sim, script: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(sim.handle.ca_pem());
    let credential = format!(
        r#"{{"kind":"ExecCredential","apiVersion":"client.authentication.k8s.io/v1beta1","status":{{"token":"{}"}}}}"#,
        sim.handle.admin_token()
    );
    let args = serde_json::to_string(&["-c", &format!("{script}; echo '{credential}'")]).unwrap();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\n    certificate-authority-data: {ca}\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: /bin/sh\n      args: {args}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n",
        sim.handle.endpoint()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_kubeconfig_runs_no_program_and_reads_no_file_whatever_is_stored() {
    let sim = Sim::start(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let kubeconfig = exec_kubeconfig(&sim, &format!("touch {}", marker.display()));
    // A row stored before validation refused it: the executor refuses it too.
    let config = json!({"auth_method": "kubeconfig", "kubeconfig": kubeconfig});
    let provider = sim.provider_with(config.clone());
    let report = test_connection(&provider, loopback_policy()).await;
    let error = report.error.clone().unwrap_or_default();
    assert!(!report.reachable, "{report:?}");
    assert!(error.contains("users[0].user.exec"), "{error}");
    let (_tx, stop) = no_stop();
    let outcome = executor()
        .await
        .start(
            context(BuildMethod::Kaniko, provider.clone(), Uuid::new_v4()),
            MemorySink::new(),
            stop,
        )
        .await;
    assert!(
        matches!(&outcome, Outcome::Failed { message } if message.contains("exec")),
        "{outcome:?}"
    );
    assert!(!marker.exists(), "a tenant's exec plugin ran");
    // The platform admin's provider may use a plugin: the test would see it run.
    let provider = sim.provider_owned(config, ProviderOwner::Global);
    let report = test_connection(&provider, loopback_policy()).await;
    assert!(report.authenticated, "{report:?}");
    assert!(marker.exists());

    // tokenFile: a server file sent as the bearer token.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, sim.handle.admin_token()).unwrap();
    let with_file = sim.handle.kubeconfig_yaml().replace(
        &format!("token: {}", sim.handle.admin_token()),
        &format!("tokenFile: {}", token_file.display()),
    );
    assert!(with_file.contains("tokenFile"), "{with_file}");
    let config = json!({"auth_method": "kubeconfig", "kubeconfig": with_file});
    let provider = sim.provider_with(config.clone());
    let report = test_connection(&provider, loopback_policy()).await;
    let error = report.error.clone().unwrap_or_default();
    assert!(
        !report.authenticated && error.contains("tokenFile"),
        "{report:?}"
    );
    let provider = sim.provider_owned(config, ProviderOwner::Global);
    let report = test_connection(&provider, loopback_policy()).await;
    assert!(report.authenticated, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_provider_on_a_refused_address_is_not_connected_to() {
    let sim = Sim::start(SimOptions::default()).await;
    let strict = Arc::new(imagefactory_domain::AddressPolicy::new(false));
    let policy_refusal = "address not allowed by the provider address policy";
    let report = test_connection(&sim.provider(), strict.clone()).await;
    assert!(!report.reachable, "{report:?}");
    assert!(
        report.error.as_deref().unwrap().starts_with(policy_refusal),
        "{report:?}"
    );
    // `localhost` by name, and the executor's builds, too.
    let mut config = sim.config();
    config["endpoint"] = json!(sim.handle.endpoint().replace("127.0.0.1", "localhost"));
    let report = test_connection(&sim.provider_with(config), strict.clone()).await;
    assert!(
        report.error.as_deref().unwrap().starts_with(policy_refusal),
        "{report:?}"
    );
    let executor = TektonExecutor::new(TektonSettings {
        address_policy: strict,
        ..Default::default()
    })
    .await
    .unwrap();
    let (_tx, stop) = no_stop();
    let outcome = executor
        .start(
            context(BuildMethod::Kaniko, sim.provider(), Uuid::new_v4()),
            MemorySink::new(),
            stop,
        )
        .await;
    assert!(
        matches!(&outcome, Outcome::Failed { message } if message.contains(policy_refusal)),
        "{outcome:?}"
    );
}
