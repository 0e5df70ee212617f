//! `kt spend`: what tokens cost. `kt spend pricing list` shows the price table a gateway
//! runs with: the shipped list prices and a configuration's `pricing` section over them.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use kt_policy::config::{PolicyConfig, load_files};
use kt_policy::pricing::PriceTable;
use serde_json::{Value, json};

use crate::output::{CliError, Exit, print_lint_text, show};

#[derive(Debug, Subcommand)]
pub enum SpendCommand {
    /// Token prices: the shipped list prices and a configuration's overrides
    Pricing {
        #[command(subcommand)]
        command: PricingCommand,
    },
    /// Caller keys of managed gateways (caller_auth.mode: control_plane)
    GatewayKey {
        #[command(subcommand)]
        command: crate::spend_keys::GatewayKeyCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PricingCommand {
    /// List the prices a gateway on this configuration charges (US dollars per million tokens)
    List(PricingListArgs),
}

#[derive(Debug, Args)]
pub struct PricingListArgs {
    /// Configuration files whose `pricing` section applies (layered in order); without
    /// one, the shipped prices alone
    #[arg(long = "policy-config", value_name = "FILE")]
    pub policy_config: Vec<PathBuf>,
    /// Only models whose name contains this
    #[arg(long, value_name = "TEXT")]
    pub model: Option<String>,
    /// Print JSON: {"models": [{"model", "input", "cached_input", "output", "reasoning"}]}
    #[arg(long)]
    pub json: bool,
}

pub fn run(command: SpendCommand, g: &crate::session::GlobalArgs) -> anyhow::Result<Exit> {
    match command {
        SpendCommand::Pricing {
            command: PricingCommand::List(args),
        } => pricing_list(&args),
        SpendCommand::GatewayKey { command } => crate::spend_keys::run(command, g),
    }
}

fn pricing_list(args: &PricingListArgs) -> anyhow::Result<Exit> {
    let config = if args.policy_config.is_empty() {
        PolicyConfig::default()
    } else {
        let outcome = load_files(&args.policy_config);
        let Some(config) = outcome.config.clone() else {
            let names: Vec<String> = args.policy_config.iter().map(|f| f.display().to_string()).collect();
            print_lint_text(&names.join(" + "), &outcome);
            return Err(CliError::new(Exit::Invalid, "the configuration is invalid")
                .hint("fix the errors above; kt policy lint --file <FILE> checks it")
                .into());
        };
        config
    };
    let table = PriceTable::of(&config);
    let per_million = |x: f64| (x * 1000.0 * 1e6).round() / 1e6;
    let rows: Vec<Value> = table
        .entries()
        .into_iter()
        .filter(|(m, _)| args.model.as_deref().is_none_or(|f| m.contains(f)))
        .map(|(m, p)| {
            json!({
                "model": m,
                "input": per_million(p.input),
                "cached_input": per_million(p.cached_input),
                "output": per_million(p.output),
                "reasoning": per_million(p.reasoning),
            })
        })
        .collect();
    show(args.json, &json!({"models": rows}), |v| {
        println!(
            "{:<28} {:>10} {:>12} {:>10} {:>10}",
            "MODEL", "INPUT", "CACHED IN", "OUTPUT", "REASONING"
        );
        for r in v["models"].as_array().into_iter().flatten() {
            let n = |k: &str| r[k].as_f64().unwrap_or(0.0);
            println!(
                "{:<28} {:>10} {:>12} {:>10} {:>10}",
                r["model"].as_str().unwrap_or(""),
                n("input"),
                n("cached_input"),
                n("output"),
                n("reasoning")
            );
        }
        println!("US dollars per million tokens; set prices under pricing.models in the configuration.");
    })?;
    Ok(Exit::Ok)
}
