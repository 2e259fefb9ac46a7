//! What the quick start (`imagefactory-dev`) and the load generator
//! (`imagefactory-load`) share: kube-sim in-process with a tenant's
//! operator setup, and the SSE reader for followed logs; and the local
//! registry and git server of the quick start's `--real-steps`.

pub mod real;
pub mod sim;
pub mod sse;
