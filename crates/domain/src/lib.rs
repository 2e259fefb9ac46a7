//! Pure types and rules of Image Factory. No I/O here: no database, no HTTP, no
//! Kubernetes. Everything else parses into these types at its edge.

pub mod build;
pub mod secret;

pub use build::{BuildMethod, BuildStatus, ExecutorKind, InfrastructureType, MethodConfig};
pub use secret::Secret;
