//! A tenant admin's provider config is data, never instructions (issue 16,
//! findings 1, 2 and 6): no kubeconfig `exec` plugin runs, no server file is
//! read or quoted, no refused address is connected to, and no remote body
//! comes back in an error.

use imagefactory_domain::provider::SECRET_FIELDS;
use imagefactory_store::crypto::Cipher;
use imagefactory_store::providers::CONFIG_LABEL;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{ADMIN_TOKEN, SECRET_KEY};
use crate::server::{Target, Tenant, fields};

const POLICY: &str = "address not allowed by the provider address policy";

/// A kubeconfig for `server` whose user runs `/bin/sh -c <script>`.
fn exec_kubeconfig(server: &str, script: &str) -> String {
    let args = serde_json::to_string(&["-c", script]).unwrap();
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1beta1\n      command: /bin/sh\n      args: {args}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
    )
}

/// A kubeconfig whose user and cluster carry `user`/`cluster` lines.
fn kubeconfig_with(server: &str, user: &str, cluster: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n{cluster}users:\n- name: u\n  user:\n{user}contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
    )
}

async fn create_provider(target: &Target, token: &str, name: &str, config: Value) -> (u16, Value) {
    target
        .http
        .post(
            "/api/v1/providers",
            token,
            json!({"name": name, "provider_type": "kubernetes", "config": config}),
        )
        .await
}

async fn test_connection(target: &Target, token: &str, id: &str) -> Value {
    let (status, report) = target
        .http
        .post(
            &format!("/api/v1/providers/{id}/test-connection"),
            token,
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{report}");
    report
}

/// Nothing of the server's environment or a command's output is in `text`.
fn assert_no_leak(text: &str) {
    for secret in [SECRET_KEY, ADMIN_TOKEN, "IF_", "uid=", "root:", "PATH="] {
        assert!(!text.contains(secret), "{secret:?} leaked: {text}");
    }
}

/// Write `config` into provider `id`'s row as a row stored before the
/// checks existed would hold it (secret fields sealed like the API does).
async fn store_config_directly(target: &Target, id: &str, mut config: Value) {
    let cipher = Cipher::from_hex(SECRET_KEY).unwrap();
    cipher.seal_fields(CONFIG_LABEL, &mut config, SECRET_FIELDS);
    let pool = sqlx::PgPool::connect(&target.db.url).await.unwrap();
    let updated = sqlx::query(
        "UPDATE infrastructure_providers SET config = $1, config_version = config_version + 1 WHERE id = $2::uuid",
    )
    .bind(config)
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(updated.rows_affected(), 1);
    pool.close().await;
}

/// Submit a kaniko build on provider `provider` and wait for it to end.
async fn build_on(target: &Target, tenant: &Tenant, provider: &str) -> Value {
    let project = target
        .project(
            &tenant.admin,
            "trust",
            "https://git.example.com/team/app.git",
        )
        .await;
    let build = target
        .http
        .created(
            "/api/v1/builds",
            &tenant.developer,
            json!({"project_id": project["id"], "method": "kaniko", "infrastructure_type": "kubernetes",
                   "infrastructure_provider_id": provider, "image": "registry.example.com/team/app:1"}),
        )
        .await;
    let id = build["id"].as_str().unwrap();
    target.wait_terminal(&tenant.viewer, id).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_exec_plugin_never_runs_on_the_server() {
    let target = Target::start(&[]).await;
    let tenant = target.tenant("attack-exec").await;
    let marker = target.workdir.path().join("exec-ran");
    let script = format!("touch {}; id; env", marker.display());
    let kubeconfig = exec_kubeconfig(&target.sim.endpoint(), &script);
    let exec_config = json!({"auth_method": "kubeconfig", "kubeconfig": kubeconfig});

    // Refused when sent.
    let (status, body) = create_provider(&target, &tenant.admin, "exec", exec_config.clone()).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        fields(&body),
        ["config.kubeconfig.users[0].user.exec"],
        "{body}"
    );

    // A row of that shape stored before the check: test-connection and a
    // build refuse it too, and nothing runs.
    let (status, created) = create_provider(
        &target,
        &tenant.admin,
        "old-row",
        json!({"auth_method": "token", "endpoint": target.sim.endpoint(), "token": "t", "ca_cert": target.sim.ca_pem()}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap();
    store_config_directly(&target, id, exec_config).await;
    let report = test_connection(&target, &tenant.admin, id).await;
    assert_eq!(report["reachable"], false, "{report}");
    assert!(
        report["error"]
            .as_str()
            .unwrap_or_default()
            .contains("users[0].user.exec"),
        "{report}"
    );
    assert_no_leak(&report.to_string());
    let build = build_on(&target, &tenant, id).await;
    assert_eq!(build["status"], "failed", "{build}");
    let message = build["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("exec"), "{build}");
    assert_no_leak(&build.to_string());
    // Changing another field keeps the stored kubeconfig: it is checked as if sent.
    let (status, body) = target
        .http
        .send(
            reqwest::Method::PATCH,
            &format!("/api/v1/providers/{id}"),
            &tenant.admin,
            Some(json!({"config": {"auth_method": "kubeconfig", "namespace": "builds"}})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        fields(&body),
        ["config.kubeconfig.users[0].user.exec"],
        "{body}"
    );
    assert!(
        !marker.exists(),
        "the tenant's exec plugin ran on the server"
    );
    let logs = target.output();
    for secret in [SECRET_KEY, ADMIN_TOKEN, "uid="] {
        assert!(!logs.contains(secret), "{secret:?} in the server's log");
    }
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_files_cannot_be_referenced_by_a_tenant() {
    let target = Target::start(&[]).await;
    let tenant = target.tenant("attack-files").await;
    let server = target.sim.endpoint();
    let (status, body) = create_provider(
        &target,
        &tenant.admin,
        "path",
        json!({"auth_method": "kubeconfig", "kubeconfig_path": "/etc/passwd"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(fields(&body), ["config.kubeconfig_path"], "{body}");
    assert_no_leak(&body.to_string());

    let cases = [
        (
            "    tokenFile: /etc/passwd\n",
            "",
            "users[0].user.tokenFile",
        ),
        (
            "    client-certificate: /etc/passwd\n",
            "",
            "users[0].user.client-certificate",
        ),
        (
            "    client-key: /etc/shadow\n",
            "",
            "users[0].user.client-key",
        ),
        (
            "    token: t\n",
            "    certificate-authority: /etc/passwd\n",
            "clusters[0].cluster.certificate-authority",
        ),
        (
            "    token: t\n",
            "    proxy-url: http://10.0.0.1:3128\n",
            "clusters[0].cluster.proxy-url",
        ),
        (
            "    auth-provider: {name: oidc}\n",
            "",
            "users[0].user.auth-provider",
        ),
    ];
    for (user, cluster, field) in cases {
        let config = json!({"auth_method": "kubeconfig", "kubeconfig": kubeconfig_with(&server, user, cluster)});
        let (status, body) = create_provider(&target, &tenant.admin, "file", config).await;
        assert_eq!(status, 422, "{field}: {body}");
        assert_eq!(
            fields(&body),
            [format!("config.kubeconfig.{field}")],
            "{body}"
        );
        assert_no_leak(&body.to_string());
    }
    // Nothing was written.
    let (_, list) = target.http.get("/api/v1/providers", &tenant.admin).await;
    assert_eq!(list["items"], json!([]), "{list}");
    target.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_link_local_and_the_server_itself_are_refused() {
    let target = Target::start(&[("IF_PROVIDER_ALLOW_LOOPBACK", "false".into())]).await;
    let tenant = target.tenant("attack-addr").await;
    let sim_port = target.sim.endpoint().rsplit(':').next().unwrap().to_owned();
    let refused = [
        format!("https://127.0.0.1:{sim_port}"),
        "https://[::1]:6443".into(),
        "https://[::ffff:127.0.0.1]:6443".into(),
        "http://169.254.169.254".into(),
        format!("https://localhost:{sim_port}"),
        "https://2130706433:6443".into(),
        format!("http://127.0.0.1:{}", target.port),
    ];
    for endpoint in &refused {
        let config = json!({"auth_method": "token", "endpoint": endpoint, "token": "t"});
        let (status, body) = create_provider(&target, &tenant.admin, "addr", config).await;
        assert_eq!(status, 422, "{endpoint}: {body}");
        assert_eq!(fields(&body), ["config.endpoint"], "{endpoint}: {body}");
    }
    // Inside a kubeconfig too.
    let kubeconfig = kubeconfig_with("http://169.254.169.254", "    token: t\n", "");
    let config = json!({"auth_method": "kubeconfig", "kubeconfig": kubeconfig});
    let (status, body) = create_provider(&target, &tenant.admin, "addr", config).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(
        fields(&body),
        ["config.kubeconfig.clusters[0].cluster.server"],
        "{body}"
    );
    // The platform admin's global providers are not restricted.
    let (status, body) = target
        .http
        .post(
            "/api/v1/admin/providers",
            ADMIN_TOKEN,
            json!({"name": "sim", "provider_type": "kubernetes",
                   "config": {"auth_method": "token", "endpoint": target.sim.endpoint(), "token": target.sim.admin_token(), "ca_cert": target.sim.ca_pem()}}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // A name that resolves to loopback passes validation and is refused
    // when connecting (the machine's own name, as /etc/hosts often has it).
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim().to_owned();
    let resolved: Vec<std::net::SocketAddr> = tokio::net::lookup_host((name.as_str(), 443))
        .await
        .map(Iterator::collect)
        .unwrap_or_default();
    if !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()) {
        let endpoint = format!("https://{name}:{sim_port}");
        let config = json!({"auth_method": "token", "endpoint": endpoint, "token": target.sim.admin_token(), "ca_cert": target.sim.ca_pem()});
        let (status, created) = create_provider(&target, &tenant.admin, "by-name", config).await;
        assert_eq!(status, 201, "{created}");
        let report = test_connection(&target, &tenant.admin, created["id"].as_str().unwrap()).await;
        assert_eq!(report["reachable"], false, "{report}");
        assert!(
            report["error"]
                .as_str()
                .unwrap_or_default()
                .starts_with(POLICY),
            "{report}"
        );
    } else {
        eprintln!("skipped: {name:?} does not resolve to loopback here ({resolved:?})");
    }
    target.stop().await;
}

/// A server on loopback that answers every request with `status` and `body`.
async fn answering_server(status: &'static str, body: &'static str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let answer = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_categories_never_a_remote_body() {
    let target = Target::start(&[]).await;
    let tenant = target.tenant("attack-ssrf").await;
    let marker = "SECRET-BODY-MARKER";
    let failing = answering_server("500 Internal Server Error", "SECRET-BODY-MARKER").await;
    let ok_html = answering_server("200 OK", "<html>SECRET-BODY-MARKER</html>").await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cases = [
        (format!("http://127.0.0.1:{failing}"), "500"),
        (
            format!("http://127.0.0.1:{ok_html}"),
            "not a Kubernetes API response",
        ),
        (format!("https://127.0.0.1:{failing}"), "TLS"),
        (format!("https://127.0.0.1:{closed}"), "connection refused"),
        // kube-sim without its CA: the certificate is not trusted.
        (target.sim.endpoint(), "TLS: unknown certificate authority"),
    ];
    for (i, (endpoint, expected)) in cases.iter().enumerate() {
        let config = json!({"auth_method": "token", "endpoint": endpoint, "token": "t"});
        let (status, created) =
            create_provider(&target, &tenant.admin, &format!("ssrf-{i}"), config).await;
        assert_eq!(status, 201, "{created}");
        let report = test_connection(&target, &tenant.admin, created["id"].as_str().unwrap()).await;
        let error = report["error"].as_str().unwrap_or_default();
        assert!(error.contains(expected), "{endpoint}: {report}");
        assert!(!report.to_string().contains(marker), "{endpoint}: {report}");
        assert!(error.len() < 200, "{endpoint}: {report}");
        assert_eq!(report["authenticated"], false, "{endpoint}: {report}");
    }
    target.stop().await;
}
