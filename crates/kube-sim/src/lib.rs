pub mod cluster;
pub mod tekton;
