//! `kt spend budget`, `kt spend provider-budget` and `kt spend pricing set|delete`: the
//! organisation's budgets and model prices, kept by the control plane and applied by every
//! managed gateway over its configuration's within a second of a change.

use anyhow::Result;
use clap::{Args, Subcommand};
use kt_api::{BudgetInfo, BudgetList, CreateBudget, ModelPricing, ModelPricingList, UpdateBudget, encode_segment};

use crate::output::{CliError, Exit, rfc3339, show};
use crate::session::{self, GlobalArgs, api_error};

#[derive(Debug, Subcommand)]
pub enum BudgetCommand {
    /// The organisation's budgets (provider budgets are under `kt spend provider-budget`)
    List(ListArgs),
    /// One budget
    Get(GetArgs),
    /// Create a budget; every managed gateway applies it within a second
    Create(CreateArgs),
    /// Change a budget's name, limit, period or mode (its counts stay)
    Update(UpdateArgs),
    /// Delete a budget
    Delete(DeleteArgs),
}

/// `list` of budgets or provider budgets.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON: {"data": [budget, …]}
    #[arg(long)]
    pub json: bool,
}

/// `get` of one budget or provider budget.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The budget's id (bud_…)
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

/// `delete` of one budget or provider budget.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The budget's id (bud_…)
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// Confirm the deletion
    #[arg(long)]
    pub yes: bool,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The budget's name in refusals and events (letters, digits, '-', '_', '.'; unique)
    #[arg(long)]
    pub name: String,
    /// Whose spending counts: organisation, caller_key (a gateway key) or consumer_group
    #[arg(long, default_value = "organisation", value_parser = ["organisation", "caller_key", "consumer_group"])]
    pub scope: String,
    /// The gateway key id (gk_…) or group name; none with caller_key or consumer_group:
    /// each key or group gets a budget of this size of its own
    #[arg(long, value_name = "ID")]
    pub target: Option<String>,
    /// The ceiling in US dollars per period
    #[arg(long, value_name = "USD")]
    pub limit_usd: f64,
    /// hour, day or month (UTC)
    #[arg(long, default_value = "month", value_parser = ["hour", "day", "month"])]
    pub period: String,
    /// hard refuses what would overspend (429 budget_exceeded); soft marks the decision event
    #[arg(long, default_value = "hard", value_parser = ["hard", "soft"])]
    pub mode: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The budget's id (bud_…)
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// A new name
    #[arg(long)]
    pub name: Option<String>,
    /// A new ceiling in US dollars (what the period spent so far counts against it)
    #[arg(long, value_name = "USD")]
    pub limit_usd: Option<f64>,
    /// A new period (counting starts afresh)
    #[arg(long, value_parser = ["hour", "day", "month"])]
    pub period: Option<String>,
    /// hard or soft
    #[arg(long, value_parser = ["hard", "soft"])]
    pub mode: Option<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ProviderBudgetCommand {
    /// Ceilings on what each provider is paid
    List(ListArgs),
    /// One provider budget
    Get(GetArgs),
    /// Cap a provider: once it is reached, requests fall back to other providers' targets,
    /// and are refused (429 budget_exceeded) when none is left
    Create(ProviderCreateArgs),
    /// Delete a provider budget
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct ProviderCreateArgs {
    /// The provider, as configurations name it (openai, anthropic, azure…); none: each
    /// provider gets a ceiling of this size of its own
    #[arg(long, value_name = "PROVIDER")]
    pub provider: Option<String>,
    /// The budget's name (default: <provider>-<period>)
    #[arg(long)]
    pub name: Option<String>,
    /// The ceiling in US dollars per period
    #[arg(long, value_name = "USD")]
    pub limit_usd: f64,
    /// hour, day or month (UTC)
    #[arg(long, default_value = "month", value_parser = ["hour", "day", "month"])]
    pub period: String,
    /// hard skips the provider once reached; soft marks the decision event
    #[arg(long, default_value = "hard", value_parser = ["hard", "soft"])]
    pub mode: String,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PriceSetArgs {
    /// The model, as requests or targets name it (gpt-4o, claude-sonnet-4…)
    #[arg(long)]
    pub model: String,
    /// US dollars per million input tokens
    #[arg(long, value_name = "USD")]
    pub input_per_million: f64,
    /// US dollars per million output tokens
    #[arg(long, value_name = "USD")]
    pub output_per_million: f64,
    /// US dollars per million cached input tokens (default: the input price)
    #[arg(long, value_name = "USD")]
    pub cached_input_per_million: Option<f64>,
    /// US dollars per million reasoning tokens (default: the output price)
    #[arg(long, value_name = "USD")]
    pub reasoning_per_million: Option<f64>,
    /// The provider the price is for (informational)
    #[arg(long)]
    pub provider: Option<String>,
    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,
}

fn refuse_without_yes(what: &str, id: &str) -> Result<Exit> {
    Err(
        CliError::new(Exit::Invalid, format!("refusing to delete {what} {id} without --yes"))
            .hint("add --yes to confirm; gateways stop applying it within a second")
            .into(),
    )
}

fn print_budgets(list: &BudgetList, empty: &str) {
    if list.data.is_empty() {
        println!("{empty}");
        return;
    }
    println!(
        "{:<22} {:<20} {:<15} {:<16} {:>12} {:<6} MODE",
        "ID", "NAME", "SCOPE", "TARGET", "LIMIT USD", "PERIOD"
    );
    for b in &list.data {
        println!(
            "{:<22} {:<20} {:<15} {:<16} {:>12} {:<6} {}",
            b.id,
            b.name,
            b.scope,
            b.target.as_deref().unwrap_or("(each)"),
            b.limit_usd,
            b.period,
            b.mode
        );
    }
}

fn print_budget(b: &BudgetInfo) {
    println!("Budget:   {} ({})", b.name, b.id);
    let whose = match (b.scope.as_str(), b.target.as_deref()) {
        ("organisation", _) => "all of the organisation's traffic".to_owned(),
        (scope, Some(t)) => format!("{scope} {t}"),
        (scope, None) => format!("each {scope}, apart"),
    };
    println!("Covers:   {whose}");
    println!("Limit:    ${} per {} ({})", b.limit_usd, b.period, b.mode);
    println!("Created:  {}", rfc3339(b.created_at));
    println!("Updated:  {}", rfc3339(b.updated_at));
}

/// One of the two views over the organisation's budgets: its route and how it is named.
struct View {
    base: &'static str,
    noun: &'static str,
    empty: &'static str,
}

const BUDGETS: View = View {
    base: "/v1/budgets",
    noun: "budget",
    empty: "No budgets. Create one with `kt spend budget create --name <NAME> --limit-usd <USD>`.",
};

const PROVIDER_BUDGETS: View = View {
    base: "/v1/provider-budgets",
    noun: "provider budget",
    empty: "No provider budgets. Create one with `kt spend provider-budget create --provider <PROVIDER> --limit-usd <USD>`.",
};

impl View {
    fn path(&self, id: &str) -> String {
        format!("{}/{}", self.base, encode_segment(id))
    }

    fn list(&self, client: &kt_api::Client, json: bool) -> Result<()> {
        let list: BudgetList = client.get(self.base).map_err(api_error)?;
        show(json, &list, |l| print_budgets(l, self.empty))
    }

    fn get(&self, client: &kt_api::Client, id: &str, json: bool) -> Result<()> {
        let b: BudgetInfo = client.get(&self.path(id)).map_err(api_error)?;
        show(json, &b, print_budget)
    }

    fn create(&self, client: &kt_api::Client, req: &CreateBudget, json: bool) -> Result<()> {
        let b: BudgetInfo = client.send("POST", self.base, req).map_err(api_error)?;
        show(json, &b, |b| {
            println!(
                "Created {} {} '{}': managed gateways apply it within a second.",
                self.noun, b.id, b.name
            );
        })
    }

    fn delete(&self, client: &kt_api::Client, id: &str, json: bool) -> Result<()> {
        let b: BudgetInfo = client.call("DELETE", &self.path(id)).map_err(api_error)?;
        show(json, &b, |b| println!("Deleted {} {} '{}'.", self.noun, b.id, b.name))
    }
}

pub fn run_budget(cmd: BudgetCommand, g: &GlobalArgs) -> Result<Exit> {
    if let BudgetCommand::Delete(DeleteArgs { id, yes: false, .. }) = &cmd {
        return refuse_without_yes(BUDGETS.noun, id);
    }
    let client = session::client(g)?;
    match cmd {
        BudgetCommand::List(a) => BUDGETS.list(&client, a.json)?,
        BudgetCommand::Get(a) => BUDGETS.get(&client, &a.id, a.json)?,
        BudgetCommand::Create(a) => {
            let req = CreateBudget {
                name: a.name,
                scope: a.scope,
                target: a.target,
                limit_usd: a.limit_usd,
                period: a.period,
                mode: a.mode,
            };
            BUDGETS.create(&client, &req, a.json)?;
        }
        BudgetCommand::Update(a) => {
            let req = UpdateBudget {
                name: a.name,
                limit_usd: a.limit_usd,
                period: a.period,
                mode: a.mode,
            };
            if req == UpdateBudget::default() {
                return Err(CliError::new(Exit::Invalid, "nothing to change")
                    .hint("give --name, --limit-usd, --period or --mode")
                    .into());
            }
            let b: BudgetInfo = client.send("PATCH", &BUDGETS.path(&a.id), &req).map_err(api_error)?;
            show(a.json, &b, print_budget)?;
        }
        BudgetCommand::Delete(a) => BUDGETS.delete(&client, &a.id, a.json)?,
    }
    Ok(Exit::Ok)
}

pub fn run_provider_budget(cmd: ProviderBudgetCommand, g: &GlobalArgs) -> Result<Exit> {
    if let ProviderBudgetCommand::Delete(DeleteArgs { id, yes: false, .. }) = &cmd {
        return refuse_without_yes(PROVIDER_BUDGETS.noun, id);
    }
    let client = session::client(g)?;
    match cmd {
        ProviderBudgetCommand::List(a) => PROVIDER_BUDGETS.list(&client, a.json)?,
        ProviderBudgetCommand::Get(a) => PROVIDER_BUDGETS.get(&client, &a.id, a.json)?,
        ProviderBudgetCommand::Create(a) => {
            let name = a
                .name
                .unwrap_or_else(|| format!("{}-{}", a.provider.as_deref().unwrap_or("each-provider"), a.period));
            let req = CreateBudget {
                name,
                scope: "provider".into(),
                target: a.provider,
                limit_usd: a.limit_usd,
                period: a.period,
                mode: a.mode,
            };
            PROVIDER_BUDGETS.create(&client, &req, a.json)?;
        }
        ProviderBudgetCommand::Delete(a) => PROVIDER_BUDGETS.delete(&client, &a.id, a.json)?,
    }
    Ok(Exit::Ok)
}

/// Dollars per million tokens as the API's dollars per 1,000.
fn per_1k(per_million: f64) -> f64 {
    per_million / 1000.0
}

fn per_million(per_1k: f64) -> f64 {
    (per_1k * 1000.0 * 1e6).round() / 1e6
}

pub fn pricing_set(a: PriceSetArgs, g: &GlobalArgs) -> Result<Exit> {
    let client = session::client(g)?;
    let req = ModelPricing {
        model: a.model,
        provider: a.provider,
        input_cost_per_1k_tokens: per_1k(a.input_per_million),
        output_cost_per_1k_tokens: per_1k(a.output_per_million),
        cached_input_cost_per_1k_tokens: a.cached_input_per_million.map(per_1k),
        reasoning_cost_per_1k_tokens: a.reasoning_per_million.map(per_1k),
        updated_at: None,
    };
    let p: ModelPricing = client.send("POST", "/v1/model-pricing", &req).map_err(api_error)?;
    show(a.json, &p, |p| {
        println!(
            "Set the organisation's price of {}: ${} in, ${} out per million tokens; managed gateways charge it within a second.",
            p.model,
            per_million(p.input_cost_per_1k_tokens),
            per_million(p.output_cost_per_1k_tokens)
        );
    })?;
    Ok(Exit::Ok)
}

pub fn pricing_delete(model: &str, yes: bool, json: bool, g: &GlobalArgs) -> Result<Exit> {
    if !yes {
        return Err(CliError::new(
            Exit::Invalid,
            format!("refusing to delete the price of {model} without --yes"),
        )
        .hint("add --yes to confirm; gateways fall back to their configuration's or the shipped price")
        .into());
    }
    let client = session::client(g)?;
    let p: ModelPricing = client
        .call("DELETE", &format!("/v1/model-pricing/{}", encode_segment(model)))
        .map_err(api_error)?;
    show(json, &p, |p| {
        println!("Deleted the organisation's price of {}.", p.model)
    })?;
    Ok(Exit::Ok)
}

/// `kt spend pricing list --org`: the organisation's prices, per million tokens.
pub fn pricing_list_org(model: Option<&str>, json: bool, g: &GlobalArgs) -> Result<Exit> {
    let client = session::client(g)?;
    let mut list: ModelPricingList = client.get("/v1/model-pricing").map_err(api_error)?;
    list.data.retain(|p| model.is_none_or(|f| p.model.contains(f)));
    show(json, &list, |l| {
        if l.data.is_empty() {
            println!("The organisation sets no prices: gateways use their configuration's and the shipped ones.");
            return;
        }
        println!(
            "{:<28} {:>10} {:>12} {:>10} {:>10}",
            "MODEL", "INPUT", "CACHED IN", "OUTPUT", "REASONING"
        );
        for p in &l.data {
            println!(
                "{:<28} {:>10} {:>12} {:>10} {:>10}",
                p.model,
                per_million(p.input_cost_per_1k_tokens),
                per_million(p.cached_input_cost_per_1k_tokens.unwrap_or(p.input_cost_per_1k_tokens)),
                per_million(p.output_cost_per_1k_tokens),
                per_million(p.reasoning_cost_per_1k_tokens.unwrap_or(p.output_cost_per_1k_tokens))
            );
        }
        println!("US dollars per million tokens; managed gateways charge these over their configuration's.");
    })?;
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::{per_1k, per_million};

    #[test]
    fn prices_convert_between_per_million_and_per_thousand() {
        assert!((per_1k(2.5) - 0.0025).abs() < 1e-15);
        assert_eq!(per_million(0.0025), 2.5);
        assert_eq!(per_million(per_1k(0.075)), 0.075);
    }
}
