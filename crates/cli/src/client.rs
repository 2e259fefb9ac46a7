//! The API over HTTP: JSON in, JSON out, errors as [`CliError`]. The token
//! is sent as a bearer header and nowhere else.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

use crate::config::Target;
use crate::error::{CliError, CliResult};

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    api: String,
    token: String,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("api", &self.api).finish()
    }
}

impl Client {
    pub fn new(target: &Target) -> CliResult<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("imagefactory-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::Unavailable(format!("cannot set up HTTP: {e}")))?;
        Ok(Self {
            http,
            api: format!("{}/api/v1", target.url),
            token: target.token.clone(),
        })
    }

    /// `<url>/api/v1<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, self.url(path))
            .bearer_auth(&self.token)
    }

    /// Sends and returns the JSON body of a 2xx answer (`null` if empty).
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> CliResult<Value> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = checked(send(request, &self.api).await?).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| unavailable(&self.api, &e))?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| CliError::Unavailable(format!("the server's answer is not JSON: {e}")))
    }

    pub async fn get(&self, path: &str) -> CliResult<Value> {
        self.json(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> CliResult<Value> {
        self.json(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> CliResult<Value> {
        self.json(Method::DELETE, path, None).await
    }

    /// A raw streaming response for a 2xx answer.
    pub async fn stream(&self, request: RequestBuilder) -> CliResult<Response> {
        checked(send(request, &self.api).await?).await
    }
}

pub async fn send(request: RequestBuilder, api: &str) -> CliResult<Response> {
    request.send().await.map_err(|e| unavailable(api, &e))
}

/// The response if 2xx; else its problem document as [`CliError::Api`].
pub async fn checked(response: Response) -> CliResult<Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str::<Value>(&text).unwrap_or_else(|_| {
        let shown = if text.trim().is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text.chars().take(300).collect()
        };
        Value::String(shown)
    });
    Err(CliError::Api {
        status: status.as_u16(),
        body,
    })
}

/// "cannot reach <api>: <cause: cause: ...>" without the URL's query or
/// any header (the token is in none of them).
pub fn unavailable(api: &str, err: &reqwest::Error) -> CliError {
    let mut causes = Vec::new();
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(e) = source {
        causes.push(e.to_string());
        source = e.source();
    }
    let what = if err.is_connect() {
        "cannot connect to"
    } else if err.is_timeout() {
        "timed out talking to"
    } else {
        "lost the connection to"
    };
    let cause = causes.last().cloned().unwrap_or_else(|| err.to_string());
    CliError::Unavailable(format!("{what} {api}: {cause}"))
}
