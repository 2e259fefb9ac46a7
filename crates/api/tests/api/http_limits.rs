//! Limits a client meets: concurrent log followers per token, throttling of
//! failed authentication per address, the request body deadline, and the
//! plain log streamed rather than assembled.

use std::time::Duration;

use imagefactory_api::HttpLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::*;

fn limits() -> HttpLimits {
    HttpLimits::default()
}

async fn follow(app: &TestApp, build: uuid::Uuid, token: &str) -> reqwest::Response {
    app.client
        .get(app.url(&format!("/api/v1/builds/{build}/logs?follow=true")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Retry-After in {:?}", res.headers()))
}

async fn problem_type(res: reqwest::Response) -> String {
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let body: serde_json::Value = res.json().await.unwrap();
    body["type"].as_str().unwrap().to_owned()
}

/// Open follow requests until one is accepted (a freed slot), or fail.
async fn follow_accepted(app: &TestApp, build: uuid::Uuid, token: &str) -> reqwest::Response {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let res = follow(app, build, token).await;
        if res.status() == 200 {
            return res;
        }
        assert_eq!(res.status(), 429);
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_token_may_follow_only_so_many_logs_at_once_and_a_closed_stream_frees_its_slot() {
    let db = TestDb::new().await;
    let app = TestApp::spawn_with(
        db.pool.clone(),
        HttpLimits {
            log_followers_per_token: 2,
            ..limits()
        },
    )
    .await;
    let (t, build) = app.tenant_with_build("followers").await;
    let first = follow(&app, build, &t.viewer).await;
    let second = follow(&app, build, &t.viewer).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );

    let refused = follow(&app, build, &t.viewer).await;
    assert_eq!(refused.status(), 429);
    assert!(retry_after(&refused) >= 1);
    assert!(problem_type(refused).await.ends_with("/too-many-requests"));
    // Per token: another token of the same tenant still follows.
    let other = follow(&app, build, &t.developer).await;
    assert_eq!(other.status(), 200);

    // A client that goes away frees its slot.
    drop(first);
    let third = follow_accepted(&app, build, &t.viewer).await;
    assert_eq!(follow(&app, build, &t.viewer).await.status(), 429);

    // Streams that end (the build is over) free theirs too.
    app.set_status(build, "succeeded").await;
    for mut res in [second, third] {
        while res.chunk().await.unwrap().is_some() {}
    }
    let a = follow_accepted(&app, build, &t.viewer).await;
    let b = follow_accepted(&app, build, &t.viewer).await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    drop(other);
}

#[tokio::test]
async fn an_address_with_too_many_failed_tokens_is_throttled_whatever_it_sends_next() {
    let db = TestDb::new().await;
    let app = TestApp::spawn_with(
        db.pool.clone(),
        HttpLimits {
            auth_failures: 3,
            ..limits()
        },
    )
    .await;
    let t = app.tenant("throttled").await;
    // Successes do not count.
    for _ in 0..5 {
        app.get("/api/v1/projects", &t.viewer).await.expect(200);
    }
    app.get("/api/v1/projects", "ift_wrong").await.expect(401);
    app.get("/api/v1/tenants", "wrong-admin").await.expect(401);
    app.get("/api/v1/projects", &t.viewer).await.expect(200);
    app.get("/api/v1/projects", "ift_wrong_again")
        .await
        .expect(401);

    let res = app
        .client
        .get(app.url("/api/v1/projects"))
        .bearer_auth("ift_one_more")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let wait = retry_after(&res);
    assert!((1..=60).contains(&wait), "{wait}");
    assert!(problem_type(res).await.ends_with("/too-many-requests"));
    // Refused before any token is checked: a good one answers the same, so
    // guessing from this address can neither go on nor learn anything.
    let resp = app.get("/api/v1/projects", &t.viewer).await;
    resp.expect(429);
    assert_eq!(resp.problem(), "too-many-requests");
    app.get("/api/v1/tenants", ADMIN_TOKEN).await.expect(429);
    // Unauthenticated endpoints still answer.
    let health = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn a_body_slower_than_the_deadline_gets_408_and_the_connection_closes() {
    let db = TestDb::new().await;
    let app = TestApp::spawn_with(
        db.pool.clone(),
        HttpLimits {
            body_read_timeout: Duration::from_secs(1),
            ..limits()
        },
    )
    .await;
    let t = app.tenant("slowbody").await;
    let body = r#"{"name":"web","git_url":"https://github.com/org/web.git"}"#;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        t.admin,
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = tokio::time::Instant::now();
    // One byte every 200 ms: each arrives well within 1 s of the last, but
    // the whole body would take 11 s.
    let writer = tokio::spawn(async move {
        let (mut reader, mut writer) = stream.into_split();
        let trickle = async {
            for byte in body.bytes() {
                if writer.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let mut answer = Vec::new();
        let read = reader.read_to_end(&mut answer);
        tokio::select! {
            _ = read => {}
            () = trickle => panic!("the whole body was accepted"),
        }
        String::from_utf8_lossy(&answer).into_owned()
    });
    let answer = tokio::time::timeout(Duration::from_secs(10), writer)
        .await
        .expect("the connection was not closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request-timeout"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing was written.
    let projects = app.get("/api/v1/projects", &t.admin).await;
    assert_eq!(projects.expect(200).json()["items"], serde_json::json!([]));
}

#[tokio::test]
async fn the_plain_log_is_streamed_in_pages_with_every_line_in_order() {
    let db = TestDb::new().await;
    let app = TestApp::spawn(db.pool.clone()).await;
    let (t, build) = app.tenant_with_build("plainlog").await;
    let execution = app.insert_execution(build, t.id, 1, "running").await;
    // More than two pages of the server's reads.
    sqlx::query(
        "INSERT INTO build_logs (build_id, execution_id, source, position, line) \
         SELECT $1, $2, 'build/step-build', n, 'line ' || n FROM generate_series(0, 2499) AS n",
    )
    .bind(build)
    .bind(execution)
    .execute(&app.pool)
    .await
    .unwrap();
    let res = app
        .client
        .get(app.url(&format!("/api/v1/builds/{build}/logs")))
        .bearer_auth(&t.viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    // Streamed: no length known up front, sent in chunks.
    assert!(
        res.headers().get("content-length").is_none(),
        "{:?}",
        res.headers()
    );
    assert_eq!(res.headers()["transfer-encoding"], "chunked");
    let text = res.text().await.unwrap();
    let expected: String = (0..2500).map(|n| format!("line {n}\n")).collect();
    assert_eq!(text, expected);
}
