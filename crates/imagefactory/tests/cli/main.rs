//! The command-line client as a user runs it: the real `imagefactory`
//! binary against a running `imagefactory serve` whose builds run on
//! kube-sim (README "Command-line client").

#[path = "../common/mod.rs"]
mod common;
mod harness;
mod json_output;
mod restart;
mod results;
