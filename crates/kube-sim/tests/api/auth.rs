use crate::*;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube_sim::{AccessRule, Credentials};

#[tokio::test]
async fn unknown_or_missing_credentials_are_401() {
    let (sim, _client) = start().await;
    let cfg = sim
        .kube_config_for(Credentials::Token("not-a-token"))
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let e = api_error(cms.list(&ListParams::default()).await);
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (401, "Unauthorized", "Unauthorized")
    );

    let mut cfg = sim.kube_config().await.unwrap();
    cfg.auth_info = Default::default();
    let anonymous = kube::Client::try_from(cfg).unwrap();
    let e = api_error(
        Api::<ConfigMap>::namespaced(anonymous, "default")
            .get("x")
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (401, "Unauthorized"));
}

#[tokio::test]
async fn token_user_rules_and_403_message() {
    let (sim, admin) = start().await;
    namespace(&admin, "ci").await;
    let token = sim.add_token_user(
        "builder",
        &[],
        vec![AccessRule::new(
            &["ci"],
            &["get", "list", "create"],
            &["pipelineruns"],
        )],
    );
    let client = kube::Client::try_from(
        sim.kube_config_for(Credentials::Token(&token))
            .await
            .unwrap(),
    )
    .unwrap();
    let prs = pipelineruns(&client, "ci");
    prs.create(&PostParams::default(), &pipelinerun("x"))
        .await
        .unwrap();
    prs.get("x").await.unwrap();

    let e = api_error(pipelineruns(&client, "default").get("x").await);
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "pipelineruns.tekton.dev \"x\" is forbidden: User \"builder\" cannot get resource \"pipelineruns\" in API group \"tekton.dev\" in the namespace \"default\""
    );
    let e = api_error(prs.delete("x", &Default::default()).await);
    assert_eq!(e.code, 403);
    let e = api_error(
        Api::<ConfigMap>::namespaced(client.clone(), "ci")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(
        e.message,
        "configmaps is forbidden: User \"builder\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"ci\""
    );
}

#[tokio::test]
async fn client_certificate_users() {
    let (sim, admin) = start().await;
    namespace(&admin, "ci").await;
    // The admin certificate (O=system:masters) can do anything.
    let cfg = sim
        .kube_config_for(Credentials::ClientCert(sim.admin_cert()))
        .await
        .unwrap();
    let as_admin = kube::Client::try_from(cfg).unwrap();
    Api::<ConfigMap>::namespaced(as_admin, "default")
        .list(&ListParams::default())
        .await
        .unwrap();

    let cert = sim
        .add_cert_user(
            "alice",
            &["devs"],
            vec![AccessRule::new(&["ci"], &["list"], &["configmaps"])],
        )
        .unwrap();
    let alice = kube::Client::try_from(
        sim.kube_config_for(Credentials::ClientCert(&cert))
            .await
            .unwrap(),
    )
    .unwrap();
    Api::<ConfigMap>::namespaced(alice.clone(), "ci")
        .list(&ListParams::default())
        .await
        .unwrap();
    let e = api_error(
        Api::<ConfigMap>::namespaced(alice, "default")
            .list(&ListParams::default())
            .await,
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert!(e.message.contains("User \"alice\""), "{}", e.message);
}
