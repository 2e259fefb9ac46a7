//! End-to-end tests of Image Factory: the API, PostgreSQL, dispatchers with
//! the Tekton executor and kube-sim composed in one process. The tests live
//! in `tests/e2e` and the Tekton benchmark in `benches/tekton.rs`; what they
//! share with the other crates' tests (fresh databases, the API client) is
//! in `imagefactory-test-support`.
