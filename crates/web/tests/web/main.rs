//! The web dashboard against the real pieces (see `harness`): HTTP-level
//! checks of sign-in, cookies, CSRF, tenant isolation and token hygiene
//! (`http`), and headless Chromium driven over WebDriver (`browser`).

mod browser;
mod harness;
mod http;
mod session;
