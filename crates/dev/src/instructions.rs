//! What the demo prints once its build has ended: where the API is, the demo
//! token, and curl commands that work when pasted into a shell (no jq needed).

use serde_json::{Value, json};
use uuid::Uuid;

/// The demo's resources, as created through the API.
#[derive(Debug, Clone)]
pub struct DemoResources {
    /// `http://127.0.0.1:<port>`
    pub base_url: String,
    pub tenant_name: String,
    pub namespace: String,
    pub provider: Uuid,
    pub project: Uuid,
    pub build: Uuid,
    /// The image repository builds push to, e.g. [`DEMO_IMAGE`].
    pub image: String,
    /// With `--real-steps`: the local registry (`127.0.0.1:<port>`).
    pub registry: Option<String>,
}

/// Where simulated builds "push" (nothing is pushed).
pub const DEMO_IMAGE: &str = "registry.example.com/demo/hello";
/// The repository within the registry, also on `--real-steps`' local one.
pub const DEMO_REPOSITORY: &str = "demo/hello";
/// The demo build's tag.
pub const DEMO_TAG: &str = "1.0";

/// The request body of a demo build: a docker build of `image:tag` on the
/// kube-sim provider. Builds without a registry credential push with the
/// namespace's operator `docker-config` Secret, which the demo creates.
pub fn build_request(project: Uuid, provider: Uuid, image: &str, tag: &str) -> Value {
    json!({
        "project_id": project,
        "method": "docker",
        "infrastructure_type": "kubernetes",
        "infrastructure_provider_id": provider,
        "image": format!("{image}:{tag}"),
    })
}

/// Single-quoted for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The closing text: URL, token (labelled as a demo token) and commands.
pub fn render(r: &DemoResources, token: &str, kubeconfig: Option<&str>) -> String {
    let api = format!("{}/api/v1", r.base_url);
    let next_build = build_request(r.project, r.provider, &r.image, "2.0").to_string();
    let mut out = format!(
        "\
Image Factory is serving at {base} (API under {api}, OpenAPI at {api}/openapi.json).

Demo token (tenant admin of tenant {tenant}; a throwaway credential for this demo only):
  {token}

Web dashboard: {base}/ (sign in with the demo token above; a token never goes in a URL)

Try it (paste into a shell):
  API={api_q}
  TOKEN={token_q}
  curl -s -H \"Authorization: Bearer $TOKEN\" \"$API/builds\"
  curl -s -H \"Authorization: Bearer $TOKEN\" \"$API/builds/{build}\"
  curl -s -H \"Authorization: Bearer $TOKEN\" \"$API/builds/{build}/logs\"
  curl -s -H \"Authorization: Bearer $TOKEN\" \"$API/builds/{build}/artifacts\"
  # submit another build, then follow its log (Server-Sent Events) with its id:
  curl -s -H \"Authorization: Bearer $TOKEN\" -H 'Content-Type: application/json' \"$API/builds\" -d {body}
  curl -sN -H \"Authorization: Bearer $TOKEN\" \"$API/builds/BUILD_ID/logs?follow=true\"
  # or submit and follow one live with the command-line client (exits with the build's result):
  IF_URL={base_q} IF_TOKEN=\"$TOKEN\" cargo run -q -p imagefactory -- build submit --project {project} --provider {provider} --method docker --image {next_image} --follow
",
        base = r.base_url,
        tenant = r.tenant_name,
        api_q = sh_quote(&api),
        token_q = sh_quote(token),
        build = r.build,
        body = sh_quote(&next_build),
        base_q = sh_quote(&r.base_url),
        project = r.project,
        provider = r.provider,
        next_image = sh_quote(&format!("{}:2.1", r.image)),
    );
    if let Some(registry) = &r.registry {
        out.push_str(&format!(
            "  # the image the demo build pushed, as the local registry serves it:\n  curl -sI -H {accept} {url}\n",
            accept = sh_quote(&format!("Accept: {}", imagefactory_loopback::registry::MANIFEST_TYPES)),
            url = sh_quote(&format!("http://{registry}/v2/{DEMO_REPOSITORY}/manifests/{DEMO_TAG}")),
        ));
    }
    if let Some(path) = kubeconfig {
        out.push_str(&format!(
            "  # the simulated cluster, with kubectl:\n  KUBECONFIG={} kubectl get pipelineruns,taskruns,pods -n {}\n",
            sh_quote(path),
            r.namespace
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources() -> DemoResources {
        DemoResources {
            base_url: "http://127.0.0.1:8080".into(),
            tenant_name: "demo-1a2b3c4d".into(),
            namespace: "image-factory-01234567".into(),
            provider: Uuid::from_u128(1),
            project: Uuid::from_u128(2),
            build: Uuid::from_u128(3),
            image: DEMO_IMAGE.into(),
            registry: None,
        }
    }

    #[test]
    fn commands_carry_the_url_token_and_ids() {
        let text = render(&resources(), "ifk_demo'tok", None);
        assert!(
            text.contains("API='http://127.0.0.1:8080/api/v1'"),
            "{text}"
        );
        // Quoted so that any character survives the shell.
        assert!(text.contains(r"TOKEN='ifk_demo'\''tok'"), "{text}");
        assert!(text.contains("demo only"), "{text}");
        assert!(
            text.contains("Web dashboard: http://127.0.0.1:8080/ (sign in"),
            "{text}"
        );
        assert!(text.contains(&format!("$API/builds/{}/artifacts", Uuid::from_u128(3))));
        assert!(text.contains("logs?follow=true"));
        assert!(!text.contains("kubectl"), "no kubeconfig, no kubectl hint");
        assert!(
            !text.contains("curl -sI"),
            "no registry, no manifest command"
        );
        let body_line = text
            .lines()
            .find(|l| l.contains("-d '"))
            .expect("a submit command");
        let body = body_line
            .split_once("-d '")
            .unwrap()
            .1
            .trim_end_matches('\'');
        let parsed: Value = serde_json::from_str(body).unwrap();
        assert_eq!(parsed["project_id"], Uuid::from_u128(2).to_string());
        assert_eq!(
            parsed["infrastructure_provider_id"],
            Uuid::from_u128(1).to_string()
        );
        assert_eq!(parsed["image"], "registry.example.com/demo/hello:2.0");
        let follow = text
            .lines()
            .find(|l| l.contains("build submit"))
            .expect("a CLI command");
        assert!(
            follow.starts_with("  IF_URL='http://127.0.0.1:8080' IF_TOKEN=\"$TOKEN\"")
                && follow.contains(&format!("--project {}", Uuid::from_u128(2)))
                && follow.contains(&format!("--provider {}", Uuid::from_u128(1)))
                && follow.ends_with("--follow"),
            "{follow}"
        );
    }

    #[test]
    fn real_steps_commands_use_the_local_registry() {
        let r = DemoResources {
            image: "127.0.0.1:5999/demo/hello".into(),
            registry: Some("127.0.0.1:5999".into()),
            ..resources()
        };
        let text = render(&r, "t", None);
        assert!(
            text.contains(r#""image":"127.0.0.1:5999/demo/hello:2.0""#),
            "{text}"
        );
        assert!(
            text.contains("--image '127.0.0.1:5999/demo/hello:2.1' --follow"),
            "{text}"
        );
        let manifest = text
            .lines()
            .find(|l| l.contains("curl -sI"))
            .expect("a manifest command");
        assert!(
            manifest.ends_with("'http://127.0.0.1:5999/v2/demo/hello/manifests/1.0'"),
            "{manifest}"
        );
        assert!(
            manifest.contains("application/vnd.docker.distribution.manifest.v2+json"),
            "{manifest}"
        );
    }

    #[test]
    fn kubectl_hint_names_the_kubeconfig_and_namespace() {
        let text = render(&resources(), "t", Some("/tmp/kube sim.yaml"));
        assert!(
            text.contains(
                "KUBECONFIG='/tmp/kube sim.yaml' kubectl get pipelineruns,taskruns,pods -n image-factory-01234567"
            ),
            "{text}"
        );
    }
}
