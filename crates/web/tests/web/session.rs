//! A cookie-carrying HTTP client, as a browser would send requests (no
//! redirects followed, so each answer can be inspected).

use reqwest::header::{HeaderMap, HeaderValue};

pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Page {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    pub fn set_cookie(&self) -> Option<&str> {
        self.headers.get("set-cookie").and_then(|v| v.to_str().ok())
    }

    /// The value of the first `name="csrf"` hidden input.
    pub fn csrf(&self) -> String {
        let at = self
            .text
            .find("name=\"csrf\" value=\"")
            .expect("a CSRF field");
        let rest = &self.text[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }
}

pub struct Visitor {
    http: reqwest::Client,
    pub base: String,
    pub cookie: Option<String>,
}

impl Visitor {
    pub fn new(base: &str) -> Visitor {
        Visitor {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: base.to_owned(),
            cookie: None,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Page {
        let request = match &self.cookie {
            Some(c) => request.header("cookie", c),
            None => request,
        };
        let response = request.send().await.expect("request");
        Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&self, path: &str) -> Page {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// A form POST from `origin` (`None`: no Origin header).
    pub async fn post(&self, path: &str, form: &[(&str, &str)], origin: Option<&str>) -> Page {
        let mut request = self.http.post(format!("{}{path}", self.base)).form(form);
        if let Some(o) = origin {
            request = request.header("origin", HeaderValue::from_str(o).unwrap());
        }
        self.send(request).await
    }

    /// A same-origin form POST.
    pub async fn submit(&self, path: &str, form: &[(&str, &str)]) -> Page {
        let origin = self.base.clone();
        self.post(path, form, Some(&origin)).await
    }

    /// Signs in with `token`; panics unless it is accepted.
    pub async fn sign_in(&mut self, token: &str) -> Page {
        let page = self.submit("/sign-in", &[("token", token)]).await;
        assert_eq!(page.status, 303, "sign-in refused: {}", page.text);
        let cookie = page.set_cookie().expect("a session cookie");
        self.cookie = Some(cookie.split(';').next().unwrap().to_owned());
        page
    }
}
