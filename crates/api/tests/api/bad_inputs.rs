//! A matrix of bad requests across endpoints: each gets the right status,
//! problem `type` and field, and leaves the database exactly as it was.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{ADMIN_TOKEN, Body, TestApp, TestDb};

#[derive(Clone, Copy)]
enum Who {
    Nobody,
    PlatformAdmin,
    TenantAdmin,
    Viewer,
}

struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    who: Who,
    body: Body,
    status: u16,
    problem: &'static str,
    field: Option<&'static str>,
}

fn json_case(
    name: &'static str,
    method: Method,
    path: &'static str,
    body: Value,
    status: u16,
    problem: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        method,
        path,
        who: if path.starts_with("/api/v1/tenants") || path.starts_with("/api/v1/admin") {
            Who::PlatformAdmin
        } else {
            Who::TenantAdmin
        },
        body: Body::Json(body),
        status,
        problem,
        field,
    }
}

fn build(extra: Value) -> Value {
    let mut body = json!({"project_id": "{project}", "method": "docker", "infrastructure_provider_id": "{provider}",
                          "image": "registry.example.com/team/app:1"});
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            body.as_object_mut().unwrap().remove(k);
        } else {
            body[k] = v.clone();
        }
    }
    body
}

fn cases() -> Vec<Case> {
    use Method as M;
    let post = M::POST;
    let k8s =
        |config: Value| json!({"name": "bad", "provider_type": "kubernetes", "config": config});
    let mut cases = vec![
        // Tenants (platform admin).
        json_case(
            "tenant unknown field",
            post.clone(),
            "/api/v1/tenants",
            json!({"name": "a", "nmae": "b"}),
            422,
            "validation",
            Some("nmae"),
        ),
        json_case(
            "tenant missing name",
            post.clone(),
            "/api/v1/tenants",
            json!({"display_name": "A"}),
            422,
            "validation",
            Some("name"),
        ),
        json_case(
            "tenant name wrong type",
            post.clone(),
            "/api/v1/tenants",
            json!({"name": 42}),
            422,
            "validation",
            Some("name"),
        ),
        json_case(
            "tenant name not a DNS label",
            post.clone(),
            "/api/v1/tenants",
            json!({"name": "Team A"}),
            422,
            "validation",
            Some("name"),
        ),
        json_case(
            "tenant zero concurrency",
            post.clone(),
            "/api/v1/tenants",
            json!({"name": "z", "max_concurrent_builds": 0}),
            422,
            "validation",
            Some("max_concurrent_builds"),
        ),
        json_case(
            "tenant duplicate name",
            post.clone(),
            "/api/v1/tenants",
            json!({"name": "team-a"}),
            409,
            "conflict",
            Some("name"),
        ),
        json_case(
            "token invalid role enum",
            post.clone(),
            "/api/v1/tenants/{tenant}/tokens",
            json!({"name": "x", "role": "root"}),
            422,
            "validation",
            Some("role"),
        ),
        json_case(
            "token expiry in the past",
            post.clone(),
            "/api/v1/tenants/{tenant}/tokens",
            json!({"name": "x", "role": "viewer", "expires_at": "2000-01-01T00:00:00Z"}),
            422,
            "validation",
            Some("expires_at"),
        ),
        json_case(
            "token for tenant id not a uuid",
            post.clone(),
            "/api/v1/tenants/not-a-uuid/tokens",
            json!({"name": "x", "role": "viewer"}),
            400,
            "invalid-parameter",
            Some("tenant_id"),
        ),
        // Projects.
        json_case(
            "project unsupported git scheme",
            post.clone(),
            "/api/v1/projects",
            json!({"name": "p", "git_url": "ftp://host/repo"}),
            422,
            "validation",
            Some("git_url"),
        ),
        json_case(
            "project git url with password",
            post.clone(),
            "/api/v1/projects",
            json!({"name": "p", "git_url": "https://u:pw@host/repo"}),
            422,
            "validation",
            Some("git_url"),
        ),
        json_case(
            "project bad default branch",
            post.clone(),
            "/api/v1/projects",
            json!({"name": "p", "git_url": "https://h.example.com/r", "default_branch": "a..b"}),
            422,
            "validation",
            Some("default_branch"),
        ),
        json_case(
            "project credential without password",
            post.clone(),
            "/api/v1/projects",
            json!({"name": "p", "git_url": "https://h.example.com/r", "git_credential": {"username": "u"}}),
            422,
            "validation",
            Some("git_credential.password"),
        ),
        json_case(
            "project duplicate name",
            post.clone(),
            "/api/v1/projects",
            json!({"name": "web", "git_url": "https://h.example.com/r"}),
            409,
            "conflict",
            Some("name"),
        ),
        // Registry credentials.
        json_case(
            "registry host invalid",
            post.clone(),
            "/api/v1/registry-credentials",
            json!({"name": "r", "registry": "not a host!", "username": "u", "password": "p"}),
            422,
            "validation",
            Some("registry"),
        ),
        json_case(
            "registry empty password",
            post.clone(),
            "/api/v1/registry-credentials",
            json!({"name": "r", "registry": "ghcr.io", "username": "u", "password": ""}),
            422,
            "validation",
            Some("password"),
        ),
        // Providers.
        json_case(
            "provider type enum",
            post.clone(),
            "/api/v1/providers",
            json!({"name": "x", "provider_type": "openstack"}),
            422,
            "validation",
            Some("provider_type"),
        ),
        json_case(
            "provider token auth without token",
            post.clone(),
            "/api/v1/providers",
            k8s(json!({"auth_method": "token", "endpoint": "https://k"})),
            422,
            "validation",
            Some("config.token"),
        ),
        json_case(
            "provider unknown auth method",
            post.clone(),
            "/api/v1/providers",
            k8s(json!({"auth_method": "password", "endpoint": "https://k"})),
            422,
            "validation",
            Some("config.auth_method"),
        ),
        json_case(
            "provider unknown config field",
            post.clone(),
            "/api/v1/providers",
            k8s(
                json!({"auth_method": "token", "endpoint": "https://k", "token": "t", "tokn": "t"}),
            ),
            422,
            "validation",
            Some("config.tokn"),
        ),
        json_case(
            "provider client cert not PEM",
            post.clone(),
            "/api/v1/providers",
            k8s(
                json!({"auth_method": "client-cert", "endpoint": "https://k", "client_cert": "x", "client_key": "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----"}),
            ),
            422,
            "validation",
            Some("config.client_cert"),
        ),
        json_case(
            "provider endpoint not a URL",
            post.clone(),
            "/api/v1/providers",
            k8s(json!({"auth_method": "token", "endpoint": "k8s:6443", "token": "t"})),
            422,
            "validation",
            Some("config.endpoint"),
        ),
        json_case(
            "provider retention negative",
            post.clone(),
            "/api/v1/providers",
            k8s(
                json!({"auth_method": "token", "endpoint": "https://k", "token": "t", "retention": {"keep_last": -1}}),
            ),
            422,
            "validation",
            Some("config.retention.keep_last"),
        ),
        json_case(
            "global provider patched with invalid config",
            M::PATCH,
            "/api/v1/admin/providers/{global}",
            json!({"config": {"auth_method": "token"}}),
            422,
            "validation",
            Some("config.endpoint"),
        ),
        json_case(
            "provider duplicate name",
            post.clone(),
            "/api/v1/providers",
            json!({"name": "k", "provider_type": "kubernetes",
                   "config": {"auth_method": "token", "endpoint": "https://k", "token": "t"}}),
            409,
            "conflict",
            Some("name"),
        ),
        json_case(
            "registry duplicate name",
            post.clone(),
            "/api/v1/registry-credentials",
            json!({"name": "reg", "registry": "ghcr.io", "username": "u", "password": "p"}),
            409,
            "conflict",
            Some("name"),
        ),
        // Builds.
        json_case(
            "build method enum",
            post.clone(),
            "/api/v1/builds",
            build(json!({"method": "podman"})),
            422,
            "validation",
            Some("method"),
        ),
        json_case(
            "build image without registry",
            post.clone(),
            "/api/v1/builds",
            build(json!({"image": "app:latest"})),
            422,
            "validation",
            Some("image"),
        ),
        json_case(
            "build kaniko without destination",
            post.clone(),
            "/api/v1/builds",
            build(json!({"method": "kaniko", "image": null})),
            422,
            "validation",
            Some("image"),
        ),
        json_case(
            "build packer without template",
            post.clone(),
            "/api/v1/builds",
            build(json!({"method": "packer"})),
            422,
            "validation",
            Some("config.packer_template"),
        ),
        json_case(
            "build buildx bad platform",
            post.clone(),
            "/api/v1/builds",
            build(json!({"method": "buildx", "config": {"platforms": ["linux"]}})),
            422,
            "validation",
            Some("config.platforms[0]"),
        ),
        json_case(
            "build git ref option injection",
            post.clone(),
            "/api/v1/builds",
            build(json!({"git_ref": "--upload-pack=x"})),
            422,
            "validation",
            Some("git_ref"),
        ),
        json_case(
            "build unknown project",
            post.clone(),
            "/api/v1/builds",
            build(json!({"project_id": "00000000-0000-7000-8000-000000000000"})),
            422,
            "validation",
            Some("project_id"),
        ),
        json_case(
            "build unknown provider",
            post.clone(),
            "/api/v1/builds",
            build(json!({"infrastructure_provider_id": "00000000-0000-7000-8000-000000000000"})),
            422,
            "validation",
            Some("infrastructure_provider_id"),
        ),
        json_case(
            "build unknown registry credential",
            post.clone(),
            "/api/v1/builds",
            build(json!({"registry_credential_id": "00000000-0000-7000-8000-000000000000"})),
            422,
            "validation",
            Some("registry_credential_id"),
        ),
        json_case(
            "build project id not a uuid",
            post.clone(),
            "/api/v1/builds",
            build(json!({"project_id": "web"})),
            422,
            "validation",
            Some("project_id"),
        ),
        json_case(
            "build config unknown field",
            post.clone(),
            "/api/v1/builds",
            build(json!({"config": {"dockerfle": "Dockerfile"}})),
            422,
            "validation",
            Some("config.dockerfle"),
        ),
        json_case(
            "build timeout zero",
            post.clone(),
            "/api/v1/builds",
            build(json!({"timeout_seconds": 0})),
            422,
            "validation",
            Some("timeout_seconds"),
        ),
        json_case(
            "build priority wrong type",
            post.clone(),
            "/api/v1/builds",
            build(json!({"priority": "high"})),
            422,
            "validation",
            Some("priority"),
        ),
        json_case(
            "build infrastructure enum",
            post.clone(),
            "/api/v1/builds",
            build(json!({"infrastructure_type": "cloud"})),
            422,
            "validation",
            Some("infrastructure_type"),
        ),
        json_case(
            "build local without the tenant's opt-in, on a kubernetes provider",
            post.clone(),
            "/api/v1/builds",
            build(json!({"infrastructure_type": "local"})),
            422,
            "validation",
            Some("infrastructure_type"),
        ),
        json_case(
            "build dockerfile escapes repo",
            post.clone(),
            "/api/v1/builds",
            build(json!({"config": {"dockerfile": "../../etc/passwd"}})),
            422,
            "validation",
            Some("config.dockerfile"),
        ),
        json_case(
            "build unknown top-level field",
            post.clone(),
            "/api/v1/builds",
            build(json!({"git_url": "https://evil.example.com/x"})),
            422,
            "validation",
            Some("git_url"),
        ),
    ];
    let raw = |name, path, content_type, text: String, status, problem| Case {
        name,
        method: Method::POST,
        path,
        who: Who::TenantAdmin,
        body: Body::Raw { content_type, text },
        status,
        problem,
        field: None,
    };
    cases.push(raw(
        "malformed JSON",
        "/api/v1/projects",
        "application/json",
        "{\"name\": ".into(),
        400,
        "malformed-json",
    ));
    cases.push(raw(
        "trailing garbage after JSON",
        "/api/v1/projects",
        "application/json",
        "{\"name\": \"p\", \"git_url\": \"https://h.example.com/r\"} x".into(),
        400,
        "malformed-json",
    ));
    cases.push(raw(
        "JSON array instead of object",
        "/api/v1/projects",
        "application/json",
        "[]".into(),
        422,
        "validation",
    ));
    cases.push(raw(
        "not declared as JSON",
        "/api/v1/projects",
        "text/plain",
        "{}".into(),
        415,
        "unsupported-media-type",
    ));
    cases.push(raw(
        "oversize body",
        "/api/v1/projects",
        "application/json",
        format!("{{\"name\": \"{}\"}}", "a".repeat(2 * 1024 * 1024)),
        413,
        "payload-too-large",
    ));
    let get = |name, path, who, status, problem, field| Case {
        name,
        method: Method::GET,
        path,
        who,
        body: Body::None,
        status,
        problem,
        field,
    };
    cases.push(get(
        "list unknown status",
        "/api/v1/builds?status=done",
        Who::Viewer,
        400,
        "invalid-parameter",
        Some("status"),
    ));
    cases.push(get(
        "list limit out of range",
        "/api/v1/builds?limit=0",
        Who::Viewer,
        400,
        "invalid-parameter",
        Some("limit"),
    ));
    cases.push(get(
        "list unknown parameter",
        "/api/v1/builds?sort=asc",
        Who::Viewer,
        400,
        "invalid-parameter",
        Some("sort"),
    ));
    cases.push(get(
        "build id not a uuid",
        "/api/v1/builds/123",
        Who::Viewer,
        400,
        "invalid-parameter",
        Some("build_id"),
    ));
    cases.push(get(
        "no token",
        "/api/v1/builds",
        Who::Nobody,
        401,
        "unauthorized",
        None,
    ));
    cases.push(Case {
        name: "viewer submits a build",
        method: Method::POST,
        path: "/api/v1/builds",
        who: Who::Viewer,
        body: Body::Json(build(json!({}))),
        status: 403,
        problem: "forbidden",
        field: None,
    });
    cases.push(get(
        "unknown path",
        "/api/v1/nothing-here",
        Who::Viewer,
        404,
        "not-found",
        None,
    ));
    cases.push(Case {
        name: "method not allowed",
        method: Method::PUT,
        path: "/api/v1/builds",
        who: Who::TenantAdmin,
        body: Body::None,
        status: 405,
        problem: "method-not-allowed",
        field: None,
    });
    cases.extend(edge_cases());
    cases
}

/// Host access, NUL characters and option-like git URLs (issue 16).
fn edge_cases() -> Vec<Case> {
    let post = Method::POST;
    let nul = |name, path, body, field| {
        json_case(
            name,
            post.clone(),
            path,
            body,
            422,
            "validation",
            Some(field),
        )
    };
    vec![
        json_case(
            "build local without the tenant's opt-in, no provider",
            post.clone(),
            "/api/v1/builds",
            build(json!({"infrastructure_type": "local", "infrastructure_provider_id": null})),
            422,
            "validation",
            Some("infrastructure_type"),
        ),
        json_case(
            "tenant creates a local provider",
            post.clone(),
            "/api/v1/providers",
            json!({"name": "mine", "provider_type": "local", "config": {}}),
            422,
            "validation",
            Some("provider_type"),
        ),
        json_case(
            "project git url with an option for a host",
            post.clone(),
            "/api/v1/projects",
            json!({"name": "x", "git_url": "ssh://-oProxyCommand=touch%20x/repo"}),
            422,
            "validation",
            Some("git_url"),
        ),
        json_case(
            "project scp-like git url with an option for a host",
            post.clone(),
            "/api/v1/projects",
            json!({"name": "x", "git_url": "git@-oProxyCommand=x:repo"}),
            422,
            "validation",
            Some("git_url"),
        ),
        nul(
            "NUL in a build arg",
            "/api/v1/builds",
            build(json!({"config": {"build_args": {"A": "a\u{0}b"}}})),
            "config.build_args.A",
        ),
        nul(
            "NUL in a label",
            "/api/v1/builds",
            build(json!({"config": {"labels": {"L": "\u{0}"}}})),
            "config.labels.L",
        ),
        nul(
            "NUL in metadata",
            "/api/v1/builds",
            build(json!({"config": {"metadata": {"m": ["ok", {"deep": "x\u{0}"}]}}})),
            "config.metadata.m[1].deep",
        ),
        nul(
            "NUL in a project name",
            "/api/v1/projects",
            json!({"name": "a\u{0}", "git_url": "https://example.com/p.git"}),
            "name",
        ),
        nul(
            "NUL in a provider config string",
            "/api/v1/providers",
            json!({"name": "k2", "provider_type": "kubernetes",
                   "config": {"auth_method": "token", "endpoint": "https://k\u{0}:6443", "token": "t"}}),
            "config.endpoint",
        ),
        nul(
            "NUL in a tenant display name",
            "/api/v1/tenants",
            json!({"name": "nul", "display_name": "\u{0}"}),
            "display_name",
        ),
    ]
}

fn fill(text: &str, subs: &[(&str, String)]) -> String {
    subs.iter()
        .fold(text.to_owned(), |acc, (k, v)| acc.replace(k, v))
}

#[tokio::test]
async fn bad_inputs_are_refused_and_change_nothing() {
    let db = TestDb::new().await;
    let pool = db.pool.clone();
    let app = TestApp::spawn(pool.clone()).await;
    let t = app.tenant("team-a").await;
    let project = app.create_project(&t.admin, "web").await;
    let provider = app.create_k8s_provider(&t.admin, "k").await;
    let global = app.create_global_provider("shared").await;
    app.post(
        "/api/v1/registry-credentials",
        &t.admin,
        json!({"name": "reg", "registry": "ghcr.io", "username": "u", "password": "p"}),
    )
    .await
    .expect(201);
    // Use every token once so authentication bookkeeping is settled.
    for token in [&t.admin, &t.developer, &t.viewer] {
        app.get("/api/v1/projects", token).await.expect(200);
    }
    let subs = [
        ("{tenant}", t.id.to_string()),
        ("{project}", project.to_string()),
        ("{provider}", provider.to_string()),
        ("{global}", global.to_string()),
    ];

    let all = cases();
    assert!(all.len() >= 25, "the matrix has {} cases", all.len());
    let mut failures = Vec::new();
    for case in all {
        let before = app.snapshot().await;
        let token = match case.who {
            Who::Nobody => None,
            Who::PlatformAdmin => Some(ADMIN_TOKEN),
            Who::TenantAdmin => Some(t.admin.as_str()),
            Who::Viewer => Some(t.viewer.as_str()),
        };
        let body = match case.body {
            Body::Json(v) => {
                Body::Json(serde_json::from_str(&fill(&v.to_string(), &subs)).unwrap())
            }
            other => other,
        };
        let r = app
            .send(case.method.clone(), &fill(case.path, &subs), token, body)
            .await;
        let mut problems = Vec::new();
        if r.status != case.status {
            problems.push(format!("status {} (want {})", r.status, case.status));
        }
        if r.content_type != "application/problem+json" {
            problems.push(format!("content-type {:?}", r.content_type));
        } else {
            let problem = r.problem();
            if problem != case.problem {
                problems.push(format!("type {problem} (want {})", case.problem));
            }
            if let Some(field) = case.field
                && !r.fields().iter().any(|f| f == field)
            {
                problems.push(format!("fields {:?} (want {field})", r.fields()));
            }
        }
        if app.snapshot().await != before {
            problems.push("the database changed".into());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{}: {} — body {}",
                case.name,
                problems.join(", "),
                r.text
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "failing cases:\n{}",
        failures.join("\n")
    );
}
