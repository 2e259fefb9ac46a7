//! Simulation of the Tekton Pipelines controller (v1 semantics).
//!
//! Pure logic — [`admission`] (webhook defaulting/validation), [`convert`] (v1 ↔
//! v1beta1), [`pipelinerun`] and [`taskrun`] (validation, scheduling, conditions),
//! [`script`] (what simulated steps do) — and a thin driver, [`Controller`], that sees
//! the cluster only through [`crate::cluster::Cluster`].

pub mod admission;
pub mod controller;
pub mod convert;
pub mod dag;
pub mod duration;
pub mod host;
pub mod model;
pub mod pipelinerun;
pub mod resolve;
pub mod script;
pub mod steps;
pub mod subst;
pub mod taskrun;
pub mod testing;

pub use controller::{Controller, ControllerHandle, ControllerOptions, Settled};
pub use host::HostSteps;
pub use script::ScriptRule;
