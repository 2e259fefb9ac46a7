//! `GET /builds/{id}/log-events`: the build's log as Server-Sent Events for
//! the build page: the API's follow stream with `format=json` (each line's
//! `source`, `task/step`, so the page groups lines by task and step), passed
//! through as it comes, with the API's order, resume (`Last-Event-ID`, which
//! the browser's EventSource sends when it reconnects) and per-token limit.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::WebState;
use crate::error::WebError;
use crate::pages::encode;
use crate::session::Session;

pub async fn follow(
    session: Session,
    State(state): State<WebState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let path = format!("/builds/{}/logs?follow=true&format=json", encode(&id));
    session
        .stream(&state, &path, headers.get("last-event-id"))
        .await
}
