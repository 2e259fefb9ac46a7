//! The published OpenAPI document matches what the server serves: every
//! documented operation is routed, every other method on a documented path
//! is refused with 405, and documented bodies refuse unknown fields.

use std::collections::BTreeSet;

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Body, TestApp, TestDb};

const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

#[tokio::test]
async fn document_matches_the_served_routes() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool).await;
    let r = app
        .send(Method::GET, "/api/v1/openapi.json", None, Body::None)
        .await;
    r.expect(200);
    let doc = r.json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");

    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_string(), path.clone()))
        })
        .collect();
    // The surface, all of it documented.
    for (method, path) in [
        ("post", "/api/v1/tenants"),
        ("post", "/api/v1/tenants/{tenant_id}/tokens"),
        ("post", "/api/v1/admin/providers"),
        ("post", "/api/v1/projects"),
        ("post", "/api/v1/registry-credentials"),
        ("post", "/api/v1/providers"),
        ("post", "/api/v1/builds"),
        ("get", "/api/v1/builds"),
        ("get", "/api/v1/builds/{build_id}"),
        ("post", "/api/v1/builds/{build_id}/cancel"),
        ("post", "/api/v1/builds/{build_id}/retry"),
        ("get", "/api/v1/builds/{build_id}/executions"),
        ("get", "/api/v1/builds/{build_id}/logs"),
        ("get", "/api/v1/builds/{build_id}/artifacts"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    ] {
        assert!(
            documented.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} undocumented"
        );
    }

    let fake_id = "0190d2a4-0000-7000-8000-000000000000";
    for (path, item) in paths {
        let concrete = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { fake_id } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in METHODS {
            let m: Method = method.to_uppercase().parse().unwrap();
            let body = if matches!(*method, "post" | "patch" | "put") {
                Body::Json(serde_json::json!({}))
            } else {
                Body::None
            };
            let r = app.send(m, &concrete, None, body).await;
            if item.get(*method).is_some() {
                // Routed: health answers, everything else asks for a token.
                let expected = if path.starts_with("/api/") { 401 } else { 200 };
                assert_eq!(r.status, expected, "{method} {path}: {}", r.text);
                let secured = item[*method].get("security").is_some();
                assert_eq!(
                    secured,
                    path.starts_with("/api/"),
                    "{method} {path} security"
                );
            } else {
                assert_eq!(
                    r.status, 405,
                    "{method} {path} is served but undocumented: {}",
                    r.text
                );
            }
        }
    }
    let unknown = app
        .send(Method::GET, "/api/v1/unknown", None, Body::None)
        .await;
    assert_eq!(unknown.status, 404);

    // Request bodies refuse unknown fields, as the server does.
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    for name in [
        "CreateTenant",
        "CreateProject",
        "CreateProvider",
        "CreateRegistryCredential",
        "SubmitBuild",
        "MethodConfig",
    ] {
        let schema = &schemas[name];
        assert_eq!(
            schema["additionalProperties"],
            Value::Bool(false),
            "{name}: {schema}"
        );
    }
    let submit = &schemas["SubmitBuild"];
    let required: BTreeSet<&str> = submit["required"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(required, BTreeSet::from(["project_id", "method"]));
}
