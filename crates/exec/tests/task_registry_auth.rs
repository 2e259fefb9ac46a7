//! The shipped Tasks push with the operator's registry Secret however it was
//! made: `kubectl create secret docker-registry` (type
//! `kubernetes.io/dockerconfigjson`, key `.dockerconfigjson`) or a generic
//! Secret with `config.json`. Each Task's push step runs (see `task_runner`)
//! on a `dockerconfig` workspace laid out as the kubelet mounts a Secret,
//! against a real `docker-registry` with htpasswd auth; the Secrets are the
//! bytes the real `kubectl` makes (`--dry-run=client -o json`).
//!
//! docker-build's push step runs the real `buildah`. kaniko, BuildKit and
//! packer are not installable here: their fakes push a small image over the
//! registry API (curl) with the credentials the real tool would use —
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`, the entry of
//! the image's registry — and report its digest the way the tool does.

#[path = "support/local.rs"]
mod support;
mod task_runner;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::Value;
use support::{Registry, have_tools};
use task_runner::*;

#[derive(Clone, Copy, Debug)]
enum SecretKind {
    /// `kubectl create secret docker-registry`: `.dockerconfigjson` only.
    DockerRegistry,
    /// `kubectl create secret generic --from-file=config.json=…`.
    ConfigJson,
    /// A Secret with neither key: the push must be refused (this is what
    /// shows the test can fail).
    Unusable,
}

/// `data` of the Secret the real kubectl makes with `args`, decoded.
fn kubectl_secret(args: &[&str]) -> Vec<(String, Vec<u8>)> {
    let out = Command::new("kubectl")
        .args(["create", "secret"])
        .args(args)
        .args(["--dry-run=client", "-o", "json"])
        .output()
        .expect("kubectl runs");
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret: Value = serde_json::from_slice(&out.stdout).unwrap();
    secret["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap())
                .unwrap();
            (k.clone(), bytes)
        })
        .collect()
}

fn secret(kind: SecretKind, registry: &Registry, scratch: &Path) -> Vec<(String, Vec<u8>)> {
    let server = format!("--docker-server={}", registry.host);
    let user = format!("--docker-username={}", registry.user);
    let password = format!("--docker-password={}", registry.password);
    let made = kubectl_secret(&[
        "docker-registry",
        "docker-config",
        &server,
        &user,
        &password,
    ]);
    match kind {
        SecretKind::DockerRegistry => {
            assert_eq!(
                made.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
                [".dockerconfigjson"]
            );
            made
        }
        SecretKind::ConfigJson => {
            let file = scratch.join("config.json");
            std::fs::write(&file, &made[0].1).unwrap();
            let from = format!("--from-file=config.json={}", file.display());
            kubectl_secret(&["generic", "docker-config", &from])
        }
        SecretKind::Unusable => {
            let file = scratch.join("auth");
            std::fs::write(&file, &made[0].1).unwrap();
            let from = format!("--from-file=auth={}", file.display());
            kubectl_secret(&["generic", "docker-config", &from])
        }
    }
}

fn task_spec(task: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tekton/tasks")
        .join(format!("{task}.yaml"));
    let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["spec"].clone()
}

/// `registry_push REF`: push a small OCI image to REF with the credentials
/// of `$DOCKER_CONFIG/config.json` (as kaniko, BuildKit and packer's docker
/// post-processor find them) and print its manifest digest.
const REGISTRY_PUSH: &str = r#"
registry_push() {
  ref=$1; host=${ref%%/*}; rest=${ref#*/}; repo=${rest%:*}; tag=${rest##*:}
  cfg=${DOCKER_CONFIG:-$HOME/.docker}/config.json
  auth=''
  if [ -f "$cfg" ]; then
    auth=$(tr -d '\n\t ' < "$cfg" | sed -n "s/.*\"$host\":{[^}]*\"auth\":\"\([^\"]*\)\".*/\1/p")
  fi
  t=$(mktemp -d)
  printf '%s' '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' > "$t/config"
  d=sha256:$(sha256sum < "$t/config" | cut -d' ' -f1)
  size=$(wc -c < "$t/config" | tr -d ' ')
  loc=$(curl -fsS -D - -o /dev/null -X POST -H "Authorization: Basic $auth" "http://$host/v2/$repo/blobs/uploads/" \
    | tr -d '\r' | sed -n 's/^[Ll]ocation: *//p')
  [ -n "$loc" ] || return 1
  case $loc in /*) loc=http://$host$loc ;; esac
  curl -fsS -o /dev/null -X PUT -H "Authorization: Basic $auth" -H 'Content-Type: application/octet-stream' \
    --data-binary "@$t/config" "$loc&digest=$d" || return 1
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[]}' "$d" "$size" > "$t/manifest"
  curl -fsS -o /dev/null -X PUT -H "Authorization: Basic $auth" -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' \
    --data-binary "@$t/manifest" "http://$host/v2/$repo/manifests/$tag" || return 1
  printf 'sha256:%s' "$(sha256sum < "$t/manifest" | cut -d' ' -f1)"
}
"#;

/// Replace the argument-recording fakes with pushing ones.
fn install_pushing_fakes(run: &Run) {
    let fakes = [
        (
            "kaniko-executor",
            r#"for a in "$@"; do
  case $a in --destination=*) dest=${a#--destination=} ;; --digest-file=*) out=${a#--digest-file=} ;; esac
done
digest=$(registry_push "$dest") || exit 1
printf '%s' "$digest" > "$out"
"#,
        ),
        (
            "buildctl-daemonless.sh",
            r#"prev=''
for a in "$@"; do
  [ "$prev" = --output ] && dest=$(printf '%s' "$a" | sed -n 's/.*name=\([^,]*\).*/\1/p')
  [ "$prev" = --metadata-file ] && out=$a
  prev=$a
done
digest=$(registry_push "$dest") || exit 1
printf '{"containerimage.digest": "%s"}' "$digest" > "$out"
"#,
        ),
        (
            "packer",
            r#"[ "$1" = build ] || exit 0
prev=''
for a in "$@"; do
  [ "$prev" = -var ] && case $a in image=*) dest=${a#image=} ;; esac
  prev=$a
done
digest=$(registry_push "$dest") || exit 1
echo "1,,ui,say,pushed $digest"
"#,
        ),
    ];
    for (name, body) in fakes {
        let text = format!("#!/bin/sh\nset -u\n{REGISTRY_PUSH}\n{body}");
        std::fs::write(run.path("bin").join(name), text).unwrap();
    }
}

/// The digest the registry serves for `repo:tag`, or None if nothing is there.
async fn pushed(registry: &Registry, repo: &str, tag: &str) -> Option<String> {
    let response = reqwest::Client::new()
        .head(format!("http://{}/v2/{repo}/manifests/{tag}", registry.host))
        .basic_auth(&registry.user, Some(&registry.password))
        .header(
            "Accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    if response.status() == 404 {
        return None;
    }
    assert_eq!(response.status(), 200, "{repo}:{tag}");
    Some(
        response.headers()["docker-content-digest"]
            .to_str()
            .unwrap()
            .to_owned(),
    )
}

const KINDS: [SecretKind; 3] = [
    SecretKind::DockerRegistry,
    SecretKind::ConfigJson,
    SecretKind::Unusable,
];

/// Runs `step` of `task` for each Secret kind and shell; `prepare` readies
/// the run (fakes or real tool storage) for the image it will push.
async fn check_task(task: &str, step: &str, prepare: impl Fn(&mut Run, &str)) {
    let registry = Registry::start();
    let spec = task_spec(task);
    for (i, kind) in KINDS.into_iter().enumerate() {
        for shell in shells() {
            let mut run = Run::new(shell);
            let tag = format!("{i}-{shell:?}").to_lowercase();
            let image = format!("{}/team/{task}:{tag}", registry.host);
            prepare(&mut run, &image);
            let keys = secret(kind, &registry, &run.path("tmp"));
            let keys: Vec<(&str, &[u8])> = keys
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            run.secret_workspace("dockerconfig", &keys);
            let mut params = BTreeMap::from([("IMAGE", s(&image))]);
            if task == "packer" {
                params.insert("TEMPLATE", s("image.pkr.hcl"));
            }
            let code = run.steps(task, &spec, &params, Some(step));
            let in_registry = pushed(&registry, &format!("team/{task}"), &tag).await;
            match kind {
                SecretKind::Unusable => {
                    assert_ne!(
                        code, 0,
                        "{task} {kind:?} {shell:?}: pushed without credentials"
                    );
                    assert_eq!(in_registry, None, "{task} {kind:?} {shell:?}");
                }
                _ => {
                    assert_eq!(code, 0, "{task} {kind:?} {shell:?}: push step failed");
                    let digest = in_registry
                        .unwrap_or_else(|| panic!("{task} {kind:?} {shell:?}: nothing pushed"));
                    assert_eq!(
                        run.result("IMAGE_DIGEST"),
                        digest,
                        "{task} {kind:?} {shell:?}"
                    );
                    assert_eq!(run.result("IMAGE_URL"), image);
                }
            }
        }
    }
}

#[tokio::test]
async fn docker_build_push_step_authenticates_with_either_secret() {
    if !have_tools(
        "docker_build_push",
        &["buildah", "docker-registry", "htpasswd", "kubectl"],
    ) {
        return;
    }
    check_task("docker-build", "push", |run, image| {
        // The real buildah, with its storage and the registry's plain HTTP
        // in the run's directory; the image to push is already built.
        std::fs::remove_file(run.path("bin").join("buildah")).unwrap();
        let root = run.root.display().to_string();
        let storage = run.path("storage.conf");
        std::fs::write(
            &storage,
            format!("[storage]\ndriver = \"vfs\"\ngraphroot = \"{root}/storage\"\nrunroot = \"{root}/runroot\"\n"),
        )
        .unwrap();
        let host = image.split('/').next().unwrap();
        let registries = run.path("registries.conf");
        std::fs::write(
            &registries,
            format!("[[registry]]\nlocation = \"{host}\"\ninsecure = true\n"),
        )
        .unwrap();
        run.env = vec![
            ("CONTAINERS_STORAGE_CONF".into(), storage.display().to_string()),
            ("CONTAINERS_REGISTRIES_CONF".into(), registries.display().to_string()),
        ];
        let buildah = |args: &[&str]| {
            let out = Command::new("buildah")
                .arg("--storage-driver=vfs")
                .args(args)
                .envs(run.env.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap();
            assert!(out.status.success(), "buildah {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8(out.stdout).unwrap().trim().to_owned()
        };
        let container = buildah(&["from", "scratch"]);
        buildah(&["commit", "-q", &container, image]);
    })
    .await;
}

#[tokio::test]
async fn kaniko_push_authenticates_with_either_secret() {
    if !have_tools(
        "kaniko_push",
        &["curl", "docker-registry", "htpasswd", "kubectl"],
    ) {
        return;
    }
    check_task("kaniko", "build-and-push", |run, _| {
        install_pushing_fakes(run)
    })
    .await;
}

#[tokio::test]
async fn buildx_push_authenticates_with_either_secret() {
    if !have_tools(
        "buildx_push",
        &["curl", "docker-registry", "htpasswd", "kubectl"],
    ) {
        return;
    }
    check_task("buildx", "build-and-push", |run, _| {
        install_pushing_fakes(run)
    })
    .await;
}

#[tokio::test]
async fn packer_push_authenticates_with_either_secret() {
    if !have_tools(
        "packer_push",
        &["curl", "docker-registry", "htpasswd", "kubectl"],
    ) {
        return;
    }
    check_task("packer", "build", |run, _| install_pushing_fakes(run)).await;
}
