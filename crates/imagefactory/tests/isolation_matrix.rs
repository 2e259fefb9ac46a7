//! Issue 14, point 5: the isolation matrix, generated from the OpenAPI
//! document the real `imagefactory serve` publishes. Every operation is
//! called as every kind of caller that must not get through:
//!
//! - no token, malformed `Authorization` values, a revoked and an expired
//!   tenant token → 401;
//! - any tenant token on an admin route, the admin token on a tenant route →
//!   401 (a token is only ever checked against its own kind);
//! - another tenant's token of each role on a tenant route: the other
//!   tenant's real ids and random ids get the same status (403 or 404) and
//!   byte-identical bodies (the id itself aside), so "foreign" cannot be told
//!   from "missing"; its lists show none of the other tenant's ids.
//!
//! A new operation is covered as it appears in the document; one with a path
//! parameter the matrix has no id for fails the test until it is added.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{ADMIN_TOKEN, Http, Proc, free_port, fresh_database, id_of, serve_env};
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

/// A response reduced to what the matrix compares.
#[derive(Debug, PartialEq)]
struct Answer {
    status: u16,
    body: String,
}

/// One request with exactly `authorization` (if any); `{}` as the body of
/// POST/PATCH/PUT.
async fn call(http: &Http, method: &Method, path: &str, authorization: Option<&str>) -> Answer {
    let mut req = http
        .client
        .request(method.clone(), format!("{}{path}", http.base));
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    if matches!(*method, Method::POST | Method::PATCH | Method::PUT) {
        req = req.json(&json!({}));
    }
    let res = req.send().await.expect("request sent");
    Answer {
        status: res.status().as_u16(),
        body: res.text().await.expect("body read"),
    }
}

/// The document's operations: (method, path template, security scheme).
fn operations(doc: &Value) -> Vec<(Method, String, Option<String>)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let scheme = op["security"][0]
                .as_object()
                .and_then(|s| s.keys().next().cloned());
            ops.push((m, path.clone(), scheme));
        }
    }
    ops
}

/// `template` with each `{param}` replaced by `ids[param]`.
fn fill(template: &str, ids: &BTreeMap<&str, String>) -> String {
    template
        .split('/')
        .map(
            |seg| match seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                Some(param) => ids
                    .get(param)
                    .unwrap_or_else(|| {
                        panic!("{template}: no id for path parameter {param}; add it to the matrix")
                    })
                    .clone(),
                None => seg.to_owned(),
            },
        )
        .collect::<Vec<_>>()
        .join("/")
}

/// The body with every id of `ids` replaced by a placeholder.
fn without_ids(body: &str, ids: &BTreeMap<&str, String>) -> String {
    ids.values()
        .fold(body.to_owned(), |b, id| b.replace(id.as_str(), "<id>"))
}

/// Tenant A's objects, one of each kind, made through the API, and a global
/// provider (which tenants may see and use: not A's).
async fn tenant_a_objects(http: &Http) -> (BTreeMap<&'static str, String>, String) {
    let admin = http.api.as_token(ADMIN_TOKEN);
    let tenant = admin.create_tenant("tenant-a").await;
    admin.allow_local_builds(tenant).await;
    let a = http
        .api
        .as_token(&admin.create_token(tenant, "admin").await);
    let project = a
        .create_project("a-project", "https://git.example.com/a/app.git")
        .await;
    let provider = a
        .create_provider(
            "a-cluster",
            json!({"auth_method": "token", "endpoint": "https://k8s.example.com:6443", "token": "a-secret"}),
        )
        .await;
    let credential = a
        .create_credential("a-registry", "ghcr.io", "a", "a-password")
        .await;
    // The dispatcher is off: the build stays queued.
    let build = id_of(
        &a.submit_build(json!({"project_id": project, "method": "docker",
                                "infrastructure_type": "local", "image": "ghcr.io/a/app:1"}))
            .await,
    );
    let token = id_of(&a.get("/api/v1/tokens").await.json()["items"][0]);
    let global = admin
        .create_global_provider(
            "global-cluster",
            json!({"auth_method": "token", "apiServer": "https://global.example.com", "token": "g"}),
        )
        .await;
    let objects = [
        ("tenant_id", tenant),
        ("project_id", project),
        ("provider_id", provider),
        ("credential_id", credential),
        ("build_id", build),
        ("token_id", token),
        // Admin-only routes: a real global provider; no install job exists
        // (only the admin reaches these, and tenant tokens are refused first).
        ("job_id", Uuid::new_v4()),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect();
    (objects, global.to_string())
}

/// Tenant B's tokens: one per role, plus a revoked and an expired one.
struct TenantB {
    roles: Vec<(&'static str, String)>,
    revoked: String,
    expired: String,
}

async fn tenant_b(http: &Http, db_url: &str) -> TenantB {
    let admin = http.api.as_token(ADMIN_TOKEN);
    let tenant = admin.create_tenant("tenant-b").await;
    let mut roles = Vec::new();
    for role in ["admin", "developer", "viewer"] {
        roles.push((role, admin.create_token(tenant, role).await));
    }
    let revoked = admin.create_token(tenant, "viewer").await;
    let b = http.api.as_token(&roles[0].1);
    let listed = b.get("/api/v1/tokens").await.json();
    let id_of_token = |secret: &str| {
        let prefix = secret.rsplit_once('_').expect("ift_<prefix>_<secret>").0;
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["prefix"] == prefix)
            .map(id_of)
            .unwrap_or_else(|| panic!("token {prefix} not listed: {listed}"))
    };
    let revoked_id = id_of_token(&revoked);
    b.delete(&format!("/api/v1/tokens/{revoked_id}"))
        .await
        .expect(204);
    let expired = admin.create_token(tenant, "admin").await;
    let listed = b.get("/api/v1/tokens").await.json();
    let expired_id = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| expired.starts_with(t["prefix"].as_str().unwrap()))
        .map(id_of)
        .expect("the new token is listed");
    // Expiry in the past cannot be asked for through the API (422), so the
    // row is aged directly.
    let pool = sqlx::PgPool::connect(db_url).await.expect("database");
    sqlx::query("UPDATE api_tokens SET expires_at = now() - interval '1 minute' WHERE id = $1")
        .bind(expired_id)
        .execute(&pool)
        .await
        .expect("token aged");
    pool.close().await;
    TenantB {
        roles,
        revoked,
        expired,
    }
}

#[tokio::test]
async fn every_operation_refuses_every_caller_that_must_not_get_through() {
    let db = fresh_database("isolation_matrix");
    let port = free_port();
    let workdir = tempfile::tempdir().unwrap();
    let mut env = serve_env(&db.url, port, workdir.path(), "warn");
    // The matrix fails authentication on purpose, hundreds of times; the
    // per-address throttle has its own test (attacks).
    env.push(("IF_HTTP_AUTH_FAILURES", "1000000".into()));
    env.push(("IF_DISPATCHER_ENABLED", "false".into()));
    let mut proc = Proc::spawn(&["serve"], &env);
    let http = Http::new(port);
    http.wait_ready(&mut proc, Duration::from_secs(60)).await;

    let (foreign, global) = tenant_a_objects(&http).await;
    let b = tenant_b(&http, &db.url).await;
    let doc = http.api.get("/api/v1/openapi.json").await.json();
    let ops = operations(&doc);
    assert!(ops.len() >= 40, "only {} operations documented", ops.len());

    let mut checked = 0;
    for (method, template, scheme) in &ops {
        let Some(scheme) = scheme else {
            // Only health and the document itself are public.
            assert!(
                matches!(
                    template.as_str(),
                    "/healthz" | "/readyz" | "/api/v1/openapi.json"
                ),
                "{method} {template} has no security"
            );
            continue;
        };
        let mut ids = foreign.clone();
        if template.starts_with("/api/v1/admin/providers/") {
            ids.insert("provider_id", global.clone());
        }
        let path = fill(template, &ids);
        let label = format!("{method} {template}");

        // Nobody: no token, malformed headers, revoked, expired.
        let bearer = |t: &str| format!("Bearer {t}");
        let mut unauthenticated = vec![
            ("no token", None),
            ("empty bearer", Some("Bearer ".to_owned())),
            ("basic auth", Some("Basic YWRtaW46YWRtaW4=".to_owned())),
            ("garbage", Some(bearer("not-a-token"))),
            ("forged tenant token", Some(bearer("ift_000000000000_00"))),
            ("revoked", Some(bearer(&b.revoked))),
            ("expired", Some(bearer(&b.expired))),
        ];
        // The wrong kind of token for the route.
        if scheme == "admin_token" {
            for (role, token) in &b.roles {
                unauthenticated.push((role, Some(bearer(token))));
            }
        } else {
            unauthenticated.push(("platform admin", Some(bearer(ADMIN_TOKEN))));
        }
        let mut invalid_token_body = None;
        for (who, auth) in &unauthenticated {
            let r = call(&http, method, &path, auth.as_deref()).await;
            assert_eq!(r.status, 401, "{label} as {who}: {}", r.body);
            assert!(
                r.body.contains("\"status\":401") && !r.body.contains("a-secret"),
                "{label} as {who}: {}",
                r.body
            );
            // Revoked, expired and forged tenant tokens are told apart by nothing.
            if scheme == "tenant_token"
                && matches!(*who, "forged tenant token" | "revoked" | "expired")
            {
                let first = invalid_token_body.get_or_insert_with(|| r.body.clone());
                assert_eq!(*first, r.body, "{label} as {who}");
            }
            checked += 1;
        }
        if scheme != "tenant_token" {
            continue;
        }

        // Tenant B, each role: A's ids answer exactly like random ones.
        let has_params = template.contains('{');
        let missing: BTreeMap<&str, String> = foreign
            .keys()
            .map(|k| (*k, Uuid::new_v4().to_string()))
            .collect();
        for (role, token) in &b.roles {
            let auth = bearer(token);
            let r = call(&http, method, &path, Some(&auth)).await;
            if has_params {
                let m = call(&http, method, &fill(template, &missing), Some(&auth)).await;
                assert!(
                    matches!(r.status, 403 | 404),
                    "{label} as B {role} on A's id: {} {}",
                    r.status,
                    r.body
                );
                assert_eq!(
                    r.status, m.status,
                    "{label} as B {role}: foreign vs missing"
                );
                assert_eq!(
                    without_ids(&r.body, &foreign),
                    without_ids(&m.body, &missing),
                    "{label} as B {role}: foreign and missing bodies differ"
                );
            } else {
                for id in foreign.values() {
                    assert!(
                        !r.body.contains(id.as_str()),
                        "{label} as B {role} shows {id}: {}",
                        r.body
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(checked > 400, "only {checked} cells checked");

    // Nothing B sent changed A's objects (DELETEs included).
    let admin = http.api.as_token(ADMIN_TOKEN);
    let a = http.api.as_token(
        &admin
            .create_token(foreign["tenant_id"].parse().unwrap(), "viewer")
            .await,
    );
    for (kind, param) in [
        ("projects", "project_id"),
        ("providers", "provider_id"),
        ("registry-credentials", "credential_id"),
        ("builds", "build_id"),
    ] {
        a.get(&format!("/api/v1/{kind}/{}", foreign[param]))
            .await
            .expect(200);
    }
    let build = a
        .get(&format!("/api/v1/builds/{}", foreign["build_id"]))
        .await
        .json();
    assert_eq!(build["status"], "queued", "{build}");
    assert!(build["cancel_requested_at"].is_null(), "{build}");
    let tokens = admin
        .get(&format!("/api/v1/tenants/{}/tokens", foreign["tenant_id"]))
        .await
        .json();
    let first = tokens["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == foreign["token_id"].as_str())
        .expect("A's first token still listed");
    assert!(first["revoked_at"].is_null(), "{first}");
    assert!(
        proc.try_wait().is_none(),
        "serve exited:\n{}",
        proc.output()
    );
}
