//! Executions, logs (plain and followed as SSE) and artifacts of a build
//! whose rows the test writes as the dispatcher would.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{TestApp, TestDb, id_of};

#[tokio::test]
async fn executions_logs_and_artifacts() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let t = app.tenant("team-l").await;
    let project = app.create_project(&t.admin, "web").await;
    let provider = app.create_k8s_provider(&t.admin, "k").await;
    let build = id_of(&app.submit_build(&t.developer, project, provider).await);

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
        json!([])
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
    let list = executions.json();
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
    let artifacts = artifacts.json();
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
    let t = app.tenant("team-f").await;
    let project = app.create_project(&t.admin, "web").await;
    let provider = app.create_k8s_provider(&t.admin, "k").await;
    let build = id_of(&app.submit_build(&t.developer, project, provider).await);
    app.set_status(build, "running").await;
    let execution = app.insert_execution(build, t.id, 1, "running").await;
    app.insert_log(build, execution, 0, "first line").await;

    let mut res = app
        .client
        .get(app.url(&format!("/api/v1/builds/{build}/logs?follow=true")))
        .bearer_auth(&t.viewer)
        .send()
        .await
        .unwrap();
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
    let resumed = app
        .client
        .get(app.url(&format!("/api/v1/builds/{build}/logs?follow=true")))
        .bearer_auth(&t.viewer)
        .header("last-event-id", first_id.to_string())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !resumed.contains("first line")
            && resumed.contains("second line")
            && resumed.contains("event: end")
    );
}
