//! (c) Tenant and provider limits without head-of-line blocking.

use std::time::Duration;

use imagefactory_domain::ExecutorKind;
use imagefactory_store::queue::{self, ClaimDecision, ClaimRequest};

use crate::helpers::*;

fn request(limit: i64) -> ClaimRequest<'static> {
    ClaimRequest {
        owner: "manual",
        lease: Duration::from_secs(60),
        limit,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_tenant_does_not_delay_another_tenant_beyond_one_claim_cycle() {
    let db = TestDb::new().await;
    let a = tenant(&db.pool, "a", 2).await;
    let b = tenant(&db.pool, "b", 10).await;
    submit(&db.pool, a, &vec![Spec::lasting(60_000); 500]).await;
    // Submitted last: a global FIFO would put it behind all 500.
    let b_build = submit(&db.pool, b, &[Spec::lasting(60_000)]).await[0];

    // One claim cycle claims A's two allowed builds and B's build.
    let first = queue::claim(&db.pool, request(32), |_| {
        ClaimDecision::Run(ExecutorKind::Test)
    })
    .await
    .unwrap();
    let ids: Vec<_> = first.claimed.iter().map(|c| c.build_id).collect();
    assert_eq!(ids.len(), 3, "{ids:?}");
    assert!(ids.contains(&b_build));
    assert_eq!(
        first.claimed.iter().filter(|c| c.tenant_id == a.0).count(),
        2
    );
    // A is at its limit: nothing more is claimable, and A stays queued.
    let second = queue::claim(&db.pool, request(32), |_| {
        ClaimDecision::Run(ExecutorKind::Test)
    })
    .await
    .unwrap();
    assert!(second.claimed.is_empty());
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM builds WHERE status = 'queued'"
        )
        .await,
        498
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatchers_hold_the_tenant_limit_and_serve_the_other_tenant() {
    let db = TestDb::new().await;
    let a = tenant(&db.pool, "a", 2).await;
    let b = tenant(&db.pool, "b", 10).await;
    submit(&db.pool, a, &vec![Spec::lasting(200); 40]).await;
    let b_build = submit(&db.pool, b, &[Spec::lasting(60_000)]).await[0];
    let d1 = start_dispatcher(db.another_pool().await, fast_settings());
    let d2 = start_dispatcher(db.another_pool().await, fast_settings());
    wait_status(&db.pool, b_build, "running", Duration::from_secs(60)).await;
    // While A's builds drain two at a time, A never exceeds its limit.
    let a_running = format!(
        "SELECT count(*) FROM builds WHERE tenant_id = '{}' AND status = 'running'",
        a.0
    );
    let a_done = format!(
        "SELECT count(*) FROM builds WHERE tenant_id = '{}' AND status = 'succeeded'",
        a.0
    );
    let mut max_seen = 0;
    loop {
        max_seen = max_seen.max(count(&db.pool, &a_running).await);
        if count(&db.pool, &a_done).await == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        max_seen <= 2,
        "tenant A had {max_seen} running with limit 2"
    );
    assert_eq!(status(&db.pool, b_build).await, "running");
    d1.stop().await;
    d2.stop().await;
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_provider_does_not_block_other_builds_of_the_tenant() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let small = provider(&db.pool, "local", false, Some(1)).await;
    let on_small = submit(
        &db.pool,
        t,
        &vec![
            Spec {
                provider: Some(small),
                ..Spec::lasting(60_000)
            };
            3
        ],
    )
    .await;
    let other = submit(&db.pool, t, &[Spec::lasting(60_000)]).await[0];
    let first = queue::claim(&db.pool, request(32), |_| {
        ClaimDecision::Run(ExecutorKind::Test)
    })
    .await
    .unwrap();
    let ids: Vec<_> = first.claimed.iter().map(|c| c.build_id).collect();
    assert_eq!(ids, vec![on_small[0], other]);
    assert_eq!(first.claimed[0].execution.provider_id, Some(small));
    let second = queue::claim(&db.pool, request(32), |_| {
        ClaimDecision::Run(ExecutorKind::Test)
    })
    .await
    .unwrap();
    assert!(second.claimed.is_empty());
    db.drop_db().await;
}

/// `IF_DISPATCHER_MAX_IN_FLIGHT`: a dispatcher never runs more than its
/// global limit, whatever the tenants' limits allow; the rest waits queued
/// and is claimed as capacity frees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_never_runs_more_than_its_in_flight_limit() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 1000).await;
    let ids = submit(&db.pool, t, &vec![Spec::lasting(300); 30]).await;
    let mut settings = fast_settings();
    settings.max_in_flight = 4;
    let d = start_dispatcher(db.another_pool().await, settings);
    let held = format!(
        "SELECT count(*) FROM builds WHERE status = 'running' AND lease_owner = '{}'",
        d.id
    );
    let mut most = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        most = most.max(count(&db.pool, &held).await);
        let done = count(
            &db.pool,
            "SELECT count(*) FROM builds WHERE status = 'succeeded'",
        )
        .await;
        if done == ids.len() as i64 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{done} of 30 done");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    d.stop().await;
    assert_eq!(most, 4, "the limit was reached and never passed");
    db.drop_db().await;
}
