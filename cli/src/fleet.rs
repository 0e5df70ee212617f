//! Control-plane commands for gateways and their configurations: `kt gateway
//! create|list|inspect|config|diff|reload|revert|reconcile` and `kt policy push|deploy`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Args, Subcommand};
use kt_api::{
    ConfigVersion, CreateGateway, CreatedGateway, GatewayInfo, GatewayList, PushConfig, RolloutRequest,
    RolloutResponse, encode_segment,
};
use serde_json::{Value, json};

use crate::output::{CliError, Exit, print_json};
use crate::session::{self, GlobalArgs, api_error};

#[derive(Debug, Subcommand)]
pub enum GatewayAdmin {
    /// Register a gateway; prints its id and a gateway token (shown once)
    Create {
        /// A name unique in the organisation; every command that takes --id accepts it too
        #[arg(long)]
        name: String,
        #[arg(long)]
        description: Option<String>,
        /// An id of your choosing (1 to 64 letters, digits, '-', '_', '.'); default: a generated gw_…
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Gateways with status, desired and applied versions
    List {
        #[arg(long)]
        json: bool,
    },
    /// One gateway: desired vs applied version, status, last seen, runtime, last error
    Inspect {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Print the configuration the gateway should run (YAML; --json for the record)
    Config {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Compare a local policy config with the gateway's configuration, key by key
    Diff {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long, value_name = "FILE")]
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Ask a running managed gateway to reload its configuration
    Reload {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Roll the gateway back to an earlier configuration version
    #[command(disable_version_flag = true)]
    Revert {
        #[arg(long, value_name = "ID")]
        id: String,
        /// Version number (or pack version) to go back to
        #[arg(long)]
        version: String,
        #[arg(long)]
        json: bool,
    },
    /// Re-apply the desired version to a gateway that is out of sync
    Reconcile {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The policy config to store as a new version
    #[arg(long, value_name = "FILE", default_value = "policy-config.yaml")]
    pub file: PathBuf,
    /// The gateway whose configuration gets the version
    #[arg(long, value_name = "ID")]
    pub gateway_id: String,
    /// What changed, kept with the version
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Gateways to roll out to (repeat, or comma-separate)
    #[arg(long = "gateway-id", value_name = "ID", value_delimiter = ',', required = true)]
    pub gateway_ids: Vec<String>,
    /// Version number or pack version (default: the latest version of the configuration)
    #[arg(long)]
    pub version: Option<String>,
    /// Configuration to roll out (default: each gateway's own)
    #[arg(long, value_name = "ID")]
    pub configuration_id: Option<String>,
    /// Seconds to wait for every gateway to report the version applied
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Return after the rollout is recorded, without waiting
    #[arg(long)]
    pub no_wait: bool,
    #[arg(long)]
    pub json: bool,
}

fn path_id(id: &str) -> String {
    encode_segment(id)
}

fn print_gateway(g: &GatewayInfo) {
    let v = |r: &Option<kt_api::VersionRef>| {
        r.as_ref().map_or_else(
            || "-".to_owned(),
            |r| {
                format!(
                    "{} v{} ({})",
                    r.configuration_id,
                    r.version,
                    r.pack_version.as_deref().unwrap_or("?")
                )
            },
        )
    };
    println!("Gateway:     {} ({})", g.name, g.id);
    if !g.description.is_empty() {
        println!("Description: {}", g.description);
    }
    println!("Status:      {}", g.status);
    println!("Sync:        {}", g.sync);
    println!("Desired:     {}", v(&g.desired));
    println!("Applied:     {}", v(&g.applied));
    println!("Last seen:   {}", g.last_seen_at.map_or("never".to_owned(), ago));
    println!("Runtime:     {}", g.runtime_version.as_deref().unwrap_or("-"));
    println!("Last error:  {}", g.last_error.as_deref().unwrap_or("-"));
}

fn ago(t: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    format!("{} s ago", (now - t).max(0))
}

pub fn gateway(cmd: GatewayAdmin, g: &GlobalArgs) -> Result<Exit> {
    let client = session::client(g)?;
    match cmd {
        GatewayAdmin::Create {
            name,
            description,
            id,
            json,
        } => create(&client, CreateGateway { name, description, id }, json)?,
        GatewayAdmin::List { json } => list(&client, json)?,
        GatewayAdmin::Inspect { id, json } => {
            let gw: GatewayInfo = client
                .get(&format!("/v1/gateways/{}", path_id(&id)))
                .map_err(api_error)?;
            if json {
                print_json(&gw)?;
            } else {
                print_gateway(&gw);
            }
        }
        GatewayAdmin::Config { id, json } => {
            let v: ConfigVersion = client
                .get(&format!("/v1/gateways/{}/config", path_id(&id)))
                .map_err(api_error)?;
            if json {
                print_json(&v)?;
            } else {
                print!("{}", v.yaml.unwrap_or_default());
            }
        }
        GatewayAdmin::Diff { id, file, json } => return diff(&client, &id, &file, json),
        GatewayAdmin::Reload { id, json } => {
            let gw: GatewayInfo = client
                .call("POST", &format!("/v1/gateways/{}/reload", path_id(&id)))
                .map_err(api_error)?;
            if json {
                print_json(&gw)?;
            } else {
                println!(
                    "Reload requested for {}; a managed gateway applies it within a second.",
                    gw.id
                );
            }
        }
        GatewayAdmin::Revert { id, version, json } => {
            let gw: GatewayInfo = client
                .send(
                    "POST",
                    &format!("/v1/gateways/{}/revert", path_id(&id)),
                    &json!({"version": version}),
                )
                .map_err(api_error)?;
            if json {
                print_json(&gw)?;
            } else {
                let d = gw.desired.as_ref().map_or(0, |d| d.version);
                println!(
                    "Gateway {} now wants version {d}; it reverts on its next update.",
                    gw.id
                );
            }
        }
        GatewayAdmin::Reconcile { id, json } => {
            let r: Value = client
                .call("POST", &format!("/v1/gateways/{}/reconcile", path_id(&id)))
                .map_err(api_error)?;
            if json {
                print_json(&r)?;
            } else {
                match r["action"].as_str() {
                    Some("none") => println!(
                        "Gateway {id} is {}; nothing to do.",
                        r["gateway"]["sync"].as_str().unwrap_or("?")
                    ),
                    _ => println!("Gateway {id} was out of sync; asked it to apply its desired version again."),
                }
            }
        }
    }
    Ok(Exit::Ok)
}

/// `kt gateway create`: registers the gateway and shows its token once.
fn create(client: &kt_api::Client, req: CreateGateway, json: bool) -> Result<()> {
    let created: CreatedGateway = client.send("POST", "/v1/gateways", &req).map_err(api_error)?;
    if json {
        return print_json(&created);
    }
    println!("Created gateway {} ({})", created.gateway.name, created.gateway.id);
    println!("Gateway token (shown once): {}", created.token);
    eprintln!(
        "Run it with: KEEPTRUSTS_GATEWAY_ID={} KEEPTRUSTS_GATEWAY_TOKEN=<token> kt run --managed",
        created.gateway.id
    );
    Ok(())
}

/// `kt gateway list`.
fn list(client: &kt_api::Client, json: bool) -> Result<()> {
    let list: GatewayList = client.get("/v1/gateways").map_err(api_error)?;
    if json {
        return print_json(&list);
    }
    if list.data.is_empty() {
        println!("No gateways. Register one with `kt gateway create --name <name>`.");
        return Ok(());
    }
    println!(
        "{:<22} {:<20} {:<9} {:<10} {:>7} {:>7}",
        "ID", "NAME", "STATUS", "SYNC", "DESIRED", "APPLIED"
    );
    let v = |r: &Option<kt_api::VersionRef>| r.as_ref().map_or("-".to_owned(), |r| r.version.to_string());
    for gw in &list.data {
        println!(
            "{:<22} {:<20} {:<9} {:<10} {:>7} {:>7}",
            gw.id,
            gw.name,
            gw.status,
            gw.sync,
            v(&gw.desired),
            v(&gw.applied)
        );
    }
    Ok(())
}

/// The configuration document of a YAML text as JSON (for the semantic diff).
fn document(name: &str, text: &str) -> Result<Value> {
    let outcome = kt_policy::config::load_sources(&[kt_policy::config::Source {
        name: name.to_owned(),
        text: text.to_owned(),
    }]);
    match outcome.document {
        Some(d) => Ok(d),
        None => {
            let msgs: String = outcome.errors().map(|d| d.to_string()).collect();
            Err(CliError::new(Exit::Invalid, format!("{name} does not parse:\n{msgs}")).into())
        }
    }
}

/// One difference between two documents, at a dotted path.
fn diff_values(path: &str, old: Option<&Value>, new: Option<&Value>, out: &mut Vec<(char, String, String)>) {
    let show = |v: &Value| v.to_string();
    match (old, new) {
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_values(&p, a.get(k), b.get(k), out);
            }
        }
        (Some(a), Some(b)) if a == b => {}
        (Some(a), Some(b)) => out.push(('~', path.to_owned(), format!("{} -> {}", show(a), show(b)))),
        (Some(a), None) => out.push(('-', path.to_owned(), show(a))),
        (None, Some(b)) => out.push(('+', path.to_owned(), show(b))),
        (None, None) => {}
    }
}

fn diff(client: &kt_api::Client, id: &str, file: &std::path::Path, json_out: bool) -> Result<Exit> {
    let local_text = std::fs::read_to_string(file)
        .map_err(|e| CliError::new(Exit::Invalid, format!("cannot read {}: {e}", file.display())))?;
    let remote: ConfigVersion = client
        .get(&format!("/v1/gateways/{}/config", path_id(id)))
        .map_err(api_error)?;
    let remote_doc = document(&format!("gateway {id}"), remote.yaml.as_deref().unwrap_or(""))?;
    let local_doc = document(&file.display().to_string(), &local_text)?;
    let mut changes = Vec::new();
    diff_values("", Some(&remote_doc), Some(&local_doc), &mut changes);
    if json_out {
        let items: Vec<Value> = changes
            .iter()
            .map(|(op, path, what)| {
                let kind = match op {
                    '+' => "added",
                    '-' => "removed",
                    _ => "changed",
                };
                json!({"change": kind, "path": path, "detail": what})
            })
            .collect();
        print_json(&json!({
            "gateway_id": id,
            "remote": {"configuration_id": remote.configuration_id, "version": remote.version},
            "file": file.display().to_string(),
            "identical": changes.is_empty(),
            "changes": items,
        }))?;
    } else if changes.is_empty() {
        println!(
            "{} matches gateway {id} (configuration {} version {}).",
            file.display(),
            remote.configuration_id,
            remote.version
        );
    } else {
        println!(
            "--- gateway {id} (configuration {} version {})\n+++ {}",
            remote.configuration_id,
            remote.version,
            file.display()
        );
        for (op, path, what) in &changes {
            println!("{op} {path}: {what}");
        }
    }
    // Like diff(1): 1 when the two differ.
    Ok(if changes.is_empty() { Exit::Ok } else { Exit::Error })
}

pub fn push(args: PushArgs, g: &GlobalArgs) -> Result<Exit> {
    let yaml = std::fs::read_to_string(&args.file)
        .map_err(|e| CliError::new(Exit::Invalid, format!("cannot read {}: {e}", args.file.display())))?;
    // The server validates with the same code; checking here first gives the file's own name.
    let outcome = kt_policy::config::load_files(std::slice::from_ref(&args.file));
    if outcome.has_errors() {
        crate::output::print_lint_text(&args.file.display().to_string(), &outcome);
        return Ok(Exit::Invalid);
    }
    let client = session::client(g)?;
    let req = PushConfig {
        yaml,
        change_detail: args.message,
        source: Some("api".into()),
        gateway_id: Some(args.gateway_id.clone()),
    };
    let v: ConfigVersion = client.send("POST", "/v1/admin/configurations", &req).map_err(|e| {
        if let kt_api::ClientError::Api { body, .. } = &e
            && let Some(text) = body.details.get("text").and_then(Value::as_str)
        {
            eprint!("{text}");
        }
        api_error(e)
    })?;
    if args.json {
        print_json(&v)?;
    } else {
        println!(
            "Pushed {} as configuration {} version {} (pack {} v{}).",
            args.file.display(),
            v.configuration_id,
            v.version,
            v.name,
            v.pack_version
        );
        println!(
            "Deploy it with: kt policy deploy --gateway-id {} --version {}",
            args.gateway_id, v.version
        );
    }
    Ok(Exit::Ok)
}

pub fn deploy(args: DeployArgs, g: &GlobalArgs) -> Result<Exit> {
    let client = session::client(g)?;
    let version = match &args.version {
        Some(v) => Value::String(v.clone()),
        None => {
            // The latest version of the first gateway's configuration (or the one named).
            let configuration_id = match &args.configuration_id {
                Some(c) => c.clone(),
                None => {
                    let gw: GatewayInfo = client
                        .get(&format!("/v1/gateways/{}", path_id(&args.gateway_ids[0])))
                        .map_err(api_error)?;
                    gw.configuration_id.ok_or_else(|| {
                        CliError::new(Exit::Invalid, format!("gateway {} has no configuration", gw.id)).hint(format!(
                            "push one first: kt policy push --file policy-config.yaml --gateway-id {}",
                            gw.id
                        ))
                    })?
                }
            };
            let latest: ConfigVersion = client
                .get(&format!("/v1/admin/configurations/{}", path_id(&configuration_id)))
                .map_err(api_error)?;
            json!(latest.version)
        }
    };
    let req = RolloutRequest {
        configuration_id: args.configuration_id.clone(),
        version,
        gateway_ids: args.gateway_ids.clone(),
    };
    let rollout: RolloutResponse = client
        .send("POST", "/v1/admin/configurations/rollout", &req)
        .map_err(api_error)?;
    if !args.json {
        for t in &rollout.targets {
            println!(
                "Rolling out {} version {} to {}",
                t.configuration_id, t.desired_version, t.gateway_id
            );
        }
    }
    if args.no_wait {
        if args.json {
            print_json(&rollout)?;
        }
        return Ok(Exit::Ok);
    }
    // Wait until each gateway reports the version applied, or refuses it, or time runs out.
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let mut done: Vec<Option<(String, Option<String>)>> = vec![None; rollout.targets.len()];
    while done.iter().any(Option::is_none) && Instant::now() < deadline {
        for (i, t) in rollout.targets.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let state = client.runtime_state(&t.gateway_id).map_err(api_error)?;
            let applied = state
                .applied
                .as_ref()
                .is_some_and(|a| a.configuration_id == t.configuration_id && a.version == t.desired_version);
            if applied && state.status == "in_sync" {
                done[i] = Some(("applied".into(), None));
                if !args.json {
                    println!("✓ {} applied version {}", t.gateway_id, t.desired_version);
                }
            } else if state.health == "pending" {
                // Never connected: nothing to wait for; it starts on this version.
                done[i] = Some(("awaiting_first_start".into(), None));
                if !args.json {
                    println!(
                        "- {} has never connected; it will start on version {}",
                        t.gateway_id, t.desired_version
                    );
                }
            } else if state.status == "failed" {
                done[i] = Some(("failed".into(), state.last_error.clone()));
                if !args.json {
                    println!(
                        "✗ {} refused version {}: {}",
                        t.gateway_id,
                        t.desired_version,
                        state.last_error.as_deref().unwrap_or("unknown error")
                    );
                }
            }
        }
        if done.iter().any(Option::is_none) {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
    let results: Vec<Value> = rollout
        .targets
        .iter()
        .zip(&done)
        .map(|(t, d)| {
            let (state, error) = d.clone().unwrap_or_else(|| ("timed_out".into(), None));
            if d.is_none() && !args.json {
                println!(
                    "✗ {} did not report version {} within {} s",
                    t.gateway_id, t.desired_version, args.timeout
                );
            }
            json!({"gateway_id": t.gateway_id, "configuration_id": t.configuration_id, "version": t.desired_version, "state": state, "error": error})
        })
        .collect();
    let ok = done.iter().all(|d| {
        d.as_ref()
            .is_some_and(|(s, _)| s == "applied" || s == "awaiting_first_start")
    });
    if args.json {
        print_json(&json!({"rollout_id": rollout.rollout_id, "ok": ok, "gateways": results}))?;
    }
    Ok(if ok { Exit::Ok } else { Exit::Error })
}
