//! The git server and the registry as clients see them: the real `git`
//! cloning over HTTP, the registry's HTTP API.

use std::path::Path;
use std::process::Command;

use imagefactory_loopback::{GitServer, Registry, registry::User};

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// `git args` in `dir` without user or system configuration; its success
/// and stderr.
fn git(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(dir: &Path, args: &[&str]) {
    let (success, stderr) = git(dir, args);
    assert!(success, "git {args:?}: {stderr}");
}

/// `<root>/app.git`: two commits on `main`, so a shallow clone has one.
fn bare_repo(root: &Path) {
    let work = root.join("work");
    std::fs::create_dir_all(&work).unwrap();
    ok(&work, &["init", "-q", "-b", "main"]);
    for (i, text) in ["one\n", "two\n"].iter().enumerate() {
        std::fs::write(work.join("file"), text).unwrap();
        ok(&work, &["add", "-A"]);
        ok(&work, &["commit", "-q", "-m", &format!("c{i}")]);
    }
    let bare = root.join("repos/app.git");
    ok(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
}

#[tokio::test]
async fn a_shallow_clone_over_smart_http_gets_the_branch_head() {
    if !on_path("git") {
        eprintln!("SKIPPED: git is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path());
    let server = GitServer::start(dir.path().join("repos"), None)
        .await
        .unwrap();
    let url = format!("{}/app.git", server.url());
    let path = dir.path().to_owned();
    let clone = tokio::task::spawn_blocking(move || {
        ok(
            &path,
            &[
                "clone",
                "-q",
                "--depth=1",
                "--branch",
                "main",
                &url,
                "clone",
            ],
        );
        git(&path.join("clone"), &["rev-list", "--count", "HEAD"])
    });
    let (counted, _) = clone.await.unwrap();
    assert!(counted);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("clone/file")).unwrap(),
        "two\n"
    );
    // Shallow: only the newest commit came (the dumb protocol cannot do this).
    let shallow = std::fs::read_to_string(dir.path().join("clone/.git/shallow")).unwrap();
    assert_eq!(shallow.lines().count(), 1, "{shallow}");
    assert!(server.counts().served() >= 2);

    // A repository that is not there: http-backend's 404 passes through.
    let res = reqwest::get(format!(
        "{}/missing.git/info/refs?service=git-upload-pack",
        server.url()
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 404);
    // Read-only: pushing is refused.
    let res = reqwest::get(format!(
        "{}/app.git/info/refs?service=git-receive-pack",
        server.url()
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 403);
    server.stop().await;
}

#[tokio::test]
async fn basic_auth_refuses_without_the_credential_and_serves_with_it() {
    if !on_path("git") {
        eprintln!("SKIPPED: git is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path());
    let server = GitServer::start(dir.path().join("repos"), Some(("alice", "pa55-w0rd")))
        .await
        .unwrap();
    let plain = format!("{}/app.git", server.url());
    let with = plain.replace("http://", "http://alice:pa55-w0rd@");
    let wrong = plain.replace("http://", "http://alice:nope@");
    let path = dir.path().to_owned();
    let (no, bad, good) = tokio::task::spawn_blocking(move || {
        (
            git(&path, &["clone", "-q", &plain, "a"]),
            git(&path, &["clone", "-q", &wrong, "b"]),
            git(&path, &["clone", "-q", &with, "c"]),
        )
    })
    .await
    .unwrap();
    assert!(!no.0 && !bad.0, "{no:?} {bad:?}");
    assert!(good.0, "{good:?}");
    assert!(dir.path().join("c/file").is_file());
    assert!(server.counts().denied() >= 2);
    let res = reqwest::get(format!(
        "{}/app.git/info/refs?service=git-upload-pack",
        server.url()
    ))
    .await
    .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Basic realm=\"git\"");
}

#[tokio::test]
async fn the_registry_answers_its_api_and_stops() {
    if !on_path("docker-registry") {
        eprintln!("SKIPPED: docker-registry is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), None).await.unwrap();
    let host = registry.host().to_owned();
    let v2 = reqwest::get(format!("http://{host}/v2/")).await.unwrap();
    assert_eq!(v2.status(), 200);
    let missing = registry.manifest_digest("team/app", "1").await.unwrap_err();
    assert!(missing.to_string().contains("answered 404"), "{missing}");
    registry.stop().await;
    assert!(
        std::net::TcpStream::connect(&host).is_err(),
        "still answering"
    );
}

#[tokio::test]
async fn a_registry_with_a_user_refuses_anonymous_requests() {
    if !on_path("docker-registry") || !on_path("htpasswd") {
        eprintln!("SKIPPED: docker-registry or htpasswd is not installed");
        return;
    }
    let line = Command::new("htpasswd")
        .args(["-Bbn", "builder", "s3cret"])
        .output()
        .unwrap()
        .stdout;
    let dir = tempfile::tempdir().unwrap();
    let user = User {
        name: "builder",
        password: "s3cret",
        htpasswd_line: &line,
    };
    let registry = Registry::start(dir.path(), Some(user)).await.unwrap();
    let anonymous = reqwest::get(format!("http://{}/v2/", registry.host()))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    // With the user's credential: past auth, to "no such manifest".
    let res = registry.head_manifest("team/app", "1").await.unwrap();
    assert_eq!(res.status(), 404);
}
