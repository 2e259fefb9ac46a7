//! The command-line client of the Image Factory API: `imagefactory build
//! submit --follow`, `build logs -f`, projects, providers, registry
//! credentials, tenants and tokens (README "Command-line client").
//!
//! Layout: `commands` parses flags and calls the API through `client`;
//! `watch` and `follow` stream a build; `render` is the pure text of what
//! is printed and `output` where it goes; `config` resolves the server and
//! token; `error` and `exit` say how a command ends.

pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod exit;
pub mod follow;
pub mod output;
pub mod render;
pub mod sse;
pub mod watch;

use std::process::ExitCode;

use clap::Subcommand;

use commands::admin::{TenantArgs, TokenArgs};
use commands::build::BuildArgs;
use commands::login::LoginArgs;
use commands::resources::{CredentialArgs, ProjectArgs, ProviderArgs};
use output::OutputFormat;

/// The client's subcommands, flattened into the `imagefactory` binary's.
// Parsed once per process: the size of a variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Submit, list, follow, cancel and retry builds.
    Build(BuildArgs),
    /// A tenant's projects (git repositories).
    Project(ProjectArgs),
    /// Infrastructure providers and their connection test.
    Provider(ProviderArgs),
    /// Registry logins used to push images.
    RegistryCredential(CredentialArgs),
    /// Tenants (platform admin).
    Tenant(TenantArgs),
    /// API tokens.
    Token(TokenArgs),
    /// Check a token against a server and store both for later commands.
    Login(LoginArgs),
}

impl ClientCommand {
    fn output(&self) -> OutputFormat {
        match self {
            Self::Build(a) => a.conn.output,
            Self::Project(a) => a.conn.output,
            Self::Provider(a) => a.conn.output,
            Self::RegistryCredential(a) => a.conn.output,
            Self::Tenant(a) => a.conn.output,
            Self::Token(a) => a.conn.output,
            Self::Login(a) => a.conn.output,
        }
    }
}

/// Runs one client command; errors are printed here, as text or JSON on
/// stderr, and become the exit code.
pub async fn run(command: ClientCommand) -> ExitCode {
    let format = command.output();
    let result = match command {
        ClientCommand::Build(a) => commands::build::run(a).await,
        ClientCommand::Project(a) => commands::resources::project(a).await,
        ClientCommand::Provider(a) => commands::resources::provider(a).await,
        ClientCommand::RegistryCredential(a) => commands::resources::credential(a).await,
        ClientCommand::Tenant(a) => commands::admin::tenant(a).await,
        ClientCommand::Token(a) => commands::admin::token(a).await,
        ClientCommand::Login(a) => commands::login::run(a).await,
    };
    match result {
        Ok(code) => exit::code(code),
        Err(err) => {
            match format {
                OutputFormat::Json => eprintln!("{}", err.to_json()),
                OutputFormat::Text => eprintln!("imagefactory: {}", err.message()),
            }
            exit::code(err.exit_code())
        }
    }
}
