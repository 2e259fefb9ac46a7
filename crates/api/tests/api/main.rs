//! Integration tests of the REST API over HTTP against real PostgreSQL
//! (a fresh database per test with a name of its own: `helpers::TestDb`).

mod bad_inputs;
mod database_down;
mod dispatchers;
mod helpers;
mod http_limits;
mod invariants;
mod isolation;
mod local_builds;
mod logs_and_artifacts;
mod openapi;
mod pagination;
mod provider_keys;
mod queue_waker;
mod scenario;
mod secrets;
mod tekton_jobs;
mod token_cache;
