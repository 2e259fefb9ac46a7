//! The OpenAPI document, assembled from the `#[utoipa::path]` annotations of
//! the very handlers the router serves.

use axum::Router;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use crate::AppState;
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Image Factory API",
        description = "Multi-tenant container-image builds. Errors are RFC 9457 problem+json documents."
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&BearerSchemes)
)]
struct ApiDoc;

struct BearerSchemes;

impl Modify for BearerSchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "tenant_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Every documented route, with its handler.
pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(routes::health::routes())
        .nest("/api/v1", routes::v1())
}

/// The router and the document describing it, with the answers every
/// operation can give documented once (see [`document_shared_answers`]).
pub(crate) fn split() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = routes().split_for_parts();
    document_shared_answers(&mut doc);
    (router, doc)
}

/// The OpenAPI document the server publishes at `/api/v1/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    split().1
}

/// Answers not tied to one handler: 503 with `Retry-After` from every
/// operation that needs the database (it is down, restarting or the pool
/// has no connection free), and 429 with `Retry-After` from every
/// authenticated one (failed-authentication throttle per address; the
/// per-token follower cap of log streams). Clients rely on the header to
/// back off, so it is part of the contract.
fn document_shared_answers(doc: &mut utoipa::openapi::OpenApi) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            // Liveness answers without the database, by design.
            if path != "/healthz" {
                add_response(operation, "503", unavailable());
            }
            if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                add_response(operation, "429", too_many_requests());
            }
        }
    }
}

fn add_response(operation: &mut Operation, status: &str, response: Response) {
    use std::collections::btree_map::Entry;
    match operation.responses.responses.entry(status.to_owned()) {
        Entry::Vacant(slot) => {
            slot.insert(RefOr::T(response));
        }
        // A handler's own description of the answer stays; the shared
        // header is added to it.
        Entry::Occupied(mut slot) => {
            if let RefOr::T(own) = slot.get_mut() {
                for (name, header) in response.headers {
                    own.headers.entry(name).or_insert(header);
                }
            }
        }
    }
}

fn retry_after_response(description: &str) -> Response {
    let seconds = ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1));
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            Content::new(Some(Ref::from_schema_name("Problem"))),
        )
        .header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(Some(seconds))
                .description(Some("Seconds to wait before trying again."))
                .build(),
        )
        .build()
}

fn unavailable() -> Response {
    retry_after_response(
        "The database is unavailable (down, restarting) or no connection was free within the \
         pool's acquire timeout; nothing was changed. Problem type `.../problems/unavailable`.",
    )
}

fn too_many_requests() -> Response {
    retry_after_response(
        "Too many failed authentications from this address, or (log follows) too many open \
         streams for this token. Problem type `.../problems/too-many-requests`.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_documents_the_shared_answers() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let mut checked = 0;
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = &op["responses"];
                if path == "/healthz" {
                    assert!(responses.get("503").is_none(), "{method} {path}");
                } else {
                    let header = &responses["503"]["headers"]["Retry-After"];
                    assert_eq!(header["schema"]["type"], "integer", "{method} {path}");
                    assert!(
                        responses["503"]["content"]["application/problem+json"].is_object(),
                        "{method} {path}"
                    );
                }
                let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
                assert_eq!(
                    responses["429"]["headers"]["Retry-After"].is_object(),
                    secured,
                    "{method} {path}"
                );
                checked += 1;
            }
        }
        assert!(checked > 30, "only {checked} operations");
    }

    /// Every pattern of the document that has a `host:port` part admits the
    /// ports the server accepts (1–65535, `imagefactory_domain::image::is_host_port`)
    /// and no other: it once stopped at 9999.
    #[test]
    fn documented_host_patterns_admit_every_port_the_server_accepts() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let mut patterns = Vec::new();
        collect_patterns(&doc, &mut patterns);
        let with_port: Vec<regex::Regex> = patterns
            .iter()
            .filter(|p| p.contains("6553[0-5]"))
            .map(|p| regex::Regex::new(p).unwrap())
            .collect();
        // Registry hosts (two schemas), the image reference, git URLs.
        assert!(with_port.len() >= 4, "{patterns:?}");
        let samples = |port: &str| {
            [
                format!("registry.example.com:{port}"),
                format!("registry.example.com:{port}/team/app:1.0"),
                format!("https://git.example.com:{port}/team/app.git"),
            ]
        };
        for port in [
            "0", "1", "80", "9999", "10000", "65535", "65536", "70000", "08080", "+80",
        ] {
            let server = imagefactory_domain::image::is_host_port(&format!("example.com:{port}"));
            for re in &with_port {
                let matched = samples(port).iter().any(|s| re.is_match(s));
                assert_eq!(matched, server, "port {port}: {}", re.as_str());
            }
        }
    }

    fn collect_patterns(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("pattern", serde_json::Value::String(p)) => out.push(p.clone()),
                        _ => collect_patterns(v, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| collect_patterns(v, out)),
            _ => {}
        }
    }
}
