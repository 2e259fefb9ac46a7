//! The secret audit over a whole scenario: providers of each auth method,
//! registry and git credentials, builds that succeed and builds that fail on
//! auth, test-connection of each provider. No plaintext secret (nor its
//! base64) may appear in any API response, in the server's debug log, in
//! the database, or in any kube-sim object other than the Secrets that must
//! hold them.

use base64::Engine;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::Discovery;
use kube_sim::{AccessRule, Credentials};
use serde_json::{Value, json};
use sqlx::Connection;

use crate::common::{ADMIN_TOKEN, SECRET_KEY};
use crate::server::Target;

const REGISTRY_PASSWORD: &str = "audit-registry-pass-Rr77";
const GIT_PASSWORD: &str = "audit-git-pass-Gg42";
const BAD_TOKEN: &str = "audit-rejected-token-Bb19";

#[tokio::test]
async fn no_secret_leaks_anywhere_over_a_full_scenario() {
    let target = Target::start(&[("IF_LOG", "debug".into())]).await;
    let tenant = target.tenant("audit").await;
    target.prepare_namespace(&tenant.id).await;
    let sim = &target.sim;
    let cert = sim
        .add_cert_user("audit-cert", &[], vec![AccessRule::all()])
        .unwrap();
    let kube_user_token = sim.add_token_user("audit-kube", &[], vec![AccessRule::all()]);
    let kubeconfig = sim.kubeconfig_yaml_for(Credentials::Token(&kube_user_token), "default");

    let key_body = pem_body(&cert.key_pem);
    let mut secrets = vec![
        sim.admin_token().to_owned(),
        key_body,
        kube_user_token.clone(),
        BAD_TOKEN.to_owned(),
        REGISTRY_PASSWORD.to_owned(),
        GIT_PASSWORD.to_owned(),
        ADMIN_TOKEN.to_owned(),
        SECRET_KEY.to_owned(),
        tenant.admin.clone(),
        tenant.developer.clone(),
        tenant.viewer.clone(),
    ];
    // The tokens as the API printed them once are not part of the audit;
    // everything from here on is.
    let mut seen: Vec<(String, String)> = Vec::new();
    let http = &target.http;
    let mut record = |what: String, body: &Value| seen.push((what, body.to_string()));

    let ca = sim.ca_pem();
    let providers = [
        ("tok", target.sim_provider_config(), true),
        (
            "cert",
            json!({"auth_method": "client-cert", "endpoint": sim.endpoint(), "ca_cert": ca,
                   "client_cert": cert.cert_pem, "client_key": cert.key_pem}),
            true,
        ),
        (
            "kube",
            json!({"auth_method": "kubeconfig", "kubeconfig": kubeconfig}),
            true,
        ),
        (
            "bad",
            json!({"auth_method": "token", "endpoint": sim.endpoint(), "ca_cert": ca, "token": BAD_TOKEN}),
            false,
        ),
    ];
    let credential = http
        .created(
            "/api/v1/registry-credentials",
            &tenant.admin,
            json!({"name": "reg", "registry": "registry.example.com", "username": "bot", "password": REGISTRY_PASSWORD}),
        )
        .await;
    record("create credential".into(), &credential);
    let project = http
        .created(
            "/api/v1/projects",
            &tenant.admin,
            json!({"name": "web", "git_url": "https://git.example.com/a/b.git",
                   "git_credential": {"username": "me", "password": GIT_PASSWORD}}),
        )
        .await;
    record("create project".into(), &project);

    let mut builds = Vec::new();
    for (name, config, good) in providers {
        let provider = http
            .created(
                "/api/v1/providers",
                &tenant.admin,
                json!({"name": name, "provider_type": "kubernetes", "config": config}),
            )
            .await;
        record(format!("create provider {name}"), &provider);
        let id = provider["id"].as_str().unwrap().to_owned();
        let (status, report) = http
            .post(
                &format!("/api/v1/providers/{id}/test-connection"),
                &tenant.admin,
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["authenticated"], good, "{name}: {report}");
        record(format!("test-connection {name}"), &report);
        let build = http
            .created(
                "/api/v1/builds",
                &tenant.developer,
                json!({"project_id": project["id"], "method": "docker", "infrastructure_provider_id": id,
                       "registry_credential_id": credential["id"], "image": "registry.example.com/team/app:1.0"}),
            )
            .await;
        builds.push((name, build["id"].as_str().unwrap().to_owned(), good));
    }
    for (name, id, good) in &builds {
        let build = target.wait_terminal(&tenant.viewer, id).await;
        let expected = if *good { "succeeded" } else { "failed" };
        assert_eq!(build["status"], expected, "{name}: {build}");
        for path in ["", "/logs", "/artifacts", "/executions"] {
            let (_, body) = http
                .get(&format!("/api/v1/builds/{id}{path}"), &tenant.viewer)
                .await;
            record(format!("build {name}{path}"), &body);
        }
    }
    for path in [
        "/api/v1/providers",
        "/api/v1/registry-credentials",
        "/api/v1/projects",
        "/api/v1/builds",
    ] {
        let (_, body) = http.get(path, &tenant.admin).await;
        record(path.into(), &body);
    }
    let (_, tenants) = http.get("/api/v1/tenants", ADMIN_TOKEN).await;
    record("admin tenants".into(), &tenants);

    // Each secret is looked for as is and as base64 (how a Secret or a
    // kubeconfig would carry it).
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let forms: Vec<(String, String)> = secrets
        .drain(..)
        .flat_map(|s| [(s.clone(), s.clone()), (s.clone(), b64(&s))])
        .collect();
    let assert_clean_but = |what: &str, text: &str, allowed: &[&str]| {
        for (secret, form) in &forms {
            if allowed.contains(&secret.as_str()) {
                continue;
            }
            assert!(
                !text.contains(form.as_str()),
                "{what} holds the secret {}…",
                &secret[..6.min(secret.len())]
            );
        }
    };
    let assert_clean = |what: &str, text: &str| assert_clean_but(what, text, &[]);
    for (what, text) in &seen {
        assert_clean(what, text);
    }
    assert_clean("the server's debug log", &target.output());
    assert_clean("the database", &database_text(&target.db.url).await);

    // kube-sim: every object of every kind, except the registry and git
    // Secrets the builds need (which must hold exactly their own values).
    let client = sim.kube_client().await.unwrap();
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    let mut objects = 0;
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            if !caps.supports_operation(kube::discovery::verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
            let Ok(list) = api.list(&ListParams::default()).await else {
                continue;
            };
            for object in list.items {
                objects += 1;
                let text = expand(&serde_json::to_value(&object).unwrap(), 3);
                let name = object.metadata.name.clone().unwrap_or_default();
                // A build's registry and git Secrets must hold those
                // passwords; no object may hold anything else.
                let allowed: &[&str] = if resource.kind == "Secret" {
                    &[REGISTRY_PASSWORD, GIT_PASSWORD]
                } else {
                    &[]
                };
                assert_clean_but(
                    &format!("kube-sim {} {name}", resource.kind),
                    &text,
                    allowed,
                );
            }
        }
    }
    assert!(objects > 20, "kube-sim listed only {objects} objects");
    target.stop().await;
}

/// The base64 body of a PEM block: what identifies the key itself.
fn pem_body(pem: &str) -> String {
    pem.lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<String>()
}

/// The JSON text plus, for every string that is base64 of UTF-8 text, that
/// text expanded in turn (a Secret's `data`, a docker config's `auth`): a
/// secret embedded in an encoded value is found too.
fn expand(value: &Value, depth: u8) -> String {
    let mut text = value.to_string();
    if depth == 0 {
        return text;
    }
    let mut strings = Vec::new();
    collect_strings(value, &mut strings);
    for s in strings {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(s.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        if let Some(decoded) = decoded {
            let inner = serde_json::from_str(&decoded).unwrap_or(Value::String(decoded));
            text.push('\n');
            text.push_str(&expand(&inner, depth - 1));
        }
    }
    text
}

fn collect_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// Every row of every table of the server's database, as text.
async fn database_text(url: &str) -> String {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    let mut text = String::new();
    for table in tables {
        let rows: String = sqlx::query_scalar(&format!(
            "SELECT COALESCE(string_agg(to_jsonb(t)::text, '|'), '') FROM \"{table}\" t"
        ))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        text.push_str(&rows);
    }
    text
}
