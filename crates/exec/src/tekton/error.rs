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
            !mentions_certificate(err)
        }
        _ => false,
    }
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

/// The cluster's own words for an error: the Status message with its reason and
/// code, or the chain of transport errors.
pub fn describe_kube_error(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => {
            let hint = match status.code {
                401 => {
                    " (the cluster rejected the provider's credentials; update the provider's token or certificate)"
                }
                403 => " (the provider's identity lacks permission; grant it RBAC access)",
                _ => "",
            };
            format!(
                "{} ({} {}){hint}",
                status.message, status.code, status.reason
            )
        }
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(e) = source {
                let next = e.to_string();
                if !text.contains(&next) {
                    text.push_str(": ");
                    text.push_str(&next);
                }
                source = e.source();
            }
            text
        }
    }
}
