//! Extractors that turn every malformed input into an [`ApiError`] naming
//! the field: JSON bodies, path ids and query parameters.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{StatusCode, header, request::Parts};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::error::ApiError;
use crate::limits::{BodyReadTimeout, HttpLimits};

/// A JSON body deserialized with the path of any offending field.
/// Requires `Content-Type: application/json`; the size limit is the router's.
pub struct ValidJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ValidJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|m| {
                let m = m.trim().to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::UnsupportedMediaType);
        }
        // The whole body within the deadline, however it trickles in.
        let deadline = req
            .extensions()
            .get::<BodyReadTimeout>()
            .map_or(HttpLimits::default().body_read_timeout, |t| t.0);
        let bytes = tokio::time::timeout(deadline, Bytes::from_request(req, state))
            .await
            .map_err(|_| ApiError::RequestTimeout(deadline))?
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::MalformedJson(rejection.body_text())
                }
            })?;
        parse_json(&bytes).map(ValidJson)
    }
}

/// Deserialize JSON, classifying errors: syntax → 400, shape (a body that is
/// not an object, unknown or missing field, wrong type, unknown enum value) →
/// 422 naming the field, a NUL character in any string or key → 422 naming
/// it. A number with a zero fraction (`3.0`, `1e2`) is that integer, as JSON
/// Schema's `integer` (and so the OpenAPI document) has it.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::MalformedJson(strip_position(&e.to_string())))?;
    refuse_nul(&value)?;
    // serde would read a struct from an array too (`[null, null]`).
    if !value.is_object() {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    integral_floats_to_integers(&mut value);
    serde_path_to_error::deserialize(value).map_err(|err| {
        let path = err.path().to_string();
        let message = strip_position(&err.into_inner().to_string());
        ApiError::field(field_of(&path, &message), message)
    })
}

/// `3.0` → `3` wherever it sits; other numbers stay as they are.
fn integral_floats_to_integers(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|_| n.is_f64())
                && f.fract() == 0.0
                && f.abs() < 9.0e15
            {
                // Exact: |f| < 2^53.
                *n = serde_json::Number::from(f as i64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// PostgreSQL's `text` and `jsonb` cannot hold U+0000: a body carrying one
/// would fail at the database (a 500) or, worse, be cut short by a tool later.
/// Every body passes here, so no route can forget it.
fn refuse_nul(value: &serde_json::Value) -> Result<(), ApiError> {
    match nul_path(value, String::new()) {
        Some(field) => Err(ApiError::field(
            field,
            "must not contain the NUL character (\\u0000)",
        )),
        None => Ok(()),
    }
}

/// The path (`config.build_args.A`, `platforms[0]`) of the first string or
/// key holding U+0000; a key is named with the NUL shown as `\u0000`.
fn nul_path(value: &serde_json::Value, at: String) -> Option<String> {
    use serde_json::Value;
    let join = |key: &str| {
        let key = key.replace('\0', "\\u0000");
        if at.is_empty() {
            key
        } else {
            format!("{at}.{key}")
        }
    };
    match value {
        Value::String(s) if s.contains('\0') => {
            Some(if at.is_empty() { "body".into() } else { at })
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| nul_path(v, format!("{at}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if k.contains('\0') {
                Some(join(k))
            } else {
                nul_path(v, join(k))
            }
        }),
        _ => None,
    }
}

fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// For unknown/missing field errors serde reports the parent's path; the
/// field itself is in the message between backticks.
fn field_of(path: &str, message: &str) -> String {
    let named = ["unknown field `", "missing field `"]
        .iter()
        .find_map(|p| message.strip_prefix(p))
        .and_then(|rest| rest.split('`').next());
    match (path, named) {
        // Unknown fields already end the path; missing ones do not.
        (p, Some(name)) if p == name || p.ends_with(&format!(".{name}")) => p.to_owned(),
        (".", Some(name)) => name.to_owned(),
        (parent, Some(name)) => format!("{parent}.{name}"),
        (".", None) => "body".to_owned(),
        (p, None) => p.to_owned(),
    }
}

/// The path's named segments, parsed on demand so errors name the segment.
pub struct PathIds(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for PathIds {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(map) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::InvalidParameter {
                field: "path".into(),
                message: e.body_text(),
            })?;
        Ok(PathIds(map))
    }
}

impl PathIds {
    pub fn id(&self, name: &str) -> Result<Uuid, ApiError> {
        let raw = self.0.get(name).map(String::as_str).unwrap_or_default();
        Uuid::parse_str(raw).map_err(|_| ApiError::InvalidParameter {
            field: name.to_owned(),
            message: format!("{raw:?} is not a UUID"),
        })
    }
}

/// Query parameters; unknown ones are refused so typos do not go unnoticed.
pub struct QueryParams(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(map) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::InvalidParameter {
                field: "query".into(),
                message: e.body_text(),
            })?;
        Ok(QueryParams(map))
    }
}

impl QueryParams {
    pub fn only(&self, allowed: &[&str]) -> Result<(), ApiError> {
        match self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(unknown) => Err(ApiError::InvalidParameter {
                field: unknown.clone(),
                message: format!(
                    "unknown query parameter; expected one of: {}",
                    allowed.join(", ")
                ),
            }),
            None => Ok(()),
        }
    }

    /// Parse an optional parameter with `FromStr`, naming it in the error.
    pub fn parse<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError>
    where
        T::Err: std::fmt::Display,
    {
        match self.0.get(name) {
            None => Ok(None),
            Some(raw) => raw
                .parse()
                .map(Some)
                .map_err(|e| ApiError::InvalidParameter {
                    field: name.to_owned(),
                    message: format!("{raw:?}: {e}"),
                }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
    }

    fn field(body: &str) -> String {
        match parse_json::<Outer>(body.as_bytes()).unwrap_err() {
            ApiError::Validation(errors) => errors[0].field.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn names_the_offending_field() {
        assert_eq!(field(r#"{"name": 1}"#), "name");
        assert_eq!(field(r#"{"nme": "x"}"#), "nme");
        assert_eq!(field(r#"{}"#), "name");
        assert_eq!(field(r#"{"name": "x", "inner": {"n": -1}}"#), "inner.n");
        assert_eq!(field(r#"{"name": "x", "inner": {"m": 1}}"#), "inner.m");
        assert!(matches!(
            parse_json::<Outer>(b"{\"name\": "),
            Err(ApiError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_json::<Outer>(b"{\"name\": \"x\"} trailing"),
            Err(ApiError::MalformedJson(_))
        ));
    }

    #[test]
    fn nul_in_any_string_or_key_names_the_field() {
        assert_eq!(field(r#"{"name": "a\u0000b"}"#), "name");
        assert_eq!(
            field(r#"{"name": "x", "inner": {"n\u0000": 1}}"#),
            "inner.n\\u0000"
        );
        let nested = r#"{"config": {"build_args": {"A": "1", "B": "x\u0000"}, "platforms": ["a", "\u0000"]}}"#;
        let value: serde_json::Value = serde_json::from_str(nested).unwrap();
        assert_eq!(
            nul_path(&value, String::new()).as_deref(),
            Some("config.build_args.B")
        );
        let list = r#"{"platforms": ["a", "b\u0000"]}"#;
        let value: serde_json::Value = serde_json::from_str(list).unwrap();
        assert_eq!(
            nul_path(&value, String::new()).as_deref(),
            Some("platforms[1]")
        );
        // An escaped backslash followed by "u0000" is no NUL.
        assert!(parse_json::<Outer>(br#"{"name": "\\u0000"}"#).is_ok());
    }

    /// Found by schemathesis: serde reads a struct from an array, so
    /// `[null, null]` was a valid PATCH body.
    #[test]
    fn a_body_that_is_not_an_object_is_refused_naming_body() {
        for body in ["[\"x\", null]", "[]", "\"x\"", "1", "null"] {
            assert_eq!(field(body), "body", "{body}");
        }
    }

    /// Found by schemathesis: JSON Schema's `integer` includes `131.0`.
    #[test]
    fn integral_numbers_with_a_fraction_or_exponent_are_integers() {
        let body = r#"{"name": "x", "inner": {"n": 131.0}}"#;
        let outer: Outer = parse_json(body.as_bytes()).unwrap();
        assert_eq!(outer.inner.unwrap().n, 131);
        let outer: Outer = parse_json(br#"{"name": "x", "inner": {"n": 1e2}}"#).unwrap();
        assert_eq!(outer.inner.unwrap().n, 100);
        assert_eq!(field(r#"{"name": "x", "inner": {"n": 1.5}}"#), "inner.n");
    }
}
