//! `kt spend gateway-key`: the caller keys applications send to managed gateways. A key is
//! printed once; gateways with `caller_auth.mode: control_plane` accept it within a second
//! of its creation and refuse it within a second of its revocation.

use anyhow::Result;
use clap::{Args, Subcommand};
use kt_api::{
    CreateGatewayKey, CreatedGatewayKey, GatewayKeyInfo, GatewayKeyList, KeyBudget, KeyRateLimit, encode_segment,
};

use crate::output::{CliError, Exit, print_json, rfc3339, show};
use crate::session::{self, GlobalArgs, api_error};

#[derive(Debug, Subcommand)]
pub enum GatewayKeyCommand {
    /// Gateway keys of the organisation with their state (active, revoked, expired)
    List {
        /// Print JSON: {"data": [key, …]}
        #[arg(long)]
        json: bool,
    },
    /// One gateway key (never its value)
    Get {
        /// The key's id (gk_…)
        #[arg(long, value_name = "ID")]
        id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Create a key; it is printed once
    Create(CreateArgs),
    /// Revoke a key: every managed gateway refuses it within a second
    #[command(visible_alias = "revoke")]
    Delete {
        /// The key's id (gk_…)
        #[arg(long, value_name = "ID")]
        id: String,
        /// Confirm the revocation
        #[arg(long)]
        yes: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Give a key a new value: the old one is refused at once; the id and settings stay
    Rotate {
        /// The key's id (gk_…)
        #[arg(long, value_name = "ID")]
        id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// What the key is for (1 to 100 characters)
    #[arg(long)]
    pub name: String,
    /// Every request with this key belongs to this consumer group of the gateway's configuration
    #[arg(long, value_name = "GROUP")]
    pub consumer_group: Option<String>,
    /// A model (name or alias) the key may ask for (repeatable); none: every model
    #[arg(long = "allowed-model", value_name = "MODEL")]
    pub allowed_models: Vec<String>,
    /// Requests the key may make per window (with --window-seconds)
    #[arg(long, value_name = "N", requires = "window_seconds")]
    pub max_requests: Option<u64>,
    /// The window of --max-requests, in seconds (1 to 86400)
    #[arg(long, value_name = "SECONDS", requires = "max_requests")]
    pub window_seconds: Option<u64>,
    /// A hard budget of the key's own, in US dollars per --budget-period (beside the
    /// configuration's budgets)
    #[arg(long, value_name = "USD")]
    pub budget_usd: Option<f64>,
    /// The period of --budget-usd: hour, day or month (UTC)
    #[arg(long, value_name = "PERIOD", default_value = "day", value_parser = ["hour", "day", "month"], requires = "budget_usd")]
    pub budget_period: String,
    /// Days until the key expires (1 to 3650); none: it does not expire
    #[arg(long, value_name = "DAYS")]
    pub expires_in_days: Option<u32>,
    /// Print JSON: the key's fields and "key", its value
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: GatewayKeyCommand, g: &GlobalArgs) -> Result<Exit> {
    if let GatewayKeyCommand::Delete { id, yes: false, .. } = &cmd {
        return Err(CliError::new(
            Exit::Invalid,
            format!("refusing to revoke gateway key {id} without --yes"),
        )
        .hint("add --yes to confirm; applications using it are refused from then on")
        .into());
    }
    let client = session::client(g)?;
    let path = |id: &str| format!("/v1/gateway-keys/{}", encode_segment(id));
    match cmd {
        GatewayKeyCommand::List { json } => {
            let list: GatewayKeyList = client.get("/v1/gateway-keys").map_err(api_error)?;
            show(json, &list, |l| {
                if l.data.is_empty() {
                    println!("No gateway keys. Create one with `kt spend gateway-key create --name <NAME>`.");
                    return;
                }
                println!(
                    "{:<20} {:<24} {:<12} {:<8} {:<16} EXPIRES",
                    "ID", "NAME", "PREFIX", "STATE", "GROUP"
                );
                for k in &l.data {
                    println!(
                        "{:<20} {:<24} {:<12} {:<8} {:<16} {}",
                        k.id,
                        k.name,
                        k.prefix,
                        k.state,
                        k.consumer_group.as_deref().unwrap_or("-"),
                        k.expires_at.map_or("never".into(), rfc3339)
                    );
                }
            })?;
        }
        GatewayKeyCommand::Get { id, json } => {
            let k: GatewayKeyInfo = client.get(&path(&id)).map_err(api_error)?;
            show(json, &k, print_key)?;
        }
        GatewayKeyCommand::Create(a) => {
            let req = CreateGatewayKey {
                name: a.name,
                consumer_group: a.consumer_group,
                allowed_models: (!a.allowed_models.is_empty()).then_some(a.allowed_models),
                rate_limit: a.max_requests.zip(a.window_seconds).map(|(m, w)| KeyRateLimit {
                    max_requests: m,
                    window_seconds: w,
                }),
                budget: a.budget_usd.map(|limit_usd| KeyBudget {
                    limit_usd,
                    period: a.budget_period.clone(),
                }),
                expires_in_days: a.expires_in_days,
            };
            let k: CreatedGatewayKey = client.send("POST", "/v1/gateway-keys", &req).map_err(api_error)?;
            print_created(a.json, &k)?;
        }
        GatewayKeyCommand::Delete { id, json, .. } => {
            let k: GatewayKeyInfo = client.call("DELETE", &path(&id)).map_err(api_error)?;
            show(json, &k, |k| println!("Revoked gateway key {} '{}'.", k.id, k.name))?;
        }
        GatewayKeyCommand::Rotate { id, json } => {
            let k: CreatedGatewayKey = client
                .call("POST", &format!("{}/rotate", path(&id)))
                .map_err(api_error)?;
            if json {
                print_json(&k)?;
            } else {
                println!(
                    "Rotated gateway key {} '{}': its old value is refused from now on",
                    k.info.id, k.info.name
                );
                println!("{}", k.key);
                eprintln!("This key is shown once: give it to the application in place of the old one.");
            }
        }
    }
    Ok(Exit::Ok)
}

fn print_created(json: bool, k: &CreatedGatewayKey) -> Result<()> {
    if json {
        return print_json(k);
    }
    println!("Created gateway key {} '{}'", k.info.id, k.info.name);
    println!("{}", k.key);
    eprintln!(
        "This key is shown once: give it to the application as its API key (Authorization: Bearer or x-api-key)."
    );
    Ok(())
}

fn print_key(k: &GatewayKeyInfo) {
    println!("Gateway key: {} ({})", k.name, k.id);
    println!("Prefix:      {}", k.prefix);
    println!("State:       {}", k.state);
    println!(
        "Group:       {}",
        k.consumer_group
            .as_deref()
            .unwrap_or("(by the configuration's match rules)")
    );
    println!(
        "Models:      {}",
        k.allowed_models.as_ref().map_or("every model".into(), |m| m.join(", "))
    );
    if let Some(l) = k.rate_limit {
        println!("Rate limit:  {} requests per {} s", l.max_requests, l.window_seconds);
    }
    if let Some(b) = &k.budget {
        println!("Budget:      ${} per {} (hard)", b.limit_usd, b.period);
    }
    println!("Created:     {}", rfc3339(k.created_at));
    println!("Expires:     {}", k.expires_at.map_or("never".into(), rfc3339));
    if let Some(r) = k.revoked_at {
        println!("Revoked:     {}", rfc3339(r));
    }
    if let Some(r) = k.rotated_at {
        println!("Rotated:     {}", rfc3339(r));
    }
}
