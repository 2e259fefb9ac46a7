//! The tool invocations of each container method, as plain data (no I/O), so
//! their shape is testable without the tools.

use std::path::{Path, PathBuf};

use imagefactory_domain::{BuildMethod, MethodConfig};

use super::process::CommandSpec;
use super::settings::ContainerCli;

/// Where a container build finds its inputs and leaves its outputs.
#[derive(Debug, Clone)]
pub(crate) struct BuildPaths {
    pub cwd: PathBuf,
    pub context: PathBuf,
    pub dockerfile: PathBuf,
    /// Directory holding `config.json` (registry auth).
    pub auth_dir: PathBuf,
    pub auth_file: PathBuf,
    /// Where the pushed digest is written (podman/buildah, kaniko).
    pub digest_file: PathBuf,
    /// `docker buildx --metadata-file` output.
    pub metadata_file: PathBuf,
    /// `--root`/`--runroot` of podman/buildah when storage is isolated.
    pub storage: Option<(PathBuf, PathBuf)>,
}

/// How the digest of the pushed image is learnt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DigestSource {
    /// A file the push wrote (`--digestfile`, kaniko `--digest-file`).
    File(PathBuf),
    /// `docker buildx --metadata-file`: JSON with `containerimage.digest`.
    BuildxMetadata(PathBuf),
    /// `docker push` prints `<tag>: digest: sha256:... size: N`.
    PushOutput,
}

#[derive(Debug, Clone)]
pub(crate) struct ContainerPlan {
    pub steps: Vec<CommandSpec>,
    pub digest: DigestSource,
}

/// Everything a container build plan depends on.
pub(crate) struct PlanInput<'a> {
    pub cli: ContainerCli,
    pub program: &'a Path,
    pub method: BuildMethod,
    pub config: &'a MethodConfig,
    /// Destination reference.
    pub image: &'a str,
    /// Per-execution local name for the built image or manifest list.
    pub local_name: &'a str,
    pub insecure: bool,
    pub storage_driver: Option<&'a str>,
    /// `--isolation` of podman/buildah builds.
    pub isolation: Option<&'a str>,
    pub paths: &'a BuildPaths,
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// Flags shared by every build: args, labels, target, dockerfile.
fn build_flags(cfg: &MethodConfig, dockerfile: &Path) -> Vec<String> {
    let mut args = vec!["-f".to_owned(), path(dockerfile)];
    for (k, v) in &cfg.build_args {
        args.push("--build-arg".into());
        args.push(format!("{k}={v}"));
    }
    for (k, v) in &cfg.labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
    if let Some(target) = cfg.target.as_deref().filter(|t| !t.is_empty()) {
        args.push("--target".into());
        args.push(target.to_owned());
    }
    args
}

pub(crate) fn container_plan(input: &PlanInput<'_>) -> Result<ContainerPlan, String> {
    let cfg = input.config;
    if input.method == BuildMethod::Docker && cfg.platforms.len() > 1 {
        return Err(format!(
            "method docker builds one platform but {} were given ({}); use method buildx for several",
            cfg.platforms.len(),
            cfg.platforms.join(", ")
        ));
    }
    match input.cli {
        ContainerCli::Podman | ContainerCli::Buildah => Ok(daemonless_plan(input)),
        ContainerCli::Docker => Ok(docker_plan(input)),
    }
}

/// podman and buildah take the same flags for everything used here.
fn daemonless_plan(input: &PlanInput<'_>) -> ContainerPlan {
    let cfg = input.config;
    let p = input.paths;
    let base = |source| {
        let mut spec = CommandSpec::new(source, input.program, &p.cwd)
            .env("REGISTRY_AUTH_FILE", path(&p.auth_file));
        if let Some((root, runroot)) = &p.storage {
            spec = spec.args([
                "--root".to_owned(),
                path(root),
                "--runroot".to_owned(),
                path(runroot),
            ]);
        }
        if let Some(driver) = input.storage_driver {
            spec = spec.args(["--storage-driver", driver]);
        }
        spec
    };
    let tls = |spec: CommandSpec| {
        if input.insecure {
            spec.arg("--tls-verify=false")
        } else {
            spec
        }
    };
    let mut build = base("build")
        .arg("build")
        .args(build_flags(cfg, &p.dockerfile))
        .args(["--authfile".to_owned(), path(&p.auth_file)]);
    // podman 4's layer cache ignores the platform of `FROM scratch` stages and
    // would hand the first platform's image to every other one.
    let layers = cfg.cache_enabled && cfg.platforms.len() <= 1;
    build = build.arg(format!("--layers={layers}"));
    if let Some(isolation) = input.isolation {
        build = build.args(["--isolation", isolation]);
    }
    if layers && let Some(repo) = cfg.cache_repo.as_deref().filter(|r| !r.is_empty()) {
        build = build.args(["--cache-from", repo, "--cache-to", repo]);
    }
    let destination = format!("docker://{}", input.image);
    let push = if input.method == BuildMethod::Buildx {
        build = build.args(["--manifest", input.local_name]);
        if !cfg.platforms.is_empty() {
            build = build.args(["--platform".to_owned(), cfg.platforms.join(",")]);
        }
        tls(base("push").args(["manifest", "push", "--all"]))
    } else {
        build = build.args(["-t", input.local_name]);
        if let Some(platform) = cfg.platforms.first() {
            build = build.args(["--platform", platform.as_str()]);
        }
        tls(base("push").arg("push"))
    }
    .args([
        "--authfile".to_owned(),
        path(&p.auth_file),
        "--digestfile".to_owned(),
        path(&p.digest_file),
        input.local_name.to_owned(),
        destination,
    ]);
    ContainerPlan {
        steps: vec![build.arg(path(&p.context)), push],
        digest: DigestSource::File(p.digest_file.clone()),
    }
}

fn docker_plan(input: &PlanInput<'_>) -> ContainerPlan {
    let cfg = input.config;
    let p = input.paths;
    let base = |source| {
        CommandSpec::new(source, input.program, &p.cwd).env("DOCKER_CONFIG", path(&p.auth_dir))
    };
    if input.method == BuildMethod::Buildx {
        let mut build = base("build")
            .args(["buildx", "build"])
            .args(build_flags(cfg, &p.dockerfile))
            .args(["-t", input.image, "--push", "--metadata-file"])
            .arg(path(&p.metadata_file));
        if !cfg.platforms.is_empty() {
            build = build.args(["--platform".to_owned(), cfg.platforms.join(",")]);
        }
        if cfg.cache_enabled
            && let Some(repo) = cfg.cache_repo.as_deref().filter(|r| !r.is_empty())
        {
            build = build.args([
                "--cache-from".to_owned(),
                format!("type=registry,ref={repo}"),
                "--cache-to".to_owned(),
                format!("type=registry,ref={repo},mode=max"),
            ]);
        }
        return ContainerPlan {
            steps: vec![build.arg(path(&p.context))],
            digest: DigestSource::BuildxMetadata(p.metadata_file.clone()),
        };
    }
    let mut build = base("build")
        .arg("build")
        .args(build_flags(cfg, &p.dockerfile))
        .args(["-t", input.image]);
    if let Some(platform) = cfg.platforms.first() {
        build = build.args(["--platform", platform.as_str()]);
    }
    if cfg.cache_enabled
        && let Some(repo) = cfg.cache_repo.as_deref().filter(|r| !r.is_empty())
    {
        build = build.args(["--cache-from", repo]);
    }
    ContainerPlan {
        steps: vec![
            build.arg(path(&p.context)),
            base("push").args(["push", input.image]),
        ],
        digest: DigestSource::PushOutput,
    }
}

/// The kaniko executor builds and pushes in one step.
pub(crate) fn kaniko_plan(
    program: &Path,
    cfg: &MethodConfig,
    image: &str,
    insecure: bool,
    paths: &BuildPaths,
) -> ContainerPlan {
    let mut spec = CommandSpec::new("build", program, &paths.cwd)
        .env("DOCKER_CONFIG", path(&paths.auth_dir))
        .args([
            "--dockerfile".to_owned(),
            path(&paths.dockerfile),
            "--context".to_owned(),
            format!("dir://{}", path(&paths.context)),
            "--destination".to_owned(),
            image.to_owned(),
            "--digest-file".to_owned(),
            path(&paths.digest_file),
        ]);
    for (k, v) in &cfg.build_args {
        spec = spec.args(["--build-arg".to_owned(), format!("{k}={v}")]);
    }
    for (k, v) in &cfg.labels {
        spec = spec.args(["--label".to_owned(), format!("{k}={v}")]);
    }
    if let Some(target) = cfg.target.as_deref().filter(|t| !t.is_empty()) {
        spec = spec.args(["--target", target]);
    }
    if let Some(platform) = cfg.platforms.first() {
        spec = spec.args(["--custom-platform", platform.as_str()]);
    }
    if cfg.cache_enabled {
        spec = spec.arg("--cache=true");
        if let Some(repo) = cfg.cache_repo.as_deref().filter(|r| !r.is_empty()) {
            spec = spec.args(["--cache-repo", repo]);
        }
    }
    if insecure {
        spec = spec.args(["--insecure", "--skip-tls-verify"]);
    }
    ContainerPlan {
        steps: vec![spec],
        digest: DigestSource::File(paths.digest_file.clone()),
    }
}

/// A `sha256:<64 hex>` digest, or `None`.
pub(crate) fn parse_digest(text: &str) -> Option<String> {
    let text = text.trim();
    let hex = text.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
    .then(|| text.to_owned())
}

/// The digest in `docker push` output (`v1: digest: sha256:… size: 528`).
pub(crate) fn digest_from_push_output(lines: &[String]) -> Option<String> {
    lines.iter().rev().find_map(|line| {
        let rest = &line[line.find("digest: ")? + "digest: ".len()..];
        parse_digest(rest.split_whitespace().next()?)
    })
}

/// `containerimage.digest` of a `docker buildx --metadata-file` document.
pub(crate) fn digest_from_buildx_metadata(json: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    parse_digest(value.get("containerimage.digest")?.as_str()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> BuildPaths {
        BuildPaths {
            cwd: "/ws/src".into(),
            context: "/ws/src/app".into(),
            dockerfile: "/ws/src/app/Dockerfile".into(),
            auth_dir: "/ws/secrets".into(),
            auth_file: "/ws/secrets/config.json".into(),
            digest_file: "/ws/out/digest".into(),
            metadata_file: "/ws/out/metadata.json".into(),
            storage: Some(("/ws/storage/root".into(), "/ws/storage/run".into())),
        }
    }

    fn config() -> MethodConfig {
        MethodConfig {
            build_args: [("VERSION".to_owned(), "1.2".to_owned())].into(),
            labels: [("team".to_owned(), "a b".to_owned())].into(),
            target: Some("runtime".into()),
            platforms: vec!["linux/amd64".into(), "linux/arm64".into()],
            ..MethodConfig::default()
        }
    }

    fn plan(
        cli: ContainerCli,
        method: BuildMethod,
        cfg: &MethodConfig,
        insecure: bool,
    ) -> Result<ContainerPlan, String> {
        let p = paths();
        container_plan(&PlanInput {
            cli,
            program: Path::new(cli.as_str()),
            method,
            config: cfg,
            image: "reg.example:5000/team/app:v1",
            local_name: "localhost/if-123:build",
            insecure,
            storage_driver: Some("vfs"),
            isolation: None,
            paths: &p,
        })
    }

    #[test]
    fn podman_buildx_builds_a_manifest_list_and_pushes_all() {
        let plan = plan(ContainerCli::Podman, BuildMethod::Buildx, &config(), true).unwrap();
        let [build, push] = &plan.steps[..] else {
            panic!("two steps")
        };
        assert_eq!(
            build.args.join(" "),
            "--root /ws/storage/root --runroot /ws/storage/run --storage-driver vfs build \
             -f /ws/src/app/Dockerfile --build-arg VERSION=1.2 --label team=a b --target runtime \
             --authfile /ws/secrets/config.json --layers=false --manifest localhost/if-123:build \
             --platform linux/amd64,linux/arm64 /ws/src/app"
        );
        assert_eq!(
            push.args.join(" "),
            "--root /ws/storage/root --runroot /ws/storage/run --storage-driver vfs manifest push --all \
             --tls-verify=false --authfile /ws/secrets/config.json --digestfile /ws/out/digest \
             localhost/if-123:build docker://reg.example:5000/team/app:v1"
        );
        assert_eq!(push.source, "push");
        assert_eq!(plan.digest, DigestSource::File("/ws/out/digest".into()));
    }

    #[test]
    fn buildah_docker_method_tags_and_pushes_with_tls_by_default() {
        let cfg = MethodConfig {
            platforms: vec![],
            ..config()
        };
        let plan = plan(ContainerCli::Buildah, BuildMethod::Docker, &cfg, false).unwrap();
        assert!(
            plan.steps[0]
                .args
                .windows(2)
                .any(|w| w == ["-t", "localhost/if-123:build"])
        );
        assert!(
            !plan.steps[1]
                .args
                .iter()
                .any(|a| a.starts_with("--tls-verify"))
        );
        assert_eq!(plan.steps[1].args[6], "push");
    }

    #[test]
    fn docker_method_refuses_several_platforms() {
        let err = plan(ContainerCli::Podman, BuildMethod::Docker, &config(), false).unwrap_err();
        assert!(err.contains("use method buildx"), "{err}");
    }

    #[test]
    fn docker_cli_uses_buildx_push_and_docker_config() {
        let plan = plan(ContainerCli::Docker, BuildMethod::Buildx, &config(), false).unwrap();
        let step = &plan.steps[0];
        assert_eq!(&step.args[..2], ["buildx", "build"]);
        assert!(step.args.iter().any(|a| a == "--push"));
        assert!(
            step.args
                .windows(2)
                .any(|w| w == ["--platform", "linux/amd64,linux/arm64"])
        );
        assert!(
            step.env
                .contains(&("DOCKER_CONFIG".into(), "/ws/secrets".into()))
        );
        assert!(matches!(plan.digest, DigestSource::BuildxMetadata(_)));
    }

    #[test]
    fn kaniko_gets_context_destination_and_digest_file() {
        let cfg = MethodConfig {
            platforms: vec!["linux/arm64".into()],
            ..config()
        };
        let plan = kaniko_plan(
            Path::new("/kaniko/executor"),
            &cfg,
            "r/app:v1",
            true,
            &paths(),
        );
        let args = plan.steps[0].args.join(" ");
        assert!(args.contains("--context dir:///ws/src/app"), "{args}");
        assert!(
            args.contains("--destination r/app:v1 --digest-file /ws/out/digest"),
            "{args}"
        );
        assert!(args.contains("--custom-platform linux/arm64"), "{args}");
        assert!(args.ends_with("--insecure --skip-tls-verify"), "{args}");
    }

    #[test]
    fn digests_are_read_strictly() {
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse_digest(&format!("{d}\n")), Some(d.clone()));
        assert_eq!(parse_digest("sha256:abc"), None);
        let out = vec![
            "The push refers to repository [r/app]".to_owned(),
            format!("v1: digest: {d} size: 528"),
        ];
        assert_eq!(digest_from_push_output(&out), Some(d.clone()));
        let meta = format!(r#"{{"containerimage.digest":"{d}","image.name":"r/app:v1"}}"#);
        assert_eq!(digest_from_buildx_metadata(&meta), Some(d));
    }
}
