//! The main user journey: tenant → token → project → provider → build →
//! list/get → cancel; retry; default provider; roles.

use chrono::Utc;
use imagefactory_domain::Role;
use imagefactory_store::tokens;
use serde_json::json;
use sqlx::postgres::PgListener;
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, TestApp, TestDb, id_of};

#[tokio::test]
async fn tenant_to_build_to_cancel() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let mut listener = PgListener::connect_with(&pool).await.unwrap();
    listener
        .listen_all(["build_queued", "build_cancel"])
        .await
        .unwrap();

    // Tenant and a token (shown once, stored hashed with its prefix).
    let tenant = app.create_tenant("team-a").await;
    let created = app
        .post(
            &format!("/api/v1/tenants/{tenant}/tokens"),
            ADMIN_TOKEN,
            json!({"name": "ci", "role": "admin"}),
        )
        .await;
    created.expect(201);
    let token = created.json()["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with(created.json()["prefix"].as_str().unwrap()));
    let listed = app
        .get(&format!("/api/v1/tenants/{tenant}/tokens"), ADMIN_TOKEN)
        .await;
    assert!(!listed.text.contains(&token), "token listed in clear");
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM api_tokens")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 32);

    let project = app.create_project(&token, "web").await;
    let provider = app.create_k8s_provider(&token, "cluster-a").await;
    let cred = app
        .post(
            "/api/v1/registry-credentials",
            &token,
            json!({"name": "ghcr", "registry": "ghcr.io", "username": "bot", "password": "pw-1"}),
        )
        .await;
    cred.expect(201);

    // Submit: queued, config stored, dispatchers notified.
    let submitted = app
        .post(
            "/api/v1/builds",
            &token,
            json!({"project_id": project, "method": "buildx", "infrastructure_provider_id": provider,
                   "registry_credential_id": id_of(&cred.json()), "git_ref": "feature/x",
                   "image": "ghcr.io/team/web:1.0", "priority": 5,
                   "config": {"dockerfile": "docker/Dockerfile", "platforms": ["linux/amd64", "linux/arm64/v8"],
                              "build_args": {"VERSION": "1.0"}}}),
        )
        .await;
    submitted.expect(201);
    let build = submitted.json();
    let build_id = id_of(&build);
    assert_eq!(build["status"], "queued");
    assert_eq!(build["git_url"], "https://git.example.com/team/app.git");
    assert_eq!(build["git_ref"], "feature/x");
    assert_eq!(
        build["config"]["platforms"],
        json!(["linux/amd64", "linux/arm64/v8"])
    );
    // The wake-up follows the commit, outside the build's transaction.
    let note = tokio::time::timeout(std::time::Duration::from_secs(20), listener.recv())
        .await
        .expect("no build_queued notification after a submit")
        .unwrap();
    assert_eq!(
        (note.channel(), note.payload()),
        ("build_queued", imagefactory_store::queue::QUEUED_PAYLOAD)
    );

    // Get and list.
    let got = app.get(&format!("/api/v1/builds/{build_id}"), &token).await;
    got.expect(200);
    assert_eq!(got.json()["config"]["build_args"]["VERSION"], "1.0");
    assert_eq!(got.json()["priority"], 5);
    let list = app
        .get(
            &format!("/api/v1/builds?project_id={project}&status=queued"),
            &token,
        )
        .await;
    list.expect(200);
    assert_eq!(list.json()["items"].as_array().unwrap().len(), 1);
    let none = app.get("/api/v1/builds?status=succeeded", &token).await;
    assert_eq!(none.json()["items"].as_array().unwrap().len(), 0);

    // Cancel a queued build: at once, and final.
    let cancelled = app
        .post_empty(&format!("/api/v1/builds/{build_id}/cancel"), &token)
        .await;
    cancelled.expect(200);
    assert_eq!(cancelled.json()["status"], "cancelled");
    assert!(cancelled.json()["finished_at"].is_string());
    let again = app
        .post_empty(&format!("/api/v1/builds/{build_id}/cancel"), &token)
        .await;
    again.expect(409);
    assert_eq!(again.problem(), "invalid-state");

    // Cancel a running build: requested, the dispatcher is told.
    let running = app.submit_build(&token, project, provider).await;
    let running_id = id_of(&running);
    let note = listener.recv().await.unwrap();
    assert_eq!(note.channel(), "build_queued");
    app.set_status(running_id, "running").await;
    let requested = app
        .post_empty(&format!("/api/v1/builds/{running_id}/cancel"), &token)
        .await;
    requested.expect(202);
    assert_eq!(requested.json()["status"], "running");
    assert!(requested.json()["cancel_requested_at"].is_string());
    let note = listener.recv().await.unwrap();
    assert_eq!(
        (note.channel(), note.payload()),
        ("build_cancel", running_id.to_string().as_str())
    );
}

#[tokio::test]
async fn retry_queues_a_new_attempt_and_keeps_history() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let (t, build) = app.tenant_with_build("team-r").await;

    // Queued and succeeded builds cannot be retried.
    let early = app
        .post_empty(&format!("/api/v1/builds/{build}/retry"), &t.developer)
        .await;
    early.expect(409);
    assert_eq!(early.problem(), "invalid-state");

    let execution = app.insert_execution(build, t.id, 1, "failed").await;
    app.insert_log(build, execution, 0, "attempt one failed")
        .await;
    sqlx::query("UPDATE builds SET status = 'failed', error_message = 'exit 1', max_attempts = 1 WHERE id = $1")
        .bind(build)
        .execute(&pool)
        .await
        .unwrap();

    let retried = app
        .post_empty(&format!("/api/v1/builds/{build}/retry"), &t.developer)
        .await;
    retried.expect(200);
    let body = retried.json();
    assert_eq!(body["status"], "queued");
    assert_eq!(body["attempts"], 1, "attempt counter goes on");
    assert!(body["error_message"].is_null());
    let (max_attempts, before_retry): (i32, i32) =
        sqlx::query_as("SELECT max_attempts, attempts_before_retry FROM builds WHERE id = $1")
            .bind(build)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        (max_attempts, before_retry),
        (1, 1),
        "the retry budget is per round: counted from the attempts made before this retry"
    );
    let executions = app
        .get(&format!("/api/v1/builds/{build}/executions"), &t.viewer)
        .await;
    assert_eq!(
        executions.json()["items"].as_array().unwrap().len(),
        1,
        "history kept"
    );
    let logs = app
        .get(&format!("/api/v1/builds/{build}/logs"), &t.viewer)
        .await;
    assert_eq!(logs.text, "attempt one failed\n");

    app.set_status(build, "succeeded").await;
    let done = app
        .post_empty(&format!("/api/v1/builds/{build}/retry"), &t.developer)
        .await;
    done.expect(409);
}

#[tokio::test]
async fn kubernetes_builds_default_to_a_usable_global_provider() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let t = app.tenant("team-d").await;
    let project = app.create_project(&t.admin, "web").await;
    let body = json!({"project_id": project, "method": "kaniko",
                      "config": {"metadata": {"registry_repo": "registry.example.com/team/web"}}});

    let refused = app.post("/api/v1/builds", &t.developer, body.clone()).await;
    refused.expect(422);
    assert_eq!(refused.problem(), "validation");
    assert_eq!(refused.fields(), ["infrastructure_provider_id"]);

    // A disabled global provider is not usable.
    let disabled = app.create_global_provider("old").await;
    app.patch(
        &format!("/api/v1/admin/providers/{disabled}"),
        ADMIN_TOKEN,
        json!({"status": "disabled"}),
    )
    .await
    .expect(200);
    app.post("/api/v1/builds", &t.developer, body.clone())
        .await
        .expect(422);

    let global = app.create_global_provider("shared").await;
    let accepted = app.post("/api/v1/builds", &t.developer, body).await;
    accepted.expect(201);
    assert_eq!(
        accepted.json()["infrastructure_provider_id"],
        global.to_string()
    );
    assert_eq!(
        accepted.json()["image"],
        "registry.example.com/team/web:latest"
    );

    // Tenants see global providers, redacted, but cannot change them.
    let seen = app
        .get(&format!("/api/v1/providers/{global}"), &t.viewer)
        .await;
    seen.expect(200);
    assert_eq!(seen.json()["config"]["token"], json!({"set": true}));
    let change = app
        .patch(
            &format!("/api/v1/providers/{global}"),
            &t.admin,
            json!({"tekton_enabled": false}),
        )
        .await;
    change.expect(404);

    // A local build needs no provider, only the platform admin's opt-in.
    app.allow_local_builds(t.id).await;
    let local = app
        .post(
            "/api/v1/builds",
            &t.developer,
            json!({"project_id": project, "method": "docker", "infrastructure_type": "local", "image": "127.0.0.1:5000/web:dev"}),
        )
        .await;
    local.expect(201);
    assert!(local.json()["infrastructure_provider_id"].is_null());
}

#[tokio::test]
async fn roles_limit_what_a_token_may_do() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let t = app.tenant("team-roles").await;
    let project = app.create_project(&t.admin, "web").await;
    let provider = app.create_k8s_provider(&t.admin, "k").await;

    // Developer: builds yes, projects no.
    let build = id_of(&app.submit_build(&t.developer, project, provider).await);
    let denied = app
        .post(
            "/api/v1/projects",
            &t.developer,
            json!({"name": "x", "git_url": "https://g.example.com/a/b"}),
        )
        .await;
    denied.expect(403);
    assert_eq!(denied.problem(), "forbidden");

    // Viewer: reads only.
    app.get(&format!("/api/v1/builds/{build}"), &t.viewer)
        .await
        .expect(200);
    let cancel = app
        .post_empty(&format!("/api/v1/builds/{build}/cancel"), &t.viewer)
        .await;
    cancel.expect(403);

    // Tenant admins manage their own tokens; a revoked token stops working.
    let created = app
        .post(
            "/api/v1/tokens",
            &t.admin,
            json!({"name": "temp", "role": "viewer"}),
        )
        .await;
    created.expect(201);
    let temp = created.json()["token"].as_str().unwrap().to_owned();
    let temp_id = id_of(&created.json());
    app.get("/api/v1/projects", &temp).await.expect(200);
    app.delete(&format!("/api/v1/tokens/{temp_id}"), &t.admin)
        .await
        .expect(204);
    let revoked = app.get("/api/v1/projects", &temp).await;
    revoked.expect(401);
    assert_eq!(revoked.problem(), "unauthorized");

    // An expired token stops working too, though it was verified (and
    // cached) while valid.
    let expires_at = Utc::now() + chrono::Duration::seconds(3);
    let (_, short) = tokens::create(&pool, t.id, "short", Role::Viewer, Some(expires_at))
        .await
        .unwrap();
    app.get("/api/v1/projects", &short).await.expect(200);
    let left = (expires_at - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + std::time::Duration::from_millis(50)).await;
    app.get("/api/v1/projects", &short).await.expect(401);
    // A token with a valid prefix but the wrong secret is refused.
    let forged = format!("{}_{}", &t.viewer[..16], "0".repeat(48));
    app.get("/api/v1/projects", &forged).await.expect(401);

    // The admin token is not a tenant token and vice versa.
    app.get("/api/v1/projects", ADMIN_TOKEN).await.expect(401);
    app.get("/api/v1/tenants", &t.admin).await.expect(401);
}

#[tokio::test]
async fn builds_page_newest_first() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let t = app.tenant("team-p").await;
    let project = app.create_project(&t.admin, "web").await;
    let provider = app.create_k8s_provider(&t.admin, "k").await;
    let mut ids: Vec<Uuid> = Vec::new();
    for _ in 0..5 {
        ids.push(id_of(
            &app.submit_build(&t.developer, project, provider).await,
        ));
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut path = "/api/v1/builds?limit=2".to_owned();
    loop {
        let page = app.get(&path, &t.viewer).await;
        page.expect(200);
        let body = page.json();
        seen.extend(body["items"].as_array().unwrap().iter().map(id_of));
        match body["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/builds?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn crud_updates_and_deletes() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let t = app.tenant("team-crud").await;
    let project = app.create_project(&t.admin, "web").await;
    let patched = app
        .patch(
            &format!("/api/v1/projects/{project}"),
            &t.admin,
            json!({"default_branch": "develop", "git_credential": {"username": "u", "password": "p"}}),
        )
        .await;
    patched.expect(200);
    assert_eq!(patched.json()["default_branch"], "develop");
    assert_eq!(
        patched.json()["git_credential"],
        json!({"username": "u", "password_set": true})
    );
    let removed = app
        .patch(
            &format!("/api/v1/projects/{project}"),
            &t.admin,
            json!({"git_credential": null}),
        )
        .await;
    assert!(removed.json()["git_credential"].is_null());

    let provider = app.create_k8s_provider(&t.admin, "k").await;
    // A tenant's provider cannot name a file on the server.
    let refused = app
        .patch(
            &format!("/api/v1/providers/{provider}"),
            &t.admin,
            json!({"config": {"auth_method": "kubeconfig", "kubeconfig_path": "/etc/kube/config"}}),
        )
        .await;
    refused.expect(422);
    assert_eq!(
        refused.json()["errors"][0]["field"],
        "config.kubeconfig_path"
    );
    let kubeconfig = "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://k8s.example.com:6443'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n";
    let p = app
        .patch(
            &format!("/api/v1/providers/{provider}"),
            &t.admin,
            json!({"config": {"auth_method": "kubeconfig", "kubeconfig": kubeconfig}, "max_concurrent_builds": 3}),
        )
        .await;
    p.expect(200);
    assert_eq!(p.json()["config_version"], 2);
    assert_eq!(p.json()["max_concurrent_builds"], 3);
    let same = app
        .patch(
            &format!("/api/v1/providers/{provider}"),
            &t.admin,
            json!({"tekton_enabled": false}),
        )
        .await;
    assert_eq!(
        same.json()["config_version"],
        2,
        "only config changes bump the version"
    );

    // A provider used by a build cannot be deleted; an unused one can.
    app.submit_build(&t.developer, project, provider).await;
    let in_use = app
        .delete(&format!("/api/v1/providers/{provider}"), &t.admin)
        .await;
    in_use.expect(409);
    assert_eq!(in_use.problem(), "conflict");
    let spare = app.create_k8s_provider(&t.admin, "spare").await;
    app.delete(&format!("/api/v1/providers/{spare}"), &t.admin)
        .await
        .expect(204);
    app.get(&format!("/api/v1/providers/{spare}"), &t.admin)
        .await
        .expect(404);

    // Deleting the project removes its builds.
    app.delete(&format!("/api/v1/projects/{project}"), &t.admin)
        .await
        .expect(204);
    let builds = app.get("/api/v1/builds", &t.admin).await;
    assert_eq!(builds.json()["items"].as_array().unwrap().len(), 0);

    let tenant = app
        .patch(
            &format!("/api/v1/tenants/{}", t.id),
            ADMIN_TOKEN,
            json!({"display_name": "Team CRUD"}),
        )
        .await;
    assert_eq!(tenant.json()["display_name"], "Team CRUD");
    app.delete(&format!("/api/v1/tenants/{}", t.id), ADMIN_TOKEN)
        .await
        .expect(204);
    app.get("/api/v1/projects", &t.admin).await.expect(401);
}

#[tokio::test]
async fn health_and_readiness() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let r = app
        .send(
            reqwest::Method::GET,
            "/healthz",
            None,
            crate::helpers::Body::None,
        )
        .await;
    r.expect(200);
    let r = app
        .send(
            reqwest::Method::GET,
            "/readyz",
            None,
            crate::helpers::Body::None,
        )
        .await;
    r.expect(200);
    assert_eq!(r.json()["status"], "ready");
    // With the database gone, readiness says so with the cause.
    pool.close().await;
    let r = app
        .send(
            reqwest::Method::GET,
            "/readyz",
            None,
            crate::helpers::Body::None,
        )
        .await;
    r.expect(503);
    assert_eq!(r.problem(), "unavailable");
    assert!(r.json()["detail"].as_str().unwrap().contains("database"));
    // Any request that needs the database says the same, not a bare 500.
    let r = app
        .get(
            "/api/v1/projects",
            "ift_000000000000_000000000000000000000000000000000000000000000000",
        )
        .await;
    r.expect(503);
    assert_eq!(r.problem(), "unavailable");
}
