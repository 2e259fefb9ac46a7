//! The one-statement claim (`claim_queued_builds`, store migration 0011)
//! driven directly through `queue::Claimer`: order, `not_before`, limits,
//! executor decisions, skipped rows and concurrent claimers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use imagefactory_domain::ExecutorKind;
use imagefactory_store::queue::{self, ClaimDecision, ClaimFacts, ClaimRequest, Claimer};
use uuid::Uuid;

use crate::helpers::*;

fn request(owner: &str, limit: i64) -> ClaimRequest<'_> {
    ClaimRequest {
        owner,
        lease: Duration::from_secs(60),
        limit,
    }
}

fn run_test(_: &ClaimFacts) -> ClaimDecision {
    ClaimDecision::Run(ExecutorKind::Test)
}

fn ids(batch: &queue::ClaimBatch) -> Vec<Uuid> {
    batch.claimed.iter().map(|c| c.build_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_by_priority_then_age_across_tenants_and_waits_for_not_before() {
    let db = TestDb::new().await;
    let a = tenant(&db.pool, "a", 10).await;
    let b = tenant(&db.pool, "b", 10).await;
    let prio = |priority| Spec {
        priority,
        ..Spec::lasting(60_000)
    };
    // Submitted one at a time so created_at orders them.
    let a1 = submit(&db.pool, a, &[prio(0)]).await[0];
    let b1 = submit(&db.pool, b, &[prio(5)]).await[0];
    let a2 = submit(&db.pool, a, &[prio(5)]).await[0];
    let b2 = submit(
        &db.pool,
        b,
        &[Spec {
            not_before_secs: 3600.0,
            ..prio(9)
        }],
    )
    .await[0];
    let a3 = submit(&db.pool, a, &[prio(0)]).await[0];

    let claimer = Claimer::new();
    let first = claimer
        .claim(&db.pool, request("d1", 3), run_test)
        .await
        .unwrap();
    // b2 has the highest priority but is backing off.
    assert_eq!(ids(&first), vec![b1, a2, a1]);
    assert_eq!(first.offered, 3);
    assert!(first.failed.is_empty());
    // Execution ids are time-ordered in claim order.
    let exec_ids: Vec<Uuid> = first.claimed.iter().map(|c| c.execution.id).collect();
    let mut sorted = exec_ids.clone();
    sorted.sort();
    assert_eq!(exec_ids, sorted);
    for c in &first.claimed {
        let e = &c.execution;
        assert_eq!(
            (
                e.attempt,
                e.executor.as_str(),
                e.status.as_str(),
                e.dispatcher_id.as_deref()
            ),
            (1, "test", "running", Some("d1"))
        );
        assert!(e.reference_at.is_none() && e.finished_at.is_none());
        assert_eq!((c.max_attempts, c.timeout_seconds), (3, 3600));
    }
    // The rows say the same as what the claim returned.
    let rows: Vec<(Uuid, String, i32, Option<String>, bool)> = sqlx::query_as(
        "SELECT b.id, b.status, b.attempts, b.lease_owner, b.lease_expires_at > now() + interval '50 seconds' \
         FROM builds b WHERE b.id = ANY($1) ORDER BY b.id",
    )
    .bind(ids(&first))
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for (id, status, attempts, owner, leased) in rows {
        assert_eq!(
            (status.as_str(), attempts, owner.as_deref(), leased),
            ("running", 1, Some("d1"), true),
            "{id}"
        );
    }

    let second = claimer
        .claim(&db.pool, request("d1", 10), run_test)
        .await
        .unwrap();
    assert_eq!(ids(&second), vec![a3]);
    assert_eq!(status(&db.pool, b2).await, "queued");

    // Once its backoff is over, b2 is claimable.
    sqlx::query("UPDATE builds SET not_before = now() - interval '1 second' WHERE id = $1")
        .bind(b2)
        .execute(&db.pool)
        .await
        .unwrap();
    let third = claimer
        .claim(&db.pool, request("d1", 10), run_test)
        .await
        .unwrap();
    assert_eq!(ids(&third), vec![b2]);
    let empty = claimer
        .claim(&db.pool, request("d1", 10), run_test)
        .await
        .unwrap();
    assert!(empty.claimed.is_empty() && empty.offered == 0);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_limits_count_running_builds_and_provider_slots_are_shared_by_tenants() {
    let db = TestDb::new().await;
    let a = tenant(&db.pool, "a", 3).await;
    let b = tenant(&db.pool, "b", 10).await;
    let c = tenant(&db.pool, "c", 10).await;
    let p = provider(&db.pool, "local", false, Some(2)).await;
    let on_p = Spec {
        provider: Some(p),
        ..Spec::lasting(60_000)
    };
    let claimer = Claimer::new();

    // Tenant A: two running already, so one more fits.
    submit(&db.pool, a, &vec![Spec::lasting(60_000); 2]).await;
    assert_eq!(
        claimer
            .claim(&db.pool, request("d", 32), run_test)
            .await
            .unwrap()
            .claimed
            .len(),
        2
    );
    let a_more = submit(&db.pool, a, &vec![Spec::lasting(60_000); 4]).await;
    // Provider P (limit 2): C's builds are older than B's.
    let c_on_p = submit(&db.pool, c, &[on_p.clone(), on_p.clone()]).await;
    let b_on_p = submit(&db.pool, b, &[on_p.clone(), on_p.clone()]).await;
    let c_free = submit(&db.pool, c, &[Spec::lasting(60_000)]).await[0];

    let batch = claimer
        .claim(&db.pool, request("d", 32), run_test)
        .await
        .unwrap();
    let got: HashSet<Uuid> = ids(&batch).into_iter().collect();
    let want: HashSet<Uuid> = [a_more[0], c_on_p[0], c_on_p[1], c_free].into();
    assert_eq!(got, want);
    for claimed in &batch.claimed {
        let expected = if c_on_p.contains(&claimed.build_id) {
            Some(p)
        } else {
            None
        };
        assert_eq!(claimed.execution.provider_id, expected);
    }
    // Everything left is over a limit.
    let again = claimer
        .claim(&db.pool, request("d", 32), run_test)
        .await
        .unwrap();
    assert!(again.claimed.is_empty(), "{:?}", ids(&again));

    // A provider slot frees: the oldest waiting build on P (B's first) gets it.
    let done = &batch
        .claimed
        .iter()
        .find(|x| x.build_id == c_on_p[0])
        .unwrap()
        .execution;
    let finish = queue::Finish::Terminal {
        status: imagefactory_domain::BuildStatus::Succeeded,
        message: None,
    };
    assert!(
        queue::finish(&db.pool, "d", c_on_p[0], done.id, &finish)
            .await
            .unwrap()
    );
    let freed = claimer
        .claim(&db.pool, request("d", 32), run_test)
        .await
        .unwrap();
    assert_eq!(ids(&freed), vec![b_on_p[0]]);
    assert_eq!(
        count(
            &db.pool,
            &format!(
                "SELECT count(*) FROM builds WHERE tenant_id = '{}' AND status = 'running'",
                a.0
            )
        )
        .await,
        3
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_decisions_are_made_once_per_facts_tuple_and_failures_are_recorded() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 100).await;
    let tekton_on = provider(&db.pool, "kubernetes", true, None).await;
    let tekton_off = provider(&db.pool, "kubernetes", false, None).await;
    let kube = |provider| Spec {
        infrastructure: "kubernetes",
        provider: Some(provider),
        ..Spec::lasting(60_000)
    };
    let local = Spec::lasting(60_000);
    let calls = Arc::new(AtomicUsize::new(0));
    let decide = {
        let calls = calls.clone();
        move |f: &ClaimFacts| {
            calls.fetch_add(1, Ordering::SeqCst);
            match (
                f.infrastructure_type.as_str(),
                f.provider_tekton_enabled,
                f.provider_status.as_deref(),
            ) {
                ("local", _, _) => ClaimDecision::Run(ExecutorKind::Local),
                ("kubernetes", Some(true), Some("active")) => {
                    ClaimDecision::Run(ExecutorKind::Tekton)
                }
                _ => ClaimDecision::Fail("tekton is off on this provider".into()),
            }
        }
    };
    let first_ids = submit(
        &db.pool,
        t,
        &[
            local.clone(),
            kube(tekton_off),
            kube(tekton_on),
            local.clone(),
            kube(tekton_off),
            kube(tekton_on),
        ],
    )
    .await;

    let claimer = Claimer::new();
    let batch = claimer
        .claim(&db.pool, request("d", 32), &decide)
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "one decision per tuple");
    // Claim order survives the round trip that asked for decisions.
    assert_eq!(
        ids(&batch),
        vec![first_ids[0], first_ids[2], first_ids[3], first_ids[5]]
    );
    let kinds: Vec<&str> = batch
        .claimed
        .iter()
        .map(|c| c.execution.executor.as_str())
        .collect();
    assert_eq!(kinds, vec!["local", "tekton", "local", "tekton"]);
    assert_eq!(
        batch.failed,
        vec![
            (first_ids[1], "tekton is off on this provider".to_owned()),
            (first_ids[4], "tekton is off on this provider".to_owned()),
        ]
    );
    // Failed at claim time: terminal, with the reason, and no attempt started.
    let failed: Vec<(String, Option<String>, i32, i64)> = sqlx::query_as(
        "SELECT b.status, b.error_message, b.attempts, \
                (SELECT count(*) FROM build_executions e WHERE e.build_id = b.id) \
         FROM builds b WHERE b.id = ANY($1)",
    )
    .bind(vec![first_ids[1], first_ids[4]])
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for row in failed {
        assert_eq!(
            row,
            (
                "failed".to_owned(),
                Some("tekton is off on this provider".to_owned()),
                0,
                0
            )
        );
    }

    // The same tuples again: no new decisions.
    let more = submit(
        &db.pool,
        t,
        &[kube(tekton_off), local.clone(), kube(tekton_on)],
    )
    .await;
    let batch = claimer
        .claim(&db.pool, request("d", 32), &decide)
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(ids(&batch), vec![more[1], more[2]]);
    assert_eq!(batch.failed.len(), 1);

    // A provider that changes (disabled) is a new tuple and a new decision.
    sqlx::query("UPDATE infrastructure_providers SET status = 'disabled' WHERE id = $1")
        .bind(tekton_on)
        .execute(&db.pool)
        .await
        .unwrap();
    let last = submit(&db.pool, t, &[kube(tekton_on)]).await[0];
    let batch = claimer
        .claim(&db.pool, request("d", 32), &decide)
        .await
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert!(batch.claimed.is_empty());
    assert_eq!(batch.failed[0].0, last);
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_held_by_another_transaction_and_cancel_requests_are_skipped_not_waited_for() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let builds = submit(&db.pool, t, &vec![Spec::lasting(60_000); 3]).await;
    // An API transaction holds the first build (e.g. a cancel in progress).
    let mut held = db.pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM builds WHERE id = $1 FOR UPDATE")
        .bind(builds[0])
        .execute(&mut *held)
        .await
        .unwrap();
    request_cancel(&db.pool, builds[1]).await;

    let claimer = Claimer::new();
    let batch = tokio::time::timeout(
        Duration::from_secs(30),
        claimer.claim(&db.pool, request("d", 32), run_test),
    )
    .await
    .expect("the claim waited for a locked row")
    .unwrap();
    assert_eq!(ids(&batch), vec![builds[2]]);
    assert_eq!(status(&db.pool, builds[0]).await, "queued");

    held.commit().await.unwrap();
    let batch = claimer
        .claim(&db.pool, request("d", 32), run_test)
        .await
        .unwrap();
    assert_eq!(ids(&batch), vec![builds[0]]);
    // The cancel-requested build is left for the cancel sweep, never started.
    assert_eq!(status(&db.pool, builds[1]).await, "queued");
    assert_eq!(
        count(
            &db.pool,
            &format!(
                "SELECT count(*) FROM build_executions WHERE build_id = '{}'",
                builds[1]
            )
        )
        .await,
        0
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claimers_claim_each_build_once_and_never_exceed_a_limit() {
    let db = TestDb::new().await;
    let p = provider(&db.pool, "local", false, Some(30)).await;
    let small = tenant(&db.pool, "small", 50).await;
    let medium = tenant(&db.pool, "medium", 100).await;
    let large = tenant(&db.pool, "large", 1000).await;
    submit(&db.pool, small, &vec![Spec::lasting(60_000); 200]).await;
    submit(&db.pool, medium, &vec![Spec::lasting(60_000); 200]).await;
    let on_p = Spec {
        provider: Some(p),
        ..Spec::lasting(60_000)
    };
    let mut specs = vec![Spec::lasting(60_000); 140];
    specs.extend(vec![on_p; 60]);
    submit(&db.pool, large, &specs).await;

    // Six claimers, each with its own connections and decisions, as six
    // dispatcher replicas would be.
    let mut tasks = Vec::new();
    for n in 0..6 {
        let pool = db.another_pool().await;
        tasks.push(tokio::spawn(async move {
            let owner = format!("claimer-{n}");
            let claimer = Claimer::new();
            let mut mine = Vec::new();
            loop {
                let batch = claimer
                    .claim(&pool, request(&owner, 7), run_test)
                    .await
                    .unwrap();
                if batch.claimed.is_empty() {
                    break;
                }
                mine.extend(
                    batch
                        .claimed
                        .into_iter()
                        .map(|c| (c.build_id, owner.clone())),
                );
            }
            pool.close().await;
            mine
        }));
    }
    let mut claimed: HashMap<Uuid, String> = HashMap::new();
    for task in tasks {
        for (build, owner) in task.await.unwrap() {
            assert!(
                claimed.insert(build, owner).is_none(),
                "build {build} claimed twice"
            );
        }
    }
    // Every limit filled exactly, none exceeded: 50 + 100 + (140 + 30).
    assert_eq!(claimed.len(), 320);
    let running: Vec<(String, i64)> = sqlx::query_as(
        "SELECT t.name, count(*) FROM builds b JOIN tenants t ON t.id = b.tenant_id \
         WHERE b.status = 'running' GROUP BY t.name ORDER BY t.name",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        running,
        vec![
            ("large".to_owned(), 170),
            ("medium".to_owned(), 100),
            ("small".to_owned(), 50)
        ]
    );
    assert_eq!(
        count(
            &db.pool,
            &format!(
                "SELECT count(*) FROM builds WHERE infrastructure_provider_id = '{p}' AND status = 'running'"
            )
        )
        .await,
        30
    );
    // One execution per running build, owned by the claimer that returned it.
    let owners: Vec<(Uuid, String, i32, i64)> = sqlx::query_as(
        "SELECT b.id, b.lease_owner, b.attempts, \
                (SELECT count(*) FROM build_executions e WHERE e.build_id = b.id AND e.dispatcher_id = b.lease_owner) \
         FROM builds b WHERE b.status = 'running'",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(owners.len(), 320);
    for (id, owner, attempts, executions) in owners {
        assert_eq!(claimed.get(&id), Some(&owner));
        assert_eq!((attempts, executions), (1, 1), "{id}");
    }
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM build_executions").await,
        320
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_claim_function_refuses_a_snapshot_older_than_its_lock() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    submit(&db.pool, t, &[Spec::default()]).await;
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .execute(&mut *tx)
        .await
        .unwrap();
    let err = sqlx::query(
        "SELECT * FROM claim_queued_builds('d', 60, 1, ARRAY[gen_random_uuid()], \
         '{}', '{}', '{}', '{}', '{}', '{}', '{queued}', 'running', '{queued}', 'failed')",
    )
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert!(err.to_string().contains("READ COMMITTED"), "{err}");
    drop(tx);
    assert_eq!(
        count(
            &db.pool,
            "SELECT count(*) FROM builds WHERE status = 'queued'"
        )
        .await,
        1
    );
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_waits_for_a_claim_in_progress_and_then_counts_it() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 2).await;
    let queued = submit(&db.pool, t, &vec![Spec::lasting(60_000); 2]).await;
    // Another claim in progress: it holds the claim lock and has moved both
    // builds to running, not yet committed.
    let mut other = db.pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(queue::CLAIM_LOCK_KEY)
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::query("UPDATE builds SET status = 'running', attempts = 1 WHERE id = ANY($1)")
        .bind(&queued)
        .execute(&mut *other)
        .await
        .unwrap();
    // Meanwhile a build that sorts first arrives. A claim that did not wait
    // would see no running build, pick it and exceed the tenant's limit.
    let urgent = submit(
        &db.pool,
        t,
        &[Spec {
            priority: 9,
            ..Spec::lasting(60_000)
        }],
    )
    .await[0];
    let pool = db.pool.clone();
    let claim = tokio::spawn(async move {
        Claimer::new()
            .claim(&pool, request("d", 32), run_test)
            .await
            .unwrap()
    });
    // The claim's backend waits on the claim lock (advisory), behind `other`.
    wait_count(
        &db.pool,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
        1,
        Duration::from_secs(30),
    )
    .await;
    assert!(!claim.is_finished(), "the claim did not wait for the lock");
    other.commit().await.unwrap();
    let batch = claim.await.unwrap();
    assert!(batch.claimed.is_empty(), "{:?}", ids(&batch));
    assert_eq!(status(&db.pool, urgent).await, "queued");
    db.drop_db().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_not_taken_over_by_its_holder_while_it_still_follows_the_build() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 10).await;
    let build = submit(&db.pool, t, &[Spec::lasting(60_000)]).await[0];
    let claimed = Claimer::new()
        .claim(&db.pool, request("d1", 1), run_test)
        .await
        .unwrap();
    assert_eq!(ids(&claimed), vec![build]);
    // The holder's heartbeat came late: its lease lapsed.
    sqlx::query("UPDATE builds SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(build)
        .execute(&db.pool)
        .await
        .unwrap();

    let own = queue::take_over_expired(&db.pool, request("d1", 10), &[build])
        .await
        .unwrap();
    assert!(
        own.is_empty(),
        "the holder still follows it: no second follower"
    );
    // Another dispatcher takes it (the holder's next renewal then fails and it lets go)...
    let other = queue::take_over_expired(&db.pool, request("d2", 10), &[])
        .await
        .unwrap();
    assert_eq!(
        other.iter().map(|c| c.build_id).collect::<Vec<_>>(),
        vec![build]
    );
    assert_eq!(
        other[0].execution.attempt, 1,
        "re-attach to the same attempt"
    );
    // ...and a holder that lost its task (not following) takes its own lease back.
    sqlx::query("UPDATE builds SET lease_expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(build)
        .execute(&db.pool)
        .await
        .unwrap();
    let back = queue::take_over_expired(&db.pool, request("d2", 10), &[])
        .await
        .unwrap();
    assert_eq!(back.len(), 1);
    let owner: String = sqlx::query_scalar("SELECT lease_owner FROM builds WHERE id = $1")
        .bind(build)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(owner, "d2");
    db.drop_db().await;
}

/// A claim's work follows the tenants with queued builds, not the length of
/// the queue, on a table PostgreSQL has not analyzed (a young table, or
/// autovacuum behind), from a connection that asks for generic plans and
/// claimed first while the table was nearly empty, as the dispatcher's
/// control connection does: the rows a claim reads from `builds` in its
/// transaction stay far below the 3,000 queued. Before migration 0035 the
/// tenants were found by hashing every queued build, and the chosen rows
/// locked and updated by scanning the queue index or, with the plan from the
/// empty table, the whole table (240 ms per claim with 12,000 queued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_reads_a_few_rows_however_long_the_queue_on_an_unanalyzed_table() {
    let db = TestDb::new().await;
    let busy = tenant(&db.pool, "busy", 100).await;
    let other = tenant(&db.pool, "other", 100).await;
    // Whatever the server's configuration, nothing analyzes it meanwhile.
    sqlx::query("ALTER TABLE builds SET (autovacuum_enabled = false)")
        .execute(&db.pool)
        .await
        .unwrap();
    submit(&db.pool, other, &vec![Spec::default(); 2]).await;

    let mut conn = db.pool.acquire().await.unwrap();
    // As the dispatcher's control connection runs it: one generic plan,
    // made at its first claim.
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    let claim = |limit: i64| {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM claim_queued_builds('d', 60, $1::int, \
             ARRAY(SELECT gen_random_uuid() FROM generate_series(1, $1::int)), \
             '{local}', '{NULL}', '{NULL}', '{NULL}', '{test}', '{NULL}', \
             '{queued}', 'running', '{queued}', 'failed') WHERE outcome = 'claimed'",
        )
        .bind(limit)
    };
    assert_eq!(claim(1).fetch_one(&mut *conn).await.unwrap(), 1);

    submit(&db.pool, busy, &vec![Spec::default(); 3000]).await;
    submit(&db.pool, other, &vec![Spec::default(); 5]).await;
    let analyzed: Option<String> = sqlx::query_scalar(
        "SELECT COALESCE(last_analyze, last_autoanalyze)::text FROM pg_stat_user_tables WHERE relname = 'builds'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(analyzed, None, "the table must not be analyzed for this");
    for round in 0..3 {
        let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
        assert_eq!(
            claim(20).fetch_one(&mut *tx).await.unwrap(),
            20,
            "round {round}"
        );
        // This transaction's reads of the table.
        let (seq, fetched): (i64, i64) = sqlx::query_as(
            "SELECT seq_tup_read, idx_tup_fetch FROM pg_stat_xact_user_tables WHERE relname = 'builds'",
        )
        .fetch_one(&mut *tx)
        .await
        .unwrap();
        assert!(
            seq + fetched < 300,
            "round {round}: the claim read {seq} rows sequentially and fetched {fetched} through indexes"
        );
        tx.rollback().await.unwrap();
    }
    drop(conn);
    db.drop_db().await;
}
