//! `kt gateway run`: load, validate and compile the policy configuration (refusing to
//! start on any lint error), pick the upstream target, and serve.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use kt_gateway::{EventTarget, RunOptions, Upstream, WireFormat};
use kt_policy::config::{PolicyConfig, load_files};
use kt_policy::{CompiledPolicy, FailMode};

use crate::output::{CliError, Exit};
use crate::policy::print_lint_text;

#[derive(Debug, Subcommand)]
pub enum GatewayCommand {
    /// Run the gateway on a local policy configuration
    Run(RunArgs),
    /// Run a demo OpenAI-compatible provider that echoes prompts (for trying kt; no model)
    DemoProvider {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:41003", value_name = "HOST:PORT")]
        listen: String,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum FailModeArg {
    Block,
    Allow,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Address to listen on
    #[arg(long, default_value = "0.0.0.0:41002", value_name = "HOST:PORT")]
    pub listen: String,
    /// Policy configuration; repeat to layer files (later files win). Default: ./policy-config.yaml
    #[arg(long = "policy-config", value_name = "FILE")]
    pub policy_config: Vec<PathBuf>,
    /// What happens when a policy itself fails: block the request, or allow it (degraded)
    #[arg(long, value_enum, default_value = "block")]
    pub fail_mode: FailModeArg,
    /// Debug: send every request to this OpenAI-compatible base URL instead of the config's targets
    #[arg(long, env = "KEEPTRUSTS_UPSTREAM_URL", value_name = "URL")]
    pub upstream: Option<String>,
    /// Debug: credential for --upstream
    #[arg(
        long,
        env = "KEEPTRUSTS_UPSTREAM_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub upstream_api_key: Option<String>,
    /// Header carrying --upstream-api-key
    #[arg(long, env = "KEEPTRUSTS_UPSTREAM_API_KEY_HEADER", default_value = "Authorization")]
    pub upstream_api_key_header: String,
    /// Prefix of --upstream-api-key in its header (empty allowed)
    #[arg(long, env = "KEEPTRUSTS_UPSTREAM_API_KEY_PREFIX", default_value = "Bearer ")]
    pub upstream_api_key_prefix: String,
    /// Worker threads
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_THREADS", default_value_t = 2)]
    pub threads: usize,
    /// Write one decision event per chat request as a JSON line: a file path, or `-` for stdout
    #[arg(long, env = "KEEPTRUSTS_EVENTS", value_name = "FILE|-")]
    pub events: Option<String>,
}

pub fn run(cmd: GatewayCommand) -> Result<Exit> {
    match cmd {
        GatewayCommand::Run(args) => serve(args),
        GatewayCommand::DemoProvider { listen } => {
            eprintln!("Demo provider (echoes prompts, no model) listening on http://{listen}/v1");
            kt_gateway::run_demo_provider(&listen).map_err(|e| CliError::new(Exit::Error, e.to_string()))?;
            Ok(Exit::Ok)
        }
    }
}

/// Provider ids served over the OpenAI chat-completions wire format.
const OPENAI_COMPATIBLE: &[&str] = &[
    "openai",
    "openai-compatible",
    "vllm",
    "ollama",
    "groq",
    "together",
    "mistral",
    "fireworks",
    "perplexity",
    "cerebras",
    "deepseek",
    "openrouter",
    "xai",
    "localai",
    "litellm",
    "aimlapi",
    "github-models",
];

fn pick_upstream(args: &RunArgs, config: &PolicyConfig) -> Result<Upstream> {
    let invalid = |msg: String| CliError::new(Exit::Invalid, msg);
    if let Some(url) = &args.upstream {
        let auth = args.upstream_api_key.as_ref().map(|k| {
            (
                args.upstream_api_key_header.clone(),
                format!("{}{k}", args.upstream_api_key_prefix),
            )
        });
        return Upstream::from_url("upstream-override", url, auth).map_err(|e| invalid(e.to_string()).into());
    }
    let targets = config.providers.as_ref().map(|p| p.targets.as_slice()).unwrap_or(&[]);
    let Some(t) = targets
        .iter()
        .find(|t| t.provider == "anthropic" || OPENAI_COMPATIBLE.contains(&t.provider.as_str()))
    else {
        return Err(invalid("no OpenAI-compatible or Anthropic provider target in the configuration".into())
            .hint("add a providers.targets entry with provider: openai or anthropic (base_url for other OpenAI-compatible servers), or pass --upstream URL")
            .into());
    };
    let url = match (&t.base_url, t.provider.as_str()) {
        (Some(u), _) => u.clone(),
        (None, "openai") => "https://api.openai.com/v1".to_owned(),
        (None, "anthropic") => "https://api.anthropic.com/v1".to_owned(),
        (None, p) => return Err(invalid(format!("target '{}' (provider {p}) needs a base_url", t.id)).into()),
    };
    let key = match (&t.secret_key_ref, &t.api_key) {
        (Some(r), _) if r.env.is_some() => {
            let name = r.env.clone().unwrap_or_default();
            Some(std::env::var(&name).map_err(|_| {
                invalid(format!(
                    "target '{}' reads its key from ${name}, which is not set",
                    t.id
                ))
                .hint(format!("export {name}=… before starting the gateway"))
            })?)
        }
        (Some(r), _) if r.store.is_some() => {
            return Err(invalid(format!(
                "target '{}' uses secret_key_ref.store, which needs a managed gateway (kt run --managed)",
                t.id
            ))
            .into());
        }
        (_, Some(k)) => Some(k.clone()),
        _ if t.provider == "openai" => std::env::var("OPENAI_API_KEY").ok(),
        _ if t.provider == "anthropic" => std::env::var("ANTHROPIC_API_KEY").ok(),
        _ => None,
    };
    let anthropic = t.provider == "anthropic";
    let (default_header, default_prefix) = if anthropic {
        ("x-api-key", "")
    } else {
        ("Authorization", "Bearer ")
    };
    let header = t.api_key_header.clone().unwrap_or_else(|| default_header.to_owned());
    let prefix = t.api_key_prefix.clone().unwrap_or_else(|| default_prefix.to_owned());
    let mut upstream = Upstream::from_url(&t.id, &url, key.map(|k| (header, format!("{prefix}{k}"))))
        .map_err(|e| invalid(e.to_string()))?;
    if anthropic {
        upstream.format = WireFormat::Anthropic;
    }
    Ok(upstream)
}

/// Configured runtime sections this gateway version does not act on yet, so the operator
/// is told rather than left believing they apply.
fn unenforced_sections(c: &PolicyConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    let p = c.providers.as_ref();
    let checks: [(&'static str, bool); 11] = [
        ("token_rate_limit", c.token_rate_limit.is_some()),
        ("routes", c.routes.as_ref().is_some_and(|r| !r.is_empty())),
        (
            "consumer_groups",
            c.consumer_groups.as_ref().is_some_and(|r| !r.is_empty()),
        ),
        ("model_groups", c.model_groups.as_ref().is_some_and(|r| !r.is_empty())),
        ("agents", c.agents.as_ref().is_some_and(|r| !r.is_empty())),
        ("providers.routing", p.is_some_and(|p| p.routing.is_some())),
        ("providers.fallback", p.is_some_and(|p| p.fallback.is_some())),
        (
            "providers.circuit_breaker",
            p.is_some_and(|p| p.circuit_breaker.is_some()),
        ),
        ("providers.ab_test", p.is_some_and(|p| p.ab_test.is_some())),
        ("providers.mirror", p.is_some_and(|p| p.mirror.is_some())),
        (
            "unified_access (only /v1/models honours it)",
            c.unified_access.is_some(),
        ),
    ];
    for (name, present) in checks {
        if present {
            out.push(name);
        }
    }
    out
}

fn serve(args: RunArgs) -> Result<Exit> {
    let files = if args.policy_config.is_empty() {
        vec![PathBuf::from("policy-config.yaml")]
    } else {
        args.policy_config.clone()
    };
    let outcome = load_files(&files);
    let Some(config) = outcome.config.clone() else {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        print_lint_text(&names.join(" + "), &outcome);
        eprintln!("error: the gateway does not start on an invalid configuration");
        return Ok(Exit::Invalid);
    };
    let upstream = pick_upstream(&args, &config)?;
    for section in unenforced_sections(&config) {
        eprintln!("warning: {section} is configured but not enforced by this version of the gateway");
    }
    let policy = CompiledPolicy::compile(config).map_err(|e| CliError::new(Exit::Invalid, e.to_string()))?;
    let c = policy.config();
    eprintln!(
        "Loaded declarative config {}@{} (digest {})",
        c.pack.name,
        c.pack.version,
        &policy.digest()[..12]
    );
    eprintln!(
        "Upstream {} -> {}://{}:{}{}",
        upstream.id,
        if upstream.tls { "https" } else { "http" },
        upstream.host,
        upstream.port,
        upstream.base_path
    );
    eprintln!("Gateway listening on http://{}", args.listen);
    let fail_mode = match args.fail_mode {
        FailModeArg::Block => FailMode::Block,
        FailModeArg::Allow => FailMode::Allow,
    };
    kt_gateway::run(RunOptions {
        listen: args.listen,
        policy,
        policy_files: files,
        upstream,
        fail_mode,
        threads: args.threads,
        events: args.events.map(|e| {
            if e == "-" {
                EventTarget::Stdout
            } else {
                EventTarget::File(PathBuf::from(e))
            }
        }),
    })
    .map_err(|e| CliError::new(Exit::Error, e.to_string()))?;
    Ok(Exit::Ok)
}
