//! The `imagefactory` service as a library: settings, database setup,
//! executors and the process lifecycle, shared by the `imagefactory` binary
//! (`main.rs`) and the dev/demo binary (`crates/dev`), which adds kube-sim on
//! top without making it a dependency of the production binary.

pub mod connection;
pub mod database;
pub mod executors;
pub mod http;
pub mod lifecycle;
pub mod local_args;
pub mod metrics;
pub mod settings;
pub mod tekton_args;
pub mod tekton_cli;
pub mod telemetry;
