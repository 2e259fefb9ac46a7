//! End-to-end tests of Image Factory: the API, PostgreSQL, dispatchers with
//! the Tekton executor and kube-sim composed in one process. Everything lives
//! in `tests/e2e`; this library is empty.
