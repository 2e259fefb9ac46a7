//! Page handlers: sign-in and sign-out here, the rest one module per area.

pub mod build;
pub mod builds;
pub mod resources;

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::WebState;
use crate::error::WebError;
use crate::render;
use crate::session::{self, Peer, Session};

/// What every signed-in page's layout needs.
pub fn base(session: &Session, active: &str) -> Value {
    json!({"signed_in": true, "admin": session.admin, "csrf": session.csrf, "active": active})
}

/// Adds `base` to a page's own context.
pub fn with_base(session: &Session, active: &str, mut ctx: Value) -> Value {
    if let (Some(ctx), Value::Object(b)) = (ctx.as_object_mut(), base(session, active)) {
        ctx.extend(b);
    }
    ctx
}

/// `/`: the builds (a tenant), the tenants (the admin), or sign-in.
pub async fn home(session: Option<Session>) -> Redirect {
    match session {
        Some(s) if s.admin => Redirect::to("/admin/tenants"),
        Some(_) => Redirect::to("/builds"),
        None => Redirect::to("/sign-in"),
    }
}

#[derive(Deserialize)]
pub struct SignInQuery {
    expired: Option<String>,
}

pub async fn sign_in_form(Query(q): Query<SignInQuery>) -> Result<Response, WebError> {
    let message = q
        .expired
        .map(|_| "Your session ended (the token is no longer valid). Sign in again.");
    sign_in_page(StatusCode::OK, message)
}

fn sign_in_page(status: StatusCode, error: Option<&str>) -> Result<Response, WebError> {
    let html = render::html(
        "sign_in.html",
        json!({"title": "Sign in", "signed_in": false, "error": error}),
    )?;
    Ok((status, html).into_response())
}

#[derive(Deserialize)]
pub struct SignInForm {
    token: String,
}

/// Checks the token with the API, then keeps it in the session cookie.
pub async fn sign_in(
    State(state): State<WebState>,
    Peer(peer): Peer,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Result<Response, WebError> {
    session::same_origin(&headers).map_err(WebError::Forbidden)?;
    let token = form.token.trim();
    if !session::cookie_safe(token) {
        return sign_in_page(
            StatusCode::BAD_REQUEST,
            Some("token: not an Image Factory token (expected something like ift_…)"),
        );
    }
    let session = Session::new(token, &state, peer);
    if !session.admin {
        match session.get(&state, "/projects?limit=1").await {
            Ok(_) => {}
            Err(WebError::SignedOut) => {
                return sign_in_page(
                    StatusCode::UNAUTHORIZED,
                    Some("token: invalid, revoked or expired"),
                );
            }
            Err(other) => return sign_in_page(other.status(), Some(other.detail())),
        }
    }
    let cookie = session::set_cookie(token, session::over_tls(&headers));
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/".to_owned()),
            (header::SET_COOKIE, cookie),
        ],
    )
        .into_response())
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// A write by a signed-in browser (a form posted to the dashboard), with
/// the checks of every write done: same origin and the session's CSRF
/// token ([`Session::check_write`]). Reads the body: the handler's last
/// argument.
pub struct Write(pub Session);

impl FromRequest<WebState> for Write {
    type Rejection = Response;

    async fn from_request(req: Request, state: &WebState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session =
            <Session as FromRequestParts<WebState>>::from_request_parts(&mut parts, state).await?;
        let headers = parts.headers.clone();
        let Form(form) = Form::<CsrfForm>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        session
            .check_write(&headers, &form.csrf)
            .map_err(|e| WebError::Forbidden(e).into_response())?;
        Ok(Write(session))
    }
}

pub async fn sign_out(headers: HeaderMap, Write(_): Write) -> Result<Response, WebError> {
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/sign-in".to_owned()),
            (
                header::SET_COOKIE,
                session::clear_cookie(session::over_tls(&headers)),
            ),
        ],
    )
        .into_response())
}

/// Percent-encodes a query value (everything but unreserved characters).
pub fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_encoded() {
        assert_eq!(super::encode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(super::encode("queued"), "queued");
    }
}
