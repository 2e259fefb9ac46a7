//! Tenants are walls: tenant B gets 404 for each of tenant A's resources
//! and cannot build on A's project, provider or credential.

use serde_json::json;

use crate::helpers::{TestApp, TestDb, id_of};

#[tokio::test]
async fn another_tenants_resources_are_not_found() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let a = app.tenant("tenant-a").await;
    let b = app.tenant("tenant-b").await;

    let project = app.create_project(&a.admin, "secret-project").await;
    let provider = app.create_k8s_provider(&a.admin, "a-cluster").await;
    let cred = id_of(
        &app.post(
            "/api/v1/registry-credentials",
            &a.admin,
            json!({"name": "a-reg", "registry": "ghcr.io", "username": "a", "password": "a-pass"}),
        )
        .await
        .json(),
    );
    let build = id_of(&app.submit_build(&a.developer, project, provider).await);
    let execution = app.insert_execution(build, a.id, 1, "running").await;
    app.insert_log(build, execution, 0, "tenant a's log line")
        .await;
    let a_token = id_of(&app.get("/api/v1/tokens", &a.admin).await.json()["items"][0]);

    let resources = [
        format!("/api/v1/projects/{project}"),
        format!("/api/v1/providers/{provider}"),
        format!("/api/v1/registry-credentials/{cred}"),
        format!("/api/v1/builds/{build}"),
    ];
    for path in &resources {
        for r in [
            app.get(path, &b.admin).await,
            app.patch(path, &b.admin, json!({})).await,
            app.delete(path, &b.admin).await,
        ] {
            if path.contains("/builds/") && r.status == 405 {
                continue; // builds have no PATCH/DELETE at all
            }
            assert_eq!(r.status, 404, "{path}: {}", r.text);
            assert_eq!(r.problem(), "not-found");
            assert!(
                !r.text.contains("secret-project") && !r.text.contains("a-cluster"),
                "{}",
                r.text
            );
        }
    }
    for sub in ["executions", "logs", "logs?follow=true", "artifacts"] {
        let r = app
            .get(&format!("/api/v1/builds/{build}/{sub}"), &b.admin)
            .await;
        assert_eq!(r.status, 404, "{sub}: {}", r.text);
        assert!(!r.text.contains("tenant a's log line"));
    }
    for action in ["cancel", "retry"] {
        let r = app
            .post_empty(&format!("/api/v1/builds/{build}/{action}"), &b.admin)
            .await;
        assert_eq!(r.status, 404, "{action}: {}", r.text);
    }
    let r = app
        .delete(&format!("/api/v1/tokens/{a_token}"), &b.admin)
        .await;
    assert_eq!(r.status, 404, "{}", r.text);

    // Listings show only B's own things.
    for list in [
        "/api/v1/projects",
        "/api/v1/providers",
        "/api/v1/registry-credentials",
        "/api/v1/builds",
        "/api/v1/tokens",
    ] {
        let r = app.get(list, &b.admin).await;
        r.expect(200);
        for id in [project, provider, cred, build, a_token] {
            assert!(!r.text.contains(&id.to_string()), "{list} shows A's {id}");
        }
    }

    // B cannot build on A's provider, project or credential.
    let b_project = app.create_project(&b.admin, "b-project").await;
    let on_a_provider = app
        .post(
            "/api/v1/builds",
            &b.developer,
            json!({"project_id": b_project, "method": "docker", "infrastructure_provider_id": provider,
                   "image": "registry.example.com/b/app:1"}),
        )
        .await;
    on_a_provider.expect(422);
    assert_eq!(on_a_provider.fields(), ["infrastructure_provider_id"]);
    assert!(!on_a_provider.text.contains("a-cluster"));
    let b_provider = app.create_k8s_provider(&b.admin, "b-cluster").await;
    let on_a_project = app
        .submit_build_raw(&b.developer, project, b_provider, None)
        .await;
    on_a_project.expect(422);
    assert_eq!(on_a_project.fields(), ["project_id"]);
    let with_a_cred = app
        .submit_build_raw(&b.developer, b_project, b_provider, Some(cred))
        .await;
    with_a_cred.expect(422);
    assert_eq!(with_a_cred.fields(), ["registry_credential_id"]);

    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM builds WHERE tenant_id = $1")
        .bind(b.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

/// Each tenant builds in namespace `image-factory-<first 8 hex digits of its
/// id>`: tenants created together must not share that prefix (time-ordered
/// ids did: the prefix was their creation time).
#[tokio::test]
async fn tenants_created_together_get_distinct_namespace_prefixes() {
    let db = TestDb::new().await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let mut prefixes = std::collections::BTreeSet::new();
    for i in 0..20 {
        let id = app.create_tenant(&format!("burst-{i}")).await;
        assert!(
            prefixes.insert(id.simple().to_string()[..8].to_owned()),
            "tenant {id} shares its namespace prefix with an earlier one"
        );
    }
}
