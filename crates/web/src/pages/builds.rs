//! The builds list, filtered by project and status; its table body is
//! fetched again every few seconds by the page's script (live status).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use imagefactory_domain::BuildStatus;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{encode, with_base};
use crate::WebState;
use crate::error::WebError;
use crate::render;
use crate::session::Session;

/// Builds a page shows (the API's largest page).
const SHOWN: u32 = 100;

#[derive(Deserialize, Default)]
pub struct Filter {
    #[serde(default)]
    project_id: String,
    #[serde(default)]
    status: String,
}

impl Filter {
    /// The filter as a query string (also the rows URL's), empty parts left out.
    fn query(&self) -> String {
        let mut parts = Vec::new();
        if !self.project_id.is_empty() {
            parts.push(format!("project_id={}", encode(&self.project_id)));
        }
        if !self.status.is_empty() {
            parts.push(format!("status={}", encode(&self.status)));
        }
        parts.join("&")
    }
}

/// The filtered builds, each with its project's name.
async fn rows_of(session: &Session, state: &WebState, filter: &Filter) -> Result<Value, WebError> {
    let projects = session.get(state, "/projects?limit=100").await?;
    let names: HashMap<&str, &str> = projects["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?)))
        .collect();
    let query = filter.query();
    let path = format!(
        "/builds?limit={SHOWN}{}{query}",
        if query.is_empty() { "" } else { "&" }
    );
    let mut builds = session.get(state, &path).await?;
    if let Some(items) = builds["items"].as_array_mut() {
        for b in items {
            let name = b["project_id"]
                .as_str()
                .and_then(|id| names.get(id))
                .copied();
            b["project_name"] = json!(name);
        }
    }
    Ok(json!({"builds": builds["items"], "projects": projects["items"]}))
}

pub async fn list(
    session: Session,
    State(state): State<WebState>,
    Query(filter): Query<Filter>,
) -> Result<Response, WebError> {
    if session.admin {
        return Ok(Redirect::to("/admin/tenants").into_response());
    }
    let data = rows_of(&session, &state, &filter).await?;
    let statuses: Vec<&str> = BuildStatus::ALL.iter().map(|s| s.as_str()).collect();
    let ctx = json!({
        "title": "Builds",
        "builds": data["builds"],
        "projects": data["projects"],
        "statuses": statuses,
        "filter": {"project_id": filter.project_id, "status": filter.status},
        "rows_url": format!("/builds/rows?{}", filter.query()),
    });
    Ok(render::html("builds.html", with_base(&session, "builds", ctx))?.into_response())
}

/// The table body alone, for the page's periodic refresh.
pub async fn rows(
    session: Session,
    State(state): State<WebState>,
    Query(filter): Query<Filter>,
) -> Result<Response, WebError> {
    let data = rows_of(&session, &state, &filter).await?;
    Ok(render::html("build_rows.html", json!({"builds": data["builds"]}))?.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_query_leaves_out_empty_parts_and_encodes() {
        let f = Filter {
            project_id: String::new(),
            status: "running".into(),
        };
        assert_eq!(f.query(), "status=running");
        let f = Filter {
            project_id: "a&b".into(),
            status: String::new(),
        };
        assert_eq!(f.query(), "project_id=a%26b");
        assert_eq!(Filter::default().query(), "");
    }
}
