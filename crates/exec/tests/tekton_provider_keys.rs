//! The provider config keys the Tekton executor honours, against kube-sim:
//! `namespace` (where a tenant provider's builds go), `workspace_size` (the
//! source claim's size) and `context` (which kubeconfig context connects).

mod tekton_support;

use imagefactory_domain::BuildMethod;
use imagefactory_exec::Outcome;
use imagefactory_exec::tekton::namespace::{ensure_named_namespace, namespace_name};
use imagefactory_exec::tekton::tasks::install_tasks;
use imagefactory_exec::tekton::test_connection;
use k8s_openapi::api::core::v1::Namespace;
use serde_json::{Value, json};
use tekton_support::*;
use uuid::Uuid;

/// A tenant provider's `namespace` takes its builds there (created and
/// labelled for the tenant), not to the tenant's `image-factory-<id>`; the
/// same namespace is then refused to another tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_providers_namespace_is_where_its_builds_run() {
    let sim = Sim::start(SimOptions::default()).await;
    let tenant = Uuid::new_v4();
    let client = tenant_settings(&sim.config()).client().await.unwrap();
    ensure_named_namespace(&client, "team-builds", tenant)
        .await
        .unwrap();
    install_tasks(&client, sim.version().await, "team-builds")
        .await
        .unwrap();
    let mut config = sim.config();
    config["namespace"] = json!("team-builds");
    let provider = sim.provider_with(config);

    let (outcome, sink) = run_to_end(context(BuildMethod::Kaniko, provider.clone(), tenant)).await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    let reference = sink.references.lock().unwrap()[0].clone();
    assert_eq!(reference.namespace.as_deref(), Some("team-builds"));
    assert_eq!(sim.pipelineruns_in("team-builds").await.len(), 1);
    let namespaces: kube::Api<Namespace> = kube::Api::all(sim.admin().await);
    let labelled = namespaces.get("team-builds").await.unwrap();
    assert_eq!(
        labelled.metadata.labels.unwrap()["tenant-id"],
        tenant.to_string()
    );
    assert!(
        namespaces
            .get_opt(&namespace_name(tenant))
            .await
            .unwrap()
            .is_none(),
        "the tenant's default namespace is not created"
    );

    // Another tenant naming the same namespace is refused, nothing submitted.
    let other = Uuid::new_v4();
    let (outcome, _) = run_to_end(context(BuildMethod::Kaniko, provider, other)).await;
    let text = message(&outcome);
    assert!(
        text.contains("team-builds") && text.contains("belongs to another tenant"),
        "{text}"
    );
    assert_eq!(sim.pipelineruns_in("team-builds").await.len(), 1);
}

/// `workspace_size` is the size the run's source claim asks for; without it, 1Gi.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_size_sizes_the_source_claim() {
    let sim = Sim::start(SimOptions::default()).await;
    let claim_size = |run: &Value| {
        run["spec"]["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|w| {
                w["volumeClaimTemplate"]["spec"]["resources"]["requests"]["storage"].as_str()
            })
            .map(str::to_owned)
    };
    for (size, expected) in [(Some("3Gi"), "3Gi"), (None, "1Gi")] {
        let tenant = Uuid::new_v4();
        sim.install_tasks(tenant).await;
        let mut config = sim.config();
        if let Some(size) = size {
            config["workspace_size"] = json!(size);
        }
        let (outcome, _) = run_to_end(context(
            BuildMethod::Kaniko,
            sim.provider_with(config),
            tenant,
        ))
        .await;
        assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
        let runs = sim.pipelineruns(tenant).await;
        assert_eq!(claim_size(&runs[0]).as_deref(), Some(expected), "{size:?}");
    }
}

/// `context` picks the kubeconfig context: the document's current context
/// holds a wrong token, the named one the right one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_picks_the_kubeconfig_context() {
    let sim = Sim::start(SimOptions::default()).await;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sim\n  cluster: {{server: \"{endpoint}\"}}\n\
         users:\n- name: wrong\n  user: {{token: not-the-token}}\n- name: right\n  user: {{token: \"{token}\"}}\n\
         contexts:\n- name: stale\n  context: {{cluster: sim, user: wrong}}\n- name: builds\n  context: {{cluster: sim, user: right}}\n\
         current-context: stale\n",
        endpoint = sim.handle.endpoint(),
        token = sim.handle.admin_token(),
    );
    let config = |context: Option<&str>| {
        let mut config = json!({
            "auth_method": "kubeconfig",
            "kubeconfig": kubeconfig,
            "ca_cert": sim.handle.ca_pem(),
        });
        if let Some(context) = context {
            config["context"] = json!(context);
        }
        config
    };
    let report = test_connection(&sim.provider_with(config(None)), loopback_policy()).await;
    assert!(report.reachable && !report.authenticated, "{report:?}");
    let report = test_connection(
        &sim.provider_with(config(Some("builds"))),
        loopback_policy(),
    )
    .await;
    assert!(report.authenticated, "{report:?}");
    // And a build on it runs.
    let tenant = Uuid::new_v4();
    sim.install_tasks(tenant).await;
    let (outcome, _) = run_to_end(context(
        BuildMethod::Kaniko,
        sim.provider_with(config(Some("builds"))),
        tenant,
    ))
    .await;
    assert_eq!(outcome, Outcome::Succeeded, "{}", message(&outcome));
    // A context the document does not have is refused before connecting.
    let report = test_connection(&sim.provider_with(config(Some("nope"))), loopback_policy()).await;
    let error = report.error.unwrap();
    assert!(error.contains("config.context"), "{error}");
}
