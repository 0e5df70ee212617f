//! Command-line surface of `kt`: clap definitions and dispatch. Command groups live in
//! their own modules; this file only wires them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::{CliError, Exit};
use crate::{init, policy};

#[derive(Debug, Parser)]
#[command(
    name = "kt",
    version,
    about = "kt: a self-hostable AI policy gateway",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a starter policy-config.yaml and example tests
    Init(init::InitArgs),
    /// Author and check policy packs: lint, test, schema
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Init(args) => init::run(args),
        Command::Policy { command } => policy::run(command),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(e) => match e.downcast::<CliError>() {
            Ok(cli_err) => {
                eprintln!("{cli_err}");
                cli_err.exit.into()
            }
            Err(other) => {
                eprintln!("error: {other:#}");
                Exit::Error.into()
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kt").chain(args.iter().copied()))
    }

    #[test]
    fn parses_documented_commands() {
        assert!(parse(&["init"]).is_ok());
        assert!(parse(&["init", "--template", "pii-redaction", "--dir", "x", "--force"]).is_ok());
        assert!(parse(&["init", "--list-templates"]).is_ok());
        assert!(parse(&["policy", "lint", "--file", "policy-config.yaml", "--json"]).is_ok());
        assert!(parse(&["policy", "lint", "--file", "a.yaml", "--file", "b.yaml"]).is_ok());
        assert!(parse(&["policy", "test", "--json", "--pack-dir", "pack"]).is_ok());
        assert!(parse(&["policy", "schema"]).is_ok());
    }

    #[test]
    fn rejects_unknown_flags() {
        assert!(parse(&["policy", "lint", "--nope"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
    }
}
