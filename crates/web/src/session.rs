//! The signed-in session: the token kept in an HttpOnly, SameSite=Strict
//! cookie (Secure when the request came over TLS), a CSRF token derived from
//! it for forms, and the checks every write passes (CSRF token and Origin).
//! The functions here are pure; `Session` is the extractor built on them.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Redirect, Response};
use imagefactory_domain::Secret;
use imagefactory_store::tokens::constant_time_eq;
use sha2::{Digest, Sha256};

use crate::WebState;

/// Name of the session cookie.
pub const COOKIE: &str = "if_session";

/// The CSRF token of a session: a hash of its token, so it needs no server
/// storage, works on every replica, and cannot be made without the token.
pub fn csrf_token(token: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(b"imagefactory-web-csrf\0");
    hash.update(token.as_bytes());
    hex::encode(hash.finalize())
}

/// A token that can be a cookie value as is (what the server issues always
/// is); anything else is refused at sign-in rather than mangled.
pub fn cookie_safe(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 512
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b))
}

/// The session cookie's value, from any `Cookie` header.
pub fn cookie_value(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|v| cookie_safe(v))
}

/// The request reached the server's proxy over TLS (`serve` itself speaks
/// plain HTTP; a TLS-terminating proxy says so in `X-Forwarded-Proto` or
/// `Forwarded`). Trusting it can only add `Secure`, never remove it.
pub fn over_tls(headers: &HeaderMap) -> bool {
    let forwarded_proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    let forwarded = headers
        .get(header::FORWARDED)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("proto=https"));
    forwarded_proto || forwarded
}

/// `Set-Cookie` for a new session.
pub fn set_cookie(token: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}")
}

/// `Set-Cookie` that ends the session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict{secure}")
}

/// Refuses a write sent from another site: an `Origin` (or, without one,
/// `Sec-Fetch-Site`) that is not this server. Browsers send `Origin` with
/// every form POST; a request without either header is not a browser's
/// cross-site request, and still needs the CSRF token.
pub fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let origin_host = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        return match (origin_host, host) {
            (Some(o), Some(h)) if o.eq_ignore_ascii_case(h) => Ok(()),
            _ => Err(format!(
                "cross-site request refused: Origin {origin} is not this server"
            )),
        };
    }
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        Some("cross-site") | Some("same-site") => {
            Err("cross-site request refused: Sec-Fetch-Site says it came from another site".into())
        }
        _ => Ok(()),
    }
}

/// A signed-in browser. Its token stays on the server side of every page.
pub struct Session {
    token: Secret,
    /// Signed in with the platform admin's token.
    pub admin: bool,
    pub csrf: String,
    /// The client's address, passed on to the API's auth throttle.
    pub peer: Option<ConnectInfo<SocketAddr>>,
}

impl Session {
    pub fn new(token: &str, state: &WebState, peer: Option<ConnectInfo<SocketAddr>>) -> Self {
        let admin = state
            .app
            .admin_token
            .as_ref()
            .is_some_and(|a| constant_time_eq(a.expose().as_bytes(), token.as_bytes()));
        Self {
            token: Secret::new(token),
            admin,
            csrf: csrf_token(token),
            peer,
        }
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.token.expose())
    }

    /// The checks of every write: same origin and this session's CSRF token.
    pub fn check_write(&self, headers: &HeaderMap, presented: &str) -> Result<(), String> {
        same_origin(headers)?;
        if constant_time_eq(presented.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(
                "the form's CSRF token does not match this session; reload the page and retry"
                    .into(),
            )
        }
    }
}

/// The client's address, when the server recorded it (the API's auth
/// throttle counts failures by it).
pub struct Peer(pub Option<ConnectInfo<SocketAddr>>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts.extensions.get::<ConnectInfo<SocketAddr>>().cloned(),
        ))
    }
}

impl FromRequestParts<WebState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &WebState) -> Result<Self, Response> {
        let Peer(peer) = Peer::from_request_parts(parts, state)
            .await
            .unwrap_or(Peer(None));
        match cookie_value(&parts.headers) {
            Some(token) => Ok(Session::new(&token, state, peer)),
            None => Err(Redirect::to("/sign-in").into_response()),
        }
    }
}

impl OptionalFromRequestParts<WebState> for Session {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &WebState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Session as FromRequestParts<WebState>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn cookie_is_found_among_others_and_checked() {
        let h = headers(&[("cookie", "a=1; if_session=ift_abc123; b=2")]);
        assert_eq!(cookie_value(&h).as_deref(), Some("ift_abc123"));
        let h = headers(&[("cookie", "if_session=bad value\"")]);
        assert_eq!(cookie_value(&h), None);
        assert_eq!(cookie_value(&HeaderMap::new()), None);
    }

    #[test]
    fn cookie_flags() {
        assert_eq!(
            set_cookie("t", false),
            "if_session=t; Path=/; HttpOnly; SameSite=Strict"
        );
        assert!(set_cookie("t", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }

    #[test]
    fn tls_is_read_from_the_proxy_headers() {
        assert!(over_tls(&headers(&[("x-forwarded-proto", "https")])));
        assert!(over_tls(&headers(&[(
            "forwarded",
            "for=1.2.3.4;proto=https"
        )])));
        assert!(!over_tls(&headers(&[("x-forwarded-proto", "http")])));
        assert!(!over_tls(&HeaderMap::new()));
    }

    #[test]
    fn origin_must_be_this_host() {
        let ok = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
        ]);
        assert!(same_origin(&ok).is_ok());
        let evil = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "https://evil.example"),
        ]);
        assert!(same_origin(&evil).unwrap_err().contains("evil.example"));
        let null = headers(&[("host", "h"), ("origin", "null")]);
        assert!(same_origin(&null).is_err());
        let fetch = headers(&[("host", "h"), ("sec-fetch-site", "cross-site")]);
        assert!(same_origin(&fetch).is_err());
        assert!(same_origin(&headers(&[("host", "h")])).is_ok());
    }

    #[test]
    fn csrf_token_depends_on_the_session_and_hides_it() {
        let a = csrf_token("ift_token_a");
        assert_ne!(a, csrf_token("ift_token_b"));
        assert_eq!(a, csrf_token("ift_token_a"));
        assert!(!a.contains("ift_token_a"));
    }
}
