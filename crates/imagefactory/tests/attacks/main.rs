//! The outside attack, kept in the suite: each module attacks one wall of
//! the real `imagefactory serve` process (and kube-sim where a cluster is
//! needed) the way a hostile tenant would, and asserts the refusal. A
//! regression that reopens a hole fails here.

mod build_args;
#[path = "../common/mod.rs"]
mod common;
mod http_limits;
mod local_and_input;
mod provider_trust;
mod secret_audit;
mod server;

use serde_json::json;

/// The baseline every attack starts from: without a token nothing is read or
/// written, and a viewer cannot write.
#[tokio::test]
async fn no_token_no_access_and_viewers_do_not_write() {
    let target = server::Target::start(&[]).await;
    let tenant = target.tenant("attack-base").await;
    let (status, body) = target.http.get("/api/v1/builds", "").await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = target
        .http
        .post(
            "/api/v1/projects",
            &tenant.viewer,
            json!({"name": "p", "git_url": "https://example.com/p.git"}),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = target.http.get("/api/v1/builds", &tenant.viewer).await;
    assert_eq!(status, 200, "{body}");
    target.stop().await;
}
