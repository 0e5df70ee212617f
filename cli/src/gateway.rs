//! `kt gateway run`: load, validate and compile the policy configuration (refusing to
//! start on any lint error), pick the upstream target, and serve.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use kt_gateway::{EventTarget, RunOptions, Upstream};
use kt_policy::config::{PolicyConfig, load_files};
use kt_policy::{CompiledPolicy, FailMode};

use crate::output::print_lint_text;
use crate::output::{CliError, Exit};

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
    #[command(flatten)]
    Admin(crate::fleet::GatewayAdmin),
    #[command(flatten)]
    Service(crate::service::ServiceCommand),
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
    /// Runtime token: when set, the /keeptrusts/* admin routes require `Authorization: Bearer <token>`
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// How a gateway runs, whatever its configuration comes from (`kt gateway run` and
/// `kt run --managed` share these flags).
#[derive(Debug, Args)]
pub struct RuntimeArgs {
    /// What happens when a policy itself fails: block the request, or allow it (degraded)
    #[arg(long, value_enum, default_value = "block")]
    pub fail_mode: FailModeArg,
    /// Worker threads
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_THREADS", default_value_t = 2)]
    pub threads: usize,
    /// Upstream requests in flight at most; more wait up to 10 s for a slot, then get 503 overloaded
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_MAX_CONCURRENCY", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrency: u32,
    /// Write one decision event per chat request as a JSON line: a file path, or `-` for stdout
    #[arg(long, env = "KEEPTRUSTS_EVENTS", value_name = "FILE|-")]
    pub events: Option<String>,
    /// Seconds a kept-alive client connection may idle before its next request
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_IDLE_TIMEOUT_SECS", default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub idle_timeout_secs: u64,
    /// Seconds a new connection has to send a complete request head
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_HEADER_TIMEOUT_SECS", default_value_t = 10, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// Seconds a request body may take to arrive (408 after)
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_BODY_TIMEOUT_SECS", default_value_t = 60, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub body_timeout_secs: u64,
    /// Seconds a write to a client may stall before the connection is dropped
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_WRITE_TIMEOUT_SECS", default_value_t = 30, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub write_timeout_secs: u64,
    /// Seconds a whole upstream answer (head, body or stream) may take before it is cut off
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_UPSTREAM_DEADLINE_SECS", default_value_t = 900, value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub upstream_deadline_secs: u64,
    /// Client connections served at once (default: 10000, or less under a low open-file limit)
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_MAX_CONNECTIONS", value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: Option<u64>,
}

/// What is left to choose once the runtime flags are known.
pub struct Served {
    pub listen: String,
    pub policy: CompiledPolicy,
    pub policy_files: Vec<PathBuf>,
    pub upstream_override: Option<Upstream>,
    pub api_token: Option<String>,
    pub managed: Option<kt_gateway::ManagedOptions>,
}

impl RuntimeArgs {
    /// Serves `what` with these runtime settings until the process stops.
    pub fn launch(self, what: Served) -> Result<Exit> {
        let options = RunOptions {
            listen: what.listen,
            policy: what.policy,
            policy_files: what.policy_files,
            upstream_override: what.upstream_override,
            fail_mode: match self.fail_mode {
                FailModeArg::Block => FailMode::Block,
                FailModeArg::Allow => FailMode::Allow,
            },
            max_concurrency: self.max_concurrency as usize,
            api_token: what.api_token,
            threads: self.threads,
            events: self.events.map(|e| {
                if e == "-" {
                    EventTarget::Stdout
                } else {
                    EventTarget::File(PathBuf::from(e))
                }
            }),
            managed: what.managed,
            upstream_deadline: Duration::from_secs(self.upstream_deadline_secs),
            conn: kt_gateway::conn::ConnLimits {
                idle_timeout: Duration::from_secs(self.idle_timeout_secs),
                header_timeout: Duration::from_secs(self.header_timeout_secs),
                body_timeout: Duration::from_secs(self.body_timeout_secs),
                write_timeout: Duration::from_secs(self.write_timeout_secs),
                max_connections: self
                    .max_connections
                    .map_or_else(kt_gateway::conn::default_max_connections, |n| {
                        usize::try_from(n).unwrap_or(usize::MAX)
                    }),
            },
        };
        kt_gateway::run(options).map_err(|e| match e {
            kt_gateway::GatewayError::Config(msg) => CliError::new(Exit::Invalid, msg),
            other => CliError::new(Exit::Error, other.to_string()),
        })?;
        Ok(Exit::Ok)
    }
}

pub fn run(cmd: GatewayCommand, g: &crate::session::GlobalArgs) -> Result<Exit> {
    match cmd {
        GatewayCommand::Run(args) => serve(args),
        GatewayCommand::Admin(cmd) => crate::fleet::gateway(cmd, g),
        GatewayCommand::Service(cmd) => crate::service::run(cmd),
        GatewayCommand::DemoProvider { listen } => {
            eprintln!("Demo provider (echoes prompts, no model) listening on http://{listen}/v1");
            kt_gateway::run_demo_provider(&listen).map_err(|e| CliError::new(Exit::Error, e.to_string()))?;
            Ok(Exit::Ok)
        }
    }
}

/// The debug `--upstream` override, when given.
pub fn upstream_override(args: &RunArgs) -> Result<Option<Upstream>> {
    let Some(url) = &args.upstream else {
        return Ok(None);
    };
    let auth = args.upstream_api_key.as_ref().map(|k| {
        (
            args.upstream_api_key_header.clone(),
            format!("{}{k}", args.upstream_api_key_prefix),
        )
    });
    let u =
        Upstream::from_url("upstream-override", url, auth).map_err(|e| CliError::new(Exit::Invalid, e.to_string()))?;
    Ok(Some(u))
}

/// Configured runtime sections this gateway version does not act on yet, so the operator
/// is told rather than left believing they apply.
fn unenforced_sections(c: &PolicyConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    let p = c.providers.as_ref();
    let checks: [(&'static str, bool); 4] = [
        ("agents", c.agents.as_ref().is_some_and(|r| !r.is_empty())),
        (
            "providers.routing.budget_policy",
            p.is_some_and(|p| p.routing.as_ref().is_some_and(|r| r.budget_policy.is_some())),
        ),
        ("providers.ab_test", p.is_some_and(|p| p.ab_test.is_some())),
        ("providers.mirror", p.is_some_and(|p| p.mirror.is_some())),
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
    let upstream = upstream_override(&args)?;
    let Some(policy) = compile_files(&files)? else {
        return Ok(Exit::Invalid);
    };
    args.runtime.launch(Served {
        listen: args.listen,
        policy,
        policy_files: files,
        upstream_override: upstream,
        api_token: args.api_token,
        managed: None,
    })
}

/// Loads, validates and compiles `files` as the gateway will run them, with the start-up
/// warnings; `None` (after printing the lint diagnostics) when they are invalid.
pub fn compile_files(files: &[PathBuf]) -> Result<Option<CompiledPolicy>> {
    let outcome = load_files(files);
    let Some(config) = outcome.config.clone() else {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        print_lint_text(&names.join(" + "), &outcome);
        eprintln!("error: the gateway does not start on an invalid configuration");
        return Ok(None);
    };
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
    Ok(Some(policy))
}
