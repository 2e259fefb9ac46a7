//! End-to-end tests: HTTP API → PostgreSQL → dispatchers → Tekton executor →
//! kube-sim, asserting what a user sees through the API and what the cluster holds.

mod bundle;
mod failures;
mod faults;
mod harness;
mod host;
mod load;
mod logs;
mod methods;
mod reattach;
