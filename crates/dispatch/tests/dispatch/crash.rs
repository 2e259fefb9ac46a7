//! (b) Dispatcher processes SIGKILLed at random points while builds run:
//! after takeover every build completes exactly once.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rand::Rng;

use crate::helpers::*;

fn spawn(url: &str, id: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_if-test-dispatcher"))
        .args([
            "--id",
            id,
            "--dispatcher-poll-interval",
            "100ms",
            "--dispatcher-lease",
            "2s",
            "--dispatcher-heartbeat-interval",
            "200ms",
            "--dispatcher-max-in-flight",
            "40",
            "--dispatcher-claim-batch",
            "8",
        ])
        .env("DATABASE_URL", url)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn if-test-dispatcher")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_dispatchers_lose_nothing_and_duplicate_nothing() {
    let db = TestDb::new().await;
    let t = tenant(&db.pool, "t", 1000).await;
    let mut rng = rand::rng();
    let specs: Vec<Spec> = (0..200)
        .map(|_| Spec::lasting(rng.random_range(200..2_000)))
        .collect();
    let ids = submit(&db.pool, t, &specs).await;

    let mut generation = 0;
    let mut children: Vec<(String, Child)> = (0..2)
        .map(|i| {
            let id = format!("crash-{i}-g0");
            (id.clone(), spawn(&db.url, &id))
        })
        .collect();

    // Kill a dispatcher while it holds running builds, repeatedly.
    let mut kills_with_leases = 0;
    let mut rounds = 0;
    while kills_with_leases < 6 && rounds < 60 {
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..1_200))).await;
        let victim = rng.random_range(0..children.len());
        let held = count(
            &db.pool,
            &format!(
                "SELECT count(*) FROM builds WHERE status = 'running' AND lease_owner = '{}'",
                children[victim].0
            ),
        )
        .await;
        if held == 0 {
            continue;
        }
        let (_, child) = &mut children[victim];
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        kills_with_leases += 1;
        generation += 1;
        let id = format!("crash-{victim}-g{generation}");
        children[victim] = (id.clone(), spawn(&db.url, &id));
    }
    assert!(
        kills_with_leases >= 3,
        "only {kills_with_leases} kills hit a dispatcher holding builds"
    );

    let all_done = wait_count(
        &db.pool,
        "SELECT count(*) FROM builds WHERE status = 'succeeded'",
        200,
        Duration::from_secs(240),
    );
    all_done.await;
    for (_, mut child) in children {
        let _ = child.kill();
        let _ = child.wait();
    }

    // No build ran twice: one execution (attempt 1) each, one work item each,
    // started exactly once; taken-over builds were re-attached to.
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM build_executions").await,
        200
    );
    assert_eq!(
        count(&db.pool, "SELECT count(*) FROM builds WHERE attempts <> 1").await,
        0
    );
    let work = work(&db.pool).await;
    assert_eq!(work.len(), 200);
    assert!(ids.iter().all(|id| work.iter().any(|w| w.build_id == *id)));
    for w in &work {
        assert_eq!(w.start_calls, 1, "attempt started twice: {w:?}");
        assert!(w.completions >= 1, "{w:?}");
    }
    let reattached = work.iter().filter(|w| w.reattach_calls > 0).count();
    assert!(
        reattached > 0,
        "no build was re-attached after {kills_with_leases} kills"
    );
    eprintln!(
        "kills={kills_with_leases} reattached_builds={reattached} reattach_calls={}",
        work.iter().map(|w| w.reattach_calls).sum::<i32>()
    );
    db.drop_db().await;
}
