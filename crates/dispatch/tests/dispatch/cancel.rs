//! (d) Cancellation of queued and running builds, and timeouts.

use std::time::Duration;

use imagefactory_dispatch::testing::TestScript;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_queued_build_cancels_it_without_running_it() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    // In backoff for an hour: only a cancel can end it.
    let build = submit(
        &db.pool,
        t,
        &[Spec {
            not_before_secs: 3600.0,
            ..Default::default()
        }],
    )
    .await[0];
    let d = start_dispatcher(db.another_pool().await, fast_settings());
    request_cancel(&db.pool, build).await;
    wait_status(&db.pool, build, "cancelled", Duration::from_secs(30)).await;
    d.stop().await;
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM build_executions").await,
        0
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_a_running_build_reaches_the_executor_on_whichever_dispatcher_holds_it() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let d1 = start_dispatcher(db.another_pool().await, fast_settings());
    let d2 = start_dispatcher(db.another_pool().await, fast_settings());
    let builds = submit(&db.pool, t, &vec![Spec::lasting(120_000); 4]).await;
    wait_count(
        &db.pool,
        "SELECT count(*) FROM build_executions WHERE reference_at IS NOT NULL",
        4,
        Duration::from_secs(30),
    )
    .await;
    for b in &builds {
        request_cancel(&db.pool, *b).await;
    }
    for b in &builds {
        wait_status(&db.pool, *b, "cancelled", Duration::from_secs(30)).await;
    }
    d1.stop().await;
    d2.stop().await;
    // The executor itself stopped the work (not the dispatcher's grace path).
    let work = work(&db.pool).await;
    assert_eq!(work.len(), 4);
    assert!(
        work.iter()
            .all(|w| w.stopped.as_deref() == Some("cancel") && w.completions == 0),
        "{work:?}"
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM build_executions WHERE status = 'cancelled' AND message = 'cancelled by request'").await,
        4
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_is_enforced_with_and_without_the_executors_help() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let polite = Spec {
        timeout_seconds: 1,
        ..Spec::lasting(120_000)
    };
    let deaf = Spec {
        timeout_seconds: 1,
        script: TestScript {
            duration_ms: 120_000,
            ignore_stop: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let ids = submit(&db.pool, t, &[polite, deaf]).await;
    let d = start_dispatcher(db.another_pool().await, fast_settings());
    for id in &ids {
        wait_status(&db.pool, *id, "timed_out", Duration::from_secs(60)).await;
    }
    d.stop().await;
    let messages: Vec<String> = sqlx::query_scalar(
        "SELECT e.message FROM build_executions e JOIN builds b ON b.id = e.build_id ORDER BY b.id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(messages[0], "test work stopped at its timeout");
    assert!(
        messages[1].contains("exceeded its timeout of 1s")
            && messages[1].contains("did not confirm"),
        "{}",
        messages[1]
    );
    db.drop_db().await;
}
