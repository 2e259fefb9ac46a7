//! Pure types and rules of Image Factory. No I/O here: no database, no HTTP, no
//! Kubernetes. Everything else parses into these types at its edge.
//!
//! The optional `openapi` feature derives `utoipa::ToSchema` for the types the
//! API shows, so the OpenAPI document is generated from these definitions.

pub mod address;
pub mod build;
pub mod git;
pub mod image;
pub mod log_text;
pub mod method_rules;
pub mod names;
pub mod provider;
pub mod role;
pub mod secret;
pub mod task_bundle;
pub mod text;
pub mod validation;

pub use address::AddressPolicy;
pub use build::{
    BuildMethod, BuildStatus, ExecutorKind, InfrastructureType, MethodConfig, Transition,
    UnknownVariant,
};
pub use git::{GitRef, GitUrl};
pub use image::ImageRef;
pub use method_rules::{Destination, validate_build_config};
pub use names::ResourceName;
pub use provider::{ProviderStatus, ProviderType};
pub use role::Role;
pub use secret::Secret;
pub use text::InvalidValue;
pub use validation::{FieldError, Violations};
