//! Graceful shutdown: stop claiming, hand over, release leases; another
//! dispatcher re-attaches at once (no lease expiry wait, no second start).

use std::time::Duration;

use imagefactory_dispatch::DispatcherSettings;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_hands_over_and_another_dispatcher_reattaches() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    // A lease far longer than the test: only a release lets D2 take over.
    let settings = DispatcherSettings {
        lease: Duration::from_secs(600),
        ..fast_settings()
    };
    let d1 = start_dispatcher(db.another_pool().await, settings.clone());
    let ids = submit(&db.pool, t, &vec![Spec::lasting(4_000); 5]).await;
    wait_count(
        &db.pool,
        "SELECT count(*) FROM build_executions WHERE reference_at IS NOT NULL",
        5,
        Duration::from_secs(30),
    )
    .await;
    let d1_id = d1.id.clone();
    let d1_activity = d1.activity.clone();
    d1.stop().await;
    // Nothing of D1 is left running (its state is gone with its last task),
    // so nothing of it can claim again.
    assert!(
        d1_activity.has_changed().is_err(),
        "a task of the stopped dispatcher still runs"
    );

    // Right after run() returns: still running, no owner, lease free.
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM builds WHERE status = 'running' AND lease_owner IS NULL"
        )
        .await,
        5
    );
    let stopped: bool =
        sqlx::query_scalar("SELECT stopped_at IS NOT NULL FROM dispatchers WHERE id = $1")
            .bind(&d1_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(stopped);
    // A queued build submitted now waits for the next dispatcher.
    let late = submit(&db.pool, t, &[Spec::default()]).await[0];
    assert_eq!(status(&db.pool, late).await, "queued");

    let d2 = start_dispatcher(db.another_pool().await, settings);
    for id in ids.iter().chain([&late]) {
        wait_status(&db.pool, *id, "succeeded", Duration::from_secs(60)).await;
    }
    d2.stop().await;
    let work = work(&db.pool).await;
    for w in work.iter().filter(|w| ids.contains(&w.build_id)) {
        assert_eq!(
            (w.start_calls, w.reattach_calls, w.completions),
            (1, 1, 1),
            "{w:?}"
        );
    }
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM build_executions").await,
        6
    );
    // Resent log lines were not duplicated.
    assert_eq!(count(&db.pool, "SELECT count(*) FROM build_logs").await, 12);
    db.drop_db().await;
}
