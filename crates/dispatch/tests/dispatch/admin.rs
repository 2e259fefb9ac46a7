//! Admin figures: dispatchers live/stale/stopped, queue depth per tenant.

use std::time::Duration;

use imagefactory_dispatch::admin;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overview_shows_dispatchers_and_queue_depth() {
    let db = TestDb::new().await;
    let a = tenant(&db.pool, "alpha", 1).await;
    submit(&db.pool, a, &vec![Spec::lasting(60_000); 3]).await;
    submit(
        &db.pool,
        a,
        &[Spec {
            not_before_secs: 3600.0,
            ..Default::default()
        }],
    )
    .await;
    // A dispatcher that died long ago.
    sqlx::query("INSERT INTO dispatchers (id, mode, host, last_seen_at, in_flight) VALUES ('dead', 'standalone', 'h', now() - interval '1 hour', 4)")
        .execute(&db.pool)
        .await
        .unwrap();
    let settings = fast_settings();
    let d = start_dispatcher(db.another_pool().await, settings.clone());
    wait_count(
        &db.pool,
        "SELECT count(*) FROM builds WHERE status = 'running'",
        1,
        Duration::from_secs(30),
    )
    .await;
    // Wait for a heartbeat carrying the in-flight figure.
    wait_count(
        &db.pool,
        &format!(
            "SELECT count(*) FROM dispatchers WHERE id = '{}' AND in_flight = 1",
            d.id
        ),
        1,
        Duration::from_secs(30),
    )
    .await;

    let o = admin::overview(&db.pool, &settings).await.unwrap();
    let live = o.dispatchers.iter().find(|x| x.id == d.id).unwrap();
    assert_eq!(
        (
            live.state.as_str(),
            live.mode.as_str(),
            live.in_flight,
            live.leases_held
        ),
        ("live", "embedded", 1, 1)
    );
    let dead = o.dispatchers.iter().find(|x| x.id == "dead").unwrap();
    assert_eq!(dead.state, "stale");
    assert_eq!(o.dispatchers[0].id, d.id, "live dispatchers come first");
    let depth: Vec<(&str, &str, i64, i64)> = o
        .queue
        .iter()
        .map(|q| {
            (
                q.tenant_name.as_str(),
                q.status.as_str(),
                q.builds,
                q.in_backoff,
            )
        })
        .collect();
    assert_eq!(
        depth,
        vec![("alpha", "queued", 3, 1), ("alpha", "running", 1, 0)]
    );
    let json = serde_json::to_value(&o).unwrap();
    assert!(json["dispatchers"].is_array() && json["queue"].is_array());

    let d_id = d.id.clone();
    d.stop().await;
    let o = admin::overview(&db.pool, &settings).await.unwrap();
    assert_eq!(
        o.dispatchers.iter().find(|x| x.id == d_id).unwrap().state,
        "stopped"
    );
    db.drop_db().await;
}
