//! Every list is paged: `limit` (default 100, at most 1000) and a `cursor`
//! taken from the `Link: <…>; rel="next"` header; the body stays an array.

use serde_json::{Value, json};

use crate::helpers::*;

/// Follows `Link` from `path?limit=2` to the end: every page's ids.
async fn walk(app: &TestApp, path: &str, token: &str) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut next = Some(format!("{path}?limit=2"));
    while let Some(url) = next.take() {
        let res = app
            .client
            .get(app.url(&url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{url}");
        next = res.headers().get("link").map(|link| {
            let link = link.to_str().unwrap();
            assert!(link.ends_with(">; rel=\"next\""), "{link}");
            link[1..link.find('>').unwrap()].to_owned()
        });
        let items: Value = res.json().await.unwrap();
        let ids = items
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        pages.push(ids);
        assert!(pages.len() < 50, "no end to {path}");
    }
    pages
}

async fn all_ids(app: &TestApp, path: &str, token: &str) -> Vec<String> {
    let r = app.get(path, token).await;
    assert!(r.expect(200).json().is_array());
    r.json()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn every_list_pages_through_all_its_items_in_order() {
    let db = TestDb::new().await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let t = app.tenant("pages").await;
    app.tenant("pages-b").await;
    app.tenant("pages-c").await;
    for i in 0..3 {
        app.create_project(&t.admin, &format!("p{i}")).await;
        app.create_k8s_provider(&t.admin, &format!("k{i}")).await;
        app.post(
            "/api/v1/registry-credentials",
            &t.admin,
            json!({"name": format!("r{i}"), "registry": "ghcr.io", "username": "u", "password": "p"}),
        )
        .await
        .expect(201);
    }
    app.create_global_provider("g0").await;
    app.create_global_provider("g1").await;
    let tokens = format!("/api/v1/tenants/{}/tokens", t.id);
    let lists = [
        ("/api/v1/projects", t.admin.as_str(), 3),
        ("/api/v1/providers", t.admin.as_str(), 5),
        ("/api/v1/registry-credentials", t.admin.as_str(), 3),
        ("/api/v1/tokens", t.admin.as_str(), 3),
        ("/api/v1/tenants", ADMIN_TOKEN, 3),
        ("/api/v1/admin/providers", ADMIN_TOKEN, 2),
        (tokens.as_str(), ADMIN_TOKEN, 3),
    ];
    for (path, token, count) in lists {
        let all = all_ids(&app, path, token).await;
        assert_eq!(all.len(), count, "{path}");
        let pages = walk(&app, path, token).await;
        assert!(pages.iter().all(|p| p.len() <= 2), "{path}: {pages:?}");
        assert_eq!(pages.len(), count.div_ceil(2), "{path}: {pages:?}");
        assert_eq!(pages.concat(), all, "{path}");
    }
}

#[tokio::test]
async fn a_bad_limit_or_a_cursor_that_is_no_item_of_the_list_is_a_400_naming_it() {
    let db = TestDb::new().await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let t = app.tenant("cursors").await;
    let other = app.tenant("cursors-other").await;
    let mine = app.create_project(&t.admin, "mine").await;
    let theirs = app.create_project(&other.admin, "theirs").await;
    // Unknown, another tenant's (no hint that it exists), another list's.
    for cursor in [uuid::Uuid::now_v7().to_string(), theirs.to_string()] {
        let r = app
            .get(&format!("/api/v1/projects?cursor={cursor}"), &t.viewer)
            .await;
        r.expect(400);
        assert_eq!(r.fields(), ["cursor"], "{}", r.text);
    }
    let r = app
        .get(
            &format!("/api/v1/registry-credentials?cursor={mine}"),
            &t.viewer,
        )
        .await;
    r.expect(400);
    assert_eq!(r.fields(), ["cursor"]);
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("cursor=nope", "cursor"),
        ("page=2", "page"),
    ] {
        let r = app
            .get(&format!("/api/v1/projects?{query}"), &t.viewer)
            .await;
        r.expect(400);
        assert_eq!(r.fields(), [field], "{query}: {}", r.text);
    }
    // Builds (paged with next_cursor in the body) refuse them the same way.
    let (_, build) = app.tenant_with_build("cursors-builds").await;
    for cursor in [uuid::Uuid::now_v7(), build] {
        let r = app
            .get(&format!("/api/v1/builds?cursor={cursor}"), &t.viewer)
            .await;
        r.expect(400);
        assert_eq!(r.fields(), ["cursor"], "{}", r.text);
    }
    // The last page has no Link.
    let res = app
        .client
        .get(app.url("/api/v1/projects?limit=1"))
        .bearer_auth(&t.viewer)
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("link").is_none());
}
