//! The API, called in process as the signed-in token: pages get exactly
//! what `/api/v1` would answer that token (tenant scoping, roles, validation
//! and their messages), without a network hop. The client's address goes
//! along so the API's auth throttle counts this browser.

use axum::body::{Body, to_bytes};
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use tower::ServiceExt;

use crate::WebState;
use crate::error::WebError;
use crate::session::Session;

/// Largest API answer a page reads (a page of builds is far smaller).
const ANSWER_LIMIT: usize = 8 * 1024 * 1024;

impl Session {
    pub async fn get(&self, state: &WebState, path: &str) -> Result<Value, WebError> {
        self.call(state, Method::GET, path).await
    }

    pub async fn post(&self, state: &WebState, path: &str) -> Result<Value, WebError> {
        self.call(state, Method::POST, path).await
    }

    /// A streamed answer (the log's event stream) passed on as it comes;
    /// `last_event_id` resumes it where the browser's connection dropped.
    pub async fn stream(
        &self,
        state: &WebState,
        path: &str,
        last_event_id: Option<&HeaderValue>,
    ) -> Result<Response, WebError> {
        let response = self.send(state, Method::GET, path, last_event_id).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        self.read(response)
            .await
            .and(Err(WebError::Internal(format!(
                "the API answered {status} to a log stream"
            ))))
    }

    async fn send(
        &self,
        state: &WebState,
        method: Method,
        path: &str,
        last_event_id: Option<&HeaderValue>,
    ) -> Result<Response, WebError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("/api/v1{path}"))
            .header(header::AUTHORIZATION, self.bearer());
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let mut request = request
            .body(Body::empty())
            .map_err(|e| WebError::Internal(format!("building the API request: {e}")))?;
        if let Some(peer) = self.peer {
            request.extensions_mut().insert(peer);
        }
        match state.api.clone().oneshot(request).await {
            Ok(r) => Ok(r),
            Err(never) => match never {},
        }
    }

    /// `path` is below `/api/v1`; its query must already be encoded.
    async fn call(&self, state: &WebState, method: Method, path: &str) -> Result<Value, WebError> {
        let response = self.send(state, method, path, None).await?;
        self.read(response).await
    }

    async fn read(&self, response: Response) -> Result<Value, WebError> {
        let status = response.status();
        let body = to_bytes(response.into_body(), ANSWER_LIMIT)
            .await
            .map_err(|e| WebError::Internal(format!("reading the API answer: {e}")))?;
        answer(status, &body)
    }
}

/// The JSON of a success (`null` when empty), or the problem as an error.
fn answer(status: StatusCode, body: &[u8]) -> Result<Value, WebError> {
    if status == StatusCode::UNAUTHORIZED {
        return Err(WebError::SignedOut);
    }
    let value: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| {
            WebError::Internal(format!(
                "the API answered {status} with unreadable JSON: {e}"
            ))
        })?
    };
    if status.is_success() {
        return Ok(value);
    }
    Err(WebError::Api {
        status,
        detail: problem_text(&value, status),
    })
}

/// A problem's `detail` (the API names the offending field in it).
fn problem_text(problem: &Value, status: StatusCode) -> String {
    problem["detail"]
        .as_str()
        .or_else(|| problem["title"].as_str())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"))
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn problems_keep_their_detail_and_fields() {
        let body = json!({"detail": "status: unknown status", "errors": [{"field": "status", "message": "unknown status"}]});
        let err = answer(StatusCode::BAD_REQUEST, body.to_string().as_bytes()).unwrap_err();
        match err {
            WebError::Api { status, detail } => {
                assert_eq!(status, StatusCode::BAD_REQUEST);
                assert_eq!(detail, "status: unknown status");
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            answer(StatusCode::UNAUTHORIZED, b"{}"),
            Err(WebError::SignedOut)
        ));
        assert_eq!(answer(StatusCode::ACCEPTED, b"").unwrap(), Value::Null);
    }
}
