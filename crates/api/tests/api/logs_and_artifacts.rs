//! Executions, logs (plain and followed as SSE) and artifacts of a build
//! whose rows the test writes as the dispatcher would.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb};

#[tokio::test]
async fn executions_logs_and_artifacts() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let (t, build) = app.tenant_with_build("team-l").await;

    // Nothing yet: empty answers, not errors.
    assert_eq!(
        app.get(&format!("/api/v1/builds/{build}/logs"), &t.viewer)
            .await
            .text,
        ""
    );
    assert_eq!(
        app.get(&format!("/api/v1/builds/{build}/artifacts"), &t.viewer)
            .await
            .json(),
        json!({"items": [], "next_cursor": null})
    );

    let first = app.insert_execution(build, t.id, 1, "failed").await;
    app.insert_log(build, first, 0, "clone ok").await;
    app.insert_log(build, first, 1, "build failed").await;
    let second = app.insert_execution(build, t.id, 2, "succeeded").await;
    app.insert_log(build, second, 0, "step 1/2: FROM scratch")
        .await;
    app.insert_log(build, second, 1, "pushed").await;
    for (name, value, kind) in [
        (
            "IMAGE_URL",
            "registry.example.com/team/app:1.0",
            "image_url",
        ),
        ("IMAGE_DIGEST", "sha256:0123", "image_digest"),
        ("build.size", "1234", "result"),
    ] {
        sqlx::query("INSERT INTO build_artifacts (id, build_id, execution_id, name, value, kind) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(Uuid::now_v7())
            .bind(build)
            .bind(second)
            .bind(name)
            .bind(value)
            .bind(kind)
            .execute(&pool)
            .await
            .unwrap();
    }

    let executions = app
        .get(&format!("/api/v1/builds/{build}/executions"), &t.viewer)
        .await;
    executions.expect(200);
    let list = executions.json()["items"].clone();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["attempt"], 1);
    assert_eq!(list[1]["status"], "succeeded");
    assert_eq!(list[1]["pipeline_run_name"], "if-test-2");

    let logs = app
        .get(&format!("/api/v1/builds/{build}/logs"), &t.viewer)
        .await;
    logs.expect(200);
    assert!(logs.content_type.starts_with("text/plain"));
    assert_eq!(
        logs.text,
        "clone ok\nbuild failed\nstep 1/2: FROM scratch\npushed\n"
    );

    let artifacts = app
        .get(&format!("/api/v1/builds/{build}/artifacts"), &t.viewer)
        .await;
    artifacts.expect(200);
    let artifacts = artifacts.json()["items"].clone();
    let names: Vec<&str> = artifacts
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["IMAGE_DIGEST", "IMAGE_URL", "build.size"]);
    assert_eq!(artifacts[1]["kind"], "image_url");
    assert_eq!(artifacts[1]["attempt"], 2);
}

/// Read the SSE body until `needle` appears (or fail after a generous timeout).
/// Opens the live log stream of `build`, resuming after `last_event_id`.
async fn follow(
    app: &TestApp,
    build: Uuid,
    token: &str,
    last_event_id: Option<&str>,
) -> reqwest::Response {
    let mut request = app
        .client
        .get(app.url(&format!("/api/v1/builds/{build}/logs?follow=true")))
        .bearer_auth(token);
    if let Some(id) = last_event_id {
        request = request.header("last-event-id", id);
    }
    request.send().await.unwrap()
}

async fn read_until(res: &mut reqwest::Response, seen: &mut String, needle: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, res.chunk())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {needle:?}; got {seen:?}"))
            .expect("stream read");
        match chunk {
            Some(bytes) => seen.push_str(&String::from_utf8_lossy(&bytes)),
            None => panic!("stream ended before {needle:?}; got {seen:?}"),
        }
    }
}

#[tokio::test]
async fn follow_streams_until_the_build_ends() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let (t, build) = app.tenant_with_build("team-f").await;
    app.set_status(build, "running").await;
    let execution = app.insert_execution(build, t.id, 1, "running").await;
    app.insert_log(build, execution, 0, "first line").await;

    let mut res = follow(&app, build, &t.viewer, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut seen = String::new();
    read_until(&mut res, &mut seen, "data: first line").await;
    assert!(!seen.contains("event: end"));

    // Lines written while following arrive; then the build ends.
    app.insert_log(build, execution, 1, "second line").await;
    read_until(&mut res, &mut seen, "data: second line").await;
    app.insert_log(build, execution, 2, "last line").await;
    app.set_status(build, "succeeded").await;
    read_until(&mut res, &mut seen, "event: end").await;
    let end = seen.find("event: end").unwrap();
    assert!(
        seen.find("data: last line").is_some_and(|i| i < end),
        "every line before the end: {seen}"
    );
    assert!(seen[end..].contains("data: succeeded"));
    let rest = tokio::time::timeout(Duration::from_secs(30), res.chunk())
        .await
        .expect("stream closes");
    assert!(
        matches!(rest, Ok(None)),
        "the stream closes after end: {rest:?}"
    );

    // Resuming with Last-Event-ID sends only what came after.
    let first_id: i64 = sqlx::query_scalar("SELECT min(id) FROM build_logs WHERE build_id = $1")
        .bind(build)
        .fetch_one(&pool)
        .await
        .unwrap();
    let resumed = follow(&app, build, &t.viewer, Some(&first_id.to_string()))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !resumed.contains("first line")
            && resumed.contains("second line")
            && resumed.contains("event: end")
    );
}

/// A log line as one of several concurrent writers (one per step) stores it.
async fn insert_step_line<'e>(
    db: impl sqlx::PgExecutor<'e>,
    build: Uuid,
    execution: Uuid,
    source: &str,
    line: &str,
) {
    sqlx::query(
        "INSERT INTO build_logs (build_id, execution_id, source, position, line) VALUES ($1, $2, $3, 0, $4)",
    )
    .bind(build)
    .bind(execution)
    .bind(source)
    .bind(line)
    .execute(db)
    .await
    .unwrap();
}

/// Wait until some connection of this database has finished a read of
/// `build_logs` that started after `since` (server clock): a follower's poll
/// whose snapshot is later than `since`. `pg_stat_activity` is live (not the
/// delayed statistics); the follower polls every 50 ms, so a fresh one shows
/// up even if the test reuses that pooled connection meanwhile.
async fn wait_for_log_read_after(pool: &sqlx::PgPool, since: chrono::DateTime<chrono::Utc>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let read: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND state = 'idle' AND query_start > $1
                   AND query LIKE 'SELECT%FROM build_logs%')",
        )
        .bind(since)
        .fetch_one(pool)
        .await
        .unwrap();
        if read {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no follower read of build_logs after {since}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two writers of one build's log commit out of id order: transaction A
/// takes the lower line id but commits after B. A follower that reads
/// between B's commit and A's must still send A's line, in its place, once,
/// and so must a resumed stream and the plain log.
///
/// `b_has_older_xid` false: A also began first (older transaction id), so
/// the log order is A, B and B's line is held back until A is decided.
/// True: B took its transaction id before A, so the order is B, A; B's
/// line may be sent while A is open and A's follows. (Holding back only the
/// lines of transactions still in progress, in id order, would lose A here.)
async fn follow_out_of_id_order(b_has_older_xid: bool) {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let (t, build) = app.tenant_with_build("team-o").await;
    app.set_status(build, "running").await;
    let execution = app.insert_execution(build, t.id, 1, "running").await;

    let mut b = pool.begin().await.unwrap();
    if b_has_older_xid {
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut *b)
            .await
            .unwrap();
    }
    let mut a = pool.begin().await.unwrap();
    insert_step_line(&mut *a, build, execution, "build/step-a", "line a").await;
    insert_step_line(&mut *b, build, execution, "build/step-b", "line b").await;
    b.commit().await.unwrap();
    let (id_a, id_b): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT id FROM build_logs WHERE line = 'line a'),
                (SELECT id FROM build_logs WHERE line = 'line b')",
    )
    .fetch_one(&mut *a)
    .await
    .unwrap();
    assert!(id_a < id_b, "A holds the lower id: {id_a} {id_b}");
    let b_committed: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&pool)
        .await
        .unwrap();

    let mut res = follow(&app, build, &t.viewer, None).await;
    assert_eq!(res.status(), 200);
    // The follower has read the log after B committed, A still open.
    wait_for_log_read_after(&pool, b_committed).await;
    a.commit().await.unwrap();
    app.set_status(build, "succeeded").await;

    let mut seen = String::new();
    read_until(&mut res, &mut seen, "event: end").await;
    let (first, second) = if b_has_older_xid {
        ("line b", "line a")
    } else {
        ("line a", "line b")
    };
    let lines: Vec<&str> = seen
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(
        lines,
        [first, second, "succeeded"],
        "both lines, once, in log order: {seen}"
    );

    // The plain log has the same order, and resuming after the first line
    // sends the second even when its id is lower.
    let plain = app
        .get(&format!("/api/v1/builds/{build}/logs"), &t.viewer)
        .await;
    assert_eq!(plain.text, format!("{first}\n{second}\n"));
    let first_id = if b_has_older_xid { id_b } else { id_a };
    let resumed = follow(&app, build, &t.viewer, Some(&first_id.to_string()))
        .await
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = resumed
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .collect();
    assert_eq!(lines, [second, "succeeded"], "resumed: {resumed}");
}

#[tokio::test]
async fn follow_sends_a_line_committed_after_a_later_one() {
    follow_out_of_id_order(false).await;
}

#[tokio::test]
async fn follow_sends_a_line_of_a_younger_transaction_committed_late() {
    follow_out_of_id_order(true).await;
}

#[tokio::test]
async fn resume_needs_an_event_id_of_the_stream() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let (t, build) = app.tenant_with_build("team-r").await;
    let execution = app.insert_execution(build, t.id, 1, "succeeded").await;
    app.insert_log(build, execution, 0, "only line").await;
    app.set_status(build, "succeeded").await;
    let id: i64 = sqlx::query_scalar("SELECT id FROM build_logs WHERE build_id = $1")
        .bind(build)
        .fetch_one(&pool)
        .await
        .unwrap();
    for (last_event_id, status) in [
        ("0".to_owned(), 200),
        (id.to_string(), 200),
        ((id + 1000).to_string(), 400),
        ("x".to_owned(), 400),
    ] {
        let res = follow(&app, build, &t.viewer, Some(&last_event_id)).await;
        assert_eq!(res.status(), status, "Last-Event-ID {last_event_id}");
        let body = res.text().await.unwrap();
        if last_event_id == "0" {
            assert!(body.contains("data: only line") && body.contains("event: end"));
        } else if status == 200 {
            assert!(!body.contains("only line") && body.contains("event: end"));
        }
    }
}

#[tokio::test]
async fn follow_with_format_json_names_each_line_source() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let (t, build) = app.tenant_with_build("team-j").await;
    let execution = app.insert_execution(build, t.id, 1, "succeeded").await;
    insert_step_line(&pool, build, execution, "build/build-and-push", "STEP 1/2").await;
    app.set_status(build, "succeeded").await;
    let url = |format: &str| {
        app.url(&format!(
            "/api/v1/builds/{build}/logs?follow=true&format={format}"
        ))
    };
    let body = app
        .client
        .get(url("json"))
        .bearer_auth(&t.viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let data = body
        .lines()
        .find_map(|l| l.strip_prefix("data: {"))
        .unwrap_or_else(|| panic!("no JSON data in {body}"));
    let line: serde_json::Value = serde_json::from_str(&format!("{{{data}")).unwrap();
    assert_eq!(
        line,
        serde_json::json!({"source": "build/build-and-push", "line": "STEP 1/2"})
    );
    assert!(body.contains("event: end\ndata: succeeded"), "{body}");
    // Any other format is refused, naming the parameter.
    let res = app
        .client
        .get(url("yaml"))
        .bearer_auth(&t.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let problem: serde_json::Value = res.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("format"),
        "{problem}"
    );
}
