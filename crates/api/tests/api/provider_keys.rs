//! Every provider config key README "Provider config keys" documents is
//! accepted by the API, and a bad value is a 422 naming its field with
//! nothing written.

use std::collections::BTreeSet;

use imagefactory_domain::provider::KUBERNETES_KEYS;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, TestApp, TestDb, id_of};

const CERT: &str = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n";
const KUBECONFIG: &str = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: https://k8s.example.com}\nusers:\n- name: u\n  user: {token: abc}\ncontexts:\n- name: builds\n  context: {cluster: c, user: u}\ncurrent-context: builds\n";

fn token_config() -> Value {
    json!({"auth_method": "token", "endpoint": "https://k8s.example.com:6443", "token": "t"})
}

fn with(mut config: Value, key: &str, value: Value) -> Value {
    config[key] = value;
    config
}

#[tokio::test]
async fn every_documented_key_is_accepted() {
    let db = TestDb::new().await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let t = app.tenant("keys").await;
    // Tenant providers: between them every key but kubeconfig_path.
    let tenant_configs = [
        json!({
            "auth_method": "token", "endpoint": "https://k8s.example.com:6443", "token": "t",
            "ca_cert": CERT, "insecure_skip_tls_verify": false, "namespace": "team-builds",
            "storage_class": "fast-ssd", "service_account": "builder", "workspace_size": "5Gi",
            "tekton_api_version": "v1", "retention": {"keep_last": 5, "ttl_seconds": 3600},
            "tasks": "shared", "tasks_namespace": "tekton-tasks", "repair_drift": true,
            "builder_images": {"kaniko": "mirror.example/kaniko:1.23", "git_clone": "mirror.example/git:2"},
            "registry_tls_verify": false,
        }),
        json!({"auth_method": "client-cert", "apiServer": "https://k8s.example.com",
               "client_cert": CERT, "client_key": KEY}),
        json!({"auth_method": "kubeconfig", "kubeconfig": KUBECONFIG, "context": "builds"}),
    ];
    // The platform admin's provider may name a file on the server.
    let global_config = json!({"auth_method": "kubeconfig", "kubeconfig_path": "/etc/imagefactory/kubeconfig", "context": "builds"});
    let mut used = BTreeSet::new();
    for (i, config) in tenant_configs.iter().enumerate() {
        let r = app
            .post(
                "/api/v1/providers",
                &t.admin,
                json!({"name": format!("p{i}"), "provider_type": "kubernetes", "config": config}),
            )
            .await;
        r.expect(201);
        used.extend(config.as_object().unwrap().keys().cloned());
    }
    let r = app
        .post(
            "/api/v1/admin/providers",
            ADMIN_TOKEN,
            json!({"name": "g", "provider_type": "kubernetes", "config": global_config}),
        )
        .await;
    r.expect(201);
    used.extend(global_config.as_object().unwrap().keys().cloned());
    let accepted: BTreeSet<String> = KUBERNETES_KEYS.iter().map(|k| k.to_string()).collect();
    assert_eq!(used, accepted, "this test covers every accepted key");

    // What was stored reads back (secrets redacted, the rest as sent).
    let first = app.get("/api/v1/providers?limit=100", &t.admin).await;
    let items = first.json()["items"].as_array().unwrap().clone();
    let p0 = items.iter().find(|p| p["name"] == "p0").unwrap();
    let shown = app
        .get(&format!("/api/v1/providers/{}", id_of(p0)), &t.admin)
        .await;
    shown.expect(200);
    let config = &shown.json()["config"];
    assert_eq!(config["workspace_size"], "5Gi", "{config}");
    assert_eq!(config["tasks_namespace"], "tekton-tasks", "{config}");
    assert_eq!(
        config["builder_images"]["kaniko"],
        "mirror.example/kaniko:1.23"
    );
    assert_ne!(config["token"], "t", "secrets are never shown");
}

#[tokio::test]
async fn bad_values_are_refused_naming_the_field() {
    let db = TestDb::new().await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let t = app.tenant("bad-keys").await;
    let global = app.create_global_provider("g").await;
    let tenant_cases = [
        (
            with(token_config(), "workspace_size", json!("huge")),
            "config.workspace_size",
        ),
        (
            with(token_config(), "tekton_api_version", json!("v2")),
            "config.tekton_api_version",
        ),
        (
            with(token_config(), "tasks", json!("shared")),
            "config.tasks_namespace",
        ),
        (
            with(token_config(), "tasks", json!("bundled")),
            "config.tasks",
        ),
        (
            with(token_config(), "tasks_namespace", json!("Not_A_Label")),
            "config.tasks_namespace",
        ),
        (
            with(token_config(), "repair_drift", json!("yes")),
            "config.repair_drift",
        ),
        (
            with(
                token_config(),
                "builder_images",
                json!({"kubectl": "mirror.example/k:1"}),
            ),
            "config.builder_images.kubectl",
        ),
        (
            with(
                token_config(),
                "builder_images",
                json!({"kaniko": "no-registry"}),
            ),
            "config.builder_images.kaniko",
        ),
        (
            with(token_config(), "context", json!("builds")),
            "config.context",
        ),
        (
            json!({"auth_method": "kubeconfig", "kubeconfig": KUBECONFIG, "context": "other"}),
            "config.context",
        ),
        (
            with(token_config(), "namespace", json!("Bad_Ns")),
            "config.namespace",
        ),
    ];
    let before = app.snapshot().await;
    for (config, field) in tenant_cases {
        let r = app
            .post(
                "/api/v1/providers",
                &t.admin,
                json!({"name": "x", "provider_type": "kubernetes", "config": config}),
            )
            .await;
        r.expect(422);
        assert_eq!(r.fields(), vec![field], "{config}: {}", r.text);
    }
    // A global provider's builds run in each tenant's namespace: one
    // `namespace` for all is refused, on create and on update.
    let r = app
        .post(
            "/api/v1/admin/providers",
            ADMIN_TOKEN,
            json!({"name": "shared-ns", "provider_type": "kubernetes",
                   "config": with(token_config(), "namespace", json!("builds"))}),
        )
        .await;
    r.expect(422);
    assert_eq!(r.fields(), vec!["config.namespace"]);
    assert!(r.text.contains("put tenants together"), "{}", r.text);
    let r = app
        .patch(
            &format!("/api/v1/admin/providers/{global}"),
            ADMIN_TOKEN,
            json!({"config": with(token_config(), "namespace", json!("builds"))}),
        )
        .await;
    r.expect(422);
    assert_eq!(r.fields(), vec!["config.namespace"]);
    // A local provider's work directory is the server's setting.
    let r = app
        .post(
            "/api/v1/admin/providers",
            ADMIN_TOKEN,
            json!({"name": "host", "provider_type": "local", "config": {"work_dir": "/srv"}}),
        )
        .await;
    r.expect(422);
    assert_eq!(r.fields(), vec!["config.work_dir"]);
    assert!(r.text.contains("IF_LOCAL_WORKDIR"), "{}", r.text);
    assert_eq!(app.snapshot().await, before, "refusals wrote nothing");
}
