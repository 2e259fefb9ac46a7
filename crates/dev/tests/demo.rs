//! The real `imagefactory-dev` binary as a process, on a fresh database:
//! with `--exit` the demo build runs to `succeeded` on kube-sim and the
//! process exits 0; without it the server keeps answering with the printed
//! token and commands until SIGINT.

use std::time::Duration;

use imagefactory_test_support::{ApiClient, Body, Proc, ReservedDb, TERMINAL, id_of};

const ADMIN_TOKEN: &str = "dev-test-admin-token-not-for-output";
const SECRET_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// Guards against hangs only (a cold machine under load); nothing asserts speed.
const PATIENCE: Duration = Duration::from_secs(240);

/// The dev binary on `database_url` (which it creates), with exactly the
/// `IF_*` settings of the test.
fn spawn(args: &[&str], database_url: &str) -> Proc {
    Proc::spawn(
        env!("CARGO_BIN_EXE_imagefactory-dev"),
        args,
        &[
            ("IF_DATABASE_URL", database_url.to_owned()),
            ("IF_ADMIN_TOKEN", ADMIN_TOKEN.into()),
            ("IF_SECRET_KEY", SECRET_KEY.into()),
            ("IF_DISPATCHER_SHUTDOWN_GRACE", "2s".into()),
            ("IF_LOG", "info".into()),
        ],
    )
}

/// A database name nobody uses yet; the demo creates it, the guard drops it.
fn fresh_database() -> ReservedDb {
    ReservedDb::new("if_dev")
}

/// Every `sha256:<64 hex>` in `text`.
fn digests(text: &str) -> Vec<&str> {
    text.match_indices("sha256:")
        .filter_map(|(i, _)| text.get(i..i + 7 + 64))
        .filter(|d| d[7..].bytes().all(|b| b.is_ascii_hexdigit()))
        .collect()
}

/// The lines of the streamed build log.
fn log_lines(stdout: &str) -> Vec<&str> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  | "))
        .collect()
}

#[tokio::test]
async fn exit_flag_runs_the_demo_build_to_succeeded_and_exits_zero() {
    let db = fresh_database();
    let kubeconfig = tempfile::tempdir().unwrap();
    let kubeconfig_path = kubeconfig.path().join("kube-sim.yaml");
    let mut proc = spawn(
        &[
            "--exit",
            "--port",
            "0",
            "--time-scale",
            "0.05",
            "--kubeconfig-out",
            kubeconfig_path.to_str().unwrap(),
        ],
        &db.url,
    );
    let status = proc.wait_for_exit(PATIENCE).await;
    let out = proc.output();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{out}");

    let stdout = proc.stdout();
    let build_line = stdout
        .lines()
        .find(|l| l.starts_with("Build ") && l.contains(" after "))
        .unwrap_or_else(|| panic!("no build result line\n{out}"));
    assert!(
        build_line.contains(": succeeded after"),
        "{build_line}\n{out}"
    );
    let artifact = |name: &str| {
        stdout
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .map(|l| l.split_whitespace().last().unwrap().to_owned())
            .unwrap_or_else(|| panic!("no artifact {name}\n{out}"))
    };
    let digest = artifact("IMAGE_DIGEST");
    assert_eq!(digests(&digest), [digest.as_str()], "{out}");
    assert_eq!(artifact("IMAGE_URL"), "registry.example.com/demo/hello:1.0");
    let logs = log_lines(&stdout);
    assert!(
        logs.iter().any(|l| l.starts_with("[clone]")),
        "no clone step lines: {logs:?}\n{out}"
    );
    assert!(
        logs.iter().any(|l| l.contains(&digest)),
        "no push line with the digest: {logs:?}\n{out}"
    );
    // With --exit nothing is left serving, so no token or commands are printed.
    assert!(!stdout.contains("Demo token"), "{out}");

    // No secret reaches the output: admin token, key, kube-sim's token.
    let kubeconfig = std::fs::read_to_string(&kubeconfig_path).unwrap();
    let sim_token = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: "))
        .expect("token in the kubeconfig");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&kubeconfig_path)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    for secret in [ADMIN_TOKEN, SECRET_KEY, sim_token] {
        assert!(!out.contains(secret), "a secret was printed\n{out}");
    }
}

#[tokio::test]
async fn without_exit_it_keeps_serving_the_printed_commands_until_sigint() {
    let db = fresh_database();
    let mut proc = spawn(&["--port", "0", "--time-scale", "0.05"], &db.url);
    proc.wait_for_stdout("Serving until Ctrl-C.", PATIENCE)
        .await;
    let stdout = proc.stdout();
    let value = |prefix: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| v.trim_matches('\'').to_owned())
            .unwrap_or_else(|| panic!("no {prefix:?} line\n{stdout}"))
    };
    let api = value("API=");
    let token = value("TOKEN=");
    assert!(stdout.contains("Demo token"), "{stdout}");

    // The printed commands work: list, then submit another build with the
    // printed body and follow it to its end.
    let server = api
        .strip_suffix("/api/v1")
        .unwrap_or_else(|| panic!("API={api} is not the server's /api/v1"));
    let client = ApiClient::new(server).as_token(&token);
    let list = client.get("/api/v1/builds").await;
    let list = list.expect(200).json();
    let items = list["items"].as_array().expect("a build page");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["status"], "succeeded", "{list}");
    let demo_build = items[0]["id"].as_str().unwrap().to_owned();
    dashboard_lists(&value("Web dashboard: "), &token, &demo_build).await;

    let body_line = stdout
        .lines()
        .find(|l| l.contains(" -d '"))
        .expect("a submit command");
    let body = body_line
        .split_once(" -d '")
        .unwrap()
        .1
        .trim_end_matches('\'');
    let body = Body::Raw {
        content_type: "application/json",
        text: body.to_owned(),
    };
    let build = client
        .send(reqwest::Method::POST, "/api/v1/builds", body)
        .await;
    let id = id_of(&build.expect(201).json());
    let build = client.wait_build(id, &TERMINAL, PATIENCE).await;
    assert_eq!(build["status"], "succeeded", "{}", proc.output());

    proc.signal(libc::SIGINT);
    let exit = proc.wait_for_exit(Duration::from_secs(60)).await;
    let out = proc.output();
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}\n{out}");
    assert!(proc.stdout().ends_with("Stopped.\n"), "{out}");
    for secret in [ADMIN_TOKEN, SECRET_KEY] {
        assert!(!out.contains(secret), "a secret was printed\n{out}");
    }
}

/// The printed dashboard URL (`<url> (sign in ...)`) answers; signing in
/// there with the printed token shows the demo build in the builds list.
async fn dashboard_lists(line: &str, token: &str, build: &str) {
    let url = line.split_whitespace().next().expect("a dashboard URL");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let home = http.get(url).send().await.unwrap();
    assert_eq!(home.status(), 303, "{url}");
    assert_eq!(home.headers()["location"], "/sign-in");
    let signed_in = http
        .post(format!("{url}sign-in"))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 303);
    let cookie = signed_in.headers()["set-cookie"].to_str().unwrap();
    let session = cookie.split(';').next().unwrap().to_owned();
    let page = http
        .get(format!("{url}builds"))
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(&format!("/builds/{build}")), "{html}");
    assert!(html.contains("succeeded"), "{html}");
    assert!(!html.contains(token), "the token is in the page");
}

/// A taken port is a clear startup error naming the address, and the process
/// exits non-zero without serving (kube-sim is stopped on the way out).
#[tokio::test]
async fn a_taken_port_fails_startup_naming_the_address() {
    let db = fresh_database();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut proc = spawn(&["--exit", "--port", &port], &db.url);
    let status = proc.wait_for_exit(PATIENCE).await;
    let out = proc.output();
    let status = status.unwrap_or_else(|| panic!("still running with its port taken\n{out}"));
    assert!(!status.success(), "{out}");
    assert!(
        proc.stderr().contains(&format!(
            "cannot listen on 127.0.0.1:{port} (another server there?"
        )),
        "{out}"
    );
    assert!(!proc.stdout().contains("Image Factory API at"), "{out}");
}
