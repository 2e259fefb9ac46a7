//! One build: state timeline, artifacts, cancel and retry, and the live log
//! (the script follows `/builds/{id}/log-events` and refreshes the summary).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::{Write, encode, with_base};
use crate::WebState;
use crate::error::WebError;
use crate::render;
use crate::session::Session;

const TERMINAL: &[&str] = &["succeeded", "failed", "cancelled", "timed_out"];
const RETRYABLE: &[&str] = &["failed", "cancelled", "timed_out"];

/// The build's moves in order: submitted, each attempt's start and end, a
/// cancel request, the end.
pub fn timeline(build: &Value, executions: &[Value]) -> Vec<Value> {
    let mut events =
        vec![json!({"at": build["created_at"], "label": "Submitted", "detail": "queued"})];
    for e in executions {
        let attempt = &e["attempt"];
        events.push(json!({
            "at": e["started_at"],
            "label": format!("Attempt {attempt} started"),
            "detail": format!("executor {}", e["executor"].as_str().unwrap_or("?")),
        }));
        if !e["finished_at"].is_null() {
            events.push(json!({
                "at": e["finished_at"],
                "label": format!("Attempt {attempt} {}", e["status"].as_str().unwrap_or("ended")),
                "detail": e["message"],
            }));
        }
    }
    if !build["cancel_requested_at"].is_null() {
        events.push(json!({"at": build["cancel_requested_at"], "label": "Cancel requested", "detail": null}));
    }
    if !build["finished_at"].is_null() {
        events.push(json!({
            "at": build["finished_at"],
            "label": format!("Build {}", build["status"].as_str().unwrap_or("ended")),
            "detail": build["error_message"],
        }));
    }
    // In time order (a cancel request lands before the attempt it ends);
    // the sort is stable, so equal times keep the order above.
    events.sort_by_key(|e| time_key(e["at"].as_str().unwrap_or("")));
    events
}

/// An RFC 3339 UTC time (`...T12:00:00.5Z`, fraction of any length) as a
/// string that sorts in time order: the fraction padded to 9 digits.
fn time_key(at: &str) -> String {
    let at = at.trim_end_matches('Z');
    let (whole, fraction) = at.split_once('.').unwrap_or((at, ""));
    format!("{whole}.{fraction:0<9}")
}

/// Everything the page and its summary show.
async fn load(session: &Session, state: &WebState, id: &str) -> Result<Value, WebError> {
    let base = format!("/builds/{}", encode(id));
    let build = session.get(state, &base).await?;
    let executions = session
        .get(state, &format!("{base}/executions?limit=100"))
        .await?;
    let artifacts = session
        .get(state, &format!("{base}/artifacts?limit=100"))
        .await?;
    let project = match build["project_id"].as_str() {
        Some(p) => session.get(state, &format!("/projects/{p}")).await.ok(),
        None => None,
    };
    let status = build["status"].as_str().unwrap_or("");
    let items = executions["items"].as_array().cloned().unwrap_or_default();
    Ok(json!({
        "title": format!("Build {}", build["id"].as_str().unwrap_or(id)),
        "timeline": timeline(&build, &items),
        "artifacts": artifacts["items"],
        "project_name": project.as_ref().map(|p| p["name"].clone()),
        "terminal": TERMINAL.contains(&status),
        "can_cancel": !TERMINAL.contains(&status),
        "can_retry": RETRYABLE.contains(&status),
        "build": build,
    }))
}

pub async fn page(
    session: Session,
    State(state): State<WebState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    show(&session, &state, &id, "build.html").await
}

/// Status, timeline, artifacts and actions, for the page's refresh.
pub async fn summary(
    session: Session,
    State(state): State<WebState>,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    show(&session, &state, &id, "build_summary.html").await
}

async fn show(
    session: &Session,
    state: &WebState,
    id: &str,
    template: &str,
) -> Result<Response, WebError> {
    let ctx = load(session, state, id).await?;
    Ok(render::html(template, with_base(session, "builds", ctx))?.into_response())
}

pub async fn cancel(
    State(state): State<WebState>,
    Path(id): Path<String>,
    Write(session): Write,
) -> Result<Response, WebError> {
    act(&session, &state, &id, "cancel").await
}

pub async fn retry(
    State(state): State<WebState>,
    Path(id): Path<String>,
    Write(session): Write,
) -> Result<Response, WebError> {
    act(&session, &state, &id, "retry").await
}

/// A checked write, then back to the build's page (post/redirect/get).
async fn act(
    session: &Session,
    state: &WebState,
    id: &str,
    action: &str,
) -> Result<Response, WebError> {
    let path = format!("/builds/{}", encode(id));
    session.post(state, &format!("{path}/{action}")).await?;
    Ok(Redirect::to(&path).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_lists_the_moves_in_order() {
        let t = |s: &str| format!("2026-12-06T05:00:{s}Z");
        let build = json!({"created_at": t("00"), "status": "cancelled", "cancel_requested_at": t("05.5"),
                           "finished_at": t("06"), "error_message": "cancelled by user"});
        let executions = vec![
            json!({"attempt": 1, "executor": "tekton", "started_at": t("01.123456"), "finished_at": t("02"),
                   "status": "failed", "message": "pod evicted"}),
            // Finished after the cancel request that ended it.
            json!({"attempt": 2, "executor": "tekton", "started_at": t("03"), "finished_at": t("05.75"),
                   "status": "cancelled"}),
        ];
        let labels: Vec<String> = timeline(&build, &executions)
            .iter()
            .map(|e| e["label"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            labels,
            [
                "Submitted",
                "Attempt 1 started",
                "Attempt 1 failed",
                "Attempt 2 started",
                "Cancel requested",
                "Attempt 2 cancelled",
                "Build cancelled"
            ]
        );
    }
}
