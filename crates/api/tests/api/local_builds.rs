//! Local builds run on the server's host: only tenants the platform admin
//! opted in may submit them (issue 16, finding 3).

use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, TestApp, TestDb, id_of};

#[tokio::test]
async fn local_builds_need_the_platform_admins_opt_in() {
    let db = TestDb::new().await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let t = app.tenant("team-local").await;
    let project = app.create_project(&t.admin, "web").await;
    let kube = app.create_k8s_provider(&t.admin, "k").await;
    let global_local = app
        .post(
            "/api/v1/admin/providers",
            ADMIN_TOKEN,
            json!({"name": "host", "provider_type": "local", "config": {}}),
        )
        .await;
    global_local.expect(201);
    let global_local = id_of(&global_local.json());
    let local = |provider: Option<uuid::Uuid>| {
        json!({"project_id": project, "method": "packer", "infrastructure_type": "local",
               "infrastructure_provider_id": provider, "image": "127.0.0.1:5000/web:1",
               "config": {"packer_template": "build.pkr.hcl"}})
    };

    // Not opted in: refused for developers and tenant admins, with or
    // without a provider (even the platform's own local provider), and
    // nothing is written.
    let before = app.snapshot().await;
    for token in [&t.developer, &t.admin] {
        for provider in [None, Some(global_local)] {
            let r = app.post("/api/v1/builds", token, local(provider)).await;
            r.expect(422);
            assert_eq!(r.fields(), vec!["infrastructure_type"], "{}", r.text);
            assert!(r.text.contains("allow_local_builds"), "{}", r.text);
        }
    }
    // A tenant cannot opt itself in, nor make a local provider of its own.
    let own = app
        .patch(
            &format!("/api/v1/tenants/{}", t.id),
            &t.admin,
            json!({"allow_local_builds": true}),
        )
        .await;
    own.expect(401);
    let provider = app
        .post(
            "/api/v1/providers",
            &t.admin,
            json!({"name": "mine", "provider_type": "local", "config": {"work_dir": "/"}}),
        )
        .await;
    provider.expect(422);
    assert_eq!(provider.fields(), vec!["provider_type"]);
    assert_eq!(app.snapshot().await, before, "refusals wrote nothing");

    // Opted in by the platform admin: accepted, on no provider or the
    // platform's local one; a kubernetes provider still does not fit.
    let patched = app
        .patch(
            &format!("/api/v1/tenants/{}", t.id),
            ADMIN_TOKEN,
            json!({"allow_local_builds": true}),
        )
        .await;
    patched.expect(200);
    assert_eq!(patched.json()["allow_local_builds"], true);
    for provider in [None, Some(global_local)] {
        let r = app
            .post("/api/v1/builds", &t.developer, local(provider))
            .await;
        r.expect(201);
        assert_eq!(r.json()["infrastructure_type"], "local");
    }
    let wrong = app
        .post("/api/v1/builds", &t.developer, local(Some(kube)))
        .await;
    wrong.expect(422);
    assert_eq!(wrong.fields(), vec!["infrastructure_provider_id"]);

    // Withdrawn: refused again.
    app.patch(
        &format!("/api/v1/tenants/{}", t.id),
        ADMIN_TOKEN,
        json!({"allow_local_builds": false}),
    )
    .await
    .expect(200);
    app.post("/api/v1/builds", &t.developer, local(None))
        .await
        .expect(422);
}

#[tokio::test]
async fn the_opt_in_is_set_at_creation_and_shown_to_the_platform_admin() {
    let db = TestDb::new().await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let plain = app.create_tenant("plain").await;
    let shown = app
        .get(&format!("/api/v1/tenants/{plain}"), ADMIN_TOKEN)
        .await;
    assert_eq!(shown.json()["allow_local_builds"], false, "off by default");
    let trusted = app
        .post(
            "/api/v1/tenants",
            ADMIN_TOKEN,
            json!({"name": "trusted", "allow_local_builds": true}),
        )
        .await;
    trusted.expect(201);
    assert_eq!(trusted.json()["allow_local_builds"], true);
    let wrong = app
        .post(
            "/api/v1/tenants",
            ADMIN_TOKEN,
            json!({"name": "typed", "allow_local_builds": "yes"}),
        )
        .await;
    wrong.expect(422);
    assert_eq!(wrong.fields(), vec!["allow_local_builds"]);
}
