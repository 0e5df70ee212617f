//! `kt secret` (write-only, encrypted provider credentials) and `kt config-var`.

use std::io::Read;

use anyhow::Result;
use clap::{Args, Subcommand};
use kt_api::{
    ConfigVar, ConfigVarList, CreateSecret, ResolveResponse, SecretInfo, SecretList, UpdateSecret, WriteConfigVar,
    encode_segment,
};
use serde_json::Value;

use crate::output::{CliError, Exit, print_json, rfc3339, show};
use crate::session::{self, GlobalArgs, api_error};

/// Where a secret's value comes from: never a plain flag. At most one source; `create`
/// needs one, `update` may leave the value as it is.
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct ValueSource {
    /// Read the value from this environment variable
    #[arg(long, value_name = "VAR")]
    pub env_var: Option<String>,
    /// Read the value from the OS keychain, as "service:account"
    #[arg(long, value_name = "SERVICE:ACCOUNT")]
    pub keychain: Option<String>,
    /// Read the value from standard input (a trailing newline is dropped)
    #[arg(long)]
    pub stdin: bool,
}

impl ValueSource {
    fn given(&self) -> bool {
        self.env_var.is_some() || self.keychain.is_some() || self.stdin
    }
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Secrets of the organisation (metadata only)
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// One secret's metadata (values are write-only)
    Get {
        /// The secret's id (secret_…)
        #[arg(long, value_name = "ID")]
        secret_id: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Store a secret, encrypted; reference it as secret_key_ref: {store: <name>}
    Create {
        /// 1 to 128 letters, digits, '_', '-' or '.'; what secret_key_ref.store names
        #[arg(long)]
        name: String,
        /// What the secret is for
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        source: ValueSource,
        /// A host the secret may be sent to: host, host:port or *.domain (repeatable);
        /// none: only the providers' public endpoints (api.openai.com, …)
        #[arg(long = "allowed-host", value_name = "HOST")]
        allowed_hosts: Vec<String>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Replace a secret's value, where it may be sent, or both
    Update {
        /// The secret's id (secret_…)
        #[arg(long, value_name = "ID")]
        secret_id: String,
        #[command(flatten)]
        source: ValueSource,
        /// Replace the hosts the secret may be sent to (repeatable; needs secrets:bind)
        #[arg(long = "allowed-host", value_name = "HOST", conflicts_with = "public_endpoints_only")]
        allowed_hosts: Vec<String>,
        /// Allow only the providers' public endpoints again (needs secrets:bind)
        #[arg(long)]
        public_endpoints_only: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Delete a secret (gateways that reference it fail to load new configurations)
    Delete {
        /// The secret's id (secret_…)
        #[arg(long, value_name = "ID")]
        secret_id: String,
        /// Confirm the deletion
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigVarCommand {
    /// Config variables (sensitive values redacted)
    List {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// One config variable (a sensitive value is redacted)
    Get {
        /// The variable's name
        #[arg(long)]
        name: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Create a config variable; reference it as secret_key_ref: {store: <name>}
    Create {
        /// 1 to 128 letters, digits, '_', '-' or '.'
        #[arg(long)]
        name: String,
        /// The value (for credentials prefer `kt secret create`, which never takes a value on the command line)
        #[arg(long)]
        value: String,
        /// What the variable is for
        #[arg(long)]
        description: Option<String>,
        /// Encrypt and redact the value like a secret
        #[arg(long)]
        sensitive: bool,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Change a config variable's value, description or sensitivity
    Update {
        /// The variable's name
        #[arg(long)]
        name: String,
        /// A new value
        #[arg(long)]
        value: Option<String>,
        /// A new description
        #[arg(long)]
        description: Option<String>,
        /// true: encrypt and redact the value from now on; false: show it again
        #[arg(long)]
        sensitive: Option<bool>,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Delete a config variable (gateways that reference it fail to load new configurations)
    Delete {
        /// The variable's name
        #[arg(long)]
        name: String,
        /// Confirm the deletion
        #[arg(long)]
        yes: bool,
    },
    /// Show where a secret_key_ref.store name resolves (secret values are never shown)
    Resolve {
        /// The name a configuration gives in secret_key_ref.store
        #[arg(long)]
        name: String,
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

fn read_value(src: &ValueSource) -> Result<String> {
    let value = if let Some(var) = &src.env_var {
        std::env::var(var).ok().filter(|v| !v.is_empty()).ok_or_else(|| {
            CliError::new(Exit::Invalid, format!("environment variable {var} is not set or empty"))
                .hint(format!("export {var}=… first, or use --stdin"))
        })?
    } else if let Some(entry) = &src.keychain {
        keychain(entry)?
    } else {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CliError::new(Exit::Invalid, format!("cannot read standard input: {e}")))?;
        s.strip_suffix('\n')
            .map(|t| t.strip_suffix('\r').unwrap_or(t))
            .unwrap_or(&s)
            .to_owned()
    };
    if value.is_empty() {
        return Err(CliError::new(Exit::Invalid, "the secret value is empty").into());
    }
    Ok(value)
}

/// Reads "service:account" from the OS keychain: `security` on macOS, `secret-tool`
/// (libsecret) elsewhere.
fn keychain(entry: &str) -> Result<String> {
    let Some((service, account)) = entry.split_once(':') else {
        return Err(CliError::new(Exit::Invalid, format!("--keychain '{entry}' is not SERVICE:ACCOUNT")).into());
    };
    let (program, args): (&str, Vec<&str>) = if cfg!(target_os = "macos") {
        (
            "security",
            vec!["find-generic-password", "-s", service, "-a", account, "-w"],
        )
    } else {
        ("secret-tool", vec!["lookup", "service", service, "account", account])
    };
    let out = std::process::Command::new(program).args(&args).output().map_err(|_| {
        CliError::new(Exit::Invalid, format!("no OS keychain available ({program} not found)")).hint(
            "use --env-var or --stdin on this machine (Linux needs libsecret's secret-tool and a running keyring)",
        )
    })?;
    let value = String::from_utf8_lossy(&out.stdout)
        .trim_end_matches(['\n', '\r'])
        .to_owned();
    if !out.status.success() || value.is_empty() {
        return Err(
            CliError::new(Exit::Invalid, format!("keychain entry '{service}:{account}' not found"))
                .hint(format!(
                    "check it with `{program} {}`",
                    args[..args.len().saturating_sub(1)].join(" ")
                ))
                .into(),
        );
    }
    Ok(value)
}

fn print_secret(s: &SecretInfo) {
    println!("Secret:      {} ({})", s.name, s.id);
    if !s.description.is_empty() {
        println!("Description: {}", s.description);
    }
    println!("Encryption:  {}", s.encryption);
    println!("Sent to:     {}", binding_text(s.allowed_hosts.as_deref()));
    println!("Created:     {}", rfc3339(s.created_at));
    println!("Updated:     {}", rfc3339(s.updated_at));
}

fn binding_text(hosts: Option<&[String]>) -> String {
    match hosts {
        Some(h) if !h.is_empty() => h.join(", "),
        _ => "the providers' public endpoints".to_owned(),
    }
}

fn confirm(yes: bool, what: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    Err(
        CliError::new(Exit::Invalid, format!("refusing to delete {what} without --yes"))
            .hint("add --yes to confirm")
            .into(),
    )
}

pub fn secret(cmd: SecretCommand, g: &GlobalArgs) -> Result<Exit> {
    if let SecretCommand::Delete { yes, secret_id } = &cmd {
        confirm(*yes, &format!("secret {secret_id}"))?;
    }
    if let SecretCommand::Create { source, .. } = &cmd
        && !source.given()
    {
        return Err(CliError::new(Exit::Invalid, "a secret needs a value source")
            .hint("give one of --env-var VAR, --keychain SERVICE:ACCOUNT or --stdin")
            .into());
    }
    let client = session::client(g)?;
    match cmd {
        SecretCommand::List { json } => {
            let list: SecretList = client.get("/v1/secrets").map_err(api_error)?;
            if json {
                print_json(&list)?;
            } else if list.data.is_empty() {
                println!("No secrets.");
            } else {
                println!("{:<24} {:<28} {:<12} DESCRIPTION", "ID", "NAME", "ENCRYPTION");
                for s in &list.data {
                    println!("{:<24} {:<28} {:<12} {}", s.id, s.name, s.encryption, s.description);
                }
            }
        }
        SecretCommand::Get { secret_id, json } => {
            let s: SecretInfo = client
                .get(&format!("/v1/secrets/{}", encode_segment(&secret_id)))
                .map_err(api_error)?;
            show(json, &s, print_secret)?;
        }
        SecretCommand::Create {
            name,
            description,
            source,
            allowed_hosts,
            json,
        } => {
            let value = read_value(&source)?;
            let s: SecretInfo = client
                .send(
                    "POST",
                    "/v1/secrets",
                    &CreateSecret {
                        name,
                        value,
                        description,
                        allowed_hosts: (!allowed_hosts.is_empty()).then_some(allowed_hosts),
                    },
                )
                .map_err(api_error)?;
            if json {
                print_json(&s)?;
            } else {
                println!(
                    "Created secret {} ({}); reference it as secret_key_ref: {{store: {}}}",
                    s.name, s.id, s.name
                );
            }
        }
        SecretCommand::Update {
            secret_id,
            source,
            allowed_hosts,
            public_endpoints_only,
            json,
        } => {
            let value = if source.given() {
                Some(read_value(&source)?)
            } else {
                None
            };
            let allowed_hosts = if public_endpoints_only {
                Some(Vec::new())
            } else {
                (!allowed_hosts.is_empty()).then_some(allowed_hosts)
            };
            if value.is_none() && allowed_hosts.is_none() {
                return Err(CliError::new(Exit::Invalid, "nothing to update")
                    .hint("give a new value (--env-var, --keychain or --stdin), --allowed-host or --public-endpoints-only")
                    .into());
            }
            let s: SecretInfo = client
                .send(
                    "PUT",
                    &format!("/v1/secrets/{}", encode_segment(&secret_id)),
                    &UpdateSecret { value, allowed_hosts },
                )
                .map_err(api_error)?;
            show(json, &s, |s| {
                println!(
                    "Updated secret {} ({}); it may be sent to {}.",
                    s.name,
                    s.id,
                    binding_text(s.allowed_hosts.as_deref())
                );
            })?;
        }
        SecretCommand::Delete { secret_id, .. } => {
            let _: Value = client
                .call("DELETE", &format!("/v1/secrets/{}", encode_segment(&secret_id)))
                .map_err(api_error)?;
            println!("Deleted secret {secret_id}.");
        }
    }
    Ok(Exit::Ok)
}

fn print_var(v: &ConfigVar) {
    let value = v.value.as_deref().unwrap_or("(sensitive)");
    println!(
        "{} = {value}{}",
        v.name,
        if v.description.is_empty() {
            String::new()
        } else {
            format!("  # {}", v.description)
        }
    );
}

pub fn config_var(cmd: ConfigVarCommand, g: &GlobalArgs) -> Result<Exit> {
    if let ConfigVarCommand::Delete { yes, name } = &cmd {
        confirm(*yes, &format!("config variable {name}"))?;
    }
    let client = session::client(g)?;
    let path = |name: &str| format!("/v1/config-variables/{}", encode_segment(name));
    match cmd {
        ConfigVarCommand::List { json } => {
            let list: ConfigVarList = client.get("/v1/config-variables").map_err(api_error)?;
            if json {
                print_json(&list)?;
            } else if list.data.is_empty() {
                println!("No config variables.");
            } else {
                list.data.iter().for_each(print_var);
            }
        }
        ConfigVarCommand::Get { name, json } => {
            let v: ConfigVar = client.get(&path(&name)).map_err(api_error)?;
            show(json, &v, print_var)?;
        }
        ConfigVarCommand::Create {
            name,
            value,
            description,
            sensitive,
            json,
        } => {
            let body = WriteConfigVar {
                name: Some(name),
                value: Some(value),
                description,
                sensitive: Some(sensitive),
            };
            let v: ConfigVar = client.send("POST", "/v1/config-variables", &body).map_err(api_error)?;
            show(json, &v, print_var)?;
        }
        ConfigVarCommand::Update {
            name,
            value,
            description,
            sensitive,
            json,
        } => {
            let body = WriteConfigVar {
                name: None,
                value,
                description,
                sensitive,
            };
            let v: ConfigVar = client.send("PUT", &path(&name), &body).map_err(api_error)?;
            show(json, &v, print_var)?;
        }
        ConfigVarCommand::Delete { name, .. } => {
            let _: Value = client.call("DELETE", &path(&name)).map_err(api_error)?;
            println!("Deleted config variable {name}.");
        }
        ConfigVarCommand::Resolve { name, json } => {
            let mut r: ResolveResponse = client.resolve(std::slice::from_ref(&name)).map_err(api_error)?;
            // The CLI never prints a secret, whatever token asked.
            for x in &mut r.data {
                if x.sensitive {
                    x.value = None;
                }
            }
            if json {
                print_json(&r)?;
            } else {
                for x in &r.data {
                    match &x.value {
                        Some(v) => println!("{} -> {} = {v}", x.name, x.source),
                        None => println!("{} -> {} (value withheld)", x.name, x.source),
                    }
                }
            }
        }
    }
    Ok(Exit::Ok)
}
