//! Dispatcher integration tests against real PostgreSQL with the scripted
//! test executor. Each test makes its own database.

mod helpers;

mod admin;
mod cancel;
mod claim_sql;
mod claims;
mod crash;
mod fairness;
mod local_opt_in;
mod retry;
mod shutdown;
mod sink;
mod tekton_disabled;
mod transitions;
mod unknown_values;
