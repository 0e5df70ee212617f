//! `kt run --managed`: a gateway whose configuration comes from the control plane.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use kt_api::{Client, ClientError};
use kt_gateway::{Applied, ManagedOptions, Upstream};

use crate::gateway::{RuntimeArgs, Served, compile_files};
use crate::output::{CliError, Exit};
use crate::session::{self, GlobalArgs};

#[derive(Debug, Args)]
pub struct RunManagedArgs {
    /// Take the configuration from the control plane (the only mode of `kt run`)
    #[arg(long)]
    pub managed: bool,
    /// This gateway's id (from `kt gateway create`)
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_ID", value_name = "ID")]
    pub gateway_id: Option<String>,
    /// The gateway token printed by `kt gateway create` (`--api-token` is accepted too)
    #[arg(
        long,
        alias = "api-token",
        env = "KEEPTRUSTS_GATEWAY_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub gateway_token: Option<String>,
    /// Address to listen on
    #[arg(long, default_value = "0.0.0.0:8080", value_name = "HOST:PORT")]
    pub listen: String,
    /// Debug only: send every request to this OpenAI-compatible base URL
    #[arg(long, env = "KEEPTRUSTS_UPSTREAM_URL", value_name = "URL")]
    pub upstream: Option<String>,
    /// Longest wait, in seconds, before a configuration change is seen (changes usually arrive at once)
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub poll_interval: u64,
    /// How often, in seconds, the gateway reports its spend to the control plane (kt spend summary)
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub spend_report_interval: u64,
    /// Where the last applied configuration is kept (default: <config dir>/managed/<gateway id>)
    #[arg(long, env = "KEEPTRUSTS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

fn required(value: Option<String>, flag: &str, env: &str) -> Result<String> {
    value.filter(|v| !v.is_empty()).ok_or_else(|| {
        CliError::new(Exit::Invalid, format!("{flag} is required in managed mode"))
            .hint(format!("pass {flag} or set {env}; `kt gateway create` prints both"))
            .into()
    })
}

pub fn run(args: RunManagedArgs, g: &GlobalArgs) -> Result<Exit> {
    if !args.managed {
        return Err(CliError::new(Exit::Invalid, "`kt run` needs --managed")
            .hint("to run on a local file use `kt gateway run --policy-config policy-config.yaml`")
            .into());
    }
    let gateway_id = required(args.gateway_id, "--gateway-id", "KEEPTRUSTS_GATEWAY_ID")?;
    let token = required(args.gateway_token, "--gateway-token", "KEEPTRUSTS_GATEWAY_TOKEN")?;
    let creds = session::load_credentials()?;
    let (api_url, _) = session::api_url(g, &creds);
    let state_dir = args.state_dir.unwrap_or_else(|| {
        session::config_dir()
            .join("managed")
            .join(kt_api::encode_segment(&gateway_id))
    });
    let client = Client::new(&api_url, Some(token.clone()));
    let runtime_version = format!("kt/{}", env!("CARGO_PKG_VERSION"));

    // The configuration to start on: the control plane's, else the last one applied here.
    let persisted = kt_gateway::load_applied(&state_dir).filter(|_| kt_gateway::config_path(&state_dir).exists());
    let applied = match client.managed_config(None, 0, args.poll_interval, &runtime_version) {
        Ok(Some(cfg)) => {
            let applied = Applied::of(&cfg);
            if persisted.as_ref() != Some(&applied) {
                kt_gateway::persist(&state_dir, &cfg.yaml, &applied).map_err(|e| {
                    CliError::new(Exit::Error, format!("cannot write {}: {e}", state_dir.display()))
                        .hint("pass a writable --state-dir")
                })?;
            }
            eprintln!(
                "Managed gateway {gateway_id}: configuration {} version {} ({}) from {api_url}",
                cfg.configuration_id, cfg.version, cfg.pack_version
            );
            applied
        }
        Ok(None) => unreachable_config(
            persisted,
            &state_dir,
            "the control plane answered without a configuration",
        )?,
        Err(e @ ClientError::Api { .. }) if e.status() == Some(404) => {
            return Err(CliError::new(Exit::Error, e.to_string())
                .hint(format!(
                    "push a configuration and deploy it: kt policy push --file policy-config.yaml --gateway-id {gateway_id} && kt policy deploy --gateway-id {gateway_id}"
                ))
                .into());
        }
        Err(e @ ClientError::Api { .. }) => return Err(session::api_error(e)),
        Err(e) => unreachable_config(persisted, &state_dir, &e.to_string())?,
    };

    let files = vec![kt_gateway::config_path(&state_dir)];
    // Provider keys kept in the control plane (secret_key_ref.store) are fetched, never
    // written to disk.
    let text = std::fs::read_to_string(&files[0]).unwrap_or_default();
    let store = kt_gateway::resolve_store(&client, &kt_gateway::store_names(&text)).map_err(|e| {
        CliError::new(Exit::Error, e).hint("create the missing secret with `kt secret create --name <name> --stdin`, or check that the control plane is reachable")
    })?;
    let Some(policy) = compile_files(&files)? else {
        return Ok(Exit::Invalid);
    };
    let keys = fleet_keys(&client, &state_dir);
    let upstream = match &args.upstream {
        Some(url) => Some(
            Upstream::from_url("upstream-override", url, None)
                .map_err(|e| CliError::new(Exit::Invalid, e.to_string()))?,
        ),
        None => None,
    };
    args.runtime.launch(Served {
        listen: args.listen,
        policy,
        policy_files: files,
        upstream_override: upstream,
        // The admin routes answer to the same gateway token.
        api_token: Some(token),
        managed: Some(ManagedOptions {
            client,
            gateway_id,
            poll_interval: Duration::from_secs(args.poll_interval),
            spend_every: Duration::from_secs(args.spend_report_interval),
            state_dir,
            applied: Some(applied),
            store,
            keys,
        }),
    })
}

/// The gateway keys to start with: the control plane's, else the last set kept in the
/// state directory (none kept: no key is accepted until the control plane is back).
fn fleet_keys(client: &Client, state_dir: &std::path::Path) -> std::sync::Arc<kt_gateway::FleetKeys> {
    let keys = kt_gateway::FleetKeys::load(Some(kt_gateway::fleet_keys_path(state_dir)));
    match client.fleet_keys(None, 0) {
        Ok(Some(set)) => keys.apply(&set),
        Ok(None) => {}
        Err(e) => eprintln!(
            "warning: cannot fetch the gateway keys ({e}); starting with the {} kept in {}",
            keys.len(),
            state_dir.display()
        ),
    }
    std::sync::Arc::new(keys)
}

/// Starting without the control plane: the persisted configuration, or a clear error.
fn unreachable_config(persisted: Option<Applied>, state_dir: &std::path::Path, why: &str) -> Result<Applied> {
    match persisted {
        Some(a) => {
            eprintln!(
                "warning: control plane unavailable ({why}); starting on the last applied configuration {} version {} from {}",
                a.configuration_id,
                a.version,
                state_dir.display()
            );
            Ok(a)
        }
        None => Err(CliError::new(
            Exit::Error,
            format!("cannot get a configuration from the control plane: {why}"),
        )
        .hint("check --api-url / KEEPTRUSTS_API_URL; once a configuration was applied, the gateway can start without the control plane")
        .into()),
    }
}
