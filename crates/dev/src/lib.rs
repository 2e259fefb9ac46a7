//! What the quick start (`imagefactory-dev`) and the load generator
//! (`imagefactory-load`) share: kube-sim in-process with a tenant's
//! operator setup; and the local registry and git server of the quick
//! start's `--real-steps`. Followed logs are read with the client's SSE
//! reader (`imagefactory_cli::sse`).

pub mod real;
pub mod sim;
