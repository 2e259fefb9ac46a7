//! The Tekton executor: each build attempt runs as one PipelineRun on the
//! provider's cluster. Pure logic (settings, rendering, validation, status
//! mapping) lives apart from the modules that talk to Kubernetes.

pub mod bundle;
pub mod client;
pub mod connect;
pub mod error;
pub mod executor;
pub mod install;
pub mod kube_metrics;
pub mod logclient;
pub mod logs;
pub mod monitor;
pub mod namespace;
pub mod oplog;
pub mod plan;
pub mod preflight;
pub mod readiness;
pub mod render;
pub mod retention;
pub mod secrets;
pub mod status;
pub mod submit;
pub mod tasks;
pub mod validate;

pub use client::{ClientCache, ClusterSettings, ConnectionReport, TektonVersion, test_connection};
pub use error::TektonError;
pub use executor::{TektonExecutor, TektonSettings};
pub use render::{RenderContext, Templates};
