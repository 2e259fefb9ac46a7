//! `GET /api/v1/admin/dispatchers`: dispatcher figures and queue depth.

use imagefactory_store::dispatchers::{self, Heartbeat};
use serde_json::json;

use crate::helpers::{ADMIN_TOKEN, TestApp, TestDb};

#[tokio::test]
async fn admin_sees_live_stale_and_stopped_dispatchers_and_queue_depth() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let beat = |id: &'static str, mode: &'static str, in_flight| Heartbeat {
        id,
        mode,
        host: "node-1",
        in_flight,
    };
    dispatchers::heartbeat(&pool, beat("live-1", "embedded", 3))
        .await
        .unwrap();
    dispatchers::heartbeat(&pool, beat("dead-1", "standalone", 7))
        .await
        .unwrap();
    dispatchers::heartbeat(&pool, beat("gone-1", "standalone", 0))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE dispatchers SET last_seen_at = now() - interval '10 minutes' WHERE id = 'dead-1'",
    )
    .execute(&pool)
    .await
    .unwrap();
    dispatchers::mark_stopped(&pool, "gone-1").await.unwrap();

    let a = app.tenant("team-a").await;
    let b = app.tenant("team-b").await;
    let pa = app.create_project(&a.admin, "web").await;
    let pb = app.create_project(&b.admin, "api").await;
    app.allow_local_builds(a.id).await;
    app.allow_local_builds(b.id).await;
    let submit = |project| json!({"project_id": project, "method": "docker", "infrastructure_type": "local", "image": "127.0.0.1:5000/x:1"});
    for _ in 0..3 {
        app.post("/api/v1/builds", &a.developer, submit(pa))
            .await
            .expect(201);
    }
    let running = app.post("/api/v1/builds", &b.developer, submit(pb)).await;
    running.expect(201);
    let running_id = running.json()["id"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE builds SET status = 'running', started_at = now(), lease_owner = 'live-1', lease_expires_at = now() + interval '30 seconds' WHERE id = $1::uuid")
        .bind(&running_id)
        .execute(&pool)
        .await
        .unwrap();

    let r = app.get("/api/v1/admin/dispatchers", ADMIN_TOKEN).await;
    r.expect(200);
    let body = r.json();
    let ds = body["dispatchers"].as_array().unwrap();
    let by_id = |id: &str| {
        ds.iter()
            .find(|d| d["id"] == id)
            .unwrap_or_else(|| panic!("{id} missing: {body}"))
    };
    assert_eq!(ds[0]["id"], "live-1", "live first: {body}");
    assert_eq!(by_id("live-1")["state"], "live");
    assert_eq!(by_id("live-1")["mode"], "embedded");
    assert_eq!(by_id("live-1")["in_flight"], 3);
    assert_eq!(by_id("live-1")["leases_held"], 1);
    assert_eq!(by_id("dead-1")["state"], "stale");
    assert_eq!(by_id("dead-1")["in_flight"], 7);
    assert_eq!(by_id("gone-1")["state"], "stopped");
    assert_eq!(body["stale_after_seconds"], 15.0);

    let queue = body["queue"].as_array().unwrap();
    let depth = |tenant: &str, status: &str| {
        queue
            .iter()
            .find(|q| q["tenant_name"] == tenant && q["status"] == status)
            .map(|q| q["builds"].as_i64().unwrap())
    };
    assert_eq!(depth("team-a", "queued"), Some(3), "{body}");
    assert_eq!(depth("team-a", "running"), None, "{body}");
    assert_eq!(depth("team-b", "running"), Some(1), "{body}");
    assert_eq!(depth("team-b", "queued"), None, "{body}");

    // Admin only: a tenant token and a wrong token are refused.
    app.get("/api/v1/admin/dispatchers", &a.admin)
        .await
        .expect(401);
    let wrong = app.get("/api/v1/admin/dispatchers", "nope").await;
    wrong.expect(401);
    assert_eq!(wrong.problem(), "unauthorized");
}
