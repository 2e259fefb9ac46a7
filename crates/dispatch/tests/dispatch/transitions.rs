//! The build state machine is enforced by the store: every status-writing
//! store function, tried from every status, moves a build exactly as its
//! `imagefactory_domain::Transition` says, and together they make exactly
//! the domain's table (`BuildStatus::can_transition_to`). With
//! `crates/store/tests/status_writes.rs` (no other status write exists) this
//! holds ARCHITECTURE.md's state-machine invariant.

use std::collections::BTreeSet;
use std::time::Duration;

use imagefactory_domain::{BuildStatus, ExecutorKind, Transition};
use imagefactory_store::builds;
use imagefactory_store::queue::{self, ClaimDecision, ClaimRequest, Finish};
use uuid::Uuid;

use crate::helpers::*;

/// Every store function that writes a status (the sites listed in
/// `status_writes.rs`), as the transition it is meant to make.
#[derive(Debug, Clone, Copy)]
enum Site {
    /// `builds::cancel` (a running build only gets a cancel request).
    Cancel,
    Retry,
    /// `queue::finish` with a terminal (or, wrongly, a non-terminal) status.
    Finish(BuildStatus),
    Requeue,
    /// `queue::cancel_requested_queued`.
    Sweep,
    /// `claim_queued_builds`, deciding to run / to fail the build.
    Claim,
    Reject,
}

impl Site {
    fn all() -> Vec<Site> {
        let mut all = vec![
            Site::Cancel,
            Site::Retry,
            Site::Requeue,
            Site::Sweep,
            Site::Claim,
            Site::Reject,
        ];
        all.extend(BuildStatus::ALL.iter().map(|s| Site::Finish(*s)));
        all
    }

    fn transition(self) -> Transition {
        match self {
            Site::Cancel | Site::Sweep => Transition::CancelQueued,
            Site::Retry => Transition::Retry,
            Site::Finish(s) => Transition::Finish(s),
            Site::Requeue => Transition::Requeue,
            Site::Claim => Transition::Claim,
            Site::Reject => Transition::Reject,
        }
    }
}

/// A build of `tenant` in `from`, held under the lease of "owner" (so the
/// lease fence of `finish` is not what stops a write).
async fn build_in(db: &TestDb, tenant: (Uuid, Uuid), from: BuildStatus) -> Uuid {
    let id = submit_and(&db.pool, tenant, &[Spec::default()], false).await[0];
    sqlx::query(
        "UPDATE builds SET status = $2, lease_owner = 'owner', \
         lease_expires_at = now() + interval '1 hour' WHERE id = $1",
    )
    .bind(id)
    .bind(from.as_str())
    .execute(&db.pool)
    .await
    .unwrap();
    id
}

/// Run `site` on `id`; errors are expected for states it refuses.
async fn apply(db: &TestDb, tenant: Uuid, id: Uuid, site: Site) {
    let pool = &db.pool;
    let claim = ClaimRequest {
        owner: "owner",
        lease: Duration::from_secs(60),
        limit: 10,
    };
    match site {
        Site::Cancel => drop(builds::cancel(pool, tenant, id).await),
        Site::Retry => drop(builds::retry(pool, tenant, id).await),
        Site::Finish(status) => {
            let finish = Finish::Terminal {
                status,
                message: Some("done".into()),
            };
            let result = queue::finish(pool, "owner", id, Uuid::now_v7(), &finish).await;
            if !status.is_terminal() {
                assert!(result.is_err(), "finish to {status} must be refused");
            }
        }
        Site::Requeue => {
            let finish = Finish::Requeue {
                delay: Duration::from_secs(60),
                message: "transient".into(),
                counted: true,
            };
            drop(queue::finish(pool, "owner", id, Uuid::now_v7(), &finish).await);
        }
        Site::Sweep => {
            sqlx::query("UPDATE builds SET cancel_requested_at = now() WHERE id = $1")
                .bind(id)
                .execute(pool)
                .await
                .unwrap();
            queue::cancel_requested_queued(pool).await.unwrap();
        }
        Site::Claim => drop(
            queue::claim(pool, claim, |_| ClaimDecision::Run(ExecutorKind::Test))
                .await
                .unwrap(),
        ),
        Site::Reject => drop(
            queue::claim(pool, claim, |_| ClaimDecision::Fail("no".into()))
                .await
                .unwrap(),
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_write_follows_the_domain_state_machine() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 100).await;
    let mut moves = BTreeSet::new();
    for site in Site::all() {
        for from in BuildStatus::ALL.iter().copied() {
            let id = build_in(&db, t, from).await;
            apply(&db, t.0, id, site).await;
            let to: BuildStatus = status(&db.pool, id).await.parse().unwrap();
            let transition = site.transition();
            let want = if transition.allows(from) {
                transition.to()
            } else {
                from
            };
            assert_eq!(to, want, "{site:?} from {from}");
            if to != from {
                moves.insert((from.as_str(), to.as_str()));
            }
            // One build at a time: a claim takes every claimable build.
            sqlx::query("DELETE FROM builds WHERE id = $1")
                .bind(id)
                .execute(&db.pool)
                .await
                .unwrap();
        }
    }
    let table: BTreeSet<_> = BuildStatus::ALL
        .iter()
        .flat_map(|f| BuildStatus::ALL.iter().map(move |t| (*f, *t)))
        .filter(|(f, t)| f.can_transition_to(*t))
        .map(|(f, t)| (f.as_str(), t.as_str()))
        .collect();
    assert_eq!(moves, table, "the store's moves are the domain's table");
    db.drop_db().await;
}

/// No function in the database writes a status on its own: the live claim
/// function takes both of its status writes from the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_only_database_function_writing_builds_takes_its_statuses_from_the_caller() {
    let db = TestDb::new().await;
    let functions: Vec<(String, String)> = sqlx::query_as(
        "SELECT proname::text, prosrc FROM pg_proc \
         WHERE prosrc ILIKE '%update builds%' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let names: Vec<&str> = functions.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["claim_queued_builds"]);
    let source = functions[0].1.to_lowercase();
    assert!(
        source.contains("set status = p_claim_to") && source.contains("set status = p_reject_to")
    );
    assert!(
        !source.contains("set status = '"),
        "a status literal is written"
    );
    db.drop_db().await;
}
