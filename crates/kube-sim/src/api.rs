//! The HTTP API: authentication, routing, authorization, fault injection and
//! the verbs (get, list, watch, create, update, patch, delete,
//! deletecollection, pods/log) on top of [`Store`].

use crate::auth::{ADMIN_GROUP, Attributes, Authenticator, User};
use crate::cluster::EventKind;
use crate::discovery;
use crate::faults::{FaultAction, FaultRule, Faults};
use crate::log_follow::{LogFollow, StoreLog};
use crate::patch::{self, PatchKind};
use crate::protobuf;
use crate::resources::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, delete_success};
use crate::store::{
    DeleteOutcome, Kind, Propagation, Store, Writer, decode_continue, now_rfc3339, storage_kind,
};
use crate::table;
use crate::tekton::{admission, convert};
use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

pub type Body = BoxBody<Bytes, std::io::Error>;

const MAX_BODY: usize = 3 * 1024 * 1024;

pub struct Api {
    pub store: Arc<Store>,
    pub registry: Vec<ResourceInfo>,
    pub auth: Arc<Authenticator>,
    pub faults: Arc<Faults>,
    pub server_address: std::sync::Mutex<String>,
    pub bookmark_interval: Duration,
}

fn full(code: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).expect("valid content type"),
    );
    r
}

pub fn json_response(code: u16, v: &Value) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap_or(StatusCode::OK),
        "application/json",
        serde_json::to_vec(v).expect("JSON serializes"),
    )
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut r = json_response(e.code, &e.to_status());
    if let Some(s) = e.retry_after {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

/// What a request addresses once its path is parsed.
struct Target<'a> {
    info: &'a ResourceInfo,
    kind: Kind,
    namespace: Option<String>,
    name: Option<String>,
    subresource: Option<String>,
    /// `dryRun=All`: admit and answer as if written, store nothing.
    dry_run: bool,
}

fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k), percent_decode(v));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&s[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_true(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(q.get(k).map(String::as_str), Some("1" | "true" | "True"))
}

fn parse_body(bytes: &[u8], content_type: &str) -> Result<Value, ApiError> {
    if content_type.contains("protobuf") || content_type.contains("cbor") {
        // Only JSON/YAML are spoken; client-go falls back to JSON on 415.
        return Err(ApiError::unsupported_media_type(
            "application/json, application/yaml",
        ));
    }
    if bytes.is_empty() {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => Ok(v),
        Err(json_err) if content_type.contains("yaml") => {
            let text = std::str::from_utf8(bytes)
                .map_err(|e| ApiError::bad_request(format!("body is not UTF-8: {e}")))?;
            serde_saphyr::from_str::<Value>(text)
                .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
                .map_err(|mut e| {
                    e.message = format!("{}; (as JSON: {json_err})", e.message);
                    e
                })
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "error decoding JSON request body: {e}"
        ))),
    }
}

/// 406 unless the request's `Accept` list (which mentions protobuf) has
/// something `t` can be answered in: protobuf for the kinds `protobuf` encodes
/// (not for watches or logs), JSON for everything.
fn acceptable(t: &Target<'_>, verb: &str, accept: &str) -> Result<(), ApiError> {
    let n = protobuf::negotiate(accept);
    let protobuf_ok = protobuf_kind(t) && verb != "watch";
    if n.json_ok || (n.protobuf_first && protobuf_ok) || t.subresource.as_deref() == Some("log") {
        return Ok(());
    }
    Err(ApiError::not_acceptable(if protobuf_ok {
        "application/json, application/yaml, application/vnd.kubernetes.protobuf"
    } else {
        "application/json, application/yaml"
    }))
}

/// A path under a resource whose objects (and errors) are answered in
/// protobuf when the client prefers it.
fn protobuf_path(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let plural = match segs.as_slice() {
        ["api", "v1", "namespaces", _, "status" | "finalize"] => "namespaces",
        ["api", "v1", "namespaces", _, plural, ..] => plural,
        ["api", "v1", plural, ..] => plural,
        ["apis", group, "v1", "namespaces", _, plural, ..] => {
            return protobuf::supports(group, plural);
        }
        ["apis", group, "v1", plural, ..] => return protobuf::supports(group, plural),
        _ => return false,
    };
    protobuf::supports("", plural)
}

fn protobuf_kind(t: &Target<'_>) -> bool {
    protobuf::supports(t.info.gvr.group, t.info.gvr.plural)
}

/// A protobuf request body as the JSON the verbs take: objects of the kinds
/// `protobuf` knows (and `DeleteOptions`); custom resources, like on a
/// cluster, and other core kinds (a kube-sim limit) get 415.
fn protobuf_body_as_json(t: &Target<'_>, verb: &str, body: &[u8]) -> Result<Bytes, ApiError> {
    let deleting = matches!(verb, "delete" | "deletecollection");
    if t.info.resource.custom || !(protobuf_kind(t) || deleting) {
        return Err(ApiError::unsupported_media_type(
            "application/json, application/yaml",
        ));
    }
    if body.is_empty() {
        return Ok(Bytes::new());
    }
    let v = protobuf::decode(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding protobuf request body: {e}")))?;
    Ok(Bytes::from(
        serde_json::to_vec(&v).expect("JSON serializes"),
    ))
}

/// The response re-encoded as protobuf when its JSON body has a kind that
/// `protobuf` encodes (objects, lists, `Status`); anything else is passed on
/// as it is (the request's Accept list allowed JSON, see `acceptable`).
async fn as_protobuf(response: Response<Body>) -> Response<Body> {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|c| c.as_bytes() == b"application/json");
    if !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(collected) = body.collect().await else {
        return error_response(&ApiError::internal("response body could not be read"));
    };
    let bytes = collected.to_bytes();
    let encoded = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| protobuf::encode(&v));
    let body = match encoded {
        Some(pb) => {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(protobuf::MEDIA_TYPE),
            );
            Bytes::from(pb)
        }
        None => bytes,
    };
    Response::from_parts(
        parts,
        Full::new(body).map_err(|never| match never {}).boxed(),
    )
}

fn ok_json(v: Value) -> Result<Response<Body>, ApiError> {
    Ok(json_response(200, &v))
}

/// A discovery document, or 404 when the path names nothing served.
fn found(doc: Option<Value>) -> Result<Response<Body>, ApiError> {
    doc.map(|d| json_response(200, &d))
        .ok_or_else(ApiError::path_not_found)
}

/// The Kubernetes verb of a request on a collection or (`named`) one object.
fn verb_of(
    method: &Method,
    named: bool,
    q: &HashMap<String, String>,
) -> Result<&'static str, ApiError> {
    Ok(match (method, named) {
        (&Method::GET, true) => "get",
        (&Method::GET, false) if is_true(q, "watch") => "watch",
        (&Method::GET, false) => "list",
        (&Method::POST, false) => "create",
        (&Method::PUT, true) => "update",
        (&Method::PATCH, true) => "patch",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    })
}

/// The error an injected fault with status `code` answers with.
fn injected_error(code: u16, retry_after: Option<u32>, t: &Target<'_>) -> ApiError {
    match code {
        429 => ApiError::too_many_requests(retry_after.unwrap_or(1)),
        409 => ApiError::conflict(
            t.info.gvr.group,
            t.info.gvr.plural,
            t.name.as_deref().unwrap_or(""),
        ),
        503 => ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
        ),
        c => {
            let mut e = ApiError::internal("injected fault");
            e.code = c;
            e
        }
    }
}

fn header_or<B>(req: &Request<B>, name: header::HeaderName, default: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(default)
        .to_string()
}

/// The body of a request whose method carries one, at most `MAX_BODY` bytes.
async fn read_body(req: Request<hyper::body::Incoming>) -> Result<Bytes, ApiError> {
    if !matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) {
        return Ok(Bytes::new());
    }
    let collected = http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| {
            ApiError::new(
                413,
                "RequestEntityTooLarge",
                format!("request body too large or unreadable: {e}"),
            )
        })?;
    Ok(collected.to_bytes())
}

/// The container whose log a request asks for: `container`, or the pod's
/// only main container.
fn log_container(
    pod: &Value,
    pod_name: &str,
    q: &HashMap<String, String>,
) -> Result<String, ApiError> {
    let names: Vec<String> = ["/spec/initContainers", "/spec/containers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let main: Vec<&String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            names
                .iter()
                .filter(|n| cs.iter().any(|c| c["name"] == n.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) => c.clone(),
        None if main.len() == 1 => main[0].clone(),
        None => {
            let choices: Vec<&str> = main.iter().map(|s| s.as_str()).collect();
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                choices.join(" ")
            )));
        }
    };
    if !names.contains(&container) {
        return Err(ApiError::bad_request(format!(
            "container {container} is not valid for pod {pod_name}"
        )));
    }
    if let Some(reason) = waiting_reason(pod, &container) {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{pod_name}\" is waiting to start: {reason}"
        )));
    }
    Ok(container)
}

/// The query options of a log request.
#[derive(Clone, Copy, Default)]
pub(crate) struct LogOptions {
    timestamps: bool,
    since: Option<chrono::DateTime<chrono::FixedOffset>>,
    since_seconds: Option<i64>,
    tail: Option<usize>,
}

impl LogOptions {
    fn parse(q: &HashMap<String, String>) -> Result<Self, ApiError> {
        let since = match q.get("sinceTime") {
            Some(s) => Some(
                chrono::DateTime::parse_from_rfc3339(s)
                    .map_err(|e| ApiError::bad_request(format!("invalid sinceTime {s:?}: {e}")))?,
            ),
            None => None,
        };
        Ok(LogOptions {
            timestamps: is_true(q, "timestamps"),
            since,
            since_seconds: q.get("sinceSeconds").and_then(|s| s.parse::<i64>().ok()),
            tail: q.get("tailLines").and_then(|s| s.parse::<usize>().ok()),
        })
    }

    /// The lines already written that the request asks for.
    fn select(&self, all: Vec<crate::store::LogLine>) -> Vec<crate::store::LogLine> {
        let now = chrono::Utc::now();
        let mut lines: Vec<_> = all
            .into_iter()
            .filter(|l| self.since.is_none_or(|s| l.time >= s))
            .filter(|l| {
                self.since_seconds
                    .is_none_or(|s| (now - l.time).num_seconds() <= s)
            })
            .collect();
        if let Some(n) = self.tail {
            let skip = lines.len().saturating_sub(n);
            lines.drain(..skip);
        }
        lines
    }

    pub(crate) fn format(&self, l: &crate::store::LogLine) -> Bytes {
        if self.timestamps {
            Bytes::from(format!(
                "{} {}\n",
                l.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
                l.text
            ))
        } else {
            Bytes::from(format!("{}\n", l.text))
        }
    }
}

/// A PATCH request's kind, document and options, checked.
struct PatchRequest {
    kind: PatchKind,
    doc: Value,
    manager: String,
    force: Option<bool>,
}

impl PatchRequest {
    fn parse(
        t: &Target<'_>,
        body: &[u8],
        content_type: &str,
        q: &HashMap<String, String>,
    ) -> Result<Self, ApiError> {
        let accepted = if t.info.resource.custom {
            "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
        } else {
            "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
        };
        let kind = match PatchKind::from_content_type(content_type) {
            Some(PatchKind::StrategicMerge) if t.info.resource.custom => {
                return Err(ApiError::unsupported_media_type(accepted));
            }
            Some(k) => k,
            None => return Err(ApiError::unsupported_media_type(accepted)),
        };
        let manager = q.get("fieldManager").cloned().unwrap_or_default();
        let force = q.get("force").map(|f| f == "true");
        if kind == PatchKind::Apply && manager.is_empty() {
            return Err(patch_options_invalid(
                "fieldManager",
                "Required value: is required for apply patch",
            ));
        }
        if kind != PatchKind::Apply && force.is_some() {
            return Err(patch_options_invalid(
                "force",
                "Forbidden: may not be specified for non-apply patch",
            ));
        }
        let doc = parse_body(body, content_type)?;
        Ok(PatchRequest {
            kind,
            doc,
            manager,
            force,
        })
    }

    /// Server-side apply onto `current` (`None`: a new object).
    fn apply(&self, t: &Target<'_>, current: Option<&Value>) -> Result<Value, ApiError> {
        patch::apply(
            current,
            &self.doc,
            &self.manager,
            &t.info.api_version(),
            self.force == Some(true),
            &now_rfc3339(),
        )
        .map_err(|c| apply_conflict(t, c))
    }
}

impl Api {
    fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.registry
            .iter()
            .find(|r| r.gvr.group == group && r.gvr.version == version && r.gvr.plural == plural)
    }

    fn authenticate(
        &self,
        req: &Request<hyper::body::Incoming>,
        cert_user: Option<&User>,
    ) -> Option<User> {
        if let Some(h) = req.headers().get(header::AUTHORIZATION) {
            let token = h.to_str().ok()?.strip_prefix("Bearer ")?.trim();
            return self.auth.user_for_token(token);
        }
        cert_user.cloned()
    }

    pub async fn handle(
        self: Arc<Self>,
        req: Request<hyper::body::Incoming>,
        cert_user: Option<User>,
    ) -> Response<Body> {
        let path = req.uri().path().trim_end_matches('/').to_string();
        if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
            return full(StatusCode::OK, "text/plain", b"ok".to_vec());
        }
        if path == "/version" {
            return json_response(200, &discovery::version());
        }
        // Only requests that mention protobuf pay for negotiation.
        let protobuf_answer = req
            .headers()
            .get(header::ACCEPT)
            .and_then(|h| h.to_str().ok())
            .filter(|a| a.contains("protobuf"))
            .is_some_and(|a| {
                protobuf::negotiate(a).protobuf_first
                    && protobuf_path(&path)
                    && !is_true(&parse_query(req.uri().query()), "watch")
            });
        let response = match self.authenticate(&req, cert_user.as_ref()) {
            None => error_response(&ApiError::unauthorized()),
            Some(user) => match self.route(req, &path, &user).await {
                Ok(r) => r,
                Err(e) => error_response(&e),
            },
        };
        if protobuf_answer {
            return as_protobuf(response).await;
        }
        response
    }

    /// The route table: discovery, OpenAPI and fault administration answer
    /// here; everything under a group/version is a resource request.
    async fn route(
        &self,
        req: Request<hyper::body::Incoming>,
        path: &str,
        user: &User,
    ) -> Result<Response<Body>, ApiError> {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let reg = &self.registry;
        match segs.as_slice() {
            ["api"] => ok_json(discovery::api_versions(&self.server_address())),
            ["apis"] => ok_json(discovery::api_group_list(reg)),
            ["apis", g] => found(discovery::api_group(reg, g)),
            ["openapi", "v3"] => ok_json(crate::openapi::root(reg)),
            ["openapi", "v3", gv @ ..] => found(crate::openapi::group_version(reg, &gv.join("/"))),
            ["openapi", ..] => Err(ApiError::path_not_found()),
            ["kube-sim", "faults"] => self.faults_admin(req, user).await,
            ["api", v] => found(discovery::api_resource_list(reg, "", v)),
            ["apis", g, v] => found(discovery::api_resource_list(reg, g, v)),
            ["api", v, rest @ ..] => self.resource_request(req, user, "", v, rest).await,
            ["apis", g, v, rest @ ..] => self.resource_request(req, user, g, v, rest).await,
            _ => Err(ApiError::path_not_found()),
        }
    }

    fn server_address(&self) -> String {
        self.server_address
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A verb on a resource: authorize, inject faults, then run the verb.
    async fn resource_request(
        &self,
        req: Request<hyper::body::Incoming>,
        user: &User,
        group: &str,
        version: &str,
        rest: &[&str],
    ) -> Result<Response<Body>, ApiError> {
        let mut t = self.target(group, version, rest)?;
        let q = parse_query(req.uri().query());
        let verb = verb_of(req.method(), t.name.is_some(), &q)?;
        self.authorize(user, &t, verb)?;
        let watch_faults = self.inject_faults(verb, &t).await?;
        let writes = matches!(
            verb,
            "create" | "update" | "patch" | "delete" | "deletecollection"
        );
        if let Some(mode) = q.get("dryRun").filter(|_| writes) {
            // Only create, update and patch take a dry run here; better a
            // visible refusal than a "dry run" that writes.
            if mode != "All" {
                return Err(ApiError::bad_request(format!(
                    "Invalid dryRun value {mode:?}: the only accepted value is \"All\""
                )));
            }
            if !matches!(verb, "create" | "update" | "patch") {
                return Err(ApiError::bad_request(format!(
                    "dryRun is not supported by kube-sim for {verb}"
                )));
            }
            t.dry_run = true;
        }
        let accept = header_or(&req, header::ACCEPT, "");
        if accept.contains("protobuf") {
            acceptable(&t, verb, &accept)?;
        }
        let mut content_type = header_or(&req, header::CONTENT_TYPE, "application/json");
        let mut body = read_body(req).await?;
        if content_type.starts_with(protobuf::MEDIA_TYPE) && verb != "patch" {
            body = protobuf_body_as_json(&t, verb, &body)?;
            content_type = "application/json".into();
        }
        // An error after acting replaces the result of a verb that ran.
        let after_acting = watch_faults.iter().find_map(|f| match f {
            FaultAction::ErrorAfterActing { code } => Some(*code),
            _ => None,
        });
        let done = match verb {
            "get" if t.subresource.as_deref() == Some("log") => self.pod_log(&t, &q).await,
            "get" => self.get(&t, &accept, &q),
            "list" => self.list(&t, &q, &accept),
            "watch" => self.watch(&t, &q, &accept, watch_faults),
            "create" => self.create(&t, &body, &content_type),
            "update" => self.update(&t, &body, &content_type),
            "patch" => self.patch(&t, &body, &content_type, &q),
            "delete" => self.delete(&t, &body, &q),
            _ => self.delete_collection(&t, &q),
        };
        match after_acting {
            Some(code) => {
                drop(done);
                Err(injected_error(code, None, &t))
            }
            None => done,
        }
    }

    /// Refuse `verb` on `t` unless `user`'s rules allow it.
    fn authorize(&self, user: &User, t: &Target<'_>, verb: &str) -> Result<(), ApiError> {
        // A namespace's own name is its namespace, for rules scoped to one.
        let attr_ns = t.namespace.clone().or_else(|| {
            (t.kind.gvr.plural == "namespaces")
                .then(|| t.name.clone())
                .flatten()
        });
        let attrs = Attributes {
            verb,
            group: t.info.gvr.group,
            plural: t.info.gvr.plural,
            subresource: t.subresource.as_deref(),
            namespace: attr_ns.as_deref(),
        };
        if self.auth.allowed(user, &attrs) {
            return Ok(());
        }
        Err(ApiError::forbidden(
            &user.name,
            verb,
            t.info.gvr.group,
            t.info.gvr.plural,
            t.subresource.as_deref(),
            attr_ns.as_deref(),
            t.name.as_deref(),
        ))
    }

    /// Apply the injected faults matching this request: latency waits, an
    /// error ends the request, and the others (watch faults, an error after
    /// acting) are returned for the caller to apply.
    async fn inject_faults(
        &self,
        verb: &str,
        t: &Target<'_>,
    ) -> Result<Vec<FaultAction>, ApiError> {
        let resource = match &t.subresource {
            Some(s) => format!("{}/{s}", t.info.gvr.plural),
            None => t.info.gvr.plural.to_string(),
        };
        let mut watch_faults = Vec::new();
        // The first error of the matching rules decides, an error after
        // acting included.
        let mut acting = false;
        for action in self.faults.take(verb, &resource) {
            match action {
                FaultAction::Latency(d) => tokio::time::sleep(d).await,
                FaultAction::Error { code, retry_after } if !acting => {
                    return Err(injected_error(code, retry_after, t));
                }
                FaultAction::Error { .. } => {}
                FaultAction::ErrorAfterActing { .. } if acting => {}
                other => {
                    acting |= matches!(other, FaultAction::ErrorAfterActing { .. });
                    watch_faults.push(other)
                }
            }
        }
        Ok(watch_faults)
    }

    fn target(&self, group: &str, version: &str, rest: &[&str]) -> Result<Target<'_>, ApiError> {
        let (namespace, plural, name, sub) = match rest {
            ["namespaces", ns, plural, tail @ ..]
                if !matches!(*plural, "status" | "finalize") || !tail.is_empty() =>
            {
                (
                    Some(ns.to_string()),
                    *plural,
                    tail.first().map(|s| s.to_string()),
                    tail.get(1).map(|s| s.to_string()),
                )
            }
            [plural, tail @ ..] => (
                None,
                *plural,
                tail.first().map(|s| s.to_string()),
                tail.get(1).map(|s| s.to_string()),
            ),
            [] => return Err(ApiError::path_not_found()),
        };
        if rest.len() > if namespace.is_some() { 5 } else { 3 } {
            return Err(ApiError::path_not_found());
        }
        let info = self
            .find(group, version, plural)
            .ok_or_else(ApiError::path_not_found)?;
        if namespace.is_some() && !info.resource.namespaced {
            return Err(ApiError::path_not_found());
        }
        match sub.as_deref() {
            None => {}
            Some("status") if info.resource.status_subresource => {}
            Some("log") if info.gvr.plural == "pods" => {}
            Some(_) => return Err(ApiError::path_not_found()),
        }
        let kind = storage_kind(&info.resource.storage).ok_or_else(ApiError::path_not_found)?;
        Ok(Target {
            info,
            kind,
            namespace,
            name,
            subresource: sub,
            dry_run: false,
        })
    }

    fn served(&self, t: &Target<'_>, obj: Value) -> Value {
        convert::from_storage(t.info.gvr.group, t.info.gvr.version, obj)
    }

    /// A stored object as the response body in the served version (serialized from
    /// the store's shared copy when no conversion is needed).
    fn served_response(&self, t: &Target<'_>, code: u16, obj: Arc<Value>) -> Response<Body> {
        let g = &t.info.gvr;
        if g.group != "tekton.dev" || g.version == "v1" {
            return json_response(code, &obj);
        }
        json_response(code, &self.served(t, Arc::unwrap_or_clone(obj)))
    }

    fn stored(&self, t: &Target<'_>, obj: Value) -> Value {
        convert::to_storage(
            t.info.gvr.group,
            t.info.gvr.version,
            t.info.resource.kind,
            obj,
        )
    }

    /// Tekton's mutating and validating webhooks on create, run on the v1 (storage) shape.
    fn admit_create(&self, t: &Target<'_>, obj: &mut Value) -> Result<(), ApiError> {
        if t.info.resource.storage.group != "tekton.dev" || !obj.is_object() {
            return Ok(());
        }
        admission::apply_defaults(&t.info.resource.storage, obj);
        admission::validate_create(&t.info.resource.storage, obj)
            .map_err(|e| ApiError::bad_request(admission::webhook_denial(&e)))
    }

    /// The webhooks on update/patch of the main resource (status writes are not admitted,
    /// like Tekton's webhook, which is not registered for the status subresource).
    fn admit_update(&self, t: &Target<'_>, old: &Value, new: &mut Value) -> Result<(), ApiError> {
        if t.info.resource.storage.group != "tekton.dev"
            || t.subresource.is_some()
            || !new.is_object()
        {
            return Ok(());
        }
        admission::apply_defaults(&t.info.resource.storage, new);
        admission::validate_update(&t.info.resource.storage, old, new)
            .map_err(|e| ApiError::bad_request(admission::webhook_denial(&e)))
    }

    fn get(
        &self,
        t: &Target<'_>,
        accept: &str,
        q: &HashMap<String, String>,
    ) -> Result<Response<Body>, ApiError> {
        let name = t.name.as_deref().unwrap_or("");
        let obj = self
            .store
            .get(&t.kind, t.namespace.as_deref(), name)
            .ok_or_else(|| ApiError::not_found(t.info.gvr.group, t.info.gvr.plural, name))?;
        let obj = self.served(t, obj);
        if accept.contains("as=Table") {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let include = q
                .get("includeObject")
                .map(String::as_str)
                .unwrap_or("PartialObjectMetadata");
            return Ok(json_response(
                200,
                &table::to_table(t.info, &[obj], &rv, include),
            ));
        }
        Ok(json_response(200, &obj))
    }

    fn selectors(q: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""))
            .map_err(ApiError::bad_request)?;
        Ok((labels, fields))
    }

    fn list(
        &self,
        t: &Target<'_>,
        q: &HashMap<String, String>,
        accept: &str,
    ) -> Result<Response<Body>, ApiError> {
        let (labels, fields) = Self::selectors(q)?;
        let limit = match q.get("limit").map(|l| l.parse::<i64>()) {
            None => None,
            Some(Ok(l)) if l > 0 => Some(l as usize),
            Some(Ok(_)) => None,
            Some(Err(_)) => return Err(ApiError::bad_request("limit must be an integer")),
        };
        let start_after = match q.get("continue").filter(|c| !c.is_empty()) {
            None => None,
            Some(c) => {
                let (_, ns, name) = decode_continue(c).ok_or_else(|| {
                    ApiError::bad_request("continue key is not valid: illegal base64 data")
                })?;
                Some((ns, name))
            }
        };
        let filter = |o: &Value| labels.matches(o) && fields.matches(o);
        let res = self
            .store
            .list(&t.kind, t.namespace.as_deref(), &filter, limit, start_after);
        let items: Vec<Value> = res.items.into_iter().map(|o| self.served(t, o)).collect();
        let rv = res.resource_version.to_string();
        if accept.contains("as=Table") {
            let include = q
                .get("includeObject")
                .map(String::as_str)
                .unwrap_or("PartialObjectMetadata");
            let mut tab = table::to_table(t.info, &items, &rv, include);
            if let Some(c) = &res.continue_token {
                tab["metadata"]["continue"] = json!(c);
            }
            return Ok(json_response(200, &tab));
        }
        let mut meta = json!({"resourceVersion": rv});
        if let Some(c) = res.continue_token {
            meta["continue"] = json!(c);
            meta["remainingItemCount"] = json!(res.remaining.unwrap_or(0));
        }
        Ok(json_response(
            200,
            &json!({"kind": format!("{}List", t.info.resource.kind), "apiVersion": t.info.api_version(), "metadata": meta, "items": items}),
        ))
    }

    fn check_body_identity(&self, t: &Target<'_>, obj: &Value) -> Result<(), ApiError> {
        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
            && kind != t.info.resource.kind
        {
            return Err(ApiError::bad_request(format!(
                "the server rejected our request due to an error in our request: kind {kind} does not match the requested resource {}",
                t.info.resource.kind
            )));
        }
        Ok(())
    }

    fn create(
        &self,
        t: &Target<'_>,
        body: &[u8],
        content_type: &str,
    ) -> Result<Response<Body>, ApiError> {
        if t.info.resource.namespaced && t.namespace.is_none() {
            return Err(ApiError::method_not_allowed());
        }
        let obj = parse_body(body, content_type)?;
        self.check_body_identity(t, &obj)?;
        self.write_create(t, obj)
    }

    /// Admit `obj` (as served at the requested version) as a new object and store it.
    fn write_create(&self, t: &Target<'_>, obj: Value) -> Result<Response<Body>, ApiError> {
        let mut obj = self.stored(t, obj);
        self.admit_create(t, &mut obj)?;
        if t.dry_run {
            return Ok(self.served_response(t, 201, Arc::new(obj)));
        }
        let created = self
            .store
            .create(&t.kind, t.namespace.as_deref(), obj, Writer::Api)?;
        Ok(self.served_response(t, 201, created))
    }

    /// Admit `obj` (as served at the requested version) as the next version of
    /// `old`, where there is one, and store it (its status only for `/status`).
    fn write_update(
        &self,
        t: &Target<'_>,
        name: &str,
        old: Option<&Value>,
        obj: Value,
    ) -> Result<Arc<Value>, ApiError> {
        let mut obj = self.stored(t, obj);
        if let Some(old) = old {
            self.admit_update(t, old, &mut obj)?;
        }
        if t.dry_run {
            return Ok(Arc::new(obj));
        }
        let status_only = t.subresource.as_deref() == Some("status");
        let ns = t.namespace.as_deref();
        self.store
            .update(&t.kind, ns, name, obj, status_only, Writer::Api)
    }

    fn update(
        &self,
        t: &Target<'_>,
        body: &[u8],
        content_type: &str,
    ) -> Result<Response<Body>, ApiError> {
        let obj = parse_body(body, content_type)?;
        self.check_body_identity(t, &obj)?;
        let name = t.name.as_deref().unwrap_or("");
        let old = self.store.get(&t.kind, t.namespace.as_deref(), name);
        let updated = self.write_update(t, name, old.as_ref(), obj)?;
        Ok(self.served_response(t, 200, updated))
    }

    fn patch(
        &self,
        t: &Target<'_>,
        body: &[u8],
        content_type: &str,
        q: &HashMap<String, String>,
    ) -> Result<Response<Body>, ApiError> {
        let req = PatchRequest::parse(t, body, content_type, q)?;
        let name = t.name.as_deref().unwrap_or("");
        let status_only = t.subresource.as_deref() == Some("status");
        // Retry like the API server's GuaranteedUpdate when a concurrent write wins.
        for _ in 0..8 {
            let current = self.store.get(&t.kind, t.namespace.as_deref(), name);
            let Some(current) = current else {
                if req.kind == PatchKind::Apply && !status_only {
                    return self.apply_create(t, &req);
                }
                return Err(ApiError::not_found(
                    t.info.gvr.group,
                    t.info.gvr.plural,
                    name,
                ));
            };
            let current_rv = current
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!(""));
            let mut obj = self.patched(t, &req, &current)?;
            // A resourceVersion in the patch is a precondition; otherwise patch the current state.
            let patched_rv = obj.pointer("/metadata/resourceVersion").cloned();
            if patched_rv.is_none() || req.kind == PatchKind::Apply {
                obj["metadata"]["resourceVersion"] = current_rv.clone();
            }
            match self.write_update(t, name, Some(&current), obj) {
                Err(e)
                    if e.reason == "Conflict"
                        && (patched_rv.is_none() || patched_rv == Some(current_rv.clone())) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
                Ok(updated) => return Ok(self.served_response(t, 200, updated)),
            }
        }
        Err(ApiError::conflict(
            t.info.gvr.group,
            t.info.gvr.plural,
            name,
        ))
    }

    /// Server-side apply of an object that does not exist yet creates it.
    fn apply_create(&self, t: &Target<'_>, req: &PatchRequest) -> Result<Response<Body>, ApiError> {
        self.check_body_identity(t, &req.doc)?;
        let created = req.apply(t, None)?;
        self.write_create(t, created)
    }

    /// `current` (as served at the requested version) with the patch applied.
    fn patched(
        &self,
        t: &Target<'_>,
        req: &PatchRequest,
        current: &Value,
    ) -> Result<Value, ApiError> {
        let mut obj = self.served(t, current.clone());
        match req.kind {
            PatchKind::Merge => patch::merge_patch(&mut obj, &req.doc),
            PatchKind::StrategicMerge => patch::strategic_merge(&mut obj, &req.doc),
            PatchKind::Json => patch::json_patch(&mut obj, &req.doc).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?,
            PatchKind::Apply => {
                self.check_body_identity(t, &req.doc)?;
                obj = req.apply(t, Some(&obj))?;
            }
        }
        Ok(obj)
    }

    fn delete(
        &self,
        t: &Target<'_>,
        body: &[u8],
        q: &HashMap<String, String>,
    ) -> Result<Response<Body>, ApiError> {
        let opts = if body.is_empty() {
            json!({})
        } else {
            parse_body(body, "application/json")?
        };
        // DeleteOptions can ask for a dry run in the body too; refused, not ignored.
        if opts["dryRun"].as_array().is_some_and(|a| !a.is_empty()) {
            return Err(ApiError::bad_request(
                "dryRun is not supported by kube-sim for delete",
            ));
        }
        let policy = q
            .get("propagationPolicy")
            .cloned()
            .or_else(|| opts["propagationPolicy"].as_str().map(str::to_string))
            .or_else(|| {
                (opts["orphanDependents"] == true
                    || q.get("orphanDependents").is_some_and(|v| v == "true"))
                .then(|| "Orphan".to_string())
            });
        let propagation = match policy.as_deref() {
            None | Some("Background") => Propagation::Background,
            Some("Foreground") => Propagation::Foreground,
            Some("Orphan") => Propagation::Orphan,
            Some(other) => {
                return Err(ApiError::new(
                    422,
                    "Invalid",
                    format!(
                        "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{other}\": supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\""
                    ),
                ));
            }
        };
        let precondition = (
            opts.pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string),
            opts.pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string),
        );
        let name = t.name.as_deref().unwrap_or("");
        match self.store.delete(
            &t.kind,
            t.namespace.as_deref(),
            name,
            propagation,
            precondition,
        )? {
            DeleteOutcome::Pending(obj) => Ok(json_response(200, &self.served(t, obj))),
            DeleteOutcome::Gone(obj) if t.info.resource.custom => {
                let uid = obj
                    .pointer("/metadata/uid")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Ok(json_response(
                    200,
                    &delete_success(t.info.gvr.group, t.info.gvr.plural, name, uid),
                ))
            }
            DeleteOutcome::Gone(obj) => Ok(json_response(200, &self.served(t, obj))),
        }
    }

    fn delete_collection(
        &self,
        t: &Target<'_>,
        q: &HashMap<String, String>,
    ) -> Result<Response<Body>, ApiError> {
        let (labels, fields) = Self::selectors(q)?;
        let filter = |o: &Value| labels.matches(o) && fields.matches(o);
        let res = self
            .store
            .list(&t.kind, t.namespace.as_deref(), &filter, None, None);
        let mut deleted = Vec::new();
        for o in res.items {
            let ns = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .map(str::to_string);
            let name = o
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            match self.store.delete(
                &t.kind,
                ns.as_deref(),
                &name,
                Propagation::Background,
                (None, None),
            ) {
                Ok(DeleteOutcome::Gone(o) | DeleteOutcome::Pending(o)) => {
                    deleted.push(self.served(t, o))
                }
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json_response(
            200,
            &json!({"kind": format!("{}List", t.info.resource.kind), "apiVersion": t.info.api_version(), "metadata": {"resourceVersion": self.store.current_rv().to_string()}, "items": deleted}),
        ))
    }

    fn watch(
        &self,
        t: &Target<'_>,
        q: &HashMap<String, String>,
        accept: &str,
        faults: Vec<FaultAction>,
    ) -> Result<Response<Body>, ApiError> {
        let (labels, fields) = Self::selectors(q)?;
        let bookmarks = is_true(q, "allowWatchBookmarks");
        let send_initial = is_true(q, "sendInitialEvents");
        let rv_param = q.get("resourceVersion").filter(|s| !s.is_empty()).cloned();
        if send_initial
            && (q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan")
                || !bookmarks)
        {
            return Err(ApiError::new(
                422,
                "Invalid",
                "ListOptions.meta.k8s.io \"\" is invalid: [resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan, allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true]",
            ));
        }
        let from_rv = match rv_param.as_deref() {
            None | Some("0") => None,
            Some(_) if send_initial => None,
            Some(s) => Some(s.parse::<u64>().map_err(|_| {
                ApiError::new(422, "Invalid", format!("ListOptions.meta.k8s.io \"\" is invalid: resourceVersion: Invalid value: \"{s}\": must be an integer"))
            })?),
        };
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|s| s.parse::<u64>().ok())
            .map(Duration::from_secs);
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b| Ok::<_, std::io::Error>(hyper::body::Frame::data(b)));
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );

        if faults.contains(&FaultAction::ExpireWatch) {
            let rv = from_rv.unwrap_or(0);
            let line = watch_line(
                "ERROR",
                &ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    self.store.current_rv()
                ))
                .to_status(),
            );
            let _ = tx.try_send(line);
            return Ok(resp);
        }
        let (backlog, live) = match self.store.watch(&t.kind, from_rv) {
            Ok(x) => x,
            Err(e) => {
                let _ = tx.try_send(watch_line("ERROR", &e.to_status()));
                return Ok(resp);
            }
        };
        let drop_after = faults.iter().find_map(|f| match f {
            FaultAction::DropWatch { after } => Some(*after),
            _ => None,
        });
        let ctx = WatchCtx {
            store: self.store.clone(),
            group: t.info.gvr.group,
            version: t.info.gvr.version,
            kind: t.info.resource.kind,
            api_version: t.info.api_version(),
            namespace: t.namespace.clone().filter(|_| t.info.resource.namespaced),
            labels,
            fields,
            bookmarks,
            initial_events_end: send_initial,
            bookmark_interval: self.bookmark_interval,
            deadline: [timeout, drop_after].into_iter().flatten().min(),
            drop_signal: self.faults.drop_signal(),
            table: accept.contains("as=Table").then(|| {
                let include = q
                    .get("includeObject")
                    .cloned()
                    .unwrap_or_else(|| "PartialObjectMetadata".into());
                (t.info.clone(), include)
            }),
            table_header_sent: std::cell::Cell::new(false),
        };
        tokio::spawn(ctx.run(backlog, live, tx));
        Ok(resp)
    }

    async fn pod_log(
        &self,
        t: &Target<'_>,
        q: &HashMap<String, String>,
    ) -> Result<Response<Body>, ApiError> {
        let ns = t.namespace.clone().unwrap_or_default();
        let pod_name = t.name.clone().unwrap_or_default();
        let pod = self
            .store
            .get(&t.kind, Some(&ns), &pod_name)
            .ok_or_else(|| ApiError::not_found("", "pods", &pod_name))?;
        let container = log_container(&pod, &pod_name, q)?;
        let opts = LogOptions::parse(q)?;
        let all = self.store.log_lines(&ns, &pod_name, &container, 0);
        let seen = all.len();
        let initial: Vec<Bytes> = opts.select(all).iter().map(|l| opts.format(l)).collect();
        if !is_true(q, "follow") {
            let body: Vec<u8> = initial.concat();
            return Ok(full(StatusCode::OK, "text/plain", body));
        }
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let follow = LogFollow {
            source: StoreLog {
                store: self.store.clone(),
                kind: t.kind,
                ns,
                pod_name,
                container,
            },
            seen,
            opts,
        };
        tokio::spawn(follow.run(initial, tx));
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
            .map(|b| Ok::<_, std::io::Error>(hyper::body::Frame::data(b)));
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(stream)));
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        Ok(resp)
    }

    /// `/kube-sim/faults`: GET lists rules, POST adds one (JSON), DELETE clears;
    /// `POST ?dropWatches=true` ends every open watch. Admins only.
    async fn faults_admin(
        &self,
        req: Request<hyper::body::Incoming>,
        user: &User,
    ) -> Result<Response<Body>, ApiError> {
        if !user.groups.iter().any(|g| g == ADMIN_GROUP) {
            return Err(ApiError::new(
                403,
                "Forbidden",
                format!("User \"{}\" cannot manage faults", user.name),
            ));
        }
        let q = parse_query(req.uri().query());
        match req.method().clone() {
            Method::GET => {
                let rules: Vec<Value> = self
                    .faults
                    .list()
                    .iter()
                    .map(|(id, r)| crate::faults_json::rule_to_json(*id, r))
                    .collect();
                Ok(json_response(200, &json!({"rules": rules})))
            }
            Method::DELETE => {
                self.faults.clear();
                Ok(json_response(200, &json!({"rules": []})))
            }
            Method::POST if is_true(&q, "dropWatches") => {
                self.faults.drop_all_watches();
                Ok(json_response(200, &json!({"dropped": true})))
            }
            Method::POST => {
                let body = http_body_util::Limited::new(req.into_body(), MAX_BODY)
                    .collect()
                    .await
                    .map_err(|e| ApiError::bad_request(format!("unreadable body: {e}")))?
                    .to_bytes();
                let v = parse_body(&body, "application/json")?;
                let rule: FaultRule =
                    crate::faults_json::rule_from_json(&v).map_err(ApiError::bad_request)?;
                let id = self.faults.add(rule);
                Ok(json_response(201, &json!({"id": id})))
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }
}

fn patch_options_invalid(field: &str, detail: &str) -> ApiError {
    ApiError::new(422, "Invalid", format!("PatchOptions.meta.k8s.io \"\" is invalid: {field}: {detail}")).with_details(json!({
        "group": "meta.k8s.io",
        "kind": "PatchOptions",
        "causes": [{"reason": if detail.starts_with("Required") { "FieldValueRequired" } else { "FieldValueForbidden" }, "message": detail, "field": field}]
    }))
}

fn apply_conflict(t: &Target<'_>, conflicts: Vec<patch::ApplyConflict>) -> ApiError {
    let describe = |c: &patch::ApplyConflict| match &c.operation_api_version {
        Some(v) => format!("conflict with \"{}\" using {v}", c.manager),
        None => format!("conflict with \"{}\"", c.manager),
    };
    let message = if conflicts.len() == 1 {
        format!(
            "Apply failed with 1 conflict: {}: {}",
            describe(&conflicts[0]),
            conflicts[0].field
        )
    } else {
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            conflicts
                .iter()
                .map(|c| format!("{}: {}", describe(c), c.field))
                .collect::<Vec<_>>()
                .join("\n")
        )
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(
            |c| json!({"reason": "FieldManagerConflict", "message": describe(c), "field": c.field}),
        )
        .collect();
    let _ = t;
    ApiError::new(409, "Conflict", message).with_details(json!({"causes": causes}))
}

fn container_status<'a>(pod: &'a Value, container: &str) -> Option<&'a Value> {
    ["/status/initContainerStatuses", "/status/containerStatuses"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .find(|s| s["name"] == container)
}

fn waiting_reason(pod: &Value, container: &str) -> Option<String> {
    match container_status(pod, container) {
        None => Some("ContainerCreating".to_string()),
        Some(s) => s.pointer("/state/waiting").map(|w| {
            w["reason"]
                .as_str()
                .unwrap_or("ContainerCreating")
                .to_string()
        }),
    }
}

pub(crate) fn container_terminated(pod: &Value, container: &str) -> bool {
    container_status(pod, container).is_some_and(|s| s.pointer("/state/terminated").is_some())
}

fn watch_line(kind: &str, obj: &Value) -> Bytes {
    let mut v = serde_json::to_vec(&json!({"type": kind, "object": obj})).expect("JSON serializes");
    v.push(b'\n');
    Bytes::from(v)
}

struct WatchCtx {
    store: Arc<Store>,
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    api_version: String,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    bookmarks: bool,
    initial_events_end: bool,
    bookmark_interval: Duration,
    deadline: Option<Duration>,
    drop_signal: tokio::sync::watch::Receiver<u64>,
    /// `kubectl get -w` asks for Table objects in watch events.
    table: Option<(ResourceInfo, String)>,
    table_header_sent: std::cell::Cell<bool>,
}

impl WatchCtx {
    fn matches(&self, o: &Value) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|ns| o.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns))
            && self.labels.matches(o)
            && self.fields.matches(o)
    }

    fn line(&self, ev: &crate::store::WatchEvent) -> Option<Bytes> {
        let new_ok = self.matches(&ev.object);
        let old_ok = ev.old.as_deref().map(|o| self.matches(o));
        let kind = match (ev.kind, old_ok, new_ok) {
            (EventKind::Added, _, true) => "ADDED",
            (EventKind::Modified, Some(true), true) | (EventKind::Modified, None, true) => {
                "MODIFIED"
            }
            (EventKind::Modified, Some(false), true) => "ADDED",
            (EventKind::Modified, Some(true), false) => "DELETED",
            (EventKind::Deleted, Some(true), _) | (EventKind::Deleted, None, true) => "DELETED",
            _ => return None,
        };
        if let Some((info, include)) = &self.table {
            let obj = convert::from_storage(self.group, self.version, (*ev.object).clone());
            let mut tab = table::to_table(
                info,
                std::slice::from_ref(&obj),
                &ev.rv.to_string(),
                include,
            );
            // Like the API server: column definitions only in the first event.
            if self.table_header_sent.replace(true)
                && let Some(m) = tab.as_object_mut()
            {
                m["columnDefinitions"] = json!([]);
            }
            return Some(watch_line(kind, &tab));
        }
        if self.version
            == ev
                .object
                .get("apiVersion")
                .and_then(Value::as_str)
                .and_then(|a| a.rsplit('/').next())
                .unwrap_or("")
        {
            let mut line = Vec::with_capacity(ev.object_json().len() + 32);
            line.extend_from_slice(b"{\"type\":\"");
            line.extend_from_slice(kind.as_bytes());
            line.extend_from_slice(b"\",\"object\":");
            line.extend_from_slice(ev.object_json());
            line.extend_from_slice(b"}\n");
            return Some(Bytes::from(line));
        }
        let obj = convert::from_storage(self.group, self.version, (*ev.object).clone());
        Some(watch_line(kind, &obj))
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        watch_line(
            "BOOKMARK",
            &json!({"kind": self.kind, "apiVersion": self.api_version, "metadata": meta}),
        )
    }

    async fn run(
        mut self,
        backlog: Vec<Arc<crate::store::WatchEvent>>,
        mut live: broadcast::Receiver<Arc<crate::store::WatchEvent>>,
        tx: mpsc::Sender<Bytes>,
    ) {
        let start_rv = self.store.current_rv();
        for ev in &backlog {
            if let Some(l) = self.line(ev)
                && tx.send(l).await.is_err()
            {
                return;
            }
        }
        if self.initial_events_end {
            let rv = backlog
                .iter()
                .map(|e| e.rv)
                .max()
                .unwrap_or(0)
                .max(start_rv.min(self.store.current_rv()));
            if tx.send(self.bookmark(rv, true)).await.is_err() {
                return;
            }
        }
        let deadline = async {
            match self.deadline {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(self.bookmark_interval);
        tick.tick().await;
        loop {
            tokio::select! {
                ev = live.recv() => match ev {
                    Ok(ev) => {
                        if let Some(l) = self.line(&ev)
                            && tx.send(l).await.is_err()
                        {
                            return;
                        }
                    }
                    // Too slow to keep up: end the stream; the client resumes from its last version.
                    Err(_) => return,
                },
                _ = tick.tick(), if self.bookmarks => {
                    // Only when nothing is queued, so the bookmark never skips an undelivered event.
                    let rv = self.store.current_rv();
                    if live.is_empty() && tx.send(self.bookmark(rv, false)).await.is_err() {
                        return;
                    }
                }
                _ = &mut deadline => return,
                _ = self.drop_signal.changed() => return,
                _ = tx.closed() => return,
            }
        }
    }
}
