//! The provider config parser's unit tests.

use super::*;
use crate::task_bundle::{BuilderImages, TaskMode};
use proptest::prelude::*;
use serde_json::json;

fn fields(config: Value) -> Vec<String> {
    fields_as(ProviderOwner::Global, config)
}

fn fields_as(owner: ProviderOwner, config: Value) -> Vec<String> {
    validate_provider_config(
        ProviderType::Kubernetes,
        &config,
        owner,
        &AddressPolicy::new(false),
    )
    .err()
    .map(|v| v.into_vec().into_iter().map(|e| e.field).collect())
    .unwrap_or_default()
}

fn tenant_kubeconfig(user: &str, cluster: &str) -> Value {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n{cluster}\nusers:\n- name: u\n  user:\n{user}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
    );
    json!({"auth_method": "kubeconfig", "kubeconfig": text})
}

#[test]
fn tenant_kubeconfigs_are_data_only() {
    let server = "    server: https://k8s.example.com:6443";
    let tenant = |user: &str, cluster: &str| {
        fields_as(ProviderOwner::Tenant, tenant_kubeconfig(user, cluster))
    };
    assert!(tenant("    token: abc", server).is_empty());
    assert!(
        tenant(
            "    client-certificate-data: eA==\n    client-key-data: eA==",
            &format!("{server}\n    certificate-authority-data: eA==")
        )
        .is_empty()
    );
    assert_eq!(
        tenant(
            "    exec:\n      command: /bin/sh\n      args: [-c, id]\n      apiVersion: client.authentication.k8s.io/v1",
            server
        ),
        ["config.kubeconfig.users[0].user.exec"]
    );
    assert_eq!(
        tenant("    auth-provider: {name: gcp}", server),
        ["config.kubeconfig.users[0].user.auth-provider"]
    );
    assert_eq!(
        tenant("    tokenFile: /etc/passwd", server),
        ["config.kubeconfig.users[0].user.tokenFile"]
    );
    assert_eq!(
        tenant(
            "    client-certificate: /etc/c\n    client-key: /etc/k",
            server
        ),
        [
            "config.kubeconfig.users[0].user.client-certificate",
            "config.kubeconfig.users[0].user.client-key"
        ]
    );
    assert_eq!(
        tenant(
            "    token: t",
            &format!("{server}\n    certificate-authority: /etc/ca\n    proxy-url: http://p:3128")
        ),
        [
            "config.kubeconfig.clusters[0].cluster.certificate-authority",
            "config.kubeconfig.clusters[0].cluster.proxy-url"
        ]
    );
    assert_eq!(
        tenant("    token: t", "    server: https://169.254.169.254"),
        ["config.kubeconfig.clusters[0].cluster.server"]
    );
    // The platform admin's providers may use all of it.
    let exec = tenant_kubeconfig(
        "    exec: {command: /bin/true}",
        "    server: https://127.0.0.1",
    );
    assert!(fields(exec).is_empty());
}

#[test]
fn tenant_kubeconfig_shape_and_paths() {
    let t = |c: Value| fields_as(ProviderOwner::Tenant, c);
    assert_eq!(
        t(json!({"auth_method": "kubeconfig", "kubeconfig_path": "/etc/passwd"})),
        ["config.kubeconfig_path"]
    );
    assert_eq!(
        t(json!({"auth_method": "kubeconfig", "kubeconfig": "a: [unclosed"})),
        ["config.kubeconfig"]
    );
    assert_eq!(
        t(
            json!({"auth_method": "kubeconfig", "kubeconfig": "users: []\n---\nusers:\n- name: u\n  user: {exec: {command: x}}\n"})
        ),
        ["config.kubeconfig"]
    );
    let err = validate_provider_config(
        ProviderType::Kubernetes,
        &json!({"auth_method": "kubeconfig", "kubeconfig": "root:x:0:0:root:/root:/bin/bash\n- ["}),
        ProviderOwner::Tenant,
        &AddressPolicy::new(false),
    )
    .unwrap_err();
    assert!(!format!("{err:?}").contains("root:x"), "{err:?}");
}

#[test]
fn tenant_endpoints_follow_the_address_policy() {
    let t = |e: &str| {
        fields_as(
            ProviderOwner::Tenant,
            json!({"auth_method": "token", "endpoint": e, "token": "t"}),
        )
    };
    assert_eq!(t("https://127.0.0.1:6443"), ["config.endpoint"]);
    assert_eq!(t("http://169.254.169.254"), ["config.endpoint"]);
    assert_eq!(t("https://localhost"), ["config.endpoint"]);
    assert!(t("https://k8s.example.com").is_empty());
    assert!(
        fields(json!({"auth_method": "token", "endpoint": "https://127.0.0.1", "token": "t"}))
            .is_empty()
    );
    let allowed = validate_provider_config(
        ProviderType::Kubernetes,
        &json!({"auth_method": "token", "apiServer": "https://127.0.0.1:6443", "token": "t"}),
        ProviderOwner::Tenant,
        &AddressPolicy::new(true),
    );
    assert!(allowed.is_ok());
}

#[test]
fn token_auth() {
    assert!(
        fields(json!({"auth_method": "token", "endpoint": "https://k:6443", "token": "t"}))
            .is_empty()
    );
    assert!(
        fields_as(
            ProviderOwner::Tenant,
            json!({"auth_method": "token", "apiServer": "https://k:6443", "token": "t",
        "namespace": "builds", "retention": {"keep_last": 5, "ttl_seconds": 3600}})
        )
        .is_empty()
    );
    assert_eq!(
        fields(json!({"auth_method": "token", "endpoint": "https://k"})),
        ["config.token"]
    );
    assert_eq!(
        fields(json!({"auth_method": "token", "endpoint": "k:6443", "token": "t"})),
        ["config.endpoint"]
    );
}

#[test]
fn client_cert_and_kubeconfig() {
    let cert = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n";
    let key = "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n";
    assert!(fields(json!({"auth_method": "client-cert", "endpoint": "https://k", "client_cert": cert, "client_key": key})).is_empty());
    assert_eq!(
        fields(
            json!({"auth_method": "client-cert", "endpoint": "https://k", "client_cert": "nope"})
        ),
        ["config.client_cert", "config.client_key"]
    );
    assert!(
        fields(json!({"auth_method": "kubeconfig", "kubeconfig_path": "/etc/kube/config"}))
            .is_empty()
    );
    assert_eq!(
        fields(json!({"auth_method": "kubeconfig"})),
        ["config.kubeconfig"]
    );
}

#[test]
fn unknown_fields_and_methods() {
    assert_eq!(
        fields(json!({"auth_method": "password", "endpoint": "https://k"})),
        ["config.auth_method"]
    );
    assert_eq!(
        fields(json!({"endpoint": "https://k"})),
        ["config.auth_method"]
    );
    assert_eq!(
        fields(json!({"auth_method": "token", "endpoint": "https://k", "token": "t", "tokn": "x"})),
        ["config.tokn"]
    );
    assert_eq!(fields(json!("text")), ["config"]);
    let local = |c: Value| {
        validate_provider_config(
            ProviderType::Local,
            &c,
            ProviderOwner::Tenant,
            &AddressPolicy::default(),
        )
    };
    assert!(local(json!({})).is_ok());
    assert!(local(json!({"work_dir": "rel"})).is_err());
}

#[test]
fn usable_understands_sealed_fields() {
    let sealed =
        json!({"auth_method": "token", "endpoint": "https://k", "token": {"$encrypted": "abc"}});
    assert!(is_usable_kubernetes_config(&sealed));
    assert!(!is_usable_kubernetes_config(
        &json!({"auth_method": "token", "endpoint": "https://k"})
    ));
    assert!(!is_usable_kubernetes_config(&json!({})));
}

proptest! {
    #[test]
    fn valid_token_configs_are_usable(host in "[a-z]{1,10}", port in 1u16.., token in "[A-Za-z0-9._-]{1,40}") {
        let config = json!({"auth_method": "token", "endpoint": format!("https://{host}:{port}"), "token": token});
        prop_assert!(validate_provider_config(ProviderType::Kubernetes, &config, ProviderOwner::Tenant, &AddressPolicy::default()).is_ok());
        prop_assert!(is_usable_kubernetes_config(&config));
    }
}

/// Every Kubernetes check reports, in the order the API has always
/// listed them (clients and the bad-input tests read them in order).
#[test]
fn kubernetes_violations_keep_their_order() {
    let config = json!({
        "auth_method": "token",
        "endpoint": "ftp://x",
        "token": 7,
        "client_cert": "nope",
        "client_key": "nope",
        "kubeconfig": 1,
        "kubeconfig_path": 2,
        "ca_cert": "nope",
        "insecure_skip_tls_verify": "yes",
        "namespace": "Not_A_Label",
        "storage_class": "Bad Name",
        "service_account": "Bad Name",
        "retention": {"keep_last": 20000, "other": 1},
    });
    let fields: Vec<String> = validate_provider_config(
        ProviderType::Kubernetes,
        &config,
        ProviderOwner::Global,
        &AddressPolicy::new(false),
    )
    .unwrap_err()
    .into_vec()
    .into_iter()
    .map(|e| e.field)
    .collect();
    assert_eq!(
        fields,
        [
            "config.endpoint",
            "config.token",
            "config.kubeconfig",
            "config.kubeconfig_path",
            "config.ca_cert",
            "config.client_cert",
            "config.client_key",
            "config.insecure_skip_tls_verify",
            "config.namespace",
            "config.storage_class",
            "config.service_account",
            "config.retention.keep_last",
            "config.retention.other",
            "config.token",
        ]
    );
}

fn token(extra: Value) -> Value {
    let mut config = json!({"auth_method": "token", "endpoint": "https://k:6443", "token": "t"});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

fn parse_as(owner: ProviderOwner, config: Value) -> Result<KubernetesConfig, Vec<FieldMessage>> {
    KubernetesConfig::parse(&config, owner, Some(&AddressPolicy::new(false))).map_err(|v| {
        v.into_vec()
            .into_iter()
            .map(|e| (e.field, e.message))
            .collect()
    })
}

type FieldMessage = (String, String);

fn one_violation(owner: ProviderOwner, extra: Value) -> FieldMessage {
    let errors = parse_as(owner, token(extra.clone())).unwrap_err();
    assert_eq!(errors.len(), 1, "{extra}: {errors:?}");
    errors.into_iter().next().unwrap()
}

#[test]
fn every_key_parses_into_its_typed_value() {
    let kubeconfig = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: https://k8s.example.com}\nusers:\n- name: u\n  user: {token: abc}\ncontexts:\n- name: one\n  context: {cluster: c, user: u}\n- name: two\n  context: {cluster: c, user: u}\ncurrent-context: one\n";
    let config = parse_as(
        ProviderOwner::Tenant,
        json!({
            "auth_method": "kubeconfig", "kubeconfig": kubeconfig, "context": "two",
            "ca_cert": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
            "insecure_skip_tls_verify": true, "namespace": "team-builds",
            "storage_class": "fast.ssd", "service_account": "builder",
            "workspace_size": "5Gi", "tekton_api_version": "v1beta1",
            "retention": {"keep_last": 3, "ttl_seconds": 60},
            "tasks_namespace": "tekton-tasks", "repair_drift": true,
            "builder_images": {"kaniko": "mirror.example/kaniko:1.2", "git_clone": "mirror.example/git:2"},
            "registry_tls_verify": false,
        }),
    )
    .unwrap();
    assert_eq!(
        config.auth,
        KubernetesAuth::Kubeconfig {
            source: KubeconfigSource::Inline(crate::Secret::new(kubeconfig)),
            context: Some("two".into()),
        }
    );
    assert!(config.ca_cert.unwrap().contains("CERTIFICATE"));
    assert!(config.insecure_skip_tls_verify);
    assert_eq!(config.namespace.as_deref(), Some("team-builds"));
    assert_eq!(config.storage_class.as_deref(), Some("fast.ssd"));
    assert_eq!(config.service_account.as_deref(), Some("builder"));
    assert_eq!(config.workspace_size.unwrap().as_str(), "5Gi");
    assert_eq!(config.tekton_api_version, Some(TektonApiVersion::V1beta1));
    assert_eq!(
        config.retention,
        Some(Retention {
            keep_last: Some(3),
            ttl: Some(std::time::Duration::from_secs(60)),
        })
    );
    assert_eq!(
        config.tasks,
        TaskMode::Shared {
            namespace: "tekton-tasks".into()
        }
    );
    assert!(config.repair_drift);
    assert!(!config.registry_tls_verify);
    assert_eq!(
        config
            .builder_images
            .for_task("kaniko")
            .unwrap()
            .to_string(),
        "mirror.example/kaniko:1.2"
    );
    assert_eq!(
        config
            .builder_images
            .for_task("git-clone")
            .unwrap()
            .to_string(),
        "mirror.example/git:2"
    );
    assert_eq!(config.builder_images.for_task("buildx"), None);
}

#[test]
fn defaults_when_keys_are_left_out() {
    let config = parse_as(ProviderOwner::Global, token(json!({}))).unwrap();
    assert_eq!(
        config.auth,
        KubernetesAuth::Token {
            endpoint: "https://k:6443".into(),
            token: crate::Secret::new("t"),
        }
    );
    assert_eq!(config.tasks, TaskMode::Managed);
    assert!(!config.repair_drift);
    assert!(!config.insecure_skip_tls_verify);
    assert!(
        config.registry_tls_verify,
        "registry TLS is verified by default"
    );
    assert_eq!(config.builder_images, BuilderImages::default());
    assert_eq!(
        (
            config.namespace,
            config.workspace_size,
            config.tekton_api_version,
            config.retention,
            config.service_account,
            config.storage_class,
        ),
        (None, None, None, None, None, None)
    );
}

#[test]
fn tasks_and_tasks_namespace_combine() {
    let mode = |extra: Value| parse_as(ProviderOwner::Global, token(extra)).unwrap().tasks;
    assert_eq!(mode(json!({"tasks": "managed"})), TaskMode::Managed);
    assert_eq!(mode(json!({"tasks": "unmanaged"})), TaskMode::Unmanaged);
    let shared = TaskMode::Shared {
        namespace: "tekton-tasks".into(),
    };
    assert_eq!(mode(json!({"tasks_namespace": "tekton-tasks"})), shared);
    assert_eq!(
        mode(json!({"tasks": "shared", "tasks_namespace": "tekton-tasks"})),
        shared
    );
    let bad = |extra: Value| one_violation(ProviderOwner::Global, extra);
    let (field, why) = bad(json!({"tasks": "shared"}));
    assert_eq!(field, "config.tasks_namespace");
    assert!(why.contains("is required with tasks shared"), "{why}");
    let (field, why) = bad(json!({"tasks": "unmanaged", "tasks_namespace": "x"}));
    assert_eq!(field, "config.tasks_namespace");
    assert!(why.contains("only applies to tasks shared"), "{why}");
    let (field, why) = bad(json!({"tasks": "bundled"}));
    assert_eq!(field, "config.tasks");
    assert!(why.contains("managed, shared, unmanaged"), "{why}");
    assert_eq!(
        bad(json!({"tasks_namespace": "Not A Label"})).0,
        "config.tasks_namespace"
    );
}

#[test]
fn each_bad_value_names_its_field_and_why() {
    let cases = [
        (
            json!({"workspace_size": "lots"}),
            "config.workspace_size",
            "Kubernetes quantity",
        ),
        (
            json!({"workspace_size": "0Gi"}),
            "config.workspace_size",
            "positive",
        ),
        (
            json!({"workspace_size": 5}),
            "config.workspace_size",
            "must be a string",
        ),
        (
            json!({"tekton_api_version": "v2"}),
            "config.tekton_api_version",
            "v1 or v1beta1",
        ),
        (
            json!({"repair_drift": "yes"}),
            "config.repair_drift",
            "true or false",
        ),
        (
            json!({"builder_images": ["x"]}),
            "config.builder_images",
            "keyed by Task",
        ),
        (
            json!({"builder_images": {"kubectl": "r.example/k:1"}}),
            "config.builder_images.kubectl",
            "unknown Task",
        ),
        (
            json!({"builder_images": {"kaniko": "kaniko:latest"}}),
            "config.builder_images.kaniko",
            "registry host",
        ),
        (
            json!({"builder_images": {"kaniko": 1}}),
            "config.builder_images.kaniko",
            "must be a string",
        ),
        (
            json!({"context": "other"}),
            "config.context",
            "only applies to auth_method kubeconfig",
        ),
        (
            json!({"namespace": "Bad_Ns"}),
            "config.namespace",
            "DNS label",
        ),
        (
            json!({"retention": 5}),
            "config.retention",
            "must be an object",
        ),
        (
            json!({"retention": {"ttl_seconds": 0}}),
            "config.retention.ttl_seconds",
            "ttl_seconds > 0",
        ),
    ];
    for (extra, field, why) in cases {
        let (got_field, got_why) = one_violation(ProviderOwner::Tenant, extra.clone());
        assert_eq!(got_field, field, "{extra}");
        assert!(got_why.contains(why), "{extra}: {got_why}");
    }
}

#[test]
fn namespace_is_a_tenant_providers_key() {
    let tenant = parse_as(ProviderOwner::Tenant, token(json!({"namespace": "team-a"}))).unwrap();
    assert_eq!(tenant.namespace.as_deref(), Some("team-a"));
    let (field, why) = one_violation(ProviderOwner::Global, json!({"namespace": "team-a"}));
    assert_eq!(field, "config.namespace");
    assert!(why.contains("put tenants together"), "{why}");
}

#[test]
fn context_must_name_a_context_of_the_inline_kubeconfig() {
    let kubeconfig = "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts:\n- name: one\n  context: {cluster: c, user: u}\n";
    let errors = parse_as(
        ProviderOwner::Global,
        json!({"auth_method": "kubeconfig", "kubeconfig": kubeconfig, "context": "two"}),
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].0, "config.context");
    assert!(errors[0].1.contains("it has: one"), "{errors:?}");
    // A file's contexts are checked when the file is read, at use.
    let path = parse_as(
        ProviderOwner::Global,
        json!({"auth_method": "kubeconfig", "kubeconfig_path": "/etc/kube/config", "context": "x"}),
    )
    .unwrap();
    assert!(matches!(
        path.auth,
        KubernetesAuth::Kubeconfig { context: Some(ref c), .. } if c == "x"
    ));
}

#[test]
fn at_use_the_address_policy_is_left_to_the_client() {
    // A stored tenant row pointing at loopback parses at use (the client
    // refuses the connection); server files stay refused either way.
    let config =
        json!({"auth_method": "token", "endpoint": "https://127.0.0.1:6443", "token": "t"});
    assert!(KubernetesConfig::parse(&config, ProviderOwner::Tenant, None).is_ok());
    assert!(
        KubernetesConfig::parse(
            &config,
            ProviderOwner::Tenant,
            Some(&AddressPolicy::new(false))
        )
        .is_err()
    );
    let path = json!({"auth_method": "kubeconfig", "kubeconfig_path": "/etc/kube/config"});
    let err = KubernetesConfig::parse(&path, ProviderOwner::Tenant, None).unwrap_err();
    assert_eq!(err.into_vec()[0].field, "config.kubeconfig_path");
}

#[test]
fn local_providers_take_no_keys() {
    let local = |c: Value| {
        ProviderConfig::parse(ProviderType::Local, &c, ProviderOwner::Global, None)
            .map_err(|v| v.into_vec())
    };
    assert_eq!(local(json!({})).unwrap(), ProviderConfig::Local);
    let err = local(json!({"work_dir": "/srv/builds"})).unwrap_err();
    assert_eq!(err[0].field, "config.work_dir");
    assert!(err[0].message.contains("IF_LOCAL_WORKDIR"), "{err:?}");
    let err = local(json!({"other": 1})).unwrap_err();
    assert!(err[0].message.contains("takes no config keys"), "{err:?}");
}

#[test]
fn quantities() {
    for ok in ["1Gi", "500Mi", "10G", "2.5Gi", "1073741824", "1k", "3Ei"] {
        assert_eq!(Quantity::parse(ok).unwrap().as_str(), ok);
    }
    for bad in [
        "", "Gi", "0", "0.0Gi", "-1Gi", "1.Gi", "1gi", "1GiB", "1e3", "1 Gi", ".5Gi", "100m",
    ] {
        assert!(Quantity::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn registry_tls_verify_takes_only_a_boolean() {
    for bad in [json!("false"), json!(0), json!({})] {
        let (field, message) =
            one_violation(ProviderOwner::Tenant, json!({ "registry_tls_verify": bad }));
        assert_eq!(field, "config.registry_tls_verify");
        assert_eq!(message, "must be true or false");
    }
    let on = parse_as(
        ProviderOwner::Tenant,
        token(json!({"registry_tls_verify": true})),
    )
    .unwrap();
    assert!(on.registry_tls_verify);
}
