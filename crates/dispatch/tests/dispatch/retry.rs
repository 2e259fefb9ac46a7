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

/// Whether each execution of `build` counted toward its budget, and its status.
async fn counted(db: &TestDb, build: uuid::Uuid) -> Vec<(bool, String)> {
    sqlx::query_as(
        "SELECT counted, status FROM build_executions WHERE build_id = $1 ORDER BY attempt",
    )
    .bind(build)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// The full cluster-outage stress run: builds claimed while the cluster's
/// API server was down used up their attempts on refused connections within
/// seconds and failed. Attempts that could not reach their cluster
/// (`Outcome::Unreachable`) are requeued without counting toward
/// `max_attempts`; once the grace (from the first of them in a row) is
/// over, the build fails saying its cluster could not be reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_attempts_do_not_count_until_the_grace_is_over() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    // One counted transient failure, then 3 tries that cannot reach the
    // cluster: with every try counted, 2 attempts were gone by the second.
    let outage = Spec {
        script: TestScript {
            transient_attempts: 1,
            unreachable_attempts: 3,
            ..Default::default()
        },
        max_attempts: 2,
        ..Default::default()
    };
    let endless = Spec {
        script: TestScript {
            unreachable_attempts: 1000,
            ..Default::default()
        },
        max_attempts: 3,
        ..Default::default()
    };
    let ids = submit(&db.pool, t, &[outage, endless]).await;
    let mut settings = fast_settings();
    let grace = Duration::from_secs(3);
    settings.unreachable_grace = grace;
    let d = start_dispatcher(db.another_pool().await, settings);
    wait_status(&db.pool, ids[0], "succeeded", Duration::from_secs(60)).await;
    wait_status(&db.pool, ids[1], "failed", Duration::from_secs(60)).await;
    d.stop().await;

    let outage_execs = executions(&db, ids[0]).await;
    assert_eq!(
        counted(&db, ids[0]).await,
        [
            (true, "failed".to_owned()),
            (false, "failed".to_owned()),
            (false, "failed".to_owned()),
            (false, "failed".to_owned()),
            (true, "succeeded".to_owned()),
        ]
    );
    for e in &outage_execs[1..4] {
        let m = e.message.as_deref().unwrap();
        assert!(
            m.starts_with("the cluster could not be reached") && m.contains("not counted"),
            "{m}"
        );
    }

    // More tries than attempts allowed, for about the grace, then failed.
    let endless_execs = executions(&db, ids[1]).await;
    assert!(endless_execs.len() > 3, "{endless_execs:?}");
    let first = endless_execs.first().unwrap().started_at;
    let last = endless_execs.last().unwrap().finished_at.unwrap();
    let lasted = (last - first).to_std().unwrap();
    assert!(lasted >= grace, "{lasted:?}");
    assert!(lasted < grace * 4, "{lasted:?}");
    let error: String = sqlx::query_scalar("SELECT error_message FROM builds WHERE id = $1")
        .bind(ids[1])
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        error.starts_with("gave up: the build's cluster could not be reached for"),
        "{error}"
    );
    assert!(error.contains("scripted unreachable"), "{error}");
    db.drop_db().await;
}

/// What the requeue decision reads back: counted attempts of the round,
/// and the uncounted ones in a row right before this attempt, timed from
/// the first of them: a counted attempt in between starts the series (and
/// its grace) afresh, and so does a manual retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_so_far_counts_only_attempts_that_reached_the_cluster() {
    use imagefactory_domain::{BuildStatus, ExecutorKind};
    use imagefactory_store::queue::{self, ClaimDecision, ClaimRequest, Finish, RoundSoFar};

    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let id = submit(&db.pool, t, &[Spec::default()]).await[0];
    let req = ClaimRequest {
        owner: "owner",
        lease: Duration::from_secs(60),
        limit: 10,
    };
    let claim = || async {
        let batch = queue::claim(&db.pool, req, |_| ClaimDecision::Run(ExecutorKind::Test))
            .await
            .unwrap();
        batch.claimed[0].execution.clone()
    };
    let requeue = |counted| Finish::Requeue {
        delay: Duration::ZERO,
        message: "x".into(),
        counted,
    };
    let round = |attempt| queue::round_so_far(&db.pool, t.0, id, attempt);
    // Attempts 1 (uncounted), 2 (counted), 3 (uncounted), started 100, 50
    // and 10 s ago; attempt 4 is running.
    for (counted, ago) in [(false, 100), (true, 50), (false, 10)] {
        let e = claim().await;
        sqlx::query("UPDATE build_executions SET started_at = now() - make_interval(secs => $2) WHERE id = $1")
            .bind(e.id)
            .bind(f64::from(ago))
            .execute(&db.pool)
            .await
            .unwrap();
        assert!(
            queue::finish(&db.pool, "owner", id, e.id, &requeue(counted))
                .await
                .unwrap()
        );
    }
    let fourth = claim().await;
    assert_eq!(fourth.attempt, 4);
    let so_far = round(4).await.unwrap();
    assert_eq!((so_far.counted_before, so_far.uncounted_before), (1, 1));
    // Since attempt 3 began, not attempt 1.
    assert!(
        so_far.uncounted_for >= Duration::from_secs(10)
            && so_far.uncounted_for < Duration::from_secs(50),
        "{so_far:?}"
    );
    // After a manual retry nothing counts from the earlier round.
    let failed = Finish::Terminal {
        status: BuildStatus::Failed,
        message: Some("x".into()),
    };
    assert!(
        queue::finish(&db.pool, "owner", id, fourth.id, &failed)
            .await
            .unwrap()
    );
    imagefactory_store::builds::retry(&db.pool, t.0, id)
        .await
        .unwrap();
    let fifth = claim().await;
    let so_far = round(fifth.attempt).await.unwrap();
    assert_eq!((so_far.counted_before, so_far.uncounted_before), (0, 0));
    assert!(so_far.uncounted_for < Duration::from_secs(10), "{so_far:?}");
    // Another tenant's id finds nothing of the build.
    assert_eq!(
        queue::round_so_far(&db.pool, uuid::Uuid::new_v4(), id, fifth.attempt)
            .await
            .unwrap(),
        RoundSoFar::default()
    );
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
        counted: true,
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
