//! Local builds that succeed, with the real tools: podman/buildah pushing to
//! a real `docker-registry` with htpasswd auth, and packer.

#[path = "support/local.rs"]
mod support;

use std::sync::Arc;

use imagefactory_domain::{BuildMethod, MethodConfig};
use imagefactory_exec::local::{ContainerCli, LocalExecutor};
use imagefactory_exec::{ArtifactKind, Executor, ExecutorKind, Outcome};
use support::*;
use tokio::sync::watch;

const DOCKERFILE: &str =
    "FROM scratch\nARG VERSION=none\nCOPY hello.txt /hello.txt\nLABEL version=$VERSION\n";

/// Two stages: the build's `target` decides which one is the image.
const MULTI_STAGE: &str = "FROM scratch AS runtime\nARG VERSION=none\nCOPY hello.txt /hello.txt\n\
     LABEL version=$VERSION stage=runtime\nFROM runtime AS debug\nLABEL stage=debug\n";

#[tokio::test]
async fn docker_method_with_buildah_pushes_and_records_the_registry_digest() {
    if !have_tools(
        "docker method",
        &["git", "buildah", "docker-registry", "htpasswd"],
    ) {
        return;
    }
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(
        tmp.path(),
        &[
            ("app/Dockerfile", MULTI_STAGE),
            ("app/hello.txt", "hello v1\n"),
        ],
    );
    git(&repo, &["tag", "v1"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let workdir = tmp.path().join("work");
    let mut settings = settings(&workdir, ContainerCli::Buildah);
    settings.insecure_registries = vec![registry.host.clone()];
    let executor = LocalExecutor::new(settings.clone());
    let image = format!("{}/team/app:v1", registry.host);
    let config = MethodConfig {
        context: Some("app".into()),
        build_args: [("VERSION".to_owned(), "1.2.3".to_owned())].into(),
        labels: [("team".to_owned(), "a b".to_owned())].into(),
        target: Some("runtime".into()),
        ..MethodConfig::default()
    };
    let ctx = context(
        BuildMethod::Docker,
        &repo,
        "v1",
        &image,
        config,
        Some(registry.auth(&registry.password)),
    );
    let sink = Arc::new(MemorySink::default());
    let (_stop_tx, stop) = watch::channel(None);
    let id = ctx.execution_id;

    let outcome = executor.start(ctx, sink.clone(), stop).await;

    assert_eq!(outcome, Outcome::Succeeded, "logs:\n{}", sink.log_text());
    assert_runroot_gone(&settings, id);
    let (served, content_type, manifest) = registry.manifest("team/app", "v1").await;
    assert_eq!(
        sink.artifact("IMAGE_DIGEST").as_deref(),
        Some(served.as_str())
    );
    assert_eq!(sink.artifact("IMAGE_URL").as_deref(), Some(image.as_str()));
    assert_eq!(sink.artifact("clone.commit"), Some(head));
    let kinds: Vec<ArtifactKind> = sink
        .artifacts
        .lock()
        .unwrap()
        .iter()
        .map(|a| a.kind)
        .collect();
    assert!(kinds.contains(&ArtifactKind::ImageDigest) && kinds.contains(&ArtifactKind::ImageUrl));
    assert!(content_type.contains("manifest"), "{content_type}");
    // Build args and labels reached the image.
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let image_config = registry.blob("team/app", config_digest).await;
    assert_eq!(image_config["config"]["Labels"]["team"], "a b");
    assert_eq!(image_config["config"]["Labels"]["version"], "1.2.3");
    // The target stage, not the last one, is what was pushed.
    assert_eq!(image_config["config"]["Labels"]["stage"], "runtime");

    // Logs: streamed per phase, numbered, without the registry password.
    let sources = sink.sources();
    for phase in ["clone", "build", "push"] {
        assert!(
            sources.iter().any(|s| s == phase),
            "no {phase} logs: {sources:?}"
        );
    }
    sink.assert_positions_contiguous();
    let logs = sink.log_text();
    assert!(logs.contains("COPY hello.txt /hello.txt"), "{logs}");
    assert!(!logs.contains(&registry.password));
    // A tag is cloned shallow: one commit, that branch or tag only.
    assert!(
        logs.contains(" clone --depth 1 --single-branch --branch v1 -- file://"),
        "{logs}"
    );
    let reference = sink.references.lock().unwrap()[0].clone();
    assert_eq!(reference.executor, ExecutorKind::Local);
    assert_workdir_empty(&workdir);
}

#[tokio::test]
async fn buildx_with_podman_pushes_a_two_platform_manifest_list() {
    if !have_tools(
        "buildx method",
        &["git", "podman", "docker-registry", "htpasswd"],
    ) {
        return;
    }
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(
        tmp.path(),
        &[("Dockerfile", DOCKERFILE), ("hello.txt", "hello multi\n")],
    );
    let workdir = tmp.path().join("work");
    let mut settings = settings(&workdir, ContainerCli::Podman);
    settings.insecure_registries = vec![registry.host.clone()];
    let executor = LocalExecutor::new(settings.clone());
    let image = format!("{}/team/multi:2.0", registry.host);
    let config = MethodConfig {
        platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
        ..MethodConfig::default()
    };
    let ctx = context(
        BuildMethod::Buildx,
        &repo,
        "main",
        &image,
        config,
        Some(registry.auth(&registry.password)),
    );
    let sink = Arc::new(MemorySink::default());
    let (_stop_tx, stop) = watch::channel(None);

    let id = ctx.execution_id;
    let outcome = executor.start(ctx, sink.clone(), stop).await;

    assert_eq!(outcome, Outcome::Succeeded, "logs:\n{}", sink.log_text());
    assert_runroot_gone(&settings, id);
    let (served, content_type, index) = registry.manifest("team/multi", "2.0").await;
    assert_eq!(
        sink.artifact("IMAGE_DIGEST").as_deref(),
        Some(served.as_str())
    );
    assert!(
        content_type.contains("index") || content_type.contains("manifest.list"),
        "{content_type}"
    );
    let mut archs: Vec<&str> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["platform"]["architecture"].as_str().unwrap())
        .collect();
    archs.sort();
    assert_eq!(archs, ["amd64", "arm64"]);
    sink.assert_positions_contiguous();
    assert_workdir_empty(&workdir);
}

const PACKER_TEMPLATE: &str = r#"{
  "variables": { "greeting": "unset" },
  "builders": [
    { "type": "file", "name": "greeting-file", "target": "greeting.txt", "content": "{{user `greeting`}}" },
    { "type": "null", "name": "noop", "communicator": "none" }
  ],
  "provisioners": [
    { "type": "shell-local", "inline": ["echo provisioning with {{user `greeting`}}"] }
  ]
}
"#;

#[tokio::test]
async fn packer_runs_a_template_and_records_its_artifacts() {
    if !have_tools("packer method", &["git", "packer"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(tmp.path(), &[("images/base.json", "{}")]);
    let wanted = commit(
        &repo,
        &[("images/base.json", PACKER_TEMPLATE)],
        "real template",
    );
    // A later commit must not be what gets built: the build asks for `wanted`.
    commit(&repo, &[("images/base.json", "not json")], "broken later");
    let workdir = tmp.path().join("work");
    let executor = LocalExecutor::new(settings(&workdir, ContainerCli::Podman));
    let config = MethodConfig {
        packer_template: Some("images/base.json".into()),
        packer_vars: [("greeting".to_owned(), "hello, packer".to_owned())].into(),
        ..MethodConfig::default()
    };
    // The abbreviated commit resolves to the same checkout.
    let short = wanted[..10].to_owned();
    let abbreviated = context(
        BuildMethod::Packer,
        &repo,
        &short,
        "r.example/unused",
        config.clone(),
        None,
    );
    let sink = Arc::new(MemorySink::default());
    let (_stop_tx, stop) = watch::channel(None);
    let outcome = executor.start(abbreviated, sink.clone(), stop).await;
    assert_eq!(outcome, Outcome::Succeeded, "logs:\n{}", sink.log_text());
    assert_eq!(sink.artifact("clone.commit").as_ref(), Some(&wanted));

    let ctx = context(
        BuildMethod::Packer,
        &repo,
        &wanted,
        "r.example/unused",
        config,
        None,
    );
    let sink = Arc::new(MemorySink::default());
    let (_stop_tx, stop) = watch::channel(None);

    let outcome = executor.start(ctx, sink.clone(), stop).await;

    assert_eq!(outcome, Outcome::Succeeded, "logs:\n{}", sink.log_text());
    assert_eq!(sink.artifact("clone.commit"), Some(wanted));
    assert_eq!(
        sink.artifact("packer.greeting-file.0.id").as_deref(),
        Some("File")
    );
    assert_eq!(
        sink.artifact("packer.greeting-file.0.files").as_deref(),
        Some(r#"["greeting.txt"]"#)
    );
    assert_eq!(sink.artifact("packer.noop.0.id").as_deref(), Some("Null"));
    let logs = sink.log_text();
    assert!(logs.contains("provisioning with hello, packer"), "{logs}");
    assert!(sink.sources().iter().any(|s| s == "packer"));
    sink.assert_positions_contiguous();
    assert_workdir_empty(&workdir);
}

#[tokio::test]
async fn git_credentials_reach_git_through_askpass_only() {
    if !have_tools("git credentials", &["git", "packer"]) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let template = r#"{"builders":[{"type":"null","communicator":"none"}]}"#;
    let repo = git_repo(tmp.path(), &[("t.json", template)]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let password = "git-Pa55-secret";
    let server = GitServer::start(&repo, Some(("deploy", password)));
    // A git wrapper that records every argv it is given.
    let argv_log = tmp.path().join("argv.log");
    let wrapper = tmp.path().join("git-wrapper");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\nexec git \"$@\"\n",
            argv_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let workdir = tmp.path().join("work");
    let mut settings = settings(&workdir, ContainerCli::Podman);
    settings.git_bin = wrapper;
    let executor = LocalExecutor::new(settings);
    let config = MethodConfig {
        packer_template: Some("t.json".into()),
        ..MethodConfig::default()
    };

    let cases = [
        (password, true, false),
        ("wrong-password", false, false),
        (password, true, true),
    ];
    for (given, succeeds, in_url) in cases {
        let mut ctx = context(
            BuildMethod::Packer,
            &repo,
            "main",
            "r.example/unused",
            config.clone(),
            None,
        );
        if in_url {
            // Written into the URL by the user: `GitUrl` refuses it, so no
            // execution context (and no argv) can ever carry it.
            let url = server.url_with("deploy", given);
            let refused = imagefactory_domain::GitUrl::parse(&url).unwrap_err();
            assert!(!refused.to_string().contains(given), "{refused}");
            continue;
        } else {
            ctx.source.url = imagefactory_domain::GitUrl::parse(&server.url).unwrap();
            ctx.source.credential = Some(imagefactory_exec::GitCredential {
                username: "deploy".into(),
                password: imagefactory_domain::Secret::new(given),
            });
        }
        let sink = Arc::new(MemorySink::default());
        let (_tx, stop) = watch::channel(None);
        let outcome = executor.start(ctx, sink.clone(), stop).await;
        if succeeds {
            assert_eq!(outcome, Outcome::Succeeded, "logs:\n{}", sink.log_text());
            assert_eq!(sink.artifact("clone.commit"), Some(head.clone()));
        } else {
            let Outcome::Failed { message } = outcome else {
                panic!("{outcome:?}")
            };
            assert!(message.contains("Authentication failed"), "{message}");
            assert!(!message.contains(given));
        }
        assert!(!sink.log_text().contains(given));
        assert_workdir_empty(&workdir);
    }
    let argv = std::fs::read_to_string(&argv_log).unwrap();
    assert!(argv.contains("clone"), "{argv}");
    assert!(
        !argv.contains(password) && !argv.contains("wrong-password"),
        "{argv}"
    );
}

#[tokio::test]
async fn shared_storage_does_not_keep_the_built_image() {
    if !have_tools(
        "shared storage",
        &["git", "buildah", "docker-registry", "htpasswd"],
    ) {
        return;
    }
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(
        tmp.path(),
        &[("Dockerfile", DOCKERFILE), ("hello.txt", "shared\n")],
    );
    let workdir = tmp.path().join("work");
    let mut settings = settings(&workdir, ContainerCli::Buildah);
    settings.insecure_registries = vec![registry.host.clone()];
    settings.isolated_storage = false;
    let executor = LocalExecutor::new(settings);
    let image = format!("{}/team/shared:v1", registry.host);
    let ctx = context(
        BuildMethod::Docker,
        &repo,
        "main",
        &image,
        MethodConfig::default(),
        Some(registry.auth(&registry.password)),
    );
    let id = ctx.execution_id;
    let sink = Arc::new(MemorySink::default());
    let (_stop_tx, stop) = watch::channel(None);

    let outcome = executor.start(ctx, sink.clone(), stop).await;

    assert_eq!(outcome, Outcome::Succeeded, "logs:\n{}", sink.log_text());
    let (served, _, _) = registry.manifest("team/shared", "v1").await;
    assert_eq!(sink.artifact("IMAGE_DIGEST"), Some(served));
    let images = std::process::Command::new("buildah")
        .args(["images", "--format", "{{.Name}}"])
        .output()
        .unwrap();
    let images = String::from_utf8_lossy(&images.stdout);
    assert!(
        !images.contains(&id.to_string()),
        "built image left in shared storage: {images}"
    );
    assert_workdir_empty(&workdir);
}

#[tokio::test]
async fn podman_docker_method_and_buildah_buildx_match_the_registry_too() {
    if !have_tools(
        "other CLI pairs",
        &["git", "podman", "buildah", "docker-registry", "htpasswd"],
    ) {
        return;
    }
    let registry = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let repo = git_repo(
        tmp.path(),
        &[("Dockerfile", DOCKERFILE), ("hello.txt", "pairs\n")],
    );
    let workdir = tmp.path().join("work");
    let cases = [
        (
            ContainerCli::Podman,
            BuildMethod::Docker,
            "team/podman",
            vec![],
        ),
        (
            ContainerCli::Buildah,
            BuildMethod::Buildx,
            "team/buildah-multi",
            vec!["linux/amd64".to_owned(), "linux/arm64".to_owned()],
        ),
    ];
    for (cli, method, repository, platforms) in cases {
        let mut settings = settings(&workdir, cli);
        settings.insecure_registries = vec![registry.host.clone()];
        let executor = LocalExecutor::new(settings);
        let image = format!("{}/{repository}:v1", registry.host);
        let config = MethodConfig {
            platforms,
            ..MethodConfig::default()
        };
        let ctx = context(
            method,
            &repo,
            "main",
            &image,
            config,
            Some(registry.auth(&registry.password)),
        );
        let sink = Arc::new(MemorySink::default());
        let (_stop_tx, stop) = watch::channel(None);

        let outcome = executor.start(ctx, sink.clone(), stop).await;

        assert_eq!(
            outcome,
            Outcome::Succeeded,
            "{cli} {method}:\n{}",
            sink.log_text()
        );
        let (served, _, body) = registry.manifest(repository, "v1").await;
        assert_eq!(
            sink.artifact("IMAGE_DIGEST"),
            Some(served),
            "{cli} {method}"
        );
        if method == BuildMethod::Buildx {
            assert_eq!(body["manifests"].as_array().map(Vec::len), Some(2));
        }
        assert_workdir_empty(&workdir);
    }
}
