//! What the load runs against: a fresh database, kube-sim in this process,
//! and `imagefactory serve` (embedded dispatcher, Tekton executor) as a
//! child process, so its memory is its own.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use imagefactory::database;
use imagefactory_dev::sim;
use kube_sim::KubeSimHandle;
use sqlx::PgPool;
use uuid::Uuid;

use crate::Args;

pub struct Stack {
    pub sim: KubeSimHandle,
    pub pool: PgPool,
    database_name: String,
    server_url: String,
    pub serve: Serve,
    pub base_url: String,
    pub admin_token: String,
}

/// The `imagefactory serve` child; stopped (SIGTERM, then SIGKILL) when
/// dropped. Its output goes to files kept for a failure message.
pub struct Serve {
    child: Child,
    dir: tempfile::TempDir,
}

impl Serve {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB (`VmRSS` of /proc/<pid>/status).
    pub fn rss_kb(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .context("reading the server's /proc status")?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS in /proc/<pid>/status")
    }

    /// The last lines of the server's output.
    pub fn output_tail(&self) -> String {
        let mut text = String::new();
        for name in ["stdout", "stderr"] {
            let all = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = all.lines().collect();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            text.push_str(&format!("--- serve {name} (last lines) ---\n{tail}\n"));
        }
        text
    }

    fn stop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        for _ in 0..100 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `imagefactory` beside this binary (both built by the same cargo
/// command) unless `--serve-bin` names one.
fn serve_bin(args: &Args) -> anyhow::Result<PathBuf> {
    let path = match &args.serve_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("imagefactory"),
    };
    if !path.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p imagefactory -p imagefactory-dev` \
             or name it with --serve-bin",
            path.display()
        );
    }
    Ok(path)
}

fn random_hex() -> String {
    Uuid::new_v4().simple().to_string()
}

impl Stack {
    /// Database (created, migrated), kube-sim; the server is started by
    /// [`Stack::start_serve`] so pgbench can run on an idle database first.
    pub async fn prepare(args: &Args) -> anyhow::Result<(PgPool, String, String)> {
        let name = format!("if_load_{}", &random_hex()[..8]);
        let url = format!("{}/{name}", args.database_server.trim_end_matches('/'));
        let pool = database::connect(&url).await?;
        database::migrate(&pool).await?;
        Ok((pool, url, name))
    }

    pub async fn start(
        args: &Args,
        pool: PgPool,
        database_url: &str,
        database_name: String,
    ) -> anyhow::Result<Self> {
        let sim = sim::start(0, args.time_scale(), None).await?;
        let admin_token = format!("load-admin-{}", random_hex());
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let serve = spawn_serve(args, database_url, &admin_token, port)?;
        let base_url = format!("http://127.0.0.1:{port}");
        let stack = Stack {
            sim,
            pool,
            database_name,
            server_url: args.database_server.clone(),
            serve,
            base_url,
            admin_token,
        };
        stack.wait_ready().await?;
        Ok(stack)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = format!("{}/readyz", self.base_url);
        for _ in 0..300 {
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "imagefactory serve not ready after 30 s\n{}",
            self.serve.output_tail()
        )
    }

    /// Stops the server and kube-sim, and drops the run's database unless
    /// `keep`.
    pub async fn stop(self, keep: bool) -> anyhow::Result<()> {
        let Stack {
            sim,
            pool,
            database_name,
            server_url,
            serve,
            ..
        } = self;
        drop(serve);
        sim.shutdown().await;
        pool.close().await;
        if keep {
            println!("database {database_name} kept");
            return Ok(());
        }
        let admin = PgPool::connect(&format!("{}/postgres", server_url.trim_end_matches('/')))
            .await
            .context("connecting to drop the run's database")?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {database_name} WITH (FORCE)"
        ))
        .execute(&admin)
        .await
        .with_context(|| format!("dropping database {database_name}"))?;
        admin.close().await;
        Ok(())
    }
}

fn spawn_serve(args: &Args, database_url: &str, admin: &str, port: u16) -> anyhow::Result<Serve> {
    let bin = serve_bin(args)?;
    let dir = tempfile::tempdir()?;
    let file = |name: &str| std::fs::File::create(dir.path().join(name));
    let mut cmd = Command::new(&bin);
    cmd.arg("serve")
        .stdin(Stdio::null())
        .stdout(file("stdout")?)
        .stderr(file("stderr")?);
    // Only what this run sets (and IF_LOG / IF_LOG_FORMAT if the caller
    // chose a log level): a developer's shell must not change the figures.
    for (key, _) in std::env::vars() {
        if key.starts_with("IF_") && key != "IF_LOG" && key != "IF_LOG_FORMAT" {
            cmd.env_remove(key);
        }
    }
    cmd.env("IF_DATABASE_URL", database_url)
        .env("IF_LISTEN_ADDR", format!("127.0.0.1:{port}"))
        .env("IF_ADMIN_TOKEN", admin)
        .env("IF_SECRET_KEY", random_hex() + &random_hex())
        // The tenant provider points at kube-sim on 127.0.0.1.
        .env("IF_PROVIDER_ALLOW_LOOPBACK", "true")
        .env("IF_DISPATCHER_ENABLED", (!args.no_dispatcher).to_string())
        .env(
            "IF_HTTP_LOG_FOLLOWERS_PER_TOKEN",
            args.followers.max(1).to_string(),
        );
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Serve { child, dir })
}
