//! The real `imagefactory-dev` binary as a process, on a fresh database:
//! with `--exit` the demo build runs to `succeeded` on kube-sim and the
//! process exits 0; without it the server keeps answering with the printed
//! token and commands until SIGINT.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;

const ADMIN_TOKEN: &str = "dev-test-admin-token-not-for-output";
const SECRET_KEY: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
/// Guards against hangs only (a cold machine under load); nothing asserts speed.
const PATIENCE: Duration = Duration::from_secs(240);

/// The PostgreSQL server's admin database (`DATABASE_URL` if set).
fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database name nobody uses yet, and its URL on the same server.
fn fresh_database() -> (String, String) {
    let name = format!("if_dev_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_url();
    let server = &admin[..admin.rfind('/').expect("a database URL")];
    (name.clone(), format!("{server}/{name}"))
}

async fn drop_database(name: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut conn)
            .await;
    }
}

struct Proc {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    fn spawn(args: &[&str], database_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stdout = dir.path().join("stdout");
        let stderr = dir.path().join("stderr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagefactory-dev"));
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap());
        // Only what the test sets: the developer's IF_* variables must not
        // change what is tested.
        for (key, _) in std::env::vars() {
            if key.starts_with("IF_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("IF_DATABASE_URL", database_url)
            .env("IF_ADMIN_TOKEN", ADMIN_TOKEN)
            .env("IF_SECRET_KEY", SECRET_KEY)
            .env("IF_DISPATCHER_SHUTDOWN_GRACE", "2s")
            .env("IF_LOG", "info");
        Self {
            child: cmd.spawn().expect("imagefactory-dev starts"),
            stdout,
            stderr,
            _dir: dir,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    async fn wait_for_exit(&mut self, bound: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_stdout(&mut self, needle: &str, bound: Duration) {
        let deadline = Instant::now() + bound;
        while !self.stdout().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "exited ({status}) before printing {needle:?}\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} after {bound:?}\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET `url` with the demo token, as JSON.
async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
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
    let (db, url) = fresh_database();
    let kubeconfig = tempfile::tempdir().unwrap();
    let kubeconfig_path = kubeconfig.path().join("kube-sim.yaml");
    let mut proc = Proc::spawn(
        &[
            "--exit",
            "--port",
            "0",
            "--time-scale",
            "0.05",
            "--kubeconfig-out",
            kubeconfig_path.to_str().unwrap(),
        ],
        &url,
    );
    let status = proc.wait_for_exit(PATIENCE).await;
    let out = proc.output();
    drop_database(&db).await;
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
    let (db, url) = fresh_database();
    let mut proc = Proc::spawn(&["--port", "0", "--time-scale", "0.05"], &url);
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
    let http = reqwest::Client::new();
    let list: Value = get_json(&http, &format!("{api}/builds"), &token).await;
    let items = list["items"].as_array().expect("a build page");
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["status"], "succeeded", "{list}");

    let body_line = stdout
        .lines()
        .find(|l| l.contains(" -d '"))
        .expect("a submit command");
    let body = body_line
        .split_once(" -d '")
        .unwrap()
        .1
        .trim_end_matches('\'');
    let res = http
        .post(format!("{api}/builds"))
        .bearer_auth(&token)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let build: Value = res.json().await.unwrap();
    let id = build["id"].as_str().unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        let b: Value = get_json(&http, &format!("{api}/builds/{id}"), &token).await;
        let s = b["status"].as_str().unwrap().to_owned();
        if ["succeeded", "failed", "cancelled", "timed_out"].contains(&s.as_str()) {
            break s;
        }
        assert!(Instant::now() < deadline, "build {id} stuck: {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(status, "succeeded", "{}", proc.output());

    let rc = unsafe { libc::kill(proc.child.id() as i32, libc::SIGINT) };
    assert_eq!(rc, 0);
    let exit = proc.wait_for_exit(Duration::from_secs(60)).await;
    let out = proc.output();
    drop_database(&db).await;
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}\n{out}");
    assert!(proc.stdout().ends_with("Stopped.\n"), "{out}");
    for secret in [ADMIN_TOKEN, SECRET_KEY] {
        assert!(!out.contains(secret), "a secret was printed\n{out}");
    }
}

/// A taken port is a clear startup error naming the address, and the process
/// exits non-zero without serving (kube-sim is stopped on the way out).
#[tokio::test]
async fn a_taken_port_fails_startup_naming_the_address() {
    let (db, url) = fresh_database();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut proc = Proc::spawn(&["--exit", "--port", &port], &url);
    let status = proc.wait_for_exit(PATIENCE).await;
    let out = proc.output();
    drop_database(&db).await;
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
