//! Findings 3, 9 and the input edges of 10 of issue 16: local builds (host
//! access) without the platform admin's opt-in, NUL characters that used to
//! reach PostgreSQL's jsonb as a 500, option-like git URLs, and lists with
//! unknown cursors, against the real `serve` process.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::ADMIN_TOKEN;
use crate::server::{Target, Tenant, fields};

/// Nothing listens on port 1: a build that does start fails at its clone.
const GIT_URL: &str = "https://127.0.0.1:1/team/web.git";

fn local_build(project: &str, method: &str, provider: Option<&str>) -> Value {
    json!({"project_id": project, "method": method, "infrastructure_type": "local",
           "infrastructure_provider_id": provider, "image": "127.0.0.1:5000/team/web:1",
           "config": {"packer_template": "build.pkr.hcl"}})
}

async fn patch_tenant(target: &Target, id: &str, token: &str, allow: bool) -> (u16, Value) {
    target
        .http
        .send(
            Method::PATCH,
            &format!("/api/v1/tenants/{id}"),
            token,
            Some(json!({"allow_local_builds": allow})),
        )
        .await
}

async fn project(target: &Target, tenant: &Tenant) -> String {
    let created = target
        .http
        .created(
            "/api/v1/projects",
            &tenant.admin,
            json!({"name": "web", "git_url": GIT_URL}),
        )
        .await;
    created["id"].as_str().unwrap().to_owned()
}

async fn item_count(target: &Target, path: &str, token: &str) -> usize {
    let (status, body) = target.http.get(path, token).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["items"].as_array().expect("a page").len()
}

#[tokio::test]
async fn local_builds_need_the_platform_admins_opt_in() {
    let target = Target::start(&[]).await;
    let tenant = target.tenant("attack-local").await;
    let project = project(&target, &tenant).await;
    let host = target
        .http
        .created(
            "/api/v1/admin/providers",
            ADMIN_TOKEN,
            json!({"name": "host", "provider_type": "local", "config": {}}),
        )
        .await;
    let host = host["id"].as_str().unwrap();

    // Developer and tenant admin, every method (packer's shell-local is the
    // sharpest), with no provider or the platform's own local one: 422.
    for token in [&tenant.developer, &tenant.admin] {
        for method in ["docker", "buildx", "kaniko", "packer"] {
            for provider in [None, Some(host)] {
                let (status, body) = target
                    .http
                    .post(
                        "/api/v1/builds",
                        token,
                        local_build(&project, method, provider),
                    )
                    .await;
                assert_eq!(status, 422, "{method} {provider:?}: {body}");
                assert_eq!(fields(&body), ["infrastructure_type"], "{body}");
            }
        }
    }
    // A tenant cannot opt itself in, nor grant itself a local provider.
    for token in [&tenant.admin, &tenant.developer] {
        let (status, body) = patch_tenant(&target, &tenant.id, token, true).await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = target
        .http
        .post(
            "/api/v1/providers",
            &tenant.admin,
            json!({"name": "mine", "provider_type": "local", "config": {"work_dir": "/"}}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(fields(&body), ["provider_type"]);
    // No build row, hence no execution; no provider of its own.
    assert_eq!(
        item_count(&target, "/api/v1/builds", &tenant.viewer).await,
        0
    );
    let (_, providers) = target.http.get("/api/v1/providers", &tenant.viewer).await;
    assert!(
        providers["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["is_global"] == true)
    );
    let (_, shown) = target
        .http
        .get(&format!("/api/v1/tenants/{}", tenant.id), ADMIN_TOKEN)
        .await;
    assert_eq!(shown["allow_local_builds"], false, "{shown}");

    // Opted in by the platform admin: accepted, and it runs (its clone fails).
    let (status, body) = patch_tenant(&target, &tenant.id, ADMIN_TOKEN, true).await;
    assert_eq!(status, 200, "{body}");
    let build = target
        .http
        .created(
            "/api/v1/builds",
            &tenant.developer,
            local_build(&project, "docker", None),
        )
        .await;
    assert_eq!(build["infrastructure_type"], "local");
    target.stop().await;
}

/// `\u0000` in a JSON string used to pass validation and fail in PostgreSQL
/// (jsonb refuses it): a 500. Now a 422 naming the field, and nothing written.
#[tokio::test]
async fn nul_in_any_json_string_is_422_naming_the_field() {
    let target = Target::start(&[]).await;
    let tenant = target.tenant("attack-nul").await;
    let project = project(&target, &tenant).await;
    // Opted in, so a local build needs no provider: apart from the NUL these
    // builds are valid and would be written.
    patch_tenant(&target, &tenant.id, ADMIN_TOKEN, true).await;
    let build = |config: Value| {
        json!({"project_id": project, "method": "docker", "infrastructure_type": "local",
               "image": "127.0.0.1:5000/team/web:1", "config": config})
    };
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "/api/v1/builds",
            "developer",
            build(json!({"build_args": {"A": "a\u{0}b"}})),
            "config.build_args.A",
        ),
        (
            "/api/v1/builds",
            "developer",
            build(json!({"labels": {"L": "\u{0}"}})),
            "config.labels.L",
        ),
        (
            "/api/v1/builds",
            "developer",
            build(json!({"metadata": {"m": {"n": ["\u{0}"]}}})),
            "config.metadata.m.n[0]",
        ),
        (
            "/api/v1/builds",
            "developer",
            build(json!({"packer_vars": {"v\u{0}": "x"}})),
            "config.packer_vars.v\\u0000",
        ),
        (
            "/api/v1/projects",
            "admin",
            json!({"name": "p2", "git_url": GIT_URL,
            "git_credential": {"username": "u", "password": "p\u{0}"}}),
            "git_credential.password",
        ),
        (
            "/api/v1/providers",
            "admin",
            json!({"name": "k", "provider_type": "kubernetes",
            "config": {"auth_method": "token", "endpoint": "https://127.0.0.1:6443", "token": "t\u{0}"}}),
            "config.token",
        ),
        (
            "/api/v1/registry-credentials",
            "admin",
            json!({"name": "r", "registry": "ghcr.io",
            "username": "u", "password": "\u{0}"}),
            "password",
        ),
        (
            "/api/v1/tokens",
            "admin",
            json!({"name": "ci\u{0}", "role": "viewer"}),
            "name",
        ),
    ];
    for (path, role, body, field) in cases {
        let token = if role == "admin" {
            &tenant.admin
        } else {
            &tenant.developer
        };
        let (status, problem) = target.http.post(path, token, body).await;
        assert_eq!(status, 422, "{path} {field}: {problem}");
        assert_eq!(fields(&problem), [field], "{problem}");
    }
    let (status, problem) = target
        .http
        .post(
            "/api/v1/tenants",
            ADMIN_TOKEN,
            json!({"name": "t2", "display_name": "a\u{0}"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(fields(&problem), ["display_name"]);
    // Nothing was written.
    assert_eq!(
        item_count(&target, "/api/v1/builds", &tenant.viewer).await,
        0
    );
    assert_eq!(
        item_count(&target, "/api/v1/projects", &tenant.viewer).await,
        1
    );
    assert_eq!(
        item_count(&target, "/api/v1/registry-credentials", &tenant.viewer).await,
        0
    );
    assert_eq!(
        item_count(&target, "/api/v1/tokens", &tenant.admin).await,
        3
    );
    assert_eq!(item_count(&target, "/api/v1/tenants", ADMIN_TOKEN).await, 1);
    assert!(
        !target.output().contains("jsonb"),
        "a NUL reached the database"
    );
    target.stop().await;
}

#[tokio::test]
async fn git_urls_with_option_like_hosts_or_users_are_refused() {
    let target = Target::start(&[]).await;
    let tenant = target.tenant("attack-git").await;
    let project = project(&target, &tenant).await;
    for url in [
        "ssh://-oProxyCommand=touch$IFS/tmp/pwned/repo",
        "ssh://git@-oProxyCommand=x/repo",
        "ssh://-l@host/repo",
        "ssh://host:-p/repo",
        "-oProxyCommand=x:repo",
        "git@-x:repo",
        "-u@host:repo",
    ] {
        let (status, body) = target
            .http
            .post(
                "/api/v1/projects",
                &tenant.admin,
                json!({"name": "x", "git_url": url}),
            )
            .await;
        assert_eq!(status, 422, "{url}: {body}");
        assert_eq!(fields(&body), ["git_url"], "{body}");
        let (status, body) = target
            .http
            .send(
                Method::PATCH,
                &format!("/api/v1/projects/{project}"),
                &tenant.admin,
                Some(json!({"git_url": url})),
            )
            .await;
        assert_eq!(status, 422, "{url}: {body}");
    }
    let (_, kept) = target
        .http
        .get(&format!("/api/v1/projects/{project}"), &tenant.viewer)
        .await;
    assert_eq!(kept["git_url"], GIT_URL);
    target.stop().await;
}

#[tokio::test]
async fn lists_page_and_unknown_cursors_are_refused() {
    let target = Target::start(&[]).await;
    let tenant = target.tenant("attack-lists").await;
    for i in 0..3 {
        target
            .http
            .created(
                "/api/v1/projects",
                &tenant.admin,
                json!({"name": format!("p{i}"), "git_url": GIT_URL}),
            )
            .await;
    }
    // Beyond the limit: a full page and a cursor, then the rest.
    let (_, first) = target
        .http
        .get("/api/v1/projects?limit=2", &tenant.viewer)
        .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 2, "{first}");
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let (_, rest) = target
        .http
        .get(
            &format!("/api/v1/projects?limit=2&cursor={cursor}"),
            &tenant.viewer,
        )
        .await;
    assert_eq!(rest["items"].as_array().unwrap().len(), 1, "{rest}");
    assert!(rest["next_cursor"].is_null(), "{rest}");
    let (_, too_many) = target
        .http
        .get("/api/v1/projects?limit=1000", &tenant.viewer)
        .await;
    assert_eq!(
        too_many["type"],
        "https://imagefactory.dev/problems/invalid-parameter"
    );

    // A well-formed cursor that is no position in the list: 400, not [].
    let unknown = uuid::Uuid::now_v7();
    let foreign = uuid::Uuid::now_v7();
    let tenant_lists = [
        "/api/v1/projects".to_owned(),
        "/api/v1/providers".to_owned(),
        "/api/v1/registry-credentials".to_owned(),
        "/api/v1/tokens".to_owned(),
        "/api/v1/builds".to_owned(),
    ];
    for path in tenant_lists {
        let (status, body) = target
            .http
            .get(&format!("{path}?cursor={unknown}"), &tenant.admin)
            .await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(fields(&body), ["cursor"], "{path}: {body}");
    }
    let admin_lists = [
        "/api/v1/tenants".to_owned(),
        "/api/v1/admin/providers".to_owned(),
        format!("/api/v1/tenants/{}/tokens", tenant.id),
    ];
    for path in admin_lists {
        let (status, body) = target
            .http
            .get(&format!("{path}?cursor={unknown}"), ADMIN_TOKEN)
            .await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    // A build's executions and artifacts too (a local build of an opted-in
    // tenant; it fails at once, which is all these lists need).
    patch_tenant(&target, &tenant.id, ADMIN_TOKEN, true).await;
    let (_, first) = target
        .http
        .get("/api/v1/projects?limit=1", &tenant.viewer)
        .await;
    let project = first["items"][0]["id"].as_str().unwrap().to_owned();
    let build = target
        .http
        .created(
            "/api/v1/builds",
            &tenant.developer,
            local_build(&project, "docker", None),
        )
        .await;
    let build = build["id"].as_str().unwrap();
    for sub in ["executions", "artifacts"] {
        let path = format!("/api/v1/builds/{build}/{sub}");
        let (status, body) = target.http.get(&path, &tenant.viewer).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(body["items"].is_array(), "{path}: {body}");
        let (status, body) = target
            .http
            .get(&format!("{path}?cursor={unknown}"), &tenant.viewer)
            .await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(fields(&body), ["cursor"], "{path}: {body}");
    }
    // A build that is not the tenant's: 404, whatever the cursor.
    let (status, _) = target
        .http
        .get(
            &format!("/api/v1/builds/{foreign}/executions?cursor={unknown}"),
            &tenant.viewer,
        )
        .await;
    assert_eq!(status, 404);
    target.stop().await;
}
