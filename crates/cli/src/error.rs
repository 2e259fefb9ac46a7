//! What goes wrong, as the user reads it: the server's problem `detail` and
//! each offending field, never a Rust error chain.

use serde_json::Value;

use crate::exit;

#[derive(Debug)]
pub enum CliError {
    /// Bad flags or missing settings; the message says which and what to do.
    Usage(String),
    /// The server answered with an error status; `body` is its
    /// problem+json document (or what it sent instead).
    Api { status: u16, body: Value },
    /// No answer: connection refused, DNS, TLS, a dropped stream that did
    /// not come back, a local file that could not be read or written.
    Unavailable(String),
}

pub type CliResult<T> = Result<T, CliError>;

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => exit::USAGE,
            Self::Api { .. } => exit::API_ERROR,
            Self::Unavailable(_) => exit::UNAVAILABLE,
        }
    }

    /// The text shown on stderr.
    pub fn message(&self) -> String {
        match self {
            Self::Usage(m) => m.clone(),
            Self::Unavailable(m) => m.clone(),
            Self::Api { status, body } => problem_text(*status, body),
        }
    }

    /// The error as a JSON document (for `--output json`).
    pub fn to_json(&self) -> Value {
        let kind = match self {
            Self::Usage(_) => "usage",
            Self::Api { .. } => "api",
            Self::Unavailable(_) => "unavailable",
        };
        let mut out = serde_json::json!({"error": kind, "message": self.message()});
        if let Self::Api { status, body } = self {
            out["status"] = (*status).into();
            out["problem"] = body.clone();
        }
        out
    }
}

/// `detail` (or `title`) of a problem, then one line per field error.
pub fn problem_text(status: u16, body: &Value) -> String {
    let detail = body["detail"]
        .as_str()
        .or_else(|| body["title"].as_str())
        .map(str::to_owned)
        .or_else(|| body.as_str().map(str::to_owned))
        .unwrap_or_else(|| body.to_string());
    let mut text = format!("{detail} (HTTP {status})");
    for error in body["errors"].as_array().into_iter().flatten() {
        let field = error["field"].as_str().unwrap_or("?");
        let message = error["message"].as_str().unwrap_or_default();
        text.push_str(&format!("\n  {field}: {message}"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_problem_shows_its_detail_and_each_field() {
        let body = json!({
            "type": "https://imagefactory.dev/problems/validation",
            "title": "Validation failed", "status": 422,
            "detail": "1 field is invalid",
            "errors": [{"field": "image", "message": "must name a repository"}]
        });
        let text = CliError::Api { status: 422, body }.message();
        assert_eq!(
            text,
            "1 field is invalid (HTTP 422)\n  image: must name a repository"
        );
    }

    #[test]
    fn a_non_problem_answer_is_shown_as_sent() {
        let text = problem_text(502, &Value::String("Bad Gateway".into()));
        assert_eq!(text, "Bad Gateway (HTTP 502)");
        assert_eq!(
            problem_text(500, &json!({"title": "Internal"})),
            "Internal (HTTP 500)"
        );
    }

    #[test]
    fn json_errors_carry_the_problem() {
        let err = CliError::Api {
            status: 404,
            body: json!({"detail": "no build x"}),
        };
        let v = err.to_json();
        assert_eq!(v["error"], "api");
        assert_eq!(v["status"], 404);
        assert_eq!(v["problem"]["detail"], "no build x");
        assert_eq!(CliError::Usage("x".into()).exit_code(), exit::USAGE);
    }
}
