//! A PostgreSQL server of a test's own, for tests that stop and restart the
//! database: the machine's shared server must never be stopped (other tests
//! use it). Debian's binaries (`/usr/lib/postgresql/<version>/bin`, or the
//! directory `IF_PG_BIN` names) in a temporary directory, on a free port.
//! `initdb` refuses to run as root: as root, every command runs as the
//! `postgres` user.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::proc::free_port;

/// A private server, stopped (immediately) and deleted when dropped.
pub struct PgServer {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    running: bool,
    dir: tempfile::TempDir,
}

impl PgServer {
    /// `initdb` and start a server with trust authentication for user
    /// `postgres` on 127.0.0.1 and a free port. Durability is off (a test
    /// server only): stops and starts, not crashes, are what tests exercise.
    pub fn start() -> PgServer {
        let bin = bin_dir();
        let dir = tempfile::Builder::new()
            .prefix("if-pg-")
            .tempdir()
            .expect("a temporary directory");
        hand_to_postgres(dir.path());
        let data = dir.path().join("data");
        let data_arg = data.to_str().expect("a UTF-8 temporary path");
        run(
            &bin,
            "initdb",
            &[
                "-D",
                data_arg,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        let mut server = PgServer {
            bin,
            data,
            port: free_port(),
            running: false,
            dir,
        };
        server.start_again();
        server
    }

    /// The server's admin database URL (what `DATABASE_URL` would be).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `pg_ctl stop -m fast`: open sessions end (clients see
    /// `57P01 admin_shutdown` or a closed connection), new ones are refused.
    pub fn stop(&mut self) {
        self.pg_ctl(&["stop", "-m", "fast", "-w"]);
        self.running = false;
    }

    /// Start the stopped server again on the same port and data directory.
    pub fn start_again(&mut self) {
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -h 127.0.0.1 -k {} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            log.to_str().expect("a UTF-8 temporary path"),
            "-o",
            &options,
        ]);
        self.running = true;
    }

    /// The server's own log, for a failure message.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn pg_ctl(&self, args: &[&str]) {
        let mut all = vec!["-D", self.data.to_str().expect("a UTF-8 temporary path")];
        all.extend_from_slice(args);
        let out = command(&self.bin, "pg_ctl", &all)
            .output()
            .expect("pg_ctl runs");
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}\n{}\n--- server log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if self.running {
            let data = self.data.to_string_lossy().into_owned();
            let _ = command(
                &self.bin,
                "pg_ctl",
                &["-D", &data, "stop", "-m", "immediate", "-w"],
            )
            .output();
        }
    }
}

/// `IF_PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin`.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("IF_PG_BIN").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let versions = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (or set IF_PG_BIN)");
    versions
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .max_by_key(|(version, _)| *version)
        .map(|(_, bin)| bin)
        .expect("no /usr/lib/postgresql/<version>/bin/initdb (or set IF_PG_BIN)")
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// As root the server's files belong to `postgres`, which runs it.
fn hand_to_postgres(dir: &Path) {
    if !is_root() {
        return;
    }
    let out = Command::new("chown")
        .args(["postgres:postgres"])
        .arg(dir)
        .output()
        .expect("chown runs");
    assert!(
        out.status.success(),
        "chown postgres {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `program args`, as `postgres` when running as root.
fn command(bin: &Path, program: &str, args: &[&str]) -> Command {
    let path = bin.join(program);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    };
    cmd.args(args);
    cmd
}

fn run(bin: &Path, program: &str, args: &[&str]) {
    let out = command(bin, program, args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not start: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
