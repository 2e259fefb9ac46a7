//! The page templates, embedded in the binary and compiled once. HTML
//! autoescaping is on (templates end in `.html`), so tenant data such as
//! project names and log lines is always text, never markup.

use std::sync::LazyLock;

use axum::response::Html;
use minijinja::Environment;
use serde::Serialize;

use crate::error::WebError;

const TEMPLATES: &[(&str, &str)] = &[
    ("layout.html", include_str!("../templates/layout.html")),
    ("sign_in.html", include_str!("../templates/sign_in.html")),
    ("error.html", include_str!("../templates/error.html")),
    ("builds.html", include_str!("../templates/builds.html")),
    (
        "build_rows.html",
        include_str!("../templates/build_rows.html"),
    ),
    ("build.html", include_str!("../templates/build.html")),
    (
        "build_summary.html",
        include_str!("../templates/build_summary.html"),
    ),
    ("projects.html", include_str!("../templates/projects.html")),
    (
        "providers.html",
        include_str!("../templates/providers.html"),
    ),
    ("tenants.html", include_str!("../templates/tenants.html")),
    (
        "dispatchers.html",
        include_str!("../templates/dispatchers.html"),
    ),
];

static ENV: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    for (name, source) in TEMPLATES {
        env.add_template(name, source)
            .unwrap_or_else(|e| panic!("embedded template {name}: {e}"));
    }
    env
});

/// Render template `name` with `ctx`.
pub fn html(name: &str, ctx: impl Serialize) -> Result<Html<String>, WebError> {
    ENV.get_template(name)
        .and_then(|t| t.render(ctx))
        .map(Html)
        .map_err(|e| WebError::Internal(format!("template {name}: {e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_compiles_and_escapes_tenant_text() {
        LazyLock::force(&ENV);
        let page = html(
            "error.html",
            serde_json::json!({"title": "t", "status": 400, "detail": "<script>x</script>"}),
        )
        .unwrap()
        .0;
        assert!(page.contains("&lt;script&gt;x"), "{page}");
        assert!(!page.contains("<script>x"));
    }
}
