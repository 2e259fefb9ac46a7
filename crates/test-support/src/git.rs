//! Git repositories for tests: made with the real `git`, and served over
//! HTTP on 127.0.0.1 the way a git host serves them (smart HTTP through
//! `git http-backend`, so shallow fetches work), optionally behind Basic auth.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imagefactory_loopback::git::{Counts, router};

/// Runs `git args` in `dir` with a fixed identity and no user or system
/// configuration, never prompting for a password; panics with git's
/// stderr unless it succeeds. Returns stdout, trimmed.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A repository `parent/repo` with `files` committed on branch `main`;
/// returns its path.
pub fn git_repo(parent: &Path, files: &[(&str, &str)]) -> PathBuf {
    let repo = parent.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    commit(&repo, files, "initial");
    repo
}

/// Writes `files` (creating directories) and commits them; returns the
/// commit id.
pub fn commit(repo: &Path, files: &[(&str, &str)], message: &str) -> String {
    for (name, body) in files {
        let path = repo.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"])
}

/// A bare copy of a repository served over git's smart HTTP protocol at
/// `http://127.0.0.1:<port>/app.git` by `imagefactory_loopback`'s git
/// server (the quick start's, `git http-backend` per request); with
/// `basic_auth`, every request without that user and password is answered
/// 401 with a `WWW-Authenticate` challenge. The server runs on a thread of
/// its own, so it serves whatever runtime (or none) the test uses; stopped
/// on drop.
pub struct GitServer {
    /// The clone URL (no credential in it).
    pub url: String,
    counts: Arc<Counts>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl GitServer {
    /// Serves the current state of `repo` (all its branches and tags).
    pub fn start(repo: &Path, basic_auth: Option<(&str, &str)>) -> GitServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let bare = dir.path().join("app.git");
        git(
            dir.path(),
            &[
                "clone",
                "-q",
                "--bare",
                "--",
                &repo.display().to_string(),
                &bare.display().to_string(),
            ],
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let (app, counts) = router(dir.path().to_path_buf(), basic_auth);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the git server");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = axum::serve(listener, app).into_future() => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime ends every connection still open.
        });
        GitServer {
            url: format!("http://{addr}/app.git"),
            counts,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// `url` with `user:password@` in it (for a git credential-store line).
    pub fn url_with(&self, user: &str, password: &str) -> String {
        self.url
            .replacen("http://", &format!("http://{user}:{password}@"), 1)
    }

    /// Requests answered by `git http-backend` (authorised, when auth is on).
    pub fn served(&self) -> usize {
        self.counts.served()
    }

    /// Requests refused with 401 (no or wrong credential).
    pub fn denied(&self) -> usize {
        self.counts.denied()
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
