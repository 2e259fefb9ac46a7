//! What the quick start (`imagefactory-dev`) and the load generator
//! (`imagefactory-load`) share: kube-sim in-process with a tenant's
//! operator setup, and the SSE reader for followed logs.

pub mod sim;
pub mod sse;
