//! Command-line surface of `kt`: clap definitions and dispatch. Command groups live in
//! their own modules; this file only wires them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::{CliError, Exit};
use crate::session::GlobalArgs;
use crate::{auth, diag, gateway, init, managed, policy, secrets, server, spend};

#[derive(Debug, Parser)]
#[command(
    name = "kt",
    version,
    about = "kt: a self-hostable AI policy gateway",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
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
    /// Run the data plane
    Gateway {
        #[command(subcommand)]
        command: gateway::GatewayCommand,
    },
    /// Run a managed gateway: configuration from the control plane (`kt run --managed`)
    Run(managed::RunManagedArgs),
    /// Run the control plane (API, storage, identity)
    Server(server::ServerArgs),
    /// Log in and out, show the identity in use, manage scoped API tokens
    Auth {
        #[command(subcommand)]
        command: auth::AuthCommand,
    },
    /// Encrypted, write-only secrets for provider credentials (secret_key_ref.store)
    Secret {
        #[command(subcommand)]
        command: secrets::SecretCommand,
    },
    /// Config variables, and how secret_key_ref.store names resolve
    ConfigVar {
        #[command(subcommand)]
        command: secrets::ConfigVarCommand,
    },
    /// What tokens cost and who may spend: prices and gateway keys
    Spend {
        #[command(subcommand)]
        command: spend::SpendCommand,
    },
    /// The CLI's effective settings
    Config {
        #[command(subcommand)]
        command: diag::ConfigCommand,
    },
    /// Check API reachability, credentials, config, state directory, gateway and providers
    Doctor(diag::DoctorArgs),
    /// Deprecated alias of `kt gateway`
    #[command(hide = true)]
    Proxy {
        #[command(subcommand)]
        command: gateway::GatewayCommand,
    },
}

pub fn main() -> ExitCode {
    crate::output::quiet_broken_pipe();
    let cli = Cli::parse();
    crate::session::init_logging(cli.global.log_format, &cli.global.log);
    let result = match cli.command {
        Command::Init(args) => init::run(args),
        Command::Policy { command } => policy::run(command, &cli.global),
        Command::Gateway { command } => gateway::run(command, &cli.global),
        Command::Run(args) => managed::run(args, &cli.global),
        Command::Server(args) => server::run(args),
        Command::Auth { command } => auth::run(command, &cli.global),
        Command::Secret { command } => secrets::secret(command, &cli.global),
        Command::Config { command } => diag::config(command, &cli.global),
        Command::Spend { command } => spend::run(command, &cli.global),
        Command::Doctor(args) => diag::doctor(args, &cli.global),
        Command::ConfigVar { command } => secrets::config_var(command, &cli.global),
        Command::Proxy { command } => {
            eprintln!("warning: `kt proxy` is deprecated; use `kt gateway`");
            gateway::run(command, &cli.global)
        }
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
    fn log_flags_are_global_and_checked() {
        use crate::session::LogFormat;
        let cli = parse(&["gateway", "run", "--log-format", "json", "--log", "debug"]).expect("parses");
        assert_eq!(
            (cli.global.log_format, cli.global.log.as_str()),
            (LogFormat::Json, "debug")
        );
        let cli = parse(&["doctor"]).expect("parses");
        assert_eq!(
            (cli.global.log_format, cli.global.log.as_str()),
            (LogFormat::Text, crate::session::DEFAULT_LOG)
        );
        assert!(
            parse(&["--log-format", "xml", "doctor"]).is_err(),
            "unknown formats are refused"
        );
    }

    /// Every command and flag of `kt`, as (path, what lacks help).
    fn missing_help(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && !arg.is_hide_set() && arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} --{}", arg.get_id()));
            }
        }
        for sub in cmd.get_subcommands() {
            let sub_path = format!("{path} {}", sub.get_name());
            if sub.get_name() != "help" && !sub.is_hide_set() && sub.get_about().is_none() {
                out.push(format!("{sub_path} (no description)"));
            }
            missing_help(sub, &sub_path, out);
        }
    }

    #[test]
    fn config_var_and_secret_commands_explain_every_flag() {
        use clap::CommandFactory;
        let cli = Cli::command();
        let mut missing = Vec::new();
        for name in ["config-var", "secret"] {
            let cmd = cli.find_subcommand(name).expect("command exists");
            missing_help(cmd, &format!("kt {name}"), &mut missing);
        }
        assert!(missing.is_empty(), "without a help text: {missing:#?}");
    }

    #[test]
    fn command_definitions_are_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
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
        assert!(
            parse(&[
                "gateway",
                "run",
                "--listen",
                "127.0.0.1:1",
                "--policy-config",
                "a.yaml",
                "--policy-config",
                "b.yaml",
                "--fail-mode",
                "allow"
            ])
            .is_ok()
        );
        assert!(parse(&["proxy", "run"]).is_ok());
        assert!(
            parse(&[
                "spend",
                "pricing",
                "list",
                "--json",
                "--model",
                "gpt",
                "--policy-config",
                "a.yaml"
            ])
            .is_ok()
        );
        assert!(parse(&["gateway", "run", "--fail-mode", "maybe"]).is_err());
    }

    #[test]
    fn rejects_unknown_flags() {
        assert!(parse(&["policy", "lint", "--nope"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
    }
}
