//! Property tests for the pure parsers and validators: no panic on arbitrary
//! input, acceptance of what the OpenAPI document's patterns allow, and
//! round trips through `Display`. Cases are bounded so the file runs in a
//! few seconds on 2 cores.

use imagefactory_domain::image::is_host_port;
use imagefactory_domain::provider::{
    KubernetesConfig, ProviderConfig, ProviderOwner, Quantity, validate_provider_config,
};
use imagefactory_domain::{
    AddressPolicy, BuildMethod, GitRef, GitUrl, ImageRef, MethodConfig, ProviderType, ResourceName,
    validate_build_config,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// The patterns as `crates/api` documents them (anchors dropped: proptest
/// generates whole strings). Kept in step by `documented_patterns_are_current`.
const GIT_REF_PATTERN: &str = r"[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*(/[A-Za-z0-9_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*)*";
const IMAGE_PATTERN: &str = r"([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?|[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])|localhost)/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?";
const REGISTRY_HOST_PATTERN: &str = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?";
const GIT_URL_PATTERN: &str = r"((https?|ssh|git)://([A-Za-z0-9_][A-Za-z0-9._-]*@)?[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?/[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*|file:///[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*|[A-Za-z0-9_][A-Za-z0-9._-]*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*:[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*(/[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*)*)";
const NAME_PATTERN: &str = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?";

/// A bounded sub-language of a documented pattern: unbounded repetitions
/// (`*`, `+`) become short ones, so generated strings stay small and fast.
fn bounded(pattern: &str) -> proptest::string::RegexGeneratorStrategy<String> {
    let bounded = pattern.replace('*', "{0,3}").replace('+', "{1,3}");
    proptest::string::string_regex(&bounded).expect("a valid pattern")
}

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

/// Hostile text: any unicode (incl. NUL and control characters), biased
/// towards the characters the parsers split on.
fn text() -> impl Strategy<Value = String> + Clone {
    prop_oneof![
        ".{0,80}",
        "[\\x00-\\x1f\\x7f a-zA-Z0-9@:/._~^?*\\[\\\\{}-]{0,80}",
        "(https?://|ssh://|git@|file://|-)?[a-z0-9@:/.\\-]{0,60}",
    ]
}

/// Arbitrary JSON values of bounded depth and size.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Object keys: mostly ones the config parsers know, so values reach them.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "auth_method", "endpoint", "token", "client_cert", "client_key", "kubeconfig",
            "kubeconfig_path", "ca_cert", "insecure_skip_tls_verify", "namespace",
            "storage_class", "service_account", "retention", "keep_last", "builder_images",
            "resources", "dockerfile", "context", "build_args", "platforms", "target", "cache",
            "cache_repo", "labels", "packer_template", "packer_vars", "metadata",
            "registry_repo", "tasks_namespace", "max_concurrent_builds",
        ]).prop_map(str::to_owned),
        1 => "[a-z_]{1,12}",
    ]
}

/// A provider config object with known keys and hostile values.
fn provider_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(key(), json(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

/// A kubeconfig document: YAML-shaped text with hostile scalars, or any text.
fn kubeconfig_text() -> impl Strategy<Value = String> {
    let scalar = text().prop_map(|s| serde_json::to_string(&s).unwrap());
    prop_oneof![
        text(),
        (scalar.clone(), scalar.clone(), scalar.clone(), scalar).prop_map(|(server, token, ctx, extra)| format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    {extra}: 1\nusers:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: {ctx}\n"
        )),
        ".{0,20}(\n  ?-? ?[a-z-]{0,10}: ?[&*!|>\\[\\]{}%@`'\"a-z0-9]{0,10}){0,12}",
    ]
}

fn owner() -> impl Strategy<Value = ProviderOwner> {
    prop::sample::select(vec![ProviderOwner::Global, ProviderOwner::Tenant])
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn text_parsers_never_panic(s in text()) {
        let _ = GitUrl::parse(&s);
        let _ = GitRef::parse(&s);
        let _ = ImageRef::parse(&s);
        let _ = ImageRef::parse_repository(&s);
        let _ = ResourceName::parse(&s);
        let _ = Quantity::parse(&s);
        let _ = is_host_port(&s);
    }

    /// Whatever a parser accepts displays as text it accepts again, equal.
    #[test]
    fn accepted_values_round_trip_through_display(s in text()) {
        if let Ok(url) = GitUrl::parse(&s) {
            prop_assert_eq!(GitUrl::parse(&url.to_string()), Ok(url));
        }
        if let Ok(r) = GitRef::parse(&s) {
            prop_assert_eq!(r.to_string(), s.clone());
        }
        if let Ok(image) = ImageRef::parse(&s) {
            prop_assert_eq!(ImageRef::parse(&image.to_string()), Ok(image));
        }
        if let Ok(name) = ResourceName::parse(&s) {
            prop_assert_eq!(ResourceName::parse(&name.to_string()), Ok(name));
        }
        if let Ok(q) = Quantity::parse(&s) {
            prop_assert_eq!(Quantity::parse(&q.to_string()), Ok(q));
        }
    }

    #[test]
    fn provider_configs_never_panic(config in prop_oneof![json(), provider_object()], owner in owner()) {
        for provider_type in ProviderType::ALL {
            let policy = AddressPolicy::new(false);
            let _ = validate_provider_config(*provider_type, &config, owner, &policy);
            let _ = ProviderConfig::parse(*provider_type, &config, owner, Some(&policy));
            let _ = ProviderConfig::parse(*provider_type, &config, owner, None);
        }
        let _ = imagefactory_domain::provider::is_usable_kubernetes_config(&config);
    }

    #[test]
    fn kubeconfigs_never_panic(text in kubeconfig_text(), owner in owner()) {
        let config = serde_json::json!({"auth_method": "kubeconfig", "kubeconfig": text});
        let policy = AddressPolicy::new(false);
        let _ = KubernetesConfig::parse(&config, owner, Some(&policy));
        let _ = KubernetesConfig::parse(&config, owner, None);
    }

    #[test]
    fn method_configs_never_panic(config in prop_oneof![json(), provider_object()], image in prop::option::of(text())) {
        // Configs the API would deserialize; the rest it refuses earlier.
        if let Ok(config) = serde_json::from_value::<MethodConfig>(config) {
            for method in BuildMethod::ALL {
                let _ = validate_build_config(*method, image.as_deref(), &config);
            }
        }
    }

    /// The documented git ref pattern is looser than git's rules in one
    /// place a regular expression cannot say simply: a ref ending `.lock` is
    /// refused (git reserves it for its lock files). Everything else the
    /// pattern allows, the parser takes unchanged.
    #[test]
    fn refs_matching_the_documented_pattern_are_accepted(s in bounded(GIT_REF_PATTERN)) {
        prop_assume!(s.len() <= 255 && !s.ends_with(".lock"));
        let parsed = GitRef::parse(&s);
        prop_assert!(parsed.is_ok(), "{:?}: {:?}", s, parsed);
        let parsed = parsed.unwrap();
        prop_assert_eq!(parsed.as_str(), s.as_str());
    }

    /// The image pattern cannot state the DNS limit of 253 characters on
    /// the registry host inside the 512-character reference, so a longer
    /// host matches but is refused (see `overlong_registry_hosts_are_refused`).
    #[test]
    fn images_matching_the_documented_pattern_are_accepted(s in bounded(IMAGE_PATTERN)) {
        prop_assume!(s.len() <= 512 && s.split('/').next().is_some_and(|r| r.len() <= 253));
        let parsed = ImageRef::parse(&s);
        prop_assert!(parsed.is_ok(), "{:?}: {:?}", s, parsed);
        prop_assert_eq!(parsed.unwrap().to_string(), s);
    }

    #[test]
    fn registry_hosts_matching_the_documented_pattern_are_accepted(s in bounded(REGISTRY_HOST_PATTERN)) {
        prop_assume!(s.len() <= 253);
        prop_assert!(is_host_port(&s), "{:?}", s);
    }

    #[test]
    fn git_urls_matching_the_documented_pattern_are_accepted(s in bounded(GIT_URL_PATTERN)) {
        prop_assume!(s.len() <= 2048);
        prop_assert_eq!(GitUrl::parse(&s).map(|u| u.to_string()), Ok(s));
    }

    #[test]
    fn names_matching_the_documented_pattern_are_accepted(s in NAME_PATTERN) {
        prop_assert_eq!(ResourceName::parse(&s).map(|n| n.to_string()), Ok(s));
    }
}

/// The copies above must match what the API documents, or the properties
/// prove nothing about the document.
#[test]
fn documented_patterns_are_current() {
    let api = concat!(
        include_str!("../../api/src/routes/builds.rs"),
        include_str!("../../api/src/routes/registry_credentials.rs"),
        include_str!("../../api/src/routes/projects.rs"),
    );
    for pattern in [
        GIT_REF_PATTERN,
        GIT_URL_PATTERN,
        IMAGE_PATTERN,
        REGISTRY_HOST_PATTERN,
        NAME_PATTERN,
    ] {
        let documented = format!("pattern = r\"^{pattern}$\"");
        assert!(api.contains(&documented), "not documented: {documented}");
    }
}

/// `.lock` is the one documented-pattern case the parser refuses, on purpose.
#[test]
fn refs_ending_dot_lock_are_the_stated_exception() {
    assert!(GitRef::parse("release.lock").is_err());
    assert!(GitRef::parse("release.lock/x").is_ok());
}

/// Found by generating from the unbounded image pattern: a 300-character
/// registry host matches it, and the parser refuses it by the DNS limit.
#[test]
fn overlong_registry_hosts_are_refused() {
    let host = format!("{}.io", "a.".repeat(150));
    let image = format!("{host}/app:1");
    assert!(image.len() <= 512 && host.len() > 253);
    assert!(matches!(
        ImageRef::parse(&image),
        Err(imagefactory_domain::image::ImageRefError::BadRegistry(_))
    ));
}
