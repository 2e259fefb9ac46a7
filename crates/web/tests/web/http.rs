//! The dashboard over HTTP: cookie flags, CSRF and Origin checks on writes,
//! tenant isolation (foreign = missing), and no token in any page.

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::harness::{ADMIN_TOKEN, Env, PATIENCE};
use crate::session::Visitor;

#[tokio::test]
async fn sign_in_sets_a_strict_httponly_cookie_and_no_page_shows_the_token() {
    let env = Env::start().await;
    let build = env.submit().await;
    let mut v = Visitor::new(&env.base);

    let home = v.get("/").await;
    assert_eq!((home.status, home.location()), (303, "/sign-in"));
    let wrong = v
        .submit("/sign-in", &[("token", "ift_0123456789ab_nope")])
        .await;
    assert_eq!(wrong.status, 401, "{}", wrong.text);
    assert!(
        wrong.text.contains("token: invalid, revoked or expired"),
        "{}",
        wrong.text
    );
    assert!(wrong.set_cookie().is_none());
    let garbage = v.submit("/sign-in", &[("token", "x; Path=/evil")]).await;
    assert_eq!(garbage.status, 400, "{}", garbage.text);

    let signed_in = v.sign_in(&env.token).await;
    let cookie = signed_in.set_cookie().unwrap();
    assert_eq!(
        cookie,
        format!(
            "if_session={}; Path=/; HttpOnly; SameSite=Strict",
            env.token
        )
    );
    // Behind a TLS-terminating proxy the cookie is also Secure.
    let tls = Visitor::new(&env.base);
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let over_tls = http
        .post(format!("{}/sign-in", env.base))
        .header("x-forwarded-proto", "https")
        .form(&[("token", env.token.as_str())])
        .send()
        .await
        .unwrap();
    let secure = over_tls.headers()["set-cookie"].to_str().unwrap();
    assert!(
        secure.ends_with("; HttpOnly; SameSite=Strict; Secure"),
        "{secure}"
    );
    drop(tls);

    let pages = [
        "/builds".to_owned(),
        "/builds/rows".to_owned(),
        format!("/builds/{build}"),
        format!("/builds/{build}/summary"),
        "/projects".to_owned(),
        "/providers".to_owned(),
    ];
    for path in &pages {
        let page = v.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.text);
        assert!(!page.text.contains(&env.token), "{path} shows the token");
        assert!(
            page.headers.contains_key("content-security-policy"),
            "{path}"
        );
    }
    let list = v.get("/builds").await.text;
    assert!(list.contains(&format!("/builds/{build}")), "{list}");
    assert!(list.contains("webapp"), "{list}");
    let filtered = v.get("/builds?status=succeeded").await.text;
    assert!(
        !filtered.contains(&format!("/builds/{build}\"")),
        "{filtered}"
    );
    let bad_filter = v.get("/builds?status=sideways").await;
    assert_eq!(bad_filter.status, 400, "{}", bad_filter.text);
    assert!(bad_filter.text.contains("status"), "{}", bad_filter.text);

    // The admin sees tenants and dispatchers, and never its token either.
    let mut admin = Visitor::new(&env.base);
    admin.sign_in(ADMIN_TOKEN).await;
    let tenants = admin.get("/admin/tenants").await;
    assert_eq!(tenants.status, 200);
    assert!(tenants.text.contains("team-web"), "{}", tenants.text);
    let dispatchers = admin.get("/admin/dispatchers").await;
    assert_eq!(dispatchers.status, 200);
    assert!(
        dispatchers.text.contains("embedded"),
        "{}",
        dispatchers.text
    );
    for page in [&tenants, &dispatchers] {
        assert!(!page.text.contains(ADMIN_TOKEN));
    }
    // A tenant is not the admin.
    assert_eq!(v.get("/admin/tenants").await.status, 403);

    // Signing out ends the session in the browser.
    let csrf = v.get("/builds").await.csrf();
    let out = v.submit("/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.location()), (303, "/sign-in"));
    assert!(out.set_cookie().unwrap().contains("Max-Age=0"));
    env.finish().await;
}

async fn build_json(env: &Env, build: uuid::Uuid) -> Value {
    env.api().build(build).await
}

#[tokio::test]
async fn a_cross_site_write_is_refused_and_changes_nothing() {
    let env = Env::start().await;
    let build = env.submit().await;
    let mut v = Visitor::new(&env.base);
    v.sign_in(&env.token).await;
    let csrf = v.get(&format!("/builds/{build}")).await.csrf();
    let cancel = format!("/builds/{build}/cancel");

    let cross_site = v
        .post(&cancel, &[("csrf", &csrf)], Some("https://evil.example"))
        .await;
    assert_eq!(cross_site.status, 403, "{}", cross_site.text);
    assert!(
        cross_site.text.contains("evil.example"),
        "{}",
        cross_site.text
    );
    let wrong_token = v.submit(&cancel, &[("csrf", "0123abcd")]).await;
    assert_eq!(wrong_token.status, 403, "{}", wrong_token.text);
    let missing = v.submit(&cancel, &[]).await;
    assert_eq!(missing.status, 403, "{}", missing.text);
    // A cross-site sign-in (login CSRF) is refused too.
    let forced = Visitor::new(&env.base)
        .post(
            "/sign-in",
            &[("token", &env.token)],
            Some("https://evil.example"),
        )
        .await;
    assert_eq!(forced.status, 403);
    assert!(forced.set_cookie().is_none());
    let unchanged = build_json(&env, build).await;
    assert!(unchanged["cancel_requested_at"].is_null(), "{unchanged}");
    assert!(["queued", "running"].contains(&unchanged["status"].as_str().unwrap()));

    let done = v.submit(&cancel, &[("csrf", &csrf)]).await;
    assert_eq!(
        (done.status, done.location()),
        (303, format!("/builds/{build}").as_str())
    );
    let cancelled = env.api().wait_build(build, &["cancelled"], PATIENCE).await;
    assert_eq!(cancelled["status"], "cancelled");
    env.finish().await;
}

#[tokio::test]
async fn another_tenants_build_is_missing_and_the_log_streams_with_sources() {
    let env = Env::start().await;
    let build = env.submit().await;
    let (_, other_token) = env.tenant("team-other").await;
    let mut other = Visitor::new(&env.base);
    other.sign_in(&other_token).await;
    for path in [
        format!("/builds/{build}"),
        format!("/builds/{build}/summary"),
        format!("/builds/{build}/log-events"),
    ] {
        let page = other.get(&path).await;
        assert_eq!(page.status, 404, "{path}: {}", page.text);
        assert!(
            page.text.contains("build not found"),
            "{path}: {}",
            page.text
        );
    }
    let csrf = other.get("/builds").await.csrf();
    let cancel = other
        .submit(&format!("/builds/{build}/cancel"), &[("csrf", &csrf)])
        .await;
    assert_eq!(cancel.status, 404, "{}", cancel.text);
    assert!(
        !other
            .get("/builds/rows")
            .await
            .text
            .contains(&build.to_string())
    );
    assert!(build_json(&env, build).await["cancel_requested_at"].is_null());

    // The owner's log stream: SSE events carrying each line's task/step.
    let mut owner = Visitor::new(&env.base);
    owner.sign_in(&env.token).await;
    let response = reqwest::Client::new()
        .get(format!("{}/builds/{build}/log-events", env.base))
        .header("cookie", owner.cookie.clone().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.bytes_stream();
    let mut text = String::new();
    let first_line = tokio::time::timeout(PATIENCE, async {
        while let Some(chunk) = body.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            let step_line = text
                .lines()
                .filter_map(|l| l.strip_prefix("data: "))
                .map(|data| serde_json::from_str::<Value>(data).unwrap())
                .find(|v| v["line"].as_str().unwrap().starts_with("progress line"));
            if let Some(line) = step_line {
                return line;
            }
        }
        panic!("stream ended without a line: {text}");
    })
    .await
    .expect("a log line arrives");
    let source = first_line["source"].as_str().unwrap();
    assert!(source.contains('/'), "task/step source: {first_line}");
    drop(body);
    tokio::time::sleep(Duration::from_millis(100)).await;
    env.finish().await;
}
