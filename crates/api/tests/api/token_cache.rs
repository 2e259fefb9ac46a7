//! The verified-token cache: a revoked token (or one of a deleted tenant)
//! stops working at once in the server that revoked it, in another server
//! (its own cache, as another process has) as soon as PostgreSQL notifies
//! it, and after the TTL in a server that heard nothing.

use std::time::Duration;

use imagefactory_api::{TokenCache, token_cache};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::{ADMIN_TOKEN, TestApp, TestDb, id_of};

const HOUR: Duration = Duration::from_secs(3600);
/// How long a notification may take to arrive on a busy machine; the tests
/// pass as soon as it has.
const NOTIFY_BOUND: Duration = Duration::from_secs(20);

/// A server over `pool` whose cache trusts a token for `ttl`, listening for
/// revocations when `listening`.
async fn server(pool: &PgPool, ttl: Duration, listening: bool) -> TestApp {
    let cache = TokenCache::new(ttl);
    if listening {
        let before = listeners(pool).await;
        tokio::spawn(token_cache::listen(pool.clone(), cache.clone()));
        wait_for(|| async { listeners(pool).await > before }, "LISTEN").await;
    }
    TestApp::spawn_with_state(pool.clone(), |state| state.token_cache = cache).await
}

/// Sessions of this database whose last statement was LISTEN.
async fn listeners(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn wait_for<F, Fut>(mut done: F, what: &str)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + NOTIFY_BOUND;
    while !done().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {what} within {NOTIFY_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status(app: &TestApp, token: &str) -> u16 {
    app.get("/api/v1/projects", token).await.status
}

/// A token of `role` for `tenant`, and its id.
async fn token(app: &TestApp, tenant: Uuid, role: &str) -> (String, Uuid) {
    let created = app
        .post(
            &format!("/api/v1/tenants/{tenant}/tokens"),
            ADMIN_TOKEN,
            json!({"name": "t", "role": role}),
        )
        .await;
    created.expect(201);
    let body = created.json();
    (body["token"].as_str().unwrap().to_owned(), id_of(&body))
}

/// Revoked behind every server's back: no notification.
async fn revoke_silently(pool: &PgPool, id: Uuid) {
    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_revoked_token_stops_working_at_once_in_the_server_that_revoked_it() {
    let db = TestDb::new().await;
    let app = server(&db.pool, HOUR, false).await;
    let tenant = app.create_tenant("cache-a").await;
    let (admin, _) = token(&app, tenant, "admin").await;
    let (viewer, viewer_id) = token(&app, tenant, "viewer").await;
    let (dev, dev_id) = token(&app, tenant, "developer").await;
    for t in [&admin, &viewer, &dev] {
        assert_eq!(status(&app, t).await, 200);
    }

    // By the tenant's admin, and by the platform admin.
    app.delete(&format!("/api/v1/tokens/{viewer_id}"), &admin)
        .await
        .expect(204);
    assert_eq!(status(&app, &viewer).await, 401);
    app.delete(
        &format!("/api/v1/tenants/{tenant}/tokens/{dev_id}"),
        ADMIN_TOKEN,
    )
    .await
    .expect(204);
    assert_eq!(status(&app, &dev).await, 401);

    // Deleting the tenant ends its remaining tokens.
    assert_eq!(status(&app, &admin).await, 200);
    app.delete(&format!("/api/v1/tenants/{tenant}"), ADMIN_TOKEN)
        .await
        .expect(204);
    assert_eq!(status(&app, &admin).await, 401);
}

#[tokio::test]
async fn another_server_drops_a_revoked_token_when_notified() {
    let db = TestDb::new().await;
    let a = server(&db.pool, HOUR, false).await;
    // An hour of trust: only the notification can end it in time.
    let b = server(&db.pool, HOUR, true).await;
    let tenant = a.create_tenant("cache-b").await;
    let (admin, _) = token(&a, tenant, "admin").await;
    let (viewer, viewer_id) = token(&a, tenant, "viewer").await;
    assert_eq!(status(&b, &viewer).await, 200);
    assert_eq!(status(&b, &admin).await, 200);

    a.delete(&format!("/api/v1/tokens/{viewer_id}"), &admin)
        .await
        .expect(204);
    wait_for(
        || async { status(&b, &viewer).await == 401 },
        "401 for the revoked token",
    )
    .await;
    assert_eq!(status(&b, &admin).await, 200, "only the revoked token goes");

    a.delete(&format!("/api/v1/tenants/{tenant}"), ADMIN_TOKEN)
        .await
        .expect(204);
    wait_for(
        || async { status(&b, &admin).await == 401 },
        "401 for the deleted tenant's token",
    )
    .await;
}

#[tokio::test]
async fn without_a_notification_the_ttl_bounds_how_long_a_revoked_token_works() {
    let db = TestDb::new().await;
    let long = server(&db.pool, HOUR, false).await;
    let short = server(&db.pool, Duration::from_millis(300), false).await;
    let tenant = long.create_tenant("cache-c").await;
    let (viewer, viewer_id) = token(&long, tenant, "viewer").await;
    assert_eq!(status(&long, &viewer).await, 200);
    assert_eq!(status(&short, &viewer).await, 200);

    revoke_silently(&db.pool, viewer_id).await;
    // The cache answers, not the database: the long-TTL server has not
    // heard of the revocation.
    assert_eq!(status(&long, &viewer).await, 200);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(status(&short, &viewer).await, 401);
}

#[tokio::test]
async fn a_lost_listener_connection_empties_the_cache() {
    let db = TestDb::new().await;
    let b = server(&db.pool, HOUR, true).await;
    let tenant = b.create_tenant("cache-d").await;
    let (viewer, viewer_id) = token(&b, tenant, "viewer").await;
    assert_eq!(status(&b, &viewer).await, 200);
    revoke_silently(&db.pool, viewer_id).await;
    assert_eq!(status(&b, &viewer).await, 200);

    // Notifications sent while the connection is down would be lost.
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND query LIKE 'LISTEN%'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    wait_for(
        || async { status(&b, &viewer).await == 401 },
        "401 after the listener reconnected",
    )
    .await;
}
