//! Provider test-connection through `imagefactory serve` against kube-sim:
//! the binary fills the API's connection seam with the Tekton client code.

mod common;

use std::time::Duration;

use common::{ADMIN_TOKEN, Http, Proc, SECRET_KEY, free_port, fresh_database};
use kube_sim::{KubeSim, KubeSimOptions};
use serde_json::json;

#[tokio::test]
async fn test_connection_reports_reachability_auth_and_the_clusters_401() {
    let sim = KubeSim::start(KubeSimOptions::default())
        .await
        .expect("kube-sim starts");
    let db = fresh_database("testconn");
    let port = free_port();
    let mut proc = Proc::spawn(
        &["serve"],
        &[
            ("IF_DATABASE_URL", db.url.clone()),
            ("IF_LISTEN_ADDR", format!("127.0.0.1:{port}")),
            ("IF_ADMIN_TOKEN", ADMIN_TOKEN.into()),
            ("IF_SECRET_KEY", SECRET_KEY.into()),
            ("IF_DISPATCHER_ENABLED", "false".into()),
            // kube-sim listens on loopback; tenant providers point there.
            ("IF_PROVIDER_ALLOW_LOOPBACK", "true".into()),
        ],
    );
    let http = Http::new(port);
    http.wait_ready(&mut proc, Duration::from_secs(60)).await;

    let config = |token: &str| json!({"auth_method": "token", "endpoint": sim.endpoint(), "token": token, "ca_cert": sim.ca_pem()});
    let global = http
        .created(
            "/api/v1/admin/providers",
            ADMIN_TOKEN,
            json!({"name": "sim", "provider_type": "kubernetes", "config": config(sim.admin_token())}),
        )
        .await;
    let (status, report) = http
        .post(
            &format!(
                "/api/v1/admin/providers/{}/test-connection",
                global["id"].as_str().unwrap()
            ),
            ADMIN_TOKEN,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["reachable"], true, "{report}");
    assert_eq!(report["authenticated"], true, "{report}");
    assert!(report["error"].is_null(), "{report}");
    let versions = report["tekton_versions"].as_array().unwrap();
    assert!(versions.contains(&json!("v1")), "{report}");
    assert!(
        !report.to_string().contains(sim.admin_token()),
        "token leaked: {report}"
    );

    // A tenant's own provider with a wrong token: the cluster's 401 text.
    let (_, token) = http.tenant_with_token("conn").await;
    let bad = http
        .created(
            "/api/v1/providers",
            &token,
            json!({"name": "bad", "provider_type": "kubernetes", "config": config("not-a-real-token")}),
        )
        .await;
    let bad_id = bad["id"].as_str().unwrap();
    let (status, report) = http
        .post(
            &format!("/api/v1/providers/{bad_id}/test-connection"),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["reachable"], true, "{report}");
    assert_eq!(report["authenticated"], false, "{report}");
    let error = report["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("401") || error.to_lowercase().contains("unauthorized"),
        "{report}"
    );
    assert!(
        !report.to_string().contains("not-a-real-token"),
        "token leaked: {report}"
    );

    // Tenants cannot test global providers through their endpoint.
    let (status, _) = http
        .post(
            &format!(
                "/api/v1/providers/{}/test-connection",
                global["id"].as_str().unwrap()
            ),
            &token,
            json!({}),
        )
        .await;
    assert_eq!(status, 404);

    drop(proc);
}
