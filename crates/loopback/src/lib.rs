//! Real services on 127.0.0.1 that builds talk to — git repositories over
//! smart HTTP ([`git::GitServer`]) and a `docker-registry`
//! ([`registry::Registry`]) — shared by the quick start's `--real-steps`
//! (crates/dev) and the tests (through crates/test-support), so there is one
//! implementation of each. Development and tests only.

pub mod git;
pub mod registry;

pub use git::GitServer;
pub use registry::Registry;

/// A free port on 127.0.0.1 for a program that binds it itself (the port is
/// released before it does, so another program could take it in between).
pub fn free_port() -> std::io::Result<u16> {
    Ok(
        std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port(),
    )
}
