//! The running counts the claim reads (store migration 0013) stay equal to
//! the running builds per tenant and per provider on every path that starts
//! or ends a run: claim, finish, requeue, cancel, takeover, retry, an
//! operator's SQL, deletes and TRUNCATE.

use std::time::Duration;

use imagefactory_domain::{BuildStatus, ExecutorKind};
use imagefactory_store::builds;
use imagefactory_store::queue::{self, ClaimDecision, ClaimRequest, Claimer, Finish};
use sqlx::PgPool;
use uuid::Uuid;

use crate::helpers::*;

/// Tenants and providers whose stored count differs from their running
/// builds: (scope, id, stored, actual).
pub async fn count_drift(pool: &PgPool) -> Vec<(String, Uuid, i64, i64)> {
    sqlx::query_as(
        "SELECT 'tenant', t.id, COALESCE(c.running, 0)::bigint, \
                (SELECT count(*) FROM builds b WHERE b.tenant_id = t.id AND b.status = 'running') \
         FROM tenants t LEFT JOIN tenant_running_builds c ON c.tenant_id = t.id \
         UNION ALL \
         SELECT 'provider', p.id, COALESCE(c.running, 0)::bigint, \
                (SELECT count(*) FROM builds b WHERE b.infrastructure_provider_id = p.id AND b.status = 'running') \
         FROM infrastructure_providers p LEFT JOIN provider_running_builds c ON c.provider_id = p.id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .filter(|(_, _, stored, actual): &(String, Uuid, i64, i64)| stored != actual)
    .collect()
}

/// Fails the test if any count drifted; `after` names the step.
pub async fn assert_counts(pool: &PgPool, after: &str) {
    let drift = count_drift(pool).await;
    assert!(
        drift.is_empty(),
        "running counts drifted after {after}: {drift:?}"
    );
}

async fn running(pool: &PgPool, tenant: Uuid) -> i64 {
    sqlx::query_scalar(
        "SELECT COALESCE((SELECT running FROM tenant_running_builds WHERE tenant_id = $1), 0)::bigint",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap()
}

fn request(owner: &str, limit: i64) -> ClaimRequest<'_> {
    ClaimRequest {
        owner,
        lease: Duration::from_secs(60),
        limit,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_follow_every_path_into_and_out_of_running() {
    let db = TestDb::new().await;
    let pool = &db.pool;
    let a = tenant(pool, "a", 100).await;
    let b = tenant(pool, "b", 100).await;
    let p = provider(pool, "kubernetes", true, Some(50)).await;
    let on_p = Spec {
        infrastructure: "kubernetes",
        provider: Some(p),
        ..Spec::lasting(60_000)
    };
    let a_ids = submit(pool, a, &vec![Spec::lasting(60_000); 4]).await;
    let a_p = submit(pool, a, &vec![on_p.clone(); 3]).await;
    let b_ids = submit(pool, b, &vec![on_p.clone(); 3]).await;
    assert_counts(pool, "submit").await;

    // Claim everything (one tenant's and one provider's builds in one
    // statement with the other's).
    let claimer = Claimer::new();
    let claimed = claimer
        .claim(pool, request("d1", 100), |_| {
            ClaimDecision::Run(ExecutorKind::Test)
        })
        .await
        .unwrap()
        .claimed;
    assert_eq!(claimed.len(), 10);
    assert_eq!(running(pool, a.0).await, 7);
    assert_counts(pool, "claim").await;
    let execution = |build: Uuid| {
        claimed
            .iter()
            .find(|c| c.build_id == build)
            .unwrap()
            .execution
            .id
    };

    // Finish: success, permanent failure, transient failure (requeued).
    let done = Finish::Terminal {
        status: BuildStatus::Succeeded,
        message: None,
    };
    assert!(
        queue::finish(pool, "d1", a_ids[0], execution(a_ids[0]), &done)
            .await
            .unwrap()
    );
    let failed = Finish::Terminal {
        status: BuildStatus::Failed,
        message: Some("boom".into()),
    };
    assert!(
        queue::finish(pool, "d1", a_p[0], execution(a_p[0]), &failed)
            .await
            .unwrap()
    );
    let requeue = Finish::Requeue {
        delay: Duration::ZERO,
        message: "flaky".into(),
    };
    assert!(
        queue::finish(pool, "d1", b_ids[0], execution(b_ids[0]), &requeue)
            .await
            .unwrap()
    );
    // A finish by a dispatcher that no longer holds the lease changes nothing.
    assert!(
        !queue::finish(pool, "other", a_ids[1], execution(a_ids[1]), &done)
            .await
            .unwrap()
    );
    assert_eq!(running(pool, a.0).await, 5);
    assert_counts(pool, "finishes").await;

    // Handover and takeover keep builds running.
    queue::release_leases(pool, "d1", Some(&a_ids[1..3]))
        .await
        .unwrap();
    let taken = queue::take_over_expired(pool, request("d2", 10), &[])
        .await
        .unwrap();
    assert_eq!(taken.len(), 2);
    assert_counts(pool, "takeover").await;

    // Cancel: queued (the requeued build) at once; running ends by finish.
    builds::cancel(pool, b.0, b_ids[0]).await.unwrap();
    builds::cancel(pool, b.0, b_ids[1]).await.unwrap();
    let cancelled = Finish::Terminal {
        status: BuildStatus::Cancelled,
        message: Some("cancelled by request".into()),
    };
    assert!(
        queue::finish(pool, "d1", b_ids[1], execution(b_ids[1]), &cancelled)
            .await
            .unwrap()
    );
    assert_counts(pool, "cancel").await;

    // Retry of the failed build, claimed again.
    builds::retry(pool, a.0, a_p[0]).await.unwrap();
    assert_counts(pool, "retry").await;
    let again = claimer
        .claim(pool, request("d1", 10), |_| {
            ClaimDecision::Run(ExecutorKind::Test)
        })
        .await
        .unwrap()
        .claimed;
    assert_eq!(again.len(), 1);
    assert_counts(pool, "claim after retry").await;

    // An operator's SQL: one statement ending builds of several tenants and
    // the provider, one moving a running build to another tenant.
    sqlx::query("UPDATE builds SET status = 'failed', finished_at = now() WHERE id = ANY($1)")
        .bind([a_ids[1], a_p[1], b_ids[2]])
        .execute(pool)
        .await
        .unwrap();
    assert_counts(pool, "a multi-tenant update").await;
    sqlx::query("UPDATE builds SET tenant_id = $2, project_id = $3, infrastructure_provider_id = NULL WHERE id = $1")
        .bind(a_p[2])
        .bind(b.0)
        .bind(b.1)
        .execute(pool)
        .await
        .unwrap();
    assert_counts(pool, "moving a running build").await;

    // Deletes: a running build; a tenant with its running builds (cascade).
    sqlx::query("DELETE FROM builds WHERE id = $1")
        .bind(a_ids[2])
        .execute(pool)
        .await
        .unwrap();
    assert_counts(pool, "deleting a running build").await;
    sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(b.0)
        .execute(pool)
        .await
        .unwrap();
    assert_counts(pool, "deleting a tenant").await;
    assert!(running(pool, a.0).await > 0);
    sqlx::query("TRUNCATE builds CASCADE")
        .execute(pool)
        .await
        .unwrap();
    assert_counts(pool, "TRUNCATE").await;
    assert_eq!(running(pool, a.0).await, 0);
    db.drop_db().await;
}

#[tokio::test]
async fn the_drift_check_sees_a_change_the_triggers_did_not_count() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let id = submit(&db.pool, t, &[Spec::lasting(1)]).await[0];
    // Triggers off for this one session: the count is not updated.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL session_replication_role = replica")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE builds SET status = 'running' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count_drift(&db.pool).await.len(), 1);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_limit_holds_from_the_counts_as_builds_finish_and_start() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "limited", 3).await;
    submit(&db.pool, t, &vec![Spec::lasting(50); 30]).await;
    let d = start_dispatcher(db.another_pool().await, fast_settings());
    // Sample while the 30 builds pass through 3 slots (a sample can miss a
    // peak, never invent one).
    let mut max_running = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (running, done): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'running'), \
                    count(*) FILTER (WHERE status = 'succeeded') FROM builds",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        max_running = max_running.max(running);
        if done == 30 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "builds did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    d.stop().await;
    assert!(max_running <= 3, "{max_running} running with a limit of 3");
    assert_counts(&db.pool, "30 builds through a limit of 3").await;
    assert_eq!(running(&db.pool, t.0).await, 0);
    db.drop_db().await;
}
