//! Secrets are sealed at rest and never come back out of the API.

use imagefactory_store::providers;
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, Resp, TestApp, TestDb, id_of};

const PROVIDER_TOKEN: &str = "provider-token-Zq81";
const CLIENT_KEY: &str =
    "-----BEGIN PRIVATE KEY-----\nclient-key-Xy55\n-----END PRIVATE KEY-----\n";
const KUBECONFIG: &str =
    "apiVersion: v1\nkind: Config\nusers: [{name: u, user: {token: kubeconfig-Ab12}}]\n";
const GLOBAL_TOKEN: &str = "global-token-Pp03";
const REGISTRY_PASSWORD: &str = "registry-pass-Rr77";
const GIT_PASSWORD: &str = "git-pass-Gg42";

const SECRETS: &[&str] = &[
    PROVIDER_TOKEN,
    "client-key-Xy55",
    "kubeconfig-Ab12",
    GLOBAL_TOKEN,
    REGISTRY_PASSWORD,
    GIT_PASSWORD,
];

fn assert_clean(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} contains {secret}: {text}");
        let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&hex), "{what} contains {secret} as hex");
    }
}

#[tokio::test]
async fn secrets_are_sealed_and_never_returned() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let t = app.tenant("team-s").await;
    let cert = "-----BEGIN CERTIFICATE-----\nc\n-----END CERTIFICATE-----\n";
    let mut responses: Vec<(String, Resp)> = Vec::new();

    let token_provider = app
        .post(
            "/api/v1/providers",
            &t.admin,
            json!({"name": "tok", "provider_type": "kubernetes",
                   "config": {"auth_method": "token", "endpoint": "https://k", "token": PROVIDER_TOKEN, "ca_cert": cert}}),
        )
        .await;
    token_provider.expect(201);
    assert_eq!(
        token_provider.json()["config"]["token"],
        json!({"set": true})
    );
    assert_eq!(
        token_provider.json()["config"]["ca_cert"],
        cert,
        "non-secret fields are shown"
    );
    let token_provider_id = id_of(&token_provider.json());
    responses.push(("create token provider".into(), token_provider));
    let cert_provider = app
        .post(
            "/api/v1/providers",
            &t.admin,
            json!({"name": "cert", "provider_type": "kubernetes",
                   "config": {"auth_method": "client-cert", "endpoint": "https://k", "client_cert": cert, "client_key": CLIENT_KEY}}),
        )
        .await;
    cert_provider.expect(201);
    responses.push(("create cert provider".into(), cert_provider));
    let kube_provider = app
        .post(
            "/api/v1/providers",
            &t.admin,
            json!({"name": "kube", "provider_type": "kubernetes", "config": {"auth_method": "kubeconfig", "kubeconfig": KUBECONFIG}}),
        )
        .await;
    kube_provider.expect(201);
    let kube_id = id_of(&kube_provider.json());
    responses.push(("create kubeconfig provider".into(), kube_provider));
    let global = app
        .post(
            "/api/v1/admin/providers",
            ADMIN_TOKEN,
            json!({"name": "g", "provider_type": "kubernetes", "config": {"auth_method": "token", "endpoint": "https://g", "token": GLOBAL_TOKEN}}),
        )
        .await;
    global.expect(201);
    responses.push(("create global provider".into(), global));
    let cred = app
        .post(
            "/api/v1/registry-credentials",
            &t.admin,
            json!({"name": "reg", "registry": "127.0.0.1:5000", "username": "bot", "password": REGISTRY_PASSWORD}),
        )
        .await;
    cred.expect(201);
    assert_eq!(cred.json()["password_set"], true);
    let cred_id = id_of(&cred.json());
    responses.push(("create registry credential".into(), cred));
    let project = app
        .post(
            "/api/v1/projects",
            &t.admin,
            json!({"name": "web", "git_url": "https://git.example.com/a/b", "git_credential": {"username": "me", "password": GIT_PASSWORD}}),
        )
        .await;
    project.expect(201);
    let project_id = id_of(&project.json());
    responses.push(("create project".into(), project));
    let build = app
        .submit_build_raw(&t.developer, project_id, token_provider_id, Some(cred_id))
        .await;
    build.expect(201);
    let build_id = id_of(&build.json());
    responses.push(("submit build".into(), build));
    let patched = app
        .patch(
            &format!("/api/v1/registry-credentials/{cred_id}"),
            &t.admin,
            json!({"password": format!("{REGISTRY_PASSWORD}-2")}),
        )
        .await;
    patched.expect(200);
    assert_eq!(patched.json()["version"], 2);
    responses.push(("patch registry credential".into(), patched));

    for path in [
        "/api/v1/providers".to_owned(),
        format!("/api/v1/providers/{token_provider_id}"),
        format!("/api/v1/providers/{kube_id}"),
        "/api/v1/registry-credentials".to_owned(),
        format!("/api/v1/registry-credentials/{cred_id}"),
        "/api/v1/projects".to_owned(),
        format!("/api/v1/projects/{project_id}"),
        "/api/v1/builds".to_owned(),
        format!("/api/v1/builds/{build_id}"),
    ] {
        responses.push((path.clone(), app.get(&path, &t.viewer).await));
    }
    responses.push((
        "admin providers".into(),
        app.get("/api/v1/admin/providers", ADMIN_TOKEN).await,
    ));
    for (what, r) in &responses {
        assert!(r.status < 300, "{what}: {}", r.text);
        assert_clean(what, &r.text);
    }

    // At rest: nowhere in any table, as text or as bytes.
    assert_clean("database", &app.dump().await);

    // ...but sealed, not dropped: the store opens them with the key.
    let provider = providers::get_visible(&pool, t.id, token_provider_id)
        .await
        .unwrap();
    let opened = providers::open_config(&app.cipher, &provider).unwrap();
    assert_eq!(opened["token"], PROVIDER_TOKEN);
    let kube = providers::get_visible(&pool, t.id, kube_id).await.unwrap();
    assert_eq!(
        providers::open_config(&app.cipher, &kube).unwrap()["kubeconfig"],
        KUBECONFIG
    );
    let password =
        imagefactory_store::registry_credentials::password(&pool, &app.cipher, t.id, cred_id)
            .await
            .unwrap();
    assert_eq!(password.expose(), format!("{REGISTRY_PASSWORD}-2"));
    let git = imagefactory_store::projects::git_credential(&pool, &app.cipher, t.id, project_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(git.password.expose(), GIT_PASSWORD);
}

#[tokio::test]
async fn provider_updates_keep_omitted_secrets_and_bump_the_version() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let t = app.tenant("team-u").await;
    let created = app
        .post(
            "/api/v1/providers",
            &t.admin,
            json!({"name": "k", "provider_type": "kubernetes",
                   "config": {"auth_method": "token", "endpoint": "https://old", "token": PROVIDER_TOKEN}}),
        )
        .await;
    created.expect(201);
    let id = id_of(&created.json());

    // Same auth method, token left out: kept.
    let moved = app
        .patch(
            &format!("/api/v1/providers/{id}"),
            &t.admin,
            json!({"config": {"auth_method": "token", "endpoint": "https://new", "namespace": "builds"}}),
        )
        .await;
    moved.expect(200);
    assert_eq!(moved.json()["config_version"], 2);
    assert_eq!(moved.json()["config"]["endpoint"], "https://new");
    assert_eq!(moved.json()["config"]["token"], json!({"set": true}));
    assert_clean("patch response", &moved.text);
    let stored = providers::get_visible(&pool, t.id, id).await.unwrap();
    assert_eq!(
        providers::open_config(&app.cipher, &stored).unwrap()["token"],
        PROVIDER_TOKEN
    );

    // A new auth method needs its own secrets: nothing is carried across.
    let switched = app
        .patch(
            &format!("/api/v1/providers/{id}"),
            &t.admin,
            json!({"config": {"auth_method": "client-cert", "endpoint": "https://new"}}),
        )
        .await;
    switched.expect(422);
    assert_eq!(
        switched.fields(),
        ["config.client_cert", "config.client_key"]
    );
    let unchanged = app.get(&format!("/api/v1/providers/{id}"), &t.admin).await;
    assert_eq!(unchanged.json()["config_version"], 2);
    assert_clean("database", &app.dump().await);
}
