//! `kt spend`: what tokens cost. `kt spend pricing list` shows the price table a gateway
//! runs with: the shipped list prices and a configuration's `pricing` section over them
//! (`--org`: the organisation's prices, which managed gateways apply over both).

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
    /// What managed gateways spent, summed by caller key, group, model, provider or gateway
    Summary(SummaryArgs),
    /// Caller keys of managed gateways (caller_auth.mode: control_plane)
    GatewayKey {
        #[command(subcommand)]
        command: crate::spend_keys::GatewayKeyCommand,
    },
    /// The organisation's budgets, applied by every managed gateway
    Budget {
        #[command(subcommand)]
        command: crate::spend_budgets::BudgetCommand,
    },
    /// Ceilings on what each provider is paid, applied by every managed gateway
    ProviderBudget {
        #[command(subcommand)]
        command: crate::spend_budgets::ProviderBudgetCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum PricingCommand {
    /// List the prices a gateway on this configuration charges (US dollars per million tokens)
    List(PricingListArgs),
    /// Set the organisation's price of a model; managed gateways charge it over their
    /// configuration's within a second
    Set(crate::spend_budgets::PriceSetArgs),
    /// Delete the organisation's price of a model
    Delete {
        /// The model
        #[arg(long)]
        model: String,
        /// Confirm the deletion
        #[arg(long)]
        yes: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
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
    /// The organisation's prices, kept by the control plane (kt spend pricing set)
    #[arg(long, conflicts_with = "policy_config")]
    pub org: bool,
    /// Print JSON: {"models": [{"model", "input", "cached_input", "output", "reasoning"}]}
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// What each line sums: key, group, model, provider or gateway
    #[arg(long, default_value = "key", value_parser = ["key", "group", "model", "provider", "gateway"])]
    pub by: String,
    /// How far back: hours (24h) or days (7d), counted from the start of that hour
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    pub since: String,
    /// Print JSON: {"by", "since", "until", "data": [{"id", "name"?, "requests", "input_tokens", "output_tokens", "cost_usd"}], "total"}
    #[arg(long)]
    pub json: bool,
}

/// `24h` or `7d` as seconds (at most 400 days).
fn duration_secs(text: &str) -> Result<i64, CliError> {
    let bad = || {
        CliError::new(Exit::Invalid, format!("--since '{text}' is not a duration"))
            .hint("give hours or days, e.g. --since 24h or --since 7d")
    };
    let cut = text.char_indices().last().map_or(0, |(i, _)| i);
    let (n, unit) = text.split_at(cut);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => None,
    }
    .filter(|s| (1..=400 * 86_400).contains(s))
    .ok_or_else(bad)?;
    Ok(secs)
}

fn summary(args: &SummaryArgs, g: &crate::session::GlobalArgs) -> anyhow::Result<Exit> {
    let back = duration_secs(&args.since)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let client = crate::session::client(g)?;
    let s: kt_api::SpendSummary = client
        .get(&format!(
            "/v1/spend/summary?by={}&since={}&until={}",
            args.by,
            now - back,
            now + 1
        ))
        .map_err(crate::session::api_error)?;
    show(args.json, &s, |s| {
        let header = match s.by.as_str() {
            "key" => "CALLER KEY",
            "group" => "CONSUMER GROUP",
            "model" => "MODEL",
            "provider" => "PROVIDER",
            _ => "GATEWAY",
        };
        println!(
            "{header:<32} {:>10} {:>14} {:>14} {:>14}",
            "REQUESTS", "INPUT TOKENS", "OUTPUT TOKENS", "COST (USD)"
        );
        for l in s.data.iter().chain(std::iter::once(&s.total)) {
            let who = match &l.name {
                Some(n) => format!("{} ({n})", l.id),
                None => l.id.clone(),
            };
            println!(
                "{who:<32} {:>10} {:>14} {:>14} {:>14.6}",
                l.requests, l.input_tokens, l.output_tokens, l.cost_usd
            );
        }
        println!(
            "Since {} (reported by managed gateways every few seconds).",
            kt_api::rfc3339(s.since, None)
        );
    })?;
    Ok(Exit::Ok)
}

pub fn run(command: SpendCommand, g: &crate::session::GlobalArgs) -> anyhow::Result<Exit> {
    match command {
        SpendCommand::Summary(args) => summary(&args, g),
        SpendCommand::Pricing {
            command: PricingCommand::List(args),
        } if args.org => crate::spend_budgets::pricing_list_org(args.model.as_deref(), args.json, g),
        SpendCommand::Pricing {
            command: PricingCommand::List(args),
        } => pricing_list(&args),
        SpendCommand::Pricing {
            command: PricingCommand::Set(args),
        } => crate::spend_budgets::pricing_set(args, g),
        SpendCommand::Pricing {
            command: PricingCommand::Delete { model, yes, json },
        } => crate::spend_budgets::pricing_delete(&model, yes, json, g),
        SpendCommand::GatewayKey { command } => crate::spend_keys::run(command, g),
        SpendCommand::Budget { command } => crate::spend_budgets::run_budget(command, g),
        SpendCommand::ProviderBudget { command } => crate::spend_budgets::run_provider_budget(command, g),
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
        println!(
            "US dollars per million tokens; set prices under pricing.models in the configuration, or for every managed gateway with kt spend pricing set."
        );
    })?;
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::duration_secs;

    #[test]
    fn durations_are_hours_or_days() {
        assert_eq!(duration_secs("24h").ok(), Some(86_400));
        assert_eq!(duration_secs("7d").ok(), Some(604_800));
        for bad in ["", "d", "7", "7w", "-1d", "0h", "401d", "99999999999999999d", "1é"] {
            assert!(duration_secs(bad).is_err(), "{bad}");
        }
    }
}
