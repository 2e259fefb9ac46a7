//! Kubernetes `Status` error bodies with the reasons, messages and details the
//! real API server produces (shapes from the Kubernetes apimachinery source).

use serde_json::{Value, json};

/// An API error, rendered as a `meta/v1 Status` with `code` as the HTTP status.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds for a `Retry-After` header (429 from fault injection).
    pub retry_after: Option<u32>,
}

/// How a resource is named in messages: `pipelineruns.tekton.dev` or `pods`.
pub fn qualified(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

fn details(group: &str, plural: &str, name: Option<&str>) -> Value {
    let mut d = serde_json::Map::new();
    if let Some(n) = name {
        d.insert("name".into(), json!(n));
    }
    if !group.is_empty() {
        d.insert("group".into(), json!(group));
    }
    d.insert("kind".into(), json!(plural));
    Value::Object(d)
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", qualified(group, plural)),
        )
        .with_details(details(group, plural, Some(name)))
    }

    pub fn already_exists(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", qualified(group, plural)),
        )
        .with_details(details(group, plural, Some(name)))
    }

    pub fn conflict(group: &str, plural: &str, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                qualified(group, plural)
            ),
        )
        .with_details(details(group, plural, Some(name)))
    }

    /// 422 `Invalid` for one field, as the validation layer reports it.
    /// `kind_group` is e.g. `PipelineRun.tekton.dev` or `Pod`.
    pub fn invalid(kind: &str, group: &str, name: &str, field: &str, detail: &str) -> Self {
        let kind_group = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let mut d = serde_json::Map::new();
        d.insert("name".into(), json!(name));
        if !group.is_empty() {
            d.insert("group".into(), json!(group));
        }
        d.insert("kind".into(), json!(kind));
        d.insert(
            "causes".into(),
            json!([{ "reason": "FieldValueInvalid", "message": detail, "field": field }]),
        );
        Self::new(
            422,
            "Invalid",
            format!("{kind_group} \"{name}\" is invalid: {field}: {detail}"),
        )
        .with_details(Value::Object(d))
    }

    /// 422 for a missing required value (`Required value: ...`).
    pub fn required(kind: &str, group: &str, name: &str, field: &str, detail: &str) -> Self {
        let mut e = Self::invalid(
            kind,
            group,
            name,
            field,
            &format!("Required value: {detail}"),
        );
        if let Some(c) = e
            .details
            .as_mut()
            .and_then(|d| d["causes"][0].as_object_mut())
        {
            c.insert("reason".into(), json!("FieldValueRequired"));
        }
        e
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized")
    }

    /// 403 with the RBAC authorizer's message shape.
    pub fn forbidden(
        user: &str,
        verb: &str,
        group: &str,
        plural: &str,
        subresource: Option<&str>,
        namespace: Option<&str>,
        name: Option<&str>,
    ) -> Self {
        let what = match name {
            Some(n) => format!("{} \"{n}\"", qualified(group, plural)),
            None => qualified(group, plural),
        };
        let resource = match subresource {
            Some(s) => format!("{plural}/{s}"),
            None => plural.to_string(),
        };
        let scope = match namespace {
            Some(ns) => format!(" in the namespace \"{ns}\""),
            None => " at the cluster scope".to_string(),
        };
        Self::new(
            403,
            "Forbidden",
            format!("{what} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\"{scope}"),
        )
        .with_details(details(group, plural, name))
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    pub fn unsupported_media_type(accepted: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: {accepted}"
            ),
        )
    }

    /// 406: nothing in the request's `Accept` list can be produced.
    pub fn not_acceptable(accepted: &str) -> Self {
        Self::new(
            406,
            "NotAcceptable",
            format!("only the following media types are accepted: {accepted}"),
        )
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new(410, "Expired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            500,
            "InternalError",
            format!("Internal error occurred: {}", message.into()),
        )
    }

    pub fn too_many_requests(retry_after: u32) -> Self {
        let mut e = Self::new(
            429,
            "TooManyRequests",
            "Too many requests, please try again later.",
        );
        e.details = Some(json!({ "retryAfterSeconds": retry_after }));
        e.retry_after = Some(retry_after);
        e
    }

    pub fn path_not_found() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn to_status(&self) -> Value {
        let mut s = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let Some(d) = &self.details {
            s["details"] = d.clone();
        }
        s
    }
}

/// The `Status` a successful delete of an object that is gone at once returns.
pub fn delete_success(group: &str, plural: &str, name: &str, uid: &str) -> Value {
    let mut d = details(group, plural, Some(name));
    d["uid"] = json!(uid);
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": d })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forbidden_message_matches_rbac_shape() {
        let e = ApiError::forbidden(
            "u",
            "get",
            "tekton.dev",
            "pipelineruns",
            None,
            Some("ns"),
            Some("x"),
        );
        assert_eq!(
            e.message,
            "pipelineruns.tekton.dev \"x\" is forbidden: User \"u\" cannot get resource \"pipelineruns\" in API group \"tekton.dev\" in the namespace \"ns\""
        );
        let e = ApiError::forbidden(
            "system:serviceaccount:ci:builder",
            "list",
            "tekton.dev",
            "pipelineruns",
            None,
            Some("ci"),
            None,
        );
        assert_eq!(
            e.to_status(),
            serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"pipelineruns.tekton.dev is forbidden: User \"system:serviceaccount:ci:builder\" cannot list resource \"pipelineruns\" in API group \"tekton.dev\" in the namespace \"ci\"","reason":"Forbidden","details":{"group":"tekton.dev","kind":"pipelineruns"},"code":403})
        );
    }

    #[test]
    fn not_found_for_core_resource_has_no_group() {
        let e = ApiError::not_found("", "namespaces", "ghost");
        assert_eq!(
            e.to_status(),
            serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"namespaces \"ghost\" not found","reason":"NotFound","details":{"name":"ghost","kind":"namespaces"},"code":404})
        );
    }

    #[test]
    fn invalid_put_without_resource_version() {
        let e = ApiError::invalid(
            "PipelineRun",
            "tekton.dev",
            "build-1",
            "metadata.resourceVersion",
            "Invalid value: 0: must be specified for an update",
        );
        assert_eq!(
            e.to_status(),
            serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"PipelineRun.tekton.dev \"build-1\" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update","reason":"Invalid","details":{"name":"build-1","group":"tekton.dev","kind":"PipelineRun","causes":[{"reason":"FieldValueInvalid","message":"Invalid value: 0: must be specified for an update","field":"metadata.resourceVersion"}]},"code":422})
        );
    }
}
