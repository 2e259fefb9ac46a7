//! What the workspace's tests share: a database of a test's own that goes
//! when the test does ([`TestDb`], [`ReservedDb`]), a typed client of the
//! HTTP API ([`ApiClient`]), a PostgreSQL server of a test's own to stop and
//! restart ([`PgServer`]), a child process whose output is kept for the
//! failure message ([`Proc`]), and the real services build tests talk to: a
//! `docker-registry` with htpasswd auth ([`Registry`]) and git repositories
//! served over smart HTTP, optionally behind Basic auth ([`GitServer`]).
//!
//! A dev-dependency only: `crates/dev/tests/isolation.rs` checks that no
//! crate depends on it otherwise. Helpers panic rather than return errors:
//! a failed step is a failed test, with the reason in the message.

mod api;
mod db;
mod git;
mod pg_server;
mod proc;
mod registry;
mod tools;

pub use api::{ApiClient, Body, Response, TERMINAL, fields, id_of};
pub use db::{ReservedDb, TestDb, admin_url, database_exists, database_url};
pub use git::{GitServer, commit, git, git_repo};
pub use pg_server::PgServer;
pub use proc::{Proc, free_port};
pub use registry::Registry;
pub use tools::{have_tools, on_path};
