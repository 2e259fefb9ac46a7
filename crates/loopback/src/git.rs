//! Git repositories over HTTP on 127.0.0.1, served the way a git host
//! serves them: the smart protocol through git's own `git http-backend`
//! (a CGI program, run once per request). Unlike serving the repository's
//! files, the smart protocol allows shallow fetches, which the bundled
//! git-clone Task makes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A fetch request lists wanted and present commits: small. Bigger bodies
/// (a push, which is refused anyway) get 413.
const MAX_REQUEST: usize = 8 << 20;

/// Requests a server answered, by outcome.
#[derive(Debug, Default)]
pub struct Counts {
    served: AtomicUsize,
    denied: AtomicUsize,
}

impl Counts {
    /// Requests passed to `git http-backend` (authorised, when auth is on).
    pub fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Requests refused with 401 (no or a wrong credential).
    pub fn denied(&self) -> usize {
        self.denied.load(Ordering::SeqCst)
    }
}

struct Served {
    root: PathBuf,
    /// `Basic <base64 user:password>`, when auth is required.
    expected: Option<String>,
    counts: Arc<Counts>,
}

/// The git server as a router (every path goes to `git http-backend`) for
/// the bare repositories under `root`, and its request counts. With
/// `basic_auth`, a request without that user and password gets 401 and a
/// `WWW-Authenticate: Basic` challenge.
pub fn router(root: PathBuf, basic_auth: Option<(&str, &str)>) -> (axum::Router, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let served = Arc::new(Served {
        root,
        expected: basic_auth.map(|(user, password)| {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {token}")
        }),
        counts: counts.clone(),
    });
    let app = axum::Router::new().fallback(handle).with_state(served);
    (app, counts)
}

/// [`router`] served on a free port of 127.0.0.1 by a task of the current
/// runtime; stopped by [`GitServer::stop`] or when dropped.
pub struct GitServer {
    addr: SocketAddr,
    counts: Arc<Counts>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl GitServer {
    pub async fn start(root: PathBuf, basic_auth: Option<(&str, &str)>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the git server on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let (app, counts) = router(root, basic_auth);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // Open connections end with the task: a clone in progress
            // fails rather than holding the stop up.
            tokio::select! {
                _ = axum::serve(listener, app) => {}
                _ = stopped => {}
            }
        });
        Ok(Self {
            addr,
            counts,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:<port>`; a repository `<root>/x.git` is at `<url>/x.git`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// Stops serving and waits for the task to end.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

fn plain(status: StatusCode, text: String) -> Response {
    let mut response = Response::new(Body::from(text));
    *response.status_mut() = status;
    response
}

async fn handle(State(served): State<Arc<Served>>, request: Request) -> Response {
    if let Some(expected) = &served.expected {
        let given = request.headers().get("authorization");
        if given.and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
            served.counts.denied.fetch_add(1, Ordering::SeqCst);
            let mut response = plain(StatusCode::UNAUTHORIZED, String::new());
            response.headers_mut().insert(
                "www-authenticate",
                HeaderValue::from_static("Basic realm=\"git\""),
            );
            return response;
        }
    }
    served.counts.served.fetch_add(1, Ordering::SeqCst);
    http_backend(&served.root, request).await
}

/// One request through `git http-backend` for the repositories under
/// `root` (RFC 3875 CGI: the request as environment and stdin, the answer
/// as headers and body on stdout). Failures are answered 5xx with the reason.
pub async fn http_backend(root: &Path, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_REQUEST).await else {
        return plain(StatusCode::PAYLOAD_TOO_LARGE, "request too large\n".into());
    };
    let mut cgi = tokio::process::Command::new("git");
    cgi.arg("http-backend")
        // The developer's git configuration must not change what is served.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", root)
        // Every repository under the root (no git-daemon-export-ok files).
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GATEWAY_INTERFACE", "CGI/1.1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", parts.uri.path())
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // Protocol v2 is asked for in a header; gzip-encoded bodies are decoded
    // by http-backend itself.
    for (name, var) in [
        ("content-type", "CONTENT_TYPE"),
        ("git-protocol", "GIT_PROTOCOL"),
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
    ] {
        if let Some(value) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
            cgi.env(var, value);
        }
    }
    let mut child = match cgi.spawn() {
        Ok(child) => child,
        Err(e) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("git http-backend: {e}\n"),
            );
        }
    };
    let mut stdin = child.stdin.take().expect("piped stdin");
    // Written while the output is read, so a large request and a large
    // answer cannot wait on each other.
    let write = async move {
        let _ = stdin.write_all(&body).await;
    };
    let (_, output) = tokio::join!(write, child.wait_with_output());
    let output = match output {
        Ok(output) => output,
        Err(e) => {
            return plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("git http-backend: {e}\n"),
            );
        }
    };
    cgi_response(&output.stdout).unwrap_or_else(|| {
        plain(
            StatusCode::BAD_GATEWAY,
            format!(
                "git http-backend answered no CGI response: {}\n",
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        )
    })
}

/// A CGI program's output (header lines, an empty line — LF or CRLF — and
/// the body) as a response; a `Status:` header sets the status (200 without
/// one). `None` for output that is not that.
pub fn cgi_response(out: &[u8]) -> Option<Response> {
    let (head, body) = [&b"\r\n\r\n"[..], &b"\n\n"[..]]
        .iter()
        .filter_map(|sep| {
            out.windows(sep.len())
                .position(|w| w == *sep)
                .map(|at| (at, sep.len()))
        })
        .min()
        .map(|(at, len)| (&out[..at], &out[at + len..]))?;
    let mut response = Response::new(Body::from(body.to_vec()));
    for line in std::str::from_utf8(head).ok()?.lines() {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next()?.parse().ok()?;
            *response.status_mut() = StatusCode::from_u16(code).ok()?;
        } else {
            response.headers_mut().append(
                HeaderName::from_bytes(name.trim().as_bytes()).ok()?,
                HeaderValue::from_str(value).ok()?,
            );
        }
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_answers_set_status_and_headers_in_lf_or_crlf() {
        let res =
            cgi_response(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno repo\n\n")
                .unwrap();
        assert_eq!(res.status(), 404);
        assert_eq!(res.headers()["content-type"], "text/plain");

        let res = cgi_response(
            b"Content-Type: application/x-git-upload-pack-advertisement\nCache-Control: no-cache\n\n001e# service",
        )
        .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["cache-control"], "no-cache");

        assert!(cgi_response(b"no end of headers").is_none());
        assert!(cgi_response(b"Status: abc\n\n").is_none());
        assert!(cgi_response(b"not a header\n\n").is_none());
    }
}
