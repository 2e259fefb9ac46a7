//! Finding 8 and the HTTP part of 10: clients that hold the server's
//! resources — connections trickling headers (slowloris) or a body, more
//! log followers than allowed, guessing tokens — are cut off or refused by
//! the real `imagefactory serve`, while ordinary requests still succeed.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::ADMIN_TOKEN;
use crate::server::Target;

const TRICKLERS: usize = 60;

fn limits_env() -> Vec<(&'static str, String)> {
    vec![
        ("IF_HTTP_HEADER_READ_TIMEOUT", "2s".into()),
        ("IF_HTTP_BODY_READ_TIMEOUT", "2s".into()),
        ("IF_HTTP_LOG_FOLLOWERS_PER_TOKEN", "2".into()),
        // Nothing here runs builds: a followed build stays queued.
        ("IF_DISPATCHER_ENABLED", "false".into()),
    ]
}

/// Sends `bytes` on `stream` one per `every` until the server closes the
/// connection; returns how long that took and what the server answered
/// (`None`: it was still open after `bound`).
async fn trickle(
    stream: TcpStream,
    bytes: Vec<u8>,
    every: Duration,
    bound: Duration,
) -> Option<(Duration, String)> {
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    let send = async move {
        for byte in bytes.iter().cycle() {
            if writer.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(every).await;
        }
        std::future::pending::<()>().await;
    };
    let mut answer = Vec::new();
    let closed = async {
        let _ = reader.read_to_end(&mut answer).await;
    };
    let outcome = tokio::time::timeout(bound, async {
        tokio::select! {
            () = closed => {},
            () = send => {},
        }
    })
    .await;
    outcome.ok().map(|()| {
        (
            started.elapsed(),
            String::from_utf8_lossy(&answer).into_owned(),
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_clients_are_cut_off_and_ordinary_requests_still_succeed() {
    let target = Target::start(&limits_env()).await;
    let tenant = target.tenant("attack-slow").await;
    let port = target.port;

    // Slowloris: headers one byte per second, never finished.
    let header =
        b"GET /api/v1/builds HTTP/1.1\r\nHost: x\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .to_vec();
    // All connected before the ordinary request below (not a pause that
    // may or may not be long enough): it is served while they are held.
    let mut tricklers = Vec::new();
    for _ in 0..TRICKLERS {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        tricklers.push(tokio::spawn(trickle(
            stream,
            header.clone(),
            Duration::from_secs(1),
            Duration::from_secs(15),
        )));
    }
    let (status, body) = target.http.get("/api/v1/builds", &tenant.viewer).await;
    assert_eq!(status, 200, "{body}");
    for trickler in tricklers {
        let (took, _) = trickler
            .await
            .unwrap()
            .expect("a connection trickling its headers was still open after 15 s");
        // 2 s limit, with room for a loaded machine.
        assert!(took < Duration::from_secs(6), "cut off only after {took:?}");
    }

    // An idle keep-alive connection is not held forever either.
    let mut idle = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), idle.read_to_end(&mut answer))
        .await
        .expect("an idle keep-alive connection stayed open")
        .ok();
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(started.elapsed() < Duration::from_secs(6));

    // A body trickled one byte per 500 ms (each byte in time, the whole not).
    let body = r#"{"name":"slow","git_url":"https://github.com/org/slow.git"}"#;
    let head = format!(
        "POST /api/v1/projects HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        tenant.admin,
        body.len()
    );
    let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        for byte in body.bytes() {
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), reader.read_to_end(&mut answer))
        .await
        .expect("a trickled body kept its connection open")
        .ok();
    sender.abort();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(6));
    let (status, projects) = target.http.get("/api/v1/projects", &tenant.admin).await;
    assert_eq!(status, 200);
    assert_eq!(projects["items"], json!([]), "nothing was created");
    target.stop().await;
}

async fn follow(target: &Target, build: &str, token: &str) -> reqwest::Response {
    target
        .http
        .client
        .get(format!(
            "{}/api/v1/builds/{build}/logs?follow=true",
            target.http.base
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_cannot_hold_more_log_streams_than_allowed() {
    let target = Target::start(&limits_env()).await;
    let tenant = target.tenant("attack-follow").await;
    let project = target
        .project(&tenant.admin, "web", "https://github.com/org/web.git")
        .await;
    let provider = target
        .http
        .created(
            "/api/v1/providers",
            &tenant.admin,
            json!({"name": "k", "provider_type": "kubernetes",
                   "config": {"auth_method": "token", "endpoint": target.sim.endpoint(),
                              "token": "t0ken", "ca_cert": target.sim.ca_pem()}}),
        )
        .await;
    let build = target
        .http
        .created(
            "/api/v1/builds",
            &tenant.developer,
            json!({"project_id": project["id"], "method": "docker",
                   "infrastructure_provider_id": provider["id"],
                   "image": "registry.example.com/org/web:1"}),
        )
        .await;
    let build = build["id"].as_str().unwrap();
    let first = follow(&target, build, &tenant.viewer).await;
    let second = follow(&target, build, &tenant.viewer).await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let third = follow(&target, build, &tenant.viewer).await;
    assert_eq!(third.status(), 429);
    let retry_after: u64 = third.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    assert_eq!(third.headers()["content-type"], "application/problem+json");
    // A client that leaves gives its slot back.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let again = follow(&target, build, &tenant.viewer).await;
        if again.status() == 200 {
            break;
        }
        assert_eq!(again.status(), 429);
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(second);
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_tokens_from_one_address_is_throttled() {
    let target = Target::start(&[("IF_HTTP_AUTH_FAILURES", "20".into())]).await;
    let tenant = target.tenant("attack-guess").await;
    for i in 0..20 {
        let (status, body) = target
            .http
            .get("/api/v1/builds", &format!("ift_guess{i:04}"))
            .await;
        assert_eq!(status, 401, "guess {i}: {body}");
    }
    let res = target
        .http
        .client
        .get(format!("{}/api/v1/tenants", target.http.base))
        .bearer_auth("guessed-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429);
    let retry_after: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    // Decided: the address is refused whatever it sends, even a good token
    // (checking it would let guessing go on and tell a hit from a miss).
    let (status, body) = target.http.get("/api/v1/builds", &tenant.viewer).await;
    assert_eq!(status, 429, "{body}");
    let (status, _) = target.http.get("/api/v1/tenants", ADMIN_TOKEN).await;
    assert_eq!(status, 429);
    target.stop().await;
}
