//! The database unavailable: stopped, restarting, or no connection free in
//! the pool. Requests get 503 problem+json with `Retry-After` within the
//! pool's acquire timeout (never a hang, never a 500 or 401), and the API
//! recovers by itself once the database is back.

use std::time::Duration;

use imagefactory_api::DATABASE_RETRY_AFTER_SECONDS;
use imagefactory_test_support::PgServer;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{Body, TestApp, TestDb};

/// Only guards against a hang; nothing asserts how long a request takes.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// A raw response: status, `Retry-After`, content type and body.
async fn raw(app: &TestApp, method: Method, path: &str, token: &str, body: Body) -> Raw {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Body::Json(v) = body {
        request = request.json(&v);
    }
    let response = tokio::time::timeout(HANG_GUARD, request.send())
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer (hang)"))
        .unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Raw {
        status: response.status().as_u16(),
        retry_after: header("retry-after"),
        content_type: header("content-type").unwrap_or_default(),
        text: response.text().await.unwrap(),
    }
}

#[derive(Debug)]
struct Raw {
    status: u16,
    retry_after: Option<String>,
    content_type: String,
    text: String,
}

/// 503, problem+json of type `unavailable` naming the database, `Retry-After`.
#[track_caller]
fn assert_database_unavailable(r: &Raw) {
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.content_type, "application/problem+json", "{r:?}");
    assert_eq!(
        r.retry_after.as_deref(),
        Some(DATABASE_RETRY_AFTER_SECONDS.to_string().as_str()),
        "{r:?}"
    );
    let problem: serde_json::Value = serde_json::from_str(&r.text).unwrap();
    assert_eq!(
        problem["type"],
        "https://imagefactory.dev/problems/unavailable"
    );
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("the database is unavailable: "),
        "{problem}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_answers_503_with_retry_after_not_a_timeout() {
    let db = TestDb::with_pool("if_api_pool", 1, Duration::from_millis(500)).await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let tenant = app.tenant("full-pool").await;
    // The pool's only connection, taken: every request waits its acquire
    // timeout, then is told to come back.
    let held = db.pool.acquire().await.unwrap();
    let r = raw(
        &app,
        Method::GET,
        "/api/v1/builds",
        &tenant.viewer,
        Body::None,
    )
    .await;
    assert_database_unavailable(&r);
    assert!(r.text.contains("pool timed out"), "{r:?}");
    drop(held);
    let r = raw(
        &app,
        Method::GET,
        "/api/v1/builds",
        &tenant.viewer,
        Body::None,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_answers_503_and_the_api_recovers_by_itself() {
    let mut server = PgServer::start();
    let db = TestDb::on_server(
        &server.admin_url(),
        "if_api_down",
        4,
        Duration::from_secs(1),
    )
    .await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let (tenant, build) = app.tenant_with_build("outage").await;
    let project = app.create_project(&tenant.admin, "other").await;
    let provider = app.create_k8s_provider(&tenant.admin, "k2").await;
    let submit = json!({"project_id": project, "method": "docker", "infrastructure_provider_id": provider,
                        "image": "registry.example.com/team/app:2.0"});

    server.stop();
    let get = raw(
        &app,
        Method::GET,
        &format!("/api/v1/builds/{build}"),
        &tenant.viewer,
        Body::None,
    )
    .await;
    assert_database_unavailable(&get);
    let post = raw(
        &app,
        Method::POST,
        "/api/v1/builds",
        &tenant.developer,
        Body::Json(submit.clone()),
    )
    .await;
    assert_database_unavailable(&post);
    let ready = raw(&app, Method::GET, "/readyz", &tenant.viewer, Body::None).await;
    assert_database_unavailable(&ready);

    // Back: the same pool reconnects, nothing restarted.
    server.start_again();
    let get = raw(
        &app,
        Method::GET,
        &format!("/api/v1/builds/{build}"),
        &tenant.viewer,
        Body::None,
    )
    .await;
    assert_eq!(get.status, 200, "{get:?}");
    let post = raw(
        &app,
        Method::POST,
        "/api/v1/builds",
        &tenant.developer,
        Body::Json(submit),
    )
    .await;
    assert_eq!(post.status, 201, "{post:?}");
    // The refused submission left nothing: the original and the new one.
    let builds: i64 = sqlx::query_scalar("SELECT count(*) FROM builds")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(builds, 2);
    db.drop_db().await;
}
