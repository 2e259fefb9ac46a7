//! Counts a cluster client's Kubernetes API requests, and those answered
//! with an error status or not at all, by provider and verb
//! (`imagefactory_kube_requests_total`, `imagefactory_kube_request_errors_total`).
//! A tower layer over every kube client the executor builds.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Request, Response};
use imagefactory_metrics::{KubeLabels, metrics};
use tower::{Layer, Service};

/// The provider label of the dispatchers' global cluster (no provider row).
pub const GLOBAL_PROVIDER: &str = "global";

#[derive(Clone, Debug)]
pub struct KubeMetricsLayer {
    provider: String,
}

impl KubeMetricsLayer {
    /// `provider`: the provider's id, or [`GLOBAL_PROVIDER`].
    pub fn new(provider: impl Into<String>) -> Self {
        Self {
            provider: provider.into(),
        }
    }
}

impl<S> Layer<S> for KubeMetricsLayer {
    type Service = KubeMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        KubeMetrics {
            inner,
            provider: self.provider.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct KubeMetrics<S> {
    inner: S,
    provider: String,
}

impl<S, B, R> Service<Request<B>> for KubeMetrics<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let labels = KubeLabels {
            provider: self.provider.clone(),
            verb: verb(
                request.method(),
                request.uri().path(),
                request.uri().query(),
            ),
        };
        metrics().kube_requests.get_or_create(&labels).inc();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await;
            let failed = match &answer {
                Ok(response) => response.status().as_u16() >= 400,
                Err(_) => true,
            };
            if failed {
                metrics().kube_errors.get_or_create(&labels).inc();
            }
            answer
        })
    }
}

/// The Kubernetes verb of a request: `get`/`list`/`watch` by whether the
/// path names one object or a collection (and `watch=true`), `create`,
/// `update`, `patch`, `delete`/`deletecollection`; `discovery` for the API
/// group listings; `other` for anything else. Pure, so bounded by design.
pub fn verb(method: &Method, path: &str, query: Option<&str>) -> &'static str {
    let watch = query.is_some_and(|q| q.split('&').any(|p| p == "watch=true" || p == "watch=1"));
    let item = match names_an_object(path) {
        Some(item) => item,
        None if *method == Method::GET => return "discovery",
        None => return "other",
    };
    match *method {
        Method::GET if watch => "watch",
        Method::GET if item => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if item => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

/// For a resource path (`/api/v1/...` or `/apis/<group>/<version>/...`),
/// whether it names one object (`Some(true)`) or a collection; `None` for
/// discovery paths.
fn names_an_object(path: &str) -> Option<bool> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    // `namespaces/<ns>/<resource>...` is a namespaced resource;
    // `namespaces[/<ns>]` alone is the namespaces resource itself.
    let rest = match rest {
        ["namespaces", _ns, resource @ ..] if !resource.is_empty() => resource,
        other => other,
    };
    match rest {
        [] => None,
        [_resource] => Some(false),
        _ => Some(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_follow_kubernetes_request_paths() {
        let ns = "/apis/tekton.dev/v1/namespaces/t1/pipelineruns";
        let cases = [
            (Method::GET, ns, None, "list"),
            (
                Method::GET,
                ns,
                Some("watch=true&resourceVersion=5"),
                "watch",
            ),
            (Method::GET, &format!("{ns}/run-1") as &str, None, "get"),
            (Method::POST, ns, None, "create"),
            (Method::PATCH, &format!("{ns}/run-1") as &str, None, "patch"),
            (
                Method::PUT,
                &format!("{ns}/run-1/status") as &str,
                None,
                "update",
            ),
            (
                Method::DELETE,
                &format!("{ns}/run-1") as &str,
                None,
                "delete",
            ),
            (Method::DELETE, ns, None, "deletecollection"),
            (Method::GET, "/api/v1/namespaces/t1", None, "get"),
            (Method::GET, "/api/v1/namespaces", None, "list"),
            (Method::POST, "/api/v1/namespaces", None, "create"),
            (
                Method::GET,
                "/api/v1/namespaces/t1/pods/p/log",
                Some("follow=true"),
                "get",
            ),
            (Method::GET, "/apis/tekton.dev/v1", None, "discovery"),
            (Method::GET, "/version", None, "discovery"),
            (Method::OPTIONS, "/api/v1/pods", None, "other"),
        ];
        for (method, path, query, want) in cases {
            assert_eq!(
                verb(&method, path, query),
                want,
                "{method} {path} {query:?}"
            );
        }
    }

    /// A fake API server answering 200, 404, or not at all, by path.
    async fn answer(request: Request<()>) -> Result<Response<()>, std::io::Error> {
        match request.uri().path() {
            "/api/v1/namespaces/gone" => Ok(Response::builder().status(404).body(()).unwrap()),
            "/api/v1/namespaces/down" => Err(std::io::Error::other("connection refused")),
            _ => Ok(Response::new(())),
        }
    }

    #[tokio::test]
    async fn requests_and_errors_are_counted_by_provider_and_verb() {
        let provider = uuid::Uuid::new_v4().to_string();
        let mut client = KubeMetricsLayer::new(&provider).layer(tower::service_fn(answer));
        for path in [
            "/api/v1/namespaces/ok",
            "/api/v1/namespaces/gone",
            "/api/v1/namespaces/down",
        ] {
            let request = Request::get(path).body(()).unwrap();
            let _ = client.call(request).await;
        }
        let request = Request::post("/api/v1/namespaces").body(()).unwrap();
        client.call(request).await.unwrap();
        let count = |family: &imagefactory_metrics::CounterFamily<KubeLabels>, verb| {
            family
                .get_or_create(&KubeLabels {
                    provider: provider.clone(),
                    verb,
                })
                .get()
        };
        let m = metrics();
        assert_eq!(count(&m.kube_requests, "get"), 3);
        assert_eq!(count(&m.kube_errors, "get"), 2);
        assert_eq!(count(&m.kube_requests, "create"), 1);
        assert_eq!(count(&m.kube_errors, "create"), 0);
    }
}
