//! Local builds that fail: each ends `Failed` with a message naming the
//! cause, and leaves no workspace or auth file behind.

#[path = "support/local.rs"]
mod support;

use std::path::Path;
use std::sync::Arc;

use imagefactory_domain::{BuildMethod, MethodConfig};
use imagefactory_exec::local::{ContainerCli, LocalExecutor, LocalSettings};
use imagefactory_exec::{ExecutionContext, Executor, Outcome};
use support::*;
use tokio::sync::watch;

/// Runs one execution and returns its failure message.
async fn failure(settings: LocalSettings, ctx: ExecutionContext) -> (String, Arc<MemorySink>) {
    let workdir = settings.workdir.clone();
    let id = ctx.execution_id;
    let executor = LocalExecutor::new(settings.clone());
    let sink = Arc::new(MemorySink::default());
    let (_stop_tx, stop) = watch::channel(None);
    let outcome = executor.start(ctx, sink.clone(), stop).await;
    let Outcome::Failed { message } = outcome else {
        panic!(
            "expected Failed, got {outcome:?}; logs:\n{}",
            sink.log_text()
        );
    };
    assert_workdir_empty(&workdir);
    assert_runroot_gone(&settings, id);
    (message, sink)
}

fn scratch_repo(dir: &Path, dockerfile: &str) -> std::path::PathBuf {
    git_repo(dir, &[("Dockerfile", dockerfile), ("hello.txt", "hi\n")])
}

#[tokio::test]
async fn unreachable_git_url_fails_with_gits_reason() {
    if !have_tools("bad git URL", &["git"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut ctx = context(
        BuildMethod::Packer,
        tmp.path(),
        "main",
        "r.example/x",
        MethodConfig::default(),
        None,
    );
    // A password can no longer be written into the URL (`GitUrl` refuses
    // it); the project's credential carries it, and must not leak either.
    ctx.source.url =
        imagefactory_domain::GitUrl::parse("http://127.0.0.1:1/team/nope.git").unwrap();
    ctx.source.credential = Some(imagefactory_exec::GitCredential {
        username: "user".into(),
        password: imagefactory_domain::Secret::new("pa55word"),
    });
    let mut settings = settings(&tmp.path().join("work"), ContainerCli::Podman);
    settings.packer_bin = "sh".into(); // any present tool: the clone fails first
    let (message, sink) = failure(settings, ctx).await;
    assert!(
        message.contains("git clone of http://127.0.0.1:1/team/nope.git"),
        "{message}"
    );
    assert!(message.contains("unable to access"), "{message}");
    assert!(!message.contains("pa55word") && !sink.log_text().contains("pa55word"));
}

#[tokio::test]
async fn a_path_that_is_no_repository_fails() {
    if !have_tools("bad git URL", &["git"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-repo");
    let ctx = context(
        BuildMethod::Packer,
        &missing,
        "main",
        "r.example/x",
        MethodConfig::default(),
        None,
    );
    let mut settings = settings(&tmp.path().join("work"), ContainerCli::Podman);
    settings.packer_bin = "sh".into();
    let (message, _) = failure(settings, ctx).await;
    assert!(message.contains("git clone of file://"), "{message}");
    assert!(
        message.contains("does not exist") || message.contains("not appear to be a git repository"),
        "{message}"
    );
}

#[tokio::test]
async fn file_urls_are_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let ctx = context(
        BuildMethod::Packer,
        tmp.path(),
        "main",
        "r.example/x",
        MethodConfig::default(),
        None,
    );
    let settings = LocalSettings {
        workdir: tmp.path().join("work"),
        git_bin: "sh".into(),
        packer_bin: "sh".into(),
        ..LocalSettings::default()
    };
    let (message, _) = failure(settings, ctx).await;
    assert!(message.contains("transport 'file'"), "{message}");
    assert!(message.contains("IF_LOCAL_GIT_PROTOCOLS"), "{message}");
}

#[tokio::test]
async fn missing_branch_and_missing_commit_name_the_ref() {
    if !have_tools("missing ref", &["git"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = scratch_repo(tmp.path(), "FROM scratch\n");
    let mut settings = settings(&tmp.path().join("work"), ContainerCli::Podman);
    settings.packer_bin = "sh".into();
    for missing in [
        "no-such-branch",
        "0123456789abcdef0123456789abcdef01234567",
        "abcdef12",
    ] {
        let ctx = context(
            BuildMethod::Packer,
            &repo,
            missing,
            "r.example/x",
            MethodConfig::default(),
            None,
        );
        let (message, _) = failure(settings.clone(), ctx).await;
        assert!(
            message.contains(&format!("git ref '{missing}' was not found in file://")),
            "{missing}: {message}"
        );
    }
}

#[tokio::test]
async fn dockerfile_syntax_error_reaches_the_message() {
    if !have_tools("Dockerfile syntax error", &["git", "buildah"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = scratch_repo(tmp.path(), "FROM scratch\nCOPPY hello.txt /\n");
    let ctx = context(
        BuildMethod::Docker,
        &repo,
        "main",
        "127.0.0.1:1/team/app:v1",
        MethodConfig::default(),
        None,
    );
    let (message, sink) = failure(
        settings(&tmp.path().join("work"), ContainerCli::Buildah),
        ctx,
    )
    .await;
    assert!(
        message.starts_with("buildah build failed (exit status"),
        "{message}"
    );
    assert!(
        message.contains("Unknown instruction: \"COPPY\""),
        "{message}"
    );
    assert!(sink.sources().iter().all(|s| s != "push"));
}

#[tokio::test]
async fn missing_dockerfile_and_escaping_context_are_named() {
    if !have_tools("bad paths", &["git"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = scratch_repo(tmp.path(), "FROM scratch\n");
    let mut settings = settings(&tmp.path().join("work"), ContainerCli::Podman);
    settings.container_cli_bin = Some("sh".into());
    let cases = [
        (
            MethodConfig {
                dockerfile: Some("build/Containerfile".into()),
                ..Default::default()
            },
            "dockerfile \"build/Containerfile\" does not exist in the repository",
        ),
        (
            MethodConfig {
                context: Some("../..".into()),
                ..Default::default()
            },
            "build context \"../..\" must be a relative path inside the repository",
        ),
    ];
    for (config, expected) in cases {
        let ctx = context(
            BuildMethod::Docker,
            &repo,
            "main",
            "127.0.0.1:1/a:v1",
            config,
            None,
        );
        let (message, _) = failure(settings.clone(), ctx).await;
        assert!(message.contains(expected), "{message}");
    }
}

#[tokio::test]
async fn wrong_registry_password_fails_with_the_registrys_401() {
    if !have_tools(
        "wrong registry password",
        &["git", "buildah", "docker-registry", "htpasswd"],
    ) {
        return;
    }
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let repo = scratch_repo(tmp.path(), "FROM scratch\nCOPY hello.txt /hello.txt\n");
    let mut settings = settings(&tmp.path().join("work"), ContainerCli::Buildah);
    settings.insecure_registries = vec![registry.host.clone()];
    let image = format!("{}/team/app:v1", registry.host);
    let wrong = "not-the-password";
    let ctx = context(
        BuildMethod::Docker,
        &repo,
        "main",
        &image,
        MethodConfig::default(),
        Some(registry.auth(wrong)),
    );
    let (message, sink) = failure(settings, ctx).await;
    assert!(
        message.starts_with(&format!("push of {image} failed")),
        "{message}"
    );
    assert!(
        message.contains("unauthorized: authentication required"),
        "{message}"
    );
    assert!(!message.contains(wrong) && !sink.log_text().contains(wrong));
}

#[tokio::test]
async fn missing_tools_are_named() {
    if !have_tools("missing tool", &["git"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = scratch_repo(tmp.path(), "FROM scratch\n");
    let base = settings(&tmp.path().join("work"), ContainerCli::Podman);
    let cases = [
        (
            BuildMethod::Docker,
            LocalSettings {
                container_cli_bin: Some("/nonexistent/podman".into()),
                ..base.clone()
            },
            "the container CLI podman is not installed on this dispatcher ('/nonexistent/podman' was not found",
        ),
        (
            BuildMethod::Kaniko,
            LocalSettings {
                kaniko_bin: None,
                ..base.clone()
            },
            "kaniko is not installed on this dispatcher",
        ),
        (
            BuildMethod::Kaniko,
            LocalSettings {
                kaniko_bin: Some("/nonexistent/executor".into()),
                ..base.clone()
            },
            "kaniko is not installed on this dispatcher",
        ),
        (
            BuildMethod::Packer,
            LocalSettings {
                packer_bin: "packer-not-here".into(),
                ..base.clone()
            },
            "packer is not installed on this dispatcher ('packer-not-here' was not found; set IF_LOCAL_PACKER_BIN)",
        ),
    ];
    for (method, settings, expected) in cases {
        let ctx = context(
            method,
            &repo,
            "main",
            "127.0.0.1:1/a:v1",
            MethodConfig::default(),
            None,
        );
        let (message, sink) = failure(settings, ctx).await;
        assert!(message.contains(expected), "{method}: {message}");
        // Found before any work: nothing was cloned.
        assert!(sink.lines.lock().unwrap().is_empty(), "{method}");
    }
}

#[tokio::test]
async fn failing_packer_build_reports_packers_error() {
    if !have_tools("packer failure", &["git", "packer"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let template = r#"{"builders":[{"type":"null","communicator":"none"}],
      "provisioners":[{"type":"shell-local","inline":["echo about to fail","exit 3"]}]}"#;
    let repo = git_repo(tmp.path(), &[("t.json", template)]);
    let config = MethodConfig {
        packer_template: Some("t.json".into()),
        ..Default::default()
    };
    let ctx = context(
        BuildMethod::Packer,
        &repo,
        "main",
        "r.example/x",
        config,
        None,
    );
    let (message, _) = failure(
        settings(&tmp.path().join("work"), ContainerCli::Podman),
        ctx,
    )
    .await;
    assert!(
        message.starts_with("packer build failed (exit status 1)"),
        "{message}"
    );
    assert!(message.contains("about to fail"), "{message}");
    assert!(message.contains("non-zero exit status"), "{message}");
}

#[tokio::test]
async fn keep_failed_keeps_the_workspace_but_never_the_secrets() {
    if !have_tools("keep failed", &["git"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = scratch_repo(tmp.path(), "FROM scratch\n");
    let mut settings = settings(&tmp.path().join("work"), ContainerCli::Podman);
    settings.keep_failed = true;
    settings.container_cli_bin = Some("false".into()); // the build step fails
    let workdir = settings.workdir.clone();
    let executor = LocalExecutor::new(settings);
    let sink = Arc::new(MemorySink::default());
    let ctx = context(
        BuildMethod::Docker,
        &repo,
        "main",
        "127.0.0.1:1/a:v1",
        MethodConfig::default(),
        None,
    );
    let id = ctx.execution_id;
    let (_tx, stop) = watch::channel(None);
    let outcome = executor.start(ctx, sink.clone(), stop).await;
    assert!(
        matches!(outcome, Outcome::Failed { ref message } if message.contains("false build failed (exit status 1)")),
        "{outcome:?}"
    );
    let kept = workdir.join(id.to_string());
    assert!(kept.join("src/Dockerfile").exists());
    assert!(!kept.join("secrets").exists());
    assert!(
        sink.progress
            .lock()
            .unwrap()
            .iter()
            .any(|p| p.contains("workspace kept"))
    );
}
