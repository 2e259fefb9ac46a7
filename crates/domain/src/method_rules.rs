//! Per-method rules for a build's [`MethodConfig`] and its destination image.

use crate::build::{BuildMethod, MethodConfig};
use crate::image::ImageRef;
use crate::validation::Violations;

/// Where the build pushes, decided from `image` and the method config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination(pub ImageRef);

/// Validate a method config and the destination image together; every problem
/// is reported with its field path (`image`, `config.platforms[0]`, ...).
///
/// Rules:
/// - every method needs a destination: `image`; kaniko may instead name a
///   repository in `config.metadata.registry_repo` (then the image is
///   `<registry_repo>:latest`);
/// - packer needs `config.packer_template`;
/// - platforms are `os/arch[/variant]`; only buildx builds several, docker
///   and kaniko at most one, packer none;
/// - dockerfile, context and packer_template are relative paths inside the
///   repository (no `..`, not absolute).
pub fn validate_build_config(
    method: BuildMethod,
    image: Option<&str>,
    config: &MethodConfig,
) -> Result<Destination, Violations> {
    let mut v = Violations::new();
    let registry_repo = registry_repo(config, &mut v);
    let destination = destination(method, image, registry_repo, &mut v);
    check_paths(config, &mut v);
    check_method_fields(method, config, &mut v);
    check_platforms(config, &mut v);
    check_names(config, &mut v);
    match destination {
        Some(image) if v.is_empty() => Ok(Destination(image)),
        _ => Err(v),
    }
}

/// `config.metadata.registry_repo`, when given: a repository without a tag.
fn registry_repo(config: &MethodConfig, v: &mut Violations) -> Option<ImageRef> {
    match config.metadata.get("registry_repo") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => v.check(
            "config.metadata.registry_repo",
            ImageRef::parse_repository(s),
        ),
        Some(_) => {
            v.add("config.metadata.registry_repo", "must be a string");
            None
        }
    }
}

/// The image the build pushes: `image`, or kaniko's `<registry_repo>:latest`.
fn destination(
    method: BuildMethod,
    image: Option<&str>,
    registry_repo: Option<ImageRef>,
    v: &mut Violations,
) -> Option<ImageRef> {
    if let Some(text) = image {
        return v.check("image", ImageRef::parse(text));
    }
    match (method, registry_repo) {
        (BuildMethod::Kaniko, Some(repo)) => {
            Some(ImageRef::parse(&format!("{repo}:latest")).expect("repository plus tag is valid"))
        }
        (BuildMethod::Kaniko, None) => {
            v.add(
                "image",
                "kaniko needs a destination: give image or config.metadata.registry_repo",
            );
            None
        }
        _ => {
            v.add("image", "is required");
            None
        }
    }
}

/// dockerfile, context and packer_template stay inside the repository.
fn check_paths(config: &MethodConfig, v: &mut Violations) {
    for (field, value) in [
        ("config.dockerfile", &config.dockerfile),
        ("config.context", &config.context),
        ("config.packer_template", &config.packer_template),
    ] {
        if let Some(path) = value
            && let Err(message) = check_relative_path(path)
        {
            v.add(field, message);
        }
    }
}

/// Fields only some methods take (or need): packer's template and vars, and
/// how many platforms each method builds.
fn check_method_fields(method: BuildMethod, config: &MethodConfig, v: &mut Violations) {
    match method {
        BuildMethod::Packer => {
            if config.packer_template.as_deref().is_none_or(str::is_empty) {
                v.add("config.packer_template", "packer needs a template path");
            }
            if !config.platforms.is_empty() {
                v.add("config.platforms", "packer builds take no platforms");
            }
        }
        BuildMethod::Docker | BuildMethod::Kaniko if config.platforms.len() > 1 => {
            v.add(
                "config.platforms",
                format!("{method} builds one platform; use buildx for several"),
            );
        }
        _ => {}
    }
    if method != BuildMethod::Packer && !config.packer_vars.is_empty() {
        v.add("config.packer_vars", "only packer builds take packer_vars");
    }
}

fn check_platforms(config: &MethodConfig, v: &mut Violations) {
    for (i, platform) in config.platforms.iter().enumerate() {
        if let Err(message) = check_platform(platform) {
            v.add(format!("config.platforms[{i}]"), message);
        }
    }
}

/// Names the build passes on: build arg and packer variable names, label
/// keys, the target stage and the cache repository.
fn check_names(config: &MethodConfig, v: &mut Violations) {
    for key in config.build_args.keys() {
        if !is_env_name(key) {
            v.add(
                format!("config.build_args.{key}"),
                "build arg names are letters, digits and '_', not starting with a digit",
            );
        }
    }
    for key in config.packer_vars.keys() {
        if !is_env_name(key) {
            v.add(
                format!("config.packer_vars.{key}"),
                "variable names are letters, digits and '_', not starting with a digit",
            );
        }
    }
    for key in config.labels.keys() {
        if key.is_empty()
            || key.len() > 255
            || key.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            v.add(
                format!("config.labels.{key}"),
                "label keys are 1-255 characters without whitespace",
            );
        }
    }
    if let Some(target) = &config.target
        && !is_stage_name(target)
    {
        v.add(
            "config.target",
            "a stage name is letters, digits, '_', '.', '-', starting with a letter or digit",
        );
    }
    if let Some(repo) = &config.cache_repo {
        v.check("config.cache_repo", ImageRef::parse_repository(repo));
    }
}

/// `os/arch[/variant]`, lowercase alphanumerics (plus '_' in arch: `x86_64`).
pub fn check_platform(s: &str) -> Result<(), String> {
    let parts: Vec<&str> = s.split('/').collect();
    let part_ok = |p: &str| {
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    };
    if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| part_ok(p)) {
        return Err(format!(
            "{s:?} is not os/arch[/variant], e.g. linux/amd64 or linux/arm64/v8"
        ));
    }
    Ok(())
}

/// A path inside the repository: relative, no `..` component, no NUL.
pub fn check_relative_path(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > 1024 {
        return Err("must be at most 1024 characters".into());
    }
    if s.starts_with('/') {
        return Err("must be relative to the repository root".into());
    }
    if s.split('/').any(|c| c == "..") {
        return Err("must stay inside the repository ('..' is not allowed)".into());
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

fn is_env_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 255
        && !bytes[0].is_ascii_digit()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
}

fn is_stage_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && bytes[0].is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn fields(r: Result<Destination, Violations>) -> Vec<String> {
        r.unwrap_err()
            .into_vec()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn docker_needs_an_image() {
        let cfg = MethodConfig::default();
        assert_eq!(
            fields(validate_build_config(BuildMethod::Docker, None, &cfg)),
            ["image"]
        );
        let dest = validate_build_config(BuildMethod::Docker, Some("r.io/a:1"), &cfg).unwrap();
        assert_eq!(dest.0.to_string(), "r.io/a:1");
    }

    #[test]
    fn kaniko_takes_registry_repo_as_destination() {
        let mut cfg = MethodConfig::default();
        assert_eq!(
            fields(validate_build_config(BuildMethod::Kaniko, None, &cfg)),
            ["image"]
        );
        cfg.metadata
            .insert("registry_repo".into(), json!("r.io/team/app"));
        let dest = validate_build_config(BuildMethod::Kaniko, None, &cfg).unwrap();
        assert_eq!(dest.0.to_string(), "r.io/team/app:latest");
        cfg.metadata
            .insert("registry_repo".into(), json!("r.io/team/app:1"));
        assert_eq!(
            fields(validate_build_config(BuildMethod::Kaniko, None, &cfg)),
            ["config.metadata.registry_repo", "image"]
        );
    }

    #[test]
    fn packer_needs_a_template() {
        let mut cfg = MethodConfig::default();
        assert_eq!(
            fields(validate_build_config(
                BuildMethod::Packer,
                Some("r.io/a:1"),
                &cfg
            )),
            ["config.packer_template"]
        );
        cfg.packer_template = Some("image.pkr.hcl".into());
        assert!(validate_build_config(BuildMethod::Packer, Some("r.io/a:1"), &cfg).is_ok());
        cfg.packer_template = Some("../escape.pkr.hcl".into());
        assert_eq!(
            fields(validate_build_config(
                BuildMethod::Packer,
                Some("r.io/a:1"),
                &cfg
            )),
            ["config.packer_template"]
        );
    }

    #[test]
    fn platforms_per_method() {
        let cfg = MethodConfig {
            platforms: vec!["linux/amd64".into(), "linux/arm64/v8".into()],
            ..Default::default()
        };
        assert!(validate_build_config(BuildMethod::Buildx, Some("r.io/a:1"), &cfg).is_ok());
        assert_eq!(
            fields(validate_build_config(
                BuildMethod::Docker,
                Some("r.io/a:1"),
                &cfg
            )),
            ["config.platforms"]
        );
        let bad = MethodConfig {
            platforms: vec!["linux".into(), "Linux/amd64".into()],
            ..Default::default()
        };
        assert_eq!(
            fields(validate_build_config(
                BuildMethod::Buildx,
                Some("r.io/a:1"),
                &bad
            )),
            ["config.platforms[0]", "config.platforms[1]"]
        );
    }

    #[test]
    fn build_args_and_target() {
        let mut cfg = MethodConfig::default();
        cfg.build_args.insert("1BAD".into(), "x".into());
        cfg.target = Some("-x".into());
        assert_eq!(
            fields(validate_build_config(
                BuildMethod::Docker,
                Some("r.io/a:1"),
                &cfg
            )),
            ["config.build_args.1BAD", "config.target"]
        );
    }

    proptest! {
        #[test]
        fn valid_platforms_pass(os in "[a-z]{2,8}", arch in "[a-z0-9_]{2,8}", variant in prop::option::of("v[0-9]")) {
            let p = match variant { Some(v) => format!("{os}/{arch}/{v}"), None => format!("{os}/{arch}") };
            prop_assert!(check_platform(&p).is_ok());
        }

        #[test]
        fn paths_with_dotdot_are_rejected(a in "[a-z]{1,5}", b in "[a-z]{1,5}") {
            let escaped = format!("{a}/../{b}");
            prop_assert!(check_relative_path(&escaped).is_err());
            let absolute = format!("/{a}");
            prop_assert!(check_relative_path(&absolute).is_err());
            let inside = format!("{a}/{b}");
            prop_assert!(check_relative_path(&inside).is_ok());
        }
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;

    /// Every rule reports, in the order the API has always listed them.
    #[test]
    fn build_config_violations_keep_their_order() {
        let config = MethodConfig {
            dockerfile: Some("../Dockerfile".into()),
            context: Some("/abs".into()),
            platforms: vec!["linux/amd64".into(), "bad".into()],
            build_args: [("1x".to_string(), String::new())].into(),
            packer_vars: [("2y".to_string(), String::new())].into(),
            labels: [("a b".to_string(), String::new())].into(),
            target: Some("-stage".into()),
            cache_repo: Some("r.io/app:tag".into()),
            metadata: [("registry_repo".to_string(), serde_json::json!(5))]
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let fields: Vec<String> = validate_build_config(BuildMethod::Docker, None, &config)
            .unwrap_err()
            .into_vec()
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(
            fields,
            [
                "config.metadata.registry_repo",
                "image",
                "config.dockerfile",
                "config.context",
                "config.platforms",
                "config.packer_vars",
                "config.platforms[1]",
                "config.build_args.1x",
                "config.packer_vars.2y",
                "config.labels.a b",
                "config.target",
                "config.cache_repo",
            ]
        );
    }
}
