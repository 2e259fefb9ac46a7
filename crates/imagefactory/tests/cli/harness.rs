//! A server on kube-sim for the client to talk to, and the client as a
//! child process (async, so the in-process kube-sim keeps running).

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{ADMIN_TOKEN, Http, Proc, ReservedDb, free_port, fresh_database, serve_env};
use imagefactory_exec::tekton::TektonVersion;
use imagefactory_exec::tekton::namespace::ensure_namespace;
use imagefactory_exec::tekton::secrets::operator_docker_config;
use imagefactory_exec::tekton::tasks::install_tasks;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube_sim::tekton::{ControllerOptions, ScriptRule};
use kube_sim::{KubeSim, KubeSimHandle, KubeSimOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// kube-sim runs simulated time 20× faster than real time.
pub const TIME_SCALE: f64 = 0.05;

/// Fields drop in order: the processes stop before their database goes.
pub struct World {
    pub serve: Proc,
    /// A standalone dispatcher, when serve runs without its own.
    pub dispatcher: Option<Proc>,
    _db: ReservedDb,
    pub sim: KubeSimHandle,
    pub http: Http,
    pub env: Vec<(&'static str, String)>,
    pub token: String,
    pub project: String,
    _dir: tempfile::TempDir,
}

pub fn rule(task: &str, f: impl FnOnce(&mut ScriptRule)) -> ScriptRule {
    let mut r = ScriptRule {
        task: Some(task.into()),
        ..ScriptRule::default()
    };
    f(&mut r);
    r
}

impl World {
    /// kube-sim with `rules`, serve on it as the global cluster (with its
    /// embedded dispatcher, or a standalone one), a tenant, its token and
    /// a project.
    pub async fn start(rules: Vec<ScriptRule>, standalone_dispatcher: bool) -> World {
        let sim = KubeSim::start(KubeSimOptions {
            tekton: Some(ControllerOptions {
                time_scale: TIME_SCALE,
                rules,
                ..ControllerOptions::default()
            }),
            ..KubeSimOptions::default()
        })
        .await
        .expect("kube-sim starts");
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        sim.write_kubeconfig(&kubeconfig).unwrap();
        let db = fresh_database("cli");
        let port = free_port();
        let mut env = serve_env(&db.url, port, dir.path(), "info");
        env.push((
            "IF_BUILD_TEKTON_KUBECONFIG",
            kubeconfig.display().to_string(),
        ));
        let dispatcher_env = env.clone();
        if standalone_dispatcher {
            env.push(("IF_DISPATCHER_ENABLED", "false".into()));
        }
        let mut serve = Proc::spawn(&["serve"], &env);
        let http = Http::new(port);
        http.wait_ready(&mut serve, Duration::from_secs(60)).await;
        // After serve made the database and its schema.
        let dispatcher = standalone_dispatcher.then(|| {
            let mut denv = dispatcher_env;
            denv.retain(|(k, _)| *k != "IF_LISTEN_ADDR");
            Proc::spawn(&["dispatcher"], &denv)
        });
        let (tenant, token) = http.tenant_with_token("cli-team").await;
        let project = http
            .created(
                "/api/v1/projects",
                &token,
                json!({"name": "web", "git_url": "https://git.example.com/team/web.git"}),
            )
            .await;
        let world = World {
            serve,
            dispatcher,
            _db: db,
            sim,
            http,
            env,
            token,
            project: project["id"].as_str().unwrap().to_owned(),
            _dir: dir,
        };
        world
            .prepare_namespace(tenant["id"].as_str().unwrap())
            .await;
        world
    }

    /// The operator's part: namespace, Tasks, registry Secret.
    async fn prepare_namespace(&self, tenant: &str) {
        let client = self.sim.kube_client().await.unwrap();
        let namespace = ensure_namespace(&client, tenant.parse().unwrap())
            .await
            .unwrap();
        install_tasks(&client, TektonVersion::V1, &namespace)
            .await
            .unwrap();
        let secret = operator_docker_config(&namespace, br#"{"auths":{}}"#);
        Api::<Secret>::namespaced(client, &namespace)
            .create(&PostParams::default(), &secret)
            .await
            .unwrap();
    }

    /// Kills serve (no goodbye to its clients) and starts it again on the
    /// same port and database.
    pub async fn restart_serve(&mut self) {
        self.serve.signal(libc::SIGKILL);
        self.serve.wait_for_exit(Duration::from_secs(10)).await;
        self.serve = Proc::spawn(&["serve"], &self.env);
        self.http
            .wait_ready(&mut self.serve, Duration::from_secs(60))
            .await;
    }

    /// The client with this server and the tenant token in its environment.
    pub fn cli(&self) -> Cli {
        Cli::new(&self.http.base, &self.token)
    }

    pub fn admin_cli(&self) -> Cli {
        Cli::new(&self.http.base, ADMIN_TOKEN)
    }

    /// The build's log as the plain `GET …/logs` gives it.
    pub async fn plain_log(&self, build: &str) -> Vec<String> {
        let text = self
            .http
            .client
            .get(format!("{}/api/v1/builds/{build}/logs", self.http.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines().map(str::to_owned).collect()
    }

    pub async fn build(&self, id: &str) -> Value {
        let (status, build) = self
            .http
            .get(&format!("/api/v1/builds/{id}"), &self.token)
            .await;
        assert_eq!(status, 200, "{build}");
        build
    }
}

/// How the client is run: its environment (no `IF_*` of the developer's
/// shell, a private config directory) and where its output goes.
pub struct Cli {
    pub env: Vec<(String, String)>,
    pub home: Arc<tempfile::TempDir>,
}

/// A finished client run.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn code(&self) -> i32 {
        self.status.code().expect("exited, not killed")
    }

    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// stdout as one JSON document.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// A client still running; its stdout lines are collected as they come.
pub struct Running {
    child: tokio::process::Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits until a line containing `needle` was printed.
    pub async fn wait_for_line(&mut self, needle: &str, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        while !self.lines().iter().any(|l| l.contains(needle)) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "client exited ({status}) before {needle:?}: {:?}",
                    self.lines()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {needle:?} after {bound:?}: {:?}",
                self.lines()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn finish(mut self, bound: Duration) -> Ran {
        let status = tokio::time::timeout(bound, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("client still running after {bound:?}: {:?}", self.lines()))
            .unwrap();
        (&mut self.reader).await.unwrap();
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            tokio::io::AsyncReadExt::read_to_string(&mut e, &mut stderr)
                .await
                .unwrap();
        }
        let mut stdout = self.lines().join("\n");
        stdout.push('\n');
        Ran {
            status,
            stdout,
            stderr,
        }
    }
}

impl Cli {
    fn new(base: &str, token: &str) -> Cli {
        let home = Arc::new(tempfile::tempdir().unwrap());
        let env = vec![
            ("IF_URL".to_owned(), base.to_owned()),
            ("IF_TOKEN".to_owned(), token.to_owned()),
        ];
        Cli { env, home }
    }

    /// Without the server and token in the environment (login, config).
    pub fn bare(&self) -> Cli {
        Cli {
            env: Vec::new(),
            home: self.home.clone(),
        }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_imagefactory"));
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, _) in std::env::vars() {
            if key.starts_with("IF_") || key == "XDG_CONFIG_HOME" {
                cmd.env_remove(key);
            }
        }
        cmd.env("HOME", self.home.path()).env("NO_COLOR", "1");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn spawn(&self, args: &[&str]) -> Running {
        let mut child = self.command(args).spawn().expect("the binary starts");
        drop(child.stdin.take());
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = lines.clone();
        let reader = tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        Running {
            child,
            lines,
            reader,
        }
    }

    /// Runs to the end with `stdin` as its input.
    pub async fn run_with_input(&self, args: &[&str], stdin: &str) -> Ran {
        let mut child = self.command(args).spawn().expect("the binary starts");
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("imagefactory {args:?} did not finish"))
            .unwrap();
        Ran {
            status: out.status,
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    /// Runs under a pseudo-terminal (util-linux `script`), as a person
    /// would in a shell; stdout is what the terminal showed.
    pub async fn run_in_terminal(&self, args: &[&str]) -> Ran {
        let quoted: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_imagefactory"))
            .chain(args.iter().copied())
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect();
        let mut cmd = self.command(&[]);
        let std = cmd.as_std_mut();
        let mut script = tokio::process::Command::new("script");
        script
            .args(["-qec", &quoted.join(" "), "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .env_clear();
        for (k, v) in std.get_envs() {
            if let Some(v) = v {
                script.env(k, v);
            }
        }
        for (k, v) in std::env::vars() {
            if !k.starts_with("IF_") && k != "XDG_CONFIG_HOME" && k != "HOME" && k != "NO_COLOR" {
                script.env(k, v);
            }
        }
        script.env_remove("NO_COLOR").env("TERM", "xterm-256color");
        let out = tokio::time::timeout(Duration::from_secs(120), script.output())
            .await
            .unwrap_or_else(|_| panic!("imagefactory {args:?} did not finish"))
            .unwrap();
        Ran {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub async fn run(&self, args: &[&str]) -> Ran {
        self.run_with_input(args, "").await
    }
}
