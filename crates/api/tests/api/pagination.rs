//! Every list is keyset-paginated with the builds list's shape, and a cursor
//! that is no position in the list is refused instead of giving an empty page.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, TestApp, TestDb, id_of};

/// Walk `path` two items at a time; the ids in order. Each page but the
/// last is full and says where the next one starts.
async fn walk(app: &TestApp, path: &str, token: &str) -> Vec<Uuid> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut next = format!("{path}{sep}limit=2");
    let mut seen = Vec::new();
    loop {
        let page = app.get(&next, token).await;
        page.expect(200);
        let body = page.json();
        let items = body["items"].as_array().expect("items");
        assert!(items.len() <= 2, "{path}: {body}");
        seen.extend(items.iter().map(id_of));
        match body["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(items.len(), 2, "{path}: a short page with a next_cursor");
                next = format!("{path}{sep}limit=2&cursor={c}");
            }
            None => return seen,
        }
    }
}

/// The whole list in one page, and the paged walk gives the same ids.
async fn check(app: &TestApp, path: &str, token: &str, at_least: usize) {
    let sep = if path.contains('?') { '&' } else { '?' };
    let all = app.get(&format!("{path}{sep}limit=100"), token).await;
    all.expect(200);
    let all: Vec<Uuid> = all.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(id_of)
        .collect();
    assert!(all.len() >= at_least, "{path}: {all:?}");
    assert_eq!(walk(app, path, token).await, all, "{path}");
    // A cursor that is no position in this list: 400 naming it.
    for cursor in [Uuid::now_v7(), Uuid::nil()] {
        let r = app.get(&format!("{path}{sep}cursor={cursor}"), token).await;
        r.expect(400);
        assert_eq!(r.problem(), "invalid-parameter", "{path}");
        assert_eq!(r.fields(), vec!["cursor"], "{path}");
    }
    for bad in ["limit=0", "limit=101", "cursor=x", "order=desc"] {
        app.get(&format!("{path}{sep}{bad}"), token)
            .await
            .expect(400);
    }
}

#[tokio::test]
async fn every_list_pages_and_refuses_unknown_cursors() {
    let db = TestDb::new().await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let t = app.tenant("team-pages").await;
    let other = app.tenant("team-other").await;
    let project = app.create_project(&t.admin, "p0").await;
    for i in 1..3 {
        app.create_project(&t.admin, &format!("p{i}")).await;
    }
    let provider = app.create_k8s_provider(&t.admin, "k0").await;
    app.create_k8s_provider(&t.admin, "k1").await;
    app.create_global_provider("g0").await;
    app.create_global_provider("g1").await;
    for i in 0..3 {
        app.post(
            "/api/v1/registry-credentials",
            &t.admin,
            json!({"name": format!("r{i}"), "registry": "ghcr.io", "username": "u", "password": "p"}),
        )
        .await
        .expect(201);
    }
    let mut builds = Vec::new();
    for _ in 0..3 {
        builds.push(id_of(
            &app.submit_build(&t.developer, project, provider).await,
        ));
    }
    let build = builds[0];
    for attempt in 1..4 {
        let execution = app.insert_execution(build, t.id, attempt, "failed").await;
        sqlx::query(
            "INSERT INTO build_artifacts (id, build_id, execution_id, name, value, kind)
             VALUES ($1, $2, $3, 'IMAGE_URL', 'r.example/a:1', 'image_url')",
        )
        .bind(Uuid::now_v7())
        .bind(build)
        .bind(execution)
        .execute(&app.pool)
        .await
        .unwrap();
    }

    for path in [
        "/api/v1/projects".to_owned(),
        "/api/v1/providers".to_owned(),
        "/api/v1/registry-credentials".to_owned(),
        "/api/v1/tokens".to_owned(),
        "/api/v1/builds".to_owned(),
        format!("/api/v1/builds/{build}/executions"),
        format!("/api/v1/builds/{build}/artifacts"),
    ] {
        check(&app, &path, &t.admin, 3).await;
    }
    for path in [
        "/api/v1/tenants".to_owned(),
        "/api/v1/admin/providers".to_owned(),
        format!("/api/v1/tenants/{}/tokens", t.id),
    ] {
        check(&app, &path, ADMIN_TOKEN, 2).await;
    }
    // Own providers first, then the global ones, each by name.
    let names: Vec<String> = app.get("/api/v1/providers", &t.viewer).await.json()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["k0", "k1", "g0", "g1"]);

    // Another tenant's row is no position in this tenant's list either.
    let foreign = id_of(&app.get("/api/v1/tokens", &other.admin).await.json()["items"][0]);
    let r = app
        .get(&format!("/api/v1/tokens?cursor={foreign}"), &t.admin)
        .await;
    r.expect(400);
    let r = app
        .get(
            &format!("/api/v1/builds?cursor={}", Uuid::now_v7()),
            &t.viewer,
        )
        .await;
    assert_eq!(r.fields(), vec!["cursor"]);
}
