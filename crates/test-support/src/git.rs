//! Git repositories for tests: made with the real `git`, and served over
//! HTTP on 127.0.0.1 the way a git host serves them (smart HTTP through
//! `git http-backend`, so shallow fetches work), optionally behind Basic auth.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use tokio::io::AsyncWriteExt;

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
/// `http://127.0.0.1:<port>/app.git`, by `git http-backend` run as a CGI
/// program per request; with `basic_auth`, every request without that
/// user and password is answered 401 with a `WWW-Authenticate` challenge.
/// The server runs on a thread of its own, so it serves whatever runtime
/// (or none) the test uses; stopped on drop.
pub struct GitServer {
    /// The clone URL (no credential in it).
    pub url: String,
    counts: Arc<Counts>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

#[derive(Default)]
struct Counts {
    served: AtomicUsize,
    denied: AtomicUsize,
}

struct Served {
    root: PathBuf,
    /// `Basic <base64 user:password>`, when auth is required.
    expected: Option<String>,
    counts: Arc<Counts>,
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
        let counts = Arc::new(Counts::default());
        let served = Arc::new(Served {
            root: dir.path().to_path_buf(),
            expected: basic_auth.map(|(user, password)| {
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                format!("Basic {token}")
            }),
            counts: counts.clone(),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the git server");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().fallback(handle).with_state(served);
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
        self.counts.served.load(Ordering::SeqCst)
    }

    /// Requests refused with 401 (no or wrong credential).
    pub fn denied(&self) -> usize {
        self.counts.denied.load(Ordering::SeqCst)
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

fn plain(status: StatusCode, text: &str) -> Response {
    let mut response = Response::new(Body::from(text.to_owned()));
    *response.status_mut() = status;
    response
}

/// One request through `git http-backend` (RFC 3875 CGI: the request as
/// environment variables and stdin, the answer as headers and body).
async fn handle(State(served): State<Arc<Served>>, request: Request) -> Response {
    if let Some(expected) = &served.expected {
        let given = request.headers().get("authorization");
        if given.and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            served.counts.denied.fetch_add(1, Ordering::SeqCst);
            let mut response = plain(StatusCode::UNAUTHORIZED, "");
            response.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Basic realm=\"git\""),
            );
            return response;
        }
    }
    served.counts.served.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
    };
    let mut cgi = tokio::process::Command::new("git");
    cgi.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", &served.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header("content-type"))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Protocol v2 is asked for in a header; gzip-encoded bodies are
    // decoded by http-backend itself.
    for (name, var) in [
        ("git-protocol", "GIT_PROTOCOL"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        let value = header(name);
        if !value.is_empty() {
            cgi.env(var, value);
        }
    }
    let mut child = match cgi.spawn() {
        Ok(child) => child,
        Err(e) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("git http-backend: {e}"),
            );
        }
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written while the output is read, so a large request and a large
    // answer cannot wait on each other.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let output = match child.wait_with_output().await {
        Ok(output) => output,
        Err(e) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("git http-backend: {e}"),
            );
        }
    };
    let _ = writer.await;
    cgi_response(&output.stdout).unwrap_or_else(|| {
        plain(
            StatusCode::BAD_GATEWAY,
            &format!(
                "git http-backend answered no CGI response: {}",
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    })
}

/// A CGI program's output (headers, a blank line, the body) as a response;
/// its `Status:` header sets the status (200 without one).
fn cgi_response(out: &[u8]) -> Option<Response> {
    let (head, body) = [&b"\r\n\r\n"[..], &b"\n\n"[..]]
        .iter()
        .filter_map(|sep| {
            out.windows(sep.len())
                .position(|w| w == *sep)
                .map(|at| (at, sep.len()))
        })
        .min()
        .map(|(at, len)| (&out[..at], &out[at + len..]))?;
    let mut status = StatusCode::OK;
    let mut headers = HeaderMap::new();
    for line in String::from_utf8_lossy(head).lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse().ok()?;
            status = StatusCode::from_u16(code).ok()?;
        } else {
            headers.append(
                axum::http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            );
        }
    }
    let mut response = Response::new(Body::from(body.to_vec()));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Some(response)
}
