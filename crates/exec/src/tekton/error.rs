//! One error type for the Tekton executor, and how each error ends a build.

use crate::Outcome;

#[derive(Debug, thiserror::Error)]
pub enum TektonError {
    /// The build cannot run as configured (missing Task, bad template, rejected
    /// credentials...). The message says what is wrong and how to fix it.
    #[error("{0}")]
    Build(String),
    /// A Kubernetes call failed; `context` says what we were doing.
    #[error("{context}: {}", describe_kube_error(.source))]
    Kube {
        context: String,
        #[source]
        source: kube::Error,
    },
    /// Infrastructure trouble worth another attempt.
    #[error("{0}")]
    Transient(String),
}

impl TektonError {
    pub fn kube(context: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            context: context.into(),
            source,
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            Self::Build(_) => false,
            Self::Transient(_) => true,
            Self::Kube { source, .. } => is_transient(source),
        }
    }

    pub fn into_outcome(self) -> Outcome {
        let message = self.to_string();
        if self.is_transient() {
            Outcome::Transient { message }
        } else {
            Outcome::Failed { message }
        }
    }
}

/// HTTP status of an API error, if the server answered.
pub fn status_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

pub fn is_not_found(err: &kube::Error) -> bool {
    status_code(err) == Some(404)
}

pub fn is_already_exists(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists")
}

/// Errors another attempt may not meet: the server could not be reached, was
/// overloaded (429) or failed internally (5xx). TLS verification failures are
/// not transient: the configuration is wrong.
pub fn is_transient(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => status.code == 429 || status.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            !mentions_certificate(err) && !refused_by_policy(err)
        }
        _ => false,
    }
}

/// The API server did not act on the request: no connection could be made
/// (refused, host not found, connect timeout: nothing was sent), or it
/// turned the request away before handling it (429 Too Many Requests, 503
/// Service Unavailable). After any other failure (a 500 or 504, a
/// connection closed mid-request) a create may have taken effect.
pub fn not_acted_on(err: &kube::Error) -> bool {
    if let kube::Error::Api(status) = err {
        return matches!(status.code, 429 | 503);
    }
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if e.is::<super::connect::HostNotFound>() {
            return true;
        }
        if let Some(h) = e.downcast_ref::<hyper_util::client::legacy::Error>()
            && h.is_connect()
        {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
            if let Some(inner) = io.get_ref()
                && inner.is::<super::connect::HostNotFound>()
            {
                return true;
            }
        }
        current = e.source();
    }
    false
}

/// The address policy refused the connection: the provider's config is
/// wrong, another attempt would meet the same refusal.
fn refused_by_policy(err: &kube::Error) -> bool {
    describe_transport(err).starts_with("address not allowed")
}

fn mentions_certificate(err: &kube::Error) -> bool {
    let mut current: Option<&dyn std::error::Error> = Some(err);
    while let Some(e) = current {
        let text = e.to_string().to_ascii_lowercase();
        if text.contains("certificate") || text.contains("invalidcert") {
            return true;
        }
        current = e.source();
    }
    false
}

/// Kubernetes `Status` reasons: only a body carrying one of these is taken
/// as the cluster's own answer (any JSON object parses as a `Status`).
const STATUS_REASONS: &[&str] = &[
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "Gone",
    "Invalid",
    "ServerTimeout",
    "StoreReadError",
    "Timeout",
    "TooManyRequests",
    "BadRequest",
    "MethodNotAllowed",
    "NotAcceptable",
    "RequestEntityTooLarge",
    "UnsupportedMediaType",
    "InternalError",
    "Expired",
    "ServiceUnavailable",
];

/// Longest part of a cluster's Status message that is shown.
const MESSAGE_LIMIT: usize = 300;

/// What went wrong, as a category and a short cause: for an API error the
/// status code and, when the body was a real Kubernetes `Status`, its reason
/// and message (truncated, printable only); for anything else a fixed
/// category ("connection refused", "TLS: unknown certificate authority").
/// Never a non-Kubernetes response body or a local tool's output: a tenant
/// chooses the endpoint, and kube puts whatever it answered in the error.
pub fn describe_kube_error(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => describe_status(status),
        other => describe_transport(other),
    }
}

/// Whether an API error's body was a Kubernetes `Status` (a known reason),
/// not whatever else a server at the endpoint answered.
pub fn is_kubernetes_status(status: &kube::core::Status) -> bool {
    STATUS_REASONS.contains(&status.reason.as_str())
}

fn describe_status(status: &kube::core::Status) -> String {
    let hint = match status.code {
        401 => {
            " (the cluster rejected the provider's credentials; update the provider's token or certificate)"
        }
        403 => " (the provider's identity lacks permission; grant it RBAC access)",
        _ => "",
    };
    if !is_kubernetes_status(status) {
        return format!(
            "the server answered HTTP {} with a body that is not a Kubernetes API status{hint}",
            status.code
        );
    }
    format!(
        "{} ({} {}){hint}",
        printable(&status.message, MESSAGE_LIMIT),
        status.code,
        status.reason
    )
}

/// `text` without control characters, cut at `limit` characters.
fn printable(text: &str, limit: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(limit)
        .collect();
    if text.chars().count() > limit {
        out.push('…');
    }
    out
}

/// The category of a failure that is not an API answer.
fn describe_transport(err: &kube::Error) -> String {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(category) = category(e) {
            return category;
        }
        current = e.source();
    }
    match err {
        kube::Error::SerdeError(_) | kube::Error::FromUtf8(_) => {
            "the server's answer is not a Kubernetes API response".into()
        }
        kube::Error::Auth(_) => "building the client's credentials failed".into(),
        kube::Error::RustlsTls(_) => "TLS configuration is invalid (certificate or key)".into(),
        kube::Error::ReadEvents(_) | kube::Error::LinesCodecMaxLineLengthExceeded => {
            "reading a stream from the server failed".into()
        }
        _ => "the cluster's API server could not be reached".into(),
    }
}

/// The category of one error in a chain, if it has one.
fn category(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use super::connect::{AddressRefused, HostNotFound};
    if let Some(refused) = e.downcast_ref::<AddressRefused>() {
        return Some(refused.to_string());
    }
    if e.is::<HostNotFound>() {
        return Some(HostNotFound.to_string());
    }
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return Some(tls_category(tls).into());
    }
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        // An io::Error's `source` skips the error it wraps: look at it here.
        if let Some(inner) = io.get_ref()
            && let Some(category) = category(inner)
        {
            return Some(category);
        }
        use std::io::ErrorKind::*;
        return match io.kind() {
            ConnectionRefused => Some("connection refused".into()),
            TimedOut => Some("connection timed out".into()),
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => {
                Some("connection closed by the server".into())
            }
            _ => None,
        };
    }
    if let Some(h) = e.downcast_ref::<hyper::Error>() {
        if h.is_timeout() {
            return Some("connection timed out".into());
        }
        if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
            return Some("connection closed by the server".into());
        }
        if h.is_parse() {
            return Some("the server's answer is not HTTP (wrong scheme or port?)".into());
        }
    }
    None
}

fn tls_category(err: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match err {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "TLS: unknown certificate authority"
        }
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => "TLS: certificate not valid for host",
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "TLS: certificate expired"
        }
        rustls::Error::InvalidCertificate(_) => "TLS: invalid certificate",
        _ => "TLS handshake failed",
    }
}

/// A kubeconfig that could not be used, without its contents or a file's:
/// kube's parse errors quote the document, which holds credentials (or, for
/// a path, whatever file it names).
pub fn describe_kubeconfig_error(err: &kube::config::KubeconfigError) -> String {
    use kube::config::KubeconfigError as K;
    let load = |what: &str, e: &kube::config::LoadDataError| match e {
        kube::config::LoadDataError::DecodeBase64(_) => format!("{what}: not valid base64"),
        kube::config::LoadDataError::ReadFile(io, _) => {
            format!("{what}: reading its file failed ({})", io.kind())
        }
        kube::config::LoadDataError::NoBase64DataOrFile => format!("{what}: missing"),
    };
    match err {
        K::ReadConfig(io, _) => format!("reading the kubeconfig file failed ({})", io.kind()),
        K::Parse(_) => "the kubeconfig is not a valid kubeconfig document".into(),
        K::LoadCertificateAuthority(e) => load("certificate authority", e),
        K::LoadClientCertificate(e) => load("client certificate", e),
        K::LoadClientKey(e) => load("client key", e),
        K::ParseCertificates(_) => "a certificate in the kubeconfig is not valid PEM".into(),
        K::ParseClusterUrl(_) => "the cluster's server URL is invalid".into(),
        K::ParseProxyUrl(_) => "the proxy URL is invalid".into(),
        // The rest name contexts and clusters at most, never contents.
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    #[test]
    fn a_non_kubernetes_body_is_never_shown() {
        // What kube makes of a 500 with a plain body.
        let status = Status::failure(
            "SECRET-BODY-MARKER root:x:0:0",
            "Failed to parse error data",
        )
        .with_code(500);
        let text = describe_kube_error(&kube::Error::Api(status.boxed()));
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("500"), "{text}");
        // JSON that is not a Status parses as one with no reason.
        let fake = Status {
            message: "SECRET".into(),
            code: 200,
            ..Default::default()
        };
        let text = describe_kube_error(&kube::Error::Api(fake.boxed()));
        assert!(!text.contains("SECRET"), "{text}");
    }

    #[test]
    fn a_kubernetes_status_keeps_its_reason_and_a_short_message() {
        let status = Status::failure(
            &format!(
                "pipelineruns is forbidden: User \"x\"\n{}",
                "a".repeat(1000)
            ),
            "Forbidden",
        )
        .with_code(403);
        let text = describe_kube_error(&kube::Error::Api(status.boxed()));
        assert!(
            text.starts_with("pipelineruns is forbidden: User \"x\" "),
            "{text}"
        );
        assert!(text.contains("(403 Forbidden)"), "{text}");
        assert!(text.len() < 600, "{text}");
    }

    #[test]
    fn only_requests_the_server_never_acted_on_are_not_acted_on() {
        let api = |code| kube::Error::Api(Status::failure("x", "y").with_code(code).boxed());
        assert!(not_acted_on(&api(429)));
        assert!(not_acted_on(&api(503)));
        // The server may have stored the object before failing.
        assert!(!not_acted_on(&api(500)));
        assert!(!not_acted_on(&api(504)));
        let io = |kind| kube::Error::ReadEvents(std::io::Error::new(kind, "x"));
        assert!(not_acted_on(&io(std::io::ErrorKind::ConnectionRefused)));
        assert!(not_acted_on(&kube::Error::ReadEvents(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            crate::tekton::connect::HostNotFound
        ))));
        // Sent, and cut before the answer.
        assert!(!not_acted_on(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(!not_acted_on(&io(std::io::ErrorKind::UnexpectedEof)));
    }

    #[test]
    fn transport_errors_are_categories() {
        let io = |kind| kube::Error::ReadEvents(std::io::Error::new(kind, "raw detail"));
        assert_eq!(
            describe_kube_error(&io(std::io::ErrorKind::ConnectionRefused)),
            "connection refused"
        );
        assert_eq!(
            describe_kube_error(&io(std::io::ErrorKind::TimedOut)),
            "connection timed out"
        );
        let tls = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(
            describe_kube_error(&kube::Error::ReadEvents(tls)),
            "TLS: unknown certificate authority"
        );
        let other = kube::Error::ReadEvents(std::io::Error::other("exec output: IF_SECRET_KEY=x"));
        assert!(!describe_kube_error(&other).contains("IF_"));
    }
}
