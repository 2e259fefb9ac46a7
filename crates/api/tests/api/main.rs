//! Integration tests of the REST API over HTTP against real PostgreSQL
//! (a fresh database per test via `#[sqlx::test]`).

mod bad_inputs;
mod dispatchers;
mod helpers;
mod isolation;
mod logs_and_artifacts;
mod openapi;
mod scenario;
mod secrets;
