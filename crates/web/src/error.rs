//! What a page answers when something failed: the API's own problem (its
//! status and `detail`, so the cause reaches the user), a refused write, or
//! a session the API no longer accepts (back to sign-in, cookie cleared).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::render;
use crate::session;

#[derive(Debug)]
pub enum WebError {
    /// The API refused or failed; `detail` is its problem's text.
    Api { status: StatusCode, detail: String },
    /// A write without a valid CSRF token or from another origin.
    Forbidden(String),
    /// The token is no longer valid (revoked, expired, wrong).
    SignedOut,
    /// The dashboard itself failed (template, API answer it cannot read).
    Internal(String),
}

impl WebError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Api { status, .. } => *status,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::SignedOut => StatusCode::UNAUTHORIZED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            Self::Api { detail, .. } | Self::Forbidden(detail) | Self::Internal(detail) => detail,
            Self::SignedOut => "signed out",
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        if let Self::SignedOut = self {
            // See-other to the sign-in page, dropping the cookie it carried.
            return (
                StatusCode::SEE_OTHER,
                [
                    (header::LOCATION, "/sign-in?expired=1".to_owned()),
                    (header::SET_COOKIE, session::clear_cookie(false)),
                ],
            )
                .into_response();
        }
        if let Self::Internal(cause) = &self {
            tracing::error!(error = %cause, "dashboard page failed");
        }
        let status = self.status();
        let ctx = json!({
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.detail(),
        });
        match render::html("error.html", ctx) {
            Ok(html) => (status, html).into_response(),
            Err(_) => (status, self.detail().to_owned()).into_response(),
        }
    }
}
