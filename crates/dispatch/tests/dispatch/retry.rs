//! (e) Transient errors retry with backoff; permanent ones fail at once;
//! misconfiguration fails with a message saying what is wrong.

use std::time::Duration;

use chrono::{DateTime, Utc};
use imagefactory_dispatch::select::WhenTektonDisabled;
use imagefactory_dispatch::testing::TestScript;

use crate::helpers::*;

#[derive(sqlx::FromRow, Debug)]
struct Exec {
    attempt: i32,
    status: String,
    message: Option<String>,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

async fn executions(db: &TestDb, build: uuid::Uuid) -> Vec<Exec> {
    sqlx::query_as("SELECT attempt, status, message, started_at, finished_at FROM build_executions WHERE build_id = $1 ORDER BY attempt")
        .bind(build)
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_retry_with_backoff_then_succeed_or_give_up() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let flaky = Spec {
        script: TestScript {
            transient_attempts: 2,
            ..Default::default()
        },
        max_attempts: 3,
        ..Default::default()
    };
    let hopeless = Spec {
        script: TestScript {
            transient_attempts: 99,
            ..Default::default()
        },
        max_attempts: 3,
        ..Default::default()
    };
    let ids = submit(&db.pool, t, &[flaky, hopeless]).await;
    let settings = fast_settings();
    let d = start_dispatcher(db.another_pool().await, settings.clone());
    wait_status(&db.pool, ids[0], "succeeded", Duration::from_secs(60)).await;
    wait_status(&db.pool, ids[1], "failed", Duration::from_secs(60)).await;
    d.stop().await;

    let flaky = executions(&db, ids[0]).await;
    assert_eq!(
        flaky.iter().map(|e| e.status.as_str()).collect::<Vec<_>>(),
        ["failed", "failed", "succeeded"]
    );
    for (i, e) in flaky.iter().enumerate().take(2) {
        let m = e.message.as_deref().unwrap();
        assert!(
            m.contains(&format!("scripted transient failure on attempt {}", i + 1)),
            "{m}"
        );
    }
    // Each retry waited at least the lower bound of its jittered backoff.
    for pair in flaky.windows(2) {
        let min = settings.backoff_base * (1 << (pair[0].attempt - 1)) / 2;
        let gap = (pair[1].started_at - pair[0].finished_at.unwrap())
            .to_std()
            .unwrap();
        assert!(
            gap >= min,
            "attempt {} retried after {gap:?} < {min:?}",
            pair[1].attempt
        );
    }

    let hopeless_execs = executions(&db, ids[1]).await;
    assert_eq!(hopeless_execs.len(), 3);
    assert!(
        hopeless_execs
            .iter()
            .all(|e| e.status == "failed" && e.message.is_some())
    );
    let error: String = sqlx::query_scalar("SELECT error_message FROM builds WHERE id = $1")
        .bind(ids[1])
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(error.starts_with("gave up after 3 attempts"), "{error}");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_failure_fails_at_once() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let spec = Spec {
        script: TestScript {
            outcome: "failed".into(),
            message: Some("Task docker-build not found".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let id = submit(&db.pool, t, &[spec]).await[0];
    let d = start_dispatcher(db.another_pool().await, fast_settings());
    wait_status(&db.pool, id, "failed", Duration::from_secs(30)).await;
    d.stop().await;
    let execs = executions(&db, id).await;
    assert_eq!(execs.len(), 1);
    assert_eq!(
        execs[0].message.as_deref(),
        Some("Task docker-build not found")
    );
    let error: String = sqlx::query_scalar("SELECT error_message FROM builds WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(error, "Task docker-build not found");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_builds_go_to_tekton_or_fail_saying_why() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let k8s = provider(&db.pool, "kubernetes", true, None).await;
    let k8s_no_tekton = provider(&db.pool, "kubernetes", false, None).await;
    let ok = Spec {
        infrastructure: "kubernetes",
        provider: Some(k8s),
        ..Default::default()
    };
    let provider_off = Spec {
        infrastructure: "kubernetes",
        provider: Some(k8s_no_tekton),
        ..Default::default()
    };
    let ids = submit(&db.pool, t, &[ok.clone(), provider_off]).await;

    // Tekton enabled: the build runs on the tekton slot with its provider
    // recorded. Kubernetes builds without Tekton fail (rather than run
    // locally, see tekton_disabled.rs).
    let fail = imagefactory_dispatch::DispatcherSettings {
        tekton_disabled: WhenTektonDisabled::Fail,
        ..fast_settings()
    };
    let d = start_dispatcher(db.another_pool().await, fail.clone());
    wait_status(&db.pool, ids[0], "succeeded", Duration::from_secs(30)).await;
    wait_status(&db.pool, ids[1], "failed", Duration::from_secs(30)).await;
    d.stop().await;
    let provider_of: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT provider_id FROM build_executions WHERE build_id = $1")
            .bind(ids[0])
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(provider_of, Some(k8s));

    // Tekton disabled globally: a Kubernetes build fails at once, saying so.
    let off = submit(&db.pool, t, &[ok]).await[0];
    let d = start_dispatcher(
        db.another_pool().await,
        imagefactory_dispatch::DispatcherSettings {
            tekton_enabled: false,
            ..fail
        },
    );
    wait_status(&db.pool, off, "failed", Duration::from_secs(30)).await;
    d.stop().await;
    let messages: Vec<String> =
        sqlx::query_scalar("SELECT error_message FROM builds WHERE id = ANY($1) ORDER BY id")
            .bind(vec![ids[1], off])
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(
        messages[0].contains("tekton_enabled=false"),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].contains("IF_BUILD_TEKTON_ENABLED=false"),
        "{}",
        messages[1]
    );
    assert_eq!(
        count(
            &db.pool,
            &format!(
                "SELECT count(*) FROM build_executions WHERE build_id IN ('{}', '{off}')",
                ids[1]
            )
        )
        .await,
        0
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_is_fenced_by_the_lease_and_an_immediate_requeue_notifies() {
    use imagefactory_domain::{BuildStatus, ExecutorKind};
    use imagefactory_store::queue::{self, ClaimDecision, ClaimRequest, Finish};

    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let id = submit(&db.pool, t, &[Spec::default()]).await[0];
    let req = ClaimRequest {
        owner: "owner-a",
        lease: Duration::from_secs(60),
        limit: 10,
    };
    let batch = queue::claim(&db.pool, req, |_| ClaimDecision::Run(ExecutorKind::Test))
        .await
        .unwrap();
    let exec = batch.claimed[0].execution.id;

    // Another dispatcher (lease not held) cannot finish it, and changes nothing.
    let done = Finish::Terminal {
        status: BuildStatus::Succeeded,
        message: None,
    };
    assert!(
        !queue::finish(&db.pool, "owner-b", id, exec, &done)
            .await
            .unwrap()
    );
    assert_eq!(status(&db.pool, id).await, "running");
    assert_eq!(executions(&db, id).await[0].status, "running");

    let mut listener = sqlx::postgres::PgListener::connect_with(&db.pool)
        .await
        .unwrap();
    listener
        .listen(imagefactory_store::CHANNEL_BUILD_QUEUED)
        .await
        .unwrap();
    let requeue = Finish::Requeue {
        delay: Duration::ZERO,
        message: "cluster unreachable".into(),
    };
    assert!(
        queue::finish(&db.pool, "owner-a", id, exec, &requeue)
            .await
            .unwrap()
    );
    let n = tokio::time::timeout(Duration::from_secs(30), listener.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n.payload(), id.to_string());
    assert_eq!(status(&db.pool, id).await, "queued");
    let e = &executions(&db, id).await[0];
    assert_eq!(
        (e.status.as_str(), e.message.as_deref()),
        ("failed", Some("cluster unreachable"))
    );
    // The requeued build is claimable at once, as attempt 2.
    let again = queue::claim(&db.pool, req, |_| ClaimDecision::Run(ExecutorKind::Test))
        .await
        .unwrap();
    assert_eq!(again.claimed[0].execution.attempt, 2);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_retry_renews_the_automatic_requeue_budget() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let hopeless = Spec {
        script: TestScript {
            transient_attempts: 99,
            ..Default::default()
        },
        max_attempts: 3,
        ..Default::default()
    };
    let id = submit(&db.pool, t, &[hopeless]).await[0];
    let d = start_dispatcher(db.another_pool().await, fast_settings());
    wait_status(&db.pool, id, "failed", Duration::from_secs(60)).await;
    assert_eq!(executions(&db, id).await.len(), 3);

    imagefactory_store::builds::retry(&db.pool, t.0, id)
        .await
        .unwrap();
    // Three more attempts, each requeued on its transient error, not one.
    wait_count(
        &db.pool,
        &format!(
            "SELECT count(*) FROM builds WHERE id = '{id}' AND status = 'failed' AND attempts = 6"
        ),
        1,
        Duration::from_secs(60),
    )
    .await;
    d.stop().await;
    let execs = executions(&db, id).await;
    assert_eq!(
        execs.iter().map(|e| e.attempt).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert!(
        execs[3]
            .message
            .as_deref()
            .unwrap()
            .contains("attempt 1 of 3")
    );
    let error: String = sqlx::query_scalar("SELECT error_message FROM builds WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(error.starts_with("gave up after 3 attempts"), "{error}");
    db.drop_db().await;
}

/// Issue 14 (3): a database outage between a claim and the load of the
/// claimed build's settings used to end the attempt (transient) and run the
/// build again as a second execution. The load now waits the outage out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loading_a_claimed_builds_settings_waits_out_an_unavailable_database() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "restarting", 1).await;
    let id = submit(&db.pool, t, &[Spec::default()]).await[0];
    // The settings' first two reads (the claim batch's, then the build's
    // own) fail as a database starting up does; the claim itself does not
    // read build_configs.
    sqlx::raw_sql(
        "ALTER TABLE build_configs RENAME TO build_configs_stored; \
         CREATE SEQUENCE config_read_failures; \
         CREATE FUNCTION starting() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$ \
         BEGIN IF nextval('config_read_failures') <= 2 THEN \
         RAISE EXCEPTION 'starting up' USING ERRCODE = '57P03'; END IF; RETURN true; END $$; \
         CREATE VIEW build_configs AS SELECT * FROM build_configs_stored WHERE starting();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let d = start_dispatcher(db.another_pool().await, fast_settings());
    wait_status(&db.pool, id, "succeeded", Duration::from_secs(60)).await;
    d.stop().await;
    let failed_reads: i64 = sqlx::query_scalar("SELECT last_value FROM config_read_failures")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        failed_reads >= 3,
        "the outage was met: {failed_reads} reads"
    );
    let runs = executions(&db, id).await;
    assert_eq!(
        runs.iter().map(|e| e.status.as_str()).collect::<Vec<_>>(),
        ["succeeded"],
        "one execution, not a retry: {runs:?}"
    );
    db.drop_db().await;
}
