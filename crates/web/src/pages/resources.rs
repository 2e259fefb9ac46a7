//! Projects, providers (with their readiness: status, Tekton, and an
//! on-demand connection test), and the admin's tenants and dispatchers.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::{Write, encode, with_base};
use crate::WebState;
use crate::error::WebError;
use crate::render;
use crate::session::Session;

pub async fn projects(
    session: Session,
    State(state): State<WebState>,
) -> Result<Response, WebError> {
    if session.admin {
        return Ok(Redirect::to("/admin/tenants").into_response());
    }
    let projects = session.get(&state, "/projects?limit=100").await?;
    let ctx = json!({"title": "Projects", "projects": projects["items"]});
    Ok(render::html("projects.html", with_base(&session, "projects", ctx))?.into_response())
}

/// The providers the session sees: the tenant's own and the global ones
/// usable by it, or (the admin) the global ones.
fn providers_path(session: &Session) -> &'static str {
    if session.admin {
        "/admin/providers?limit=100"
    } else {
        "/providers?limit=100"
    }
}

async fn providers_page(
    session: &Session,
    state: &WebState,
    report: Option<(String, Value)>,
) -> Result<Response, WebError> {
    let providers = session.get(state, providers_path(session)).await?;
    let (tested, report) = report.unzip();
    let ctx = json!({
        "title": "Providers",
        "providers": providers["items"],
        "tested": tested,
        "report": report,
    });
    Ok(render::html("providers.html", with_base(session, "providers", ctx))?.into_response())
}

pub async fn providers(
    session: Session,
    State(state): State<WebState>,
) -> Result<Response, WebError> {
    providers_page(&session, &state, None).await
}

/// Runs the API's connection test and shows its report beside the provider.
pub async fn test_provider(
    State(state): State<WebState>,
    Path(id): Path<String>,
    Write(session): Write,
) -> Result<Response, WebError> {
    let prefix = if session.admin { "/admin" } else { "" };
    let path = format!("{prefix}/providers/{}/test-connection", encode(&id));
    let report = session.post(&state, &path).await?;
    providers_page(&session, &state, Some((id, report))).await
}

fn admin_only(session: &Session) -> Result<(), WebError> {
    if session.admin {
        Ok(())
    } else {
        Err(WebError::Api {
            status: axum::http::StatusCode::FORBIDDEN,
            detail: "this page is the platform admin's; sign in with the admin token".into(),
        })
    }
}

pub async fn tenants(
    session: Session,
    State(state): State<WebState>,
) -> Result<Response, WebError> {
    admin_only(&session)?;
    let tenants = session.get(&state, "/tenants?limit=100").await?;
    let ctx = json!({"title": "Tenants", "tenants": tenants["items"]});
    Ok(render::html("tenants.html", with_base(&session, "tenants", ctx))?.into_response())
}

pub async fn dispatchers(
    session: Session,
    State(state): State<WebState>,
) -> Result<Response, WebError> {
    admin_only(&session)?;
    let overview = session.get(&state, "/admin/dispatchers").await?;
    let ctx = json!({
        "title": "Dispatchers",
        "dispatchers": overview["dispatchers"],
        "queue": overview["queue"],
        "stale_after_seconds": overview["stale_after_seconds"],
    });
    Ok(render::html("dispatchers.html", with_base(&session, "dispatchers", ctx))?.into_response())
}
