//! (a) Several dispatchers on many builds: every build claimed exactly once.

use std::collections::HashMap;
use std::time::Duration;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_dispatchers_claim_2000_builds_exactly_once() {
    let db = TestDb::new().await;
    let mut all = Vec::new();
    for t in 0..4 {
        let tenant = tenant(&db.pool, &format!("t{t}"), 1000).await;
        all.extend(submit(&db.pool, tenant, &vec![Spec::default(); 500]).await);
    }
    assert_eq!(all.len(), 2000);

    let mut running = Vec::new();
    for _ in 0..3 {
        running.push(start_dispatcher(db.another_pool().await, fast_settings()));
    }
    wait_count(
        &db.pool,
        "SELECT count(*) FROM builds WHERE status = 'succeeded'",
        2000,
        Duration::from_secs(300),
    )
    .await;
    for r in running {
        r.stop().await;
    }

    // Exactly one execution per build, attempt 1, succeeded.
    let per_build: Vec<(i64, i32, i32)> = sqlx::query_as(
        "SELECT count(e.id), min(e.attempt), max(b.attempts) FROM builds b \
         LEFT JOIN build_executions e ON e.build_id = b.id GROUP BY b.id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(per_build.len(), 2000);
    assert!(
        per_build
            .iter()
            .all(|&(n, a, attempts)| n == 1 && a == 1 && attempts == 1),
        "a build ran more than once"
    );

    // The executor saw one start, one completion and no re-attach per build.
    let work = work(&db.pool).await;
    assert_eq!(work.len(), 2000);
    for w in &work {
        assert_eq!(
            (w.start_calls, w.completions, w.reattach_calls),
            (1, 1, 0),
            "{w:?}"
        );
    }
    let by: Vec<(String, i64)> = sqlx::query_as(
        "SELECT dispatcher_id, count(*) FROM build_executions GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let by: HashMap<_, _> = by.into_iter().collect();
    eprintln!("claims per dispatcher: {by:?}");
    assert_eq!(by.values().sum::<i64>(), 2000);
    // Logs were written once per line even where resent.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM build_logs").await,
        4000
    );
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM build_artifacts WHERE name = 'IMAGE_DIGEST'"
        )
        .await,
        2000
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_is_claimed_first_and_not_before_is_honoured() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 1).await;
    let low = submit(&db.pool, t, &[Spec::default()]).await[0];
    let later = submit(
        &db.pool,
        t,
        &[Spec {
            priority: 9,
            not_before_secs: 3600.0,
            ..Default::default()
        }],
    )
    .await[0];
    let high = submit(
        &db.pool,
        t,
        &[Spec {
            priority: 5,
            ..Default::default()
        }],
    )
    .await[0];
    // Limit 1 serializes the tenant: the claim order is the start order.
    let d = start_dispatcher(db.another_pool().await, fast_settings());
    wait_status(&db.pool, low, "succeeded", Duration::from_secs(60)).await;
    d.stop().await;
    let order: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT build_id FROM build_executions ORDER BY started_at, id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(order, vec![high, low]);
    assert_eq!(status(&db.pool, later).await, "queued");
    db.drop_db().await;
}

/// Wake-up: an idle dispatcher whose poll interval (and heartbeat) is an hour
/// is woken by a submit's NOTIFY; a build written without one (a missed
/// notification) is claimed by the poll fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_wake_dispatchers_and_the_poll_catches_what_they_miss() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let hour = Duration::from_secs(3600);
    for (notify, poll) in [(true, hour), (false, Duration::from_millis(500))] {
        let mut settings = fast_settings();
        settings.poll_interval = poll;
        settings.heartbeat_interval = hour;
        settings.lease = 2 * hour;
        let mut d = start_dispatcher(db.another_pool().await, settings);
        // Idle and listening: its start-up claims are over, so only the
        // NOTIFY (or, without one, the poll) can make it claim the build.
        d.wait_idle().await;
        let cycles = d.activity.borrow().claim_cycles;
        let id = submit_and(&db.pool, t, &[Spec::default()], notify).await[0];
        wait_status(&db.pool, id, "succeeded", Duration::from_secs(30)).await;
        assert!(
            d.activity.borrow().claim_cycles > cycles,
            "claimed in a new cycle"
        );
        d.stop().await;
    }
    db.drop_db().await;
}
