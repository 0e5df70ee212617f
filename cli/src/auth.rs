//! `kt auth`: log in and out, show the active identity, and manage scoped API tokens.

use anyhow::Result;
use clap::Subcommand;
use kt_api::{Client, CreateToken};
use serde_json::json;

use crate::output::{CliError, Exit, print_json};
use crate::session::{self, GlobalArgs, Profile, api_error};

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Sign in with email and password; the session is stored for the active profile
    Login {
        #[arg(long)]
        email: String,
        #[arg(long, env = "KEEPTRUSTS_PASSWORD", hide_env_values = true)]
        password: String,
        /// Machine-readable output (the session token is not printed)
        #[arg(long)]
        json: bool,
    },
    /// Remove the active profile's session (and end it on the server)
    Logout,
    /// Show the current user, organisation, role and scopes
    Whoami {
        #[arg(long)]
        json: bool,
    },
    /// Scoped API tokens for automation
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Multi-factor authentication (TOTP)
    Mfa {
        #[command(subcommand)]
        command: MfaCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MfaCommand {
    /// Start enrolment: prints the TOTP secret and an otpauth:// URI for an authenticator app
    Enroll {
        #[arg(long)]
        json: bool,
    },
    /// Finish enrolment with the first code from the app
    Verify {
        #[arg(long)]
        code: String,
    },
    /// Trade a current code for an MFA-authenticated session (stored for the profile)
    Challenge {
        /// The six-digit code from the authenticator app
        #[arg(long, alias = "token", value_name = "CODE")]
        code: String,
        #[arg(long)]
        json: bool,
    },
    /// Turn MFA off for the current user (needs an MFA-authenticated session)
    Disable,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a scoped token; its secret is printed once
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated scopes, e.g. "configurations:write,gateways:read"
        #[arg(long)]
        scope: String,
        /// access (apps, CI) or gateway (managed gateways)
        #[arg(long = "type", default_value = "access", value_name = "TYPE")]
        token_type: String,
        /// Days until the token expires (default: never)
        #[arg(long, value_name = "DAYS")]
        expires_in_days: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Tokens of the organisation with their state (active, revoked, expired)
    List {
        /// Only access or gateway tokens
        #[arg(long = "type", value_name = "TYPE")]
        token_type: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token immediately
    Revoke {
        #[arg(long, value_name = "ID")]
        token_id: String,
        /// Accepted for scripts; revocation does not ask for confirmation
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token and issue its successor in one atomic operation
    Rotate {
        #[arg(long, value_name = "ID")]
        id: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: AuthCommand, g: &GlobalArgs) -> Result<Exit> {
    match cmd {
        AuthCommand::Login { email, password, json } => login(g, &email, &password, json),
        AuthCommand::Logout => logout(g),
        AuthCommand::Whoami { json } => {
            let me = session::client(g)?.whoami().map_err(api_error)?;
            if json {
                print_json(&me)?;
            } else {
                match &me.user {
                    Some(u) => println!("User:   {} ({})", u.email, u.id),
                    None => println!("Token:  {} ({} token)", me.token_id, me.token_type),
                }
                println!("Org:    {} ({})", me.org.name, me.org.id);
                println!("Role:   {}", me.role);
                println!("Scopes: {}", me.scopes.join(", "));
                println!("MFA:    {}", if me.mfa_authenticated { "yes" } else { "no" });
            }
            Ok(Exit::Ok)
        }
        AuthCommand::Token { command } => token(command, g),
        AuthCommand::Mfa { command } => mfa(command, g),
    }
}

fn mfa(cmd: MfaCommand, g: &GlobalArgs) -> Result<Exit> {
    let client = session::client(g)?;
    match cmd {
        MfaCommand::Enroll { json } => {
            let r: serde_json::Value = client.call("POST", "/v1/auth/mfa/enroll").map_err(api_error)?;
            if json {
                print_json(&r)?;
            } else {
                println!("Secret:  {}", r["secret"].as_str().unwrap_or_default());
                println!("URI:     {}", r["otpauth_url"].as_str().unwrap_or_default());
                println!("Add it to an authenticator app, then run: kt auth mfa verify --code <code>");
            }
        }
        MfaCommand::Verify { code } => {
            let _: serde_json::Value = client
                .send("POST", "/v1/auth/mfa/verify", &json!({"code": code}))
                .map_err(api_error)?;
            println!("MFA is on. Sensitive operations now ask for `kt auth mfa challenge --code <code>`.");
        }
        MfaCommand::Challenge { code, json } => {
            let r: serde_json::Value = client
                .send("POST", "/v1/auth/mfa/challenge", &json!({"code": code}))
                .map_err(api_error)?;
            let mut creds = session::load_credentials()?;
            let expires_at = r["expires_at"].as_i64().unwrap_or(0);
            if let Some(p) = creds.profiles.get_mut(&g.profile) {
                p.token = r["token"].as_str().unwrap_or_default().to_owned();
                p.token_id = r["token_id"].as_str().unwrap_or_default().to_owned();
                p.expires_at = expires_at;
                session::save_credentials(&creds)?;
            }
            if json {
                print_json(&json!({"mfa_authenticated": true, "token_id": r["token_id"], "expires_at": expires_at}))?;
            } else {
                println!("MFA session active for profile '{}' (1 hour).", g.profile);
            }
        }
        MfaCommand::Disable => {
            let _: serde_json::Value = client.call("POST", "/v1/auth/mfa/disable").map_err(api_error)?;
            println!("MFA is off for this user.");
        }
    }
    Ok(Exit::Ok)
}

fn login(g: &GlobalArgs, email: &str, password: &str, json: bool) -> Result<Exit> {
    let mut creds = session::load_credentials()?;
    let (url, _) = session::api_url(g, &creds);
    let r = Client::new(&url, None).login(email, password).map_err(api_error)?;
    creds.profiles.insert(
        g.profile.clone(),
        Profile {
            api_url: url.clone(),
            token: r.token.clone(),
            token_id: r.token_id.clone(),
            email: r.user.email.clone(),
            org: r.org.name.clone(),
            expires_at: r.expires_at,
        },
    );
    let path = session::save_credentials(&creds)?;
    if json {
        print_json(&json!({
            "logged_in": true,
            "profile": g.profile,
            "api_url": url,
            "user": r.user,
            "org": r.org,
            "token_id": r.token_id,
            "expires_at": r.expires_at,
        }))?;
    } else {
        println!(
            "Logged in as {} ({}, org {}) on {url}",
            r.user.email, r.user.role, r.org.name
        );
        println!("Session stored for profile '{}' in {}", g.profile, path.display());
    }
    Ok(Exit::Ok)
}

fn logout(g: &GlobalArgs) -> Result<Exit> {
    let mut creds = session::load_credentials()?;
    let Some(p) = creds.profiles.remove(&g.profile) else {
        println!("Profile '{}' has no session; nothing to do.", g.profile);
        return Ok(Exit::Ok);
    };
    // End the session on the server too; a server that is down or already forgot it does
    // not keep the local session alive.
    let ended = Client::new(&p.api_url, Some(p.token.clone())).logout();
    session::save_credentials(&creds)?;
    match ended {
        Ok(_) => println!("Logged out of profile '{}'.", g.profile),
        Err(e) => println!(
            "Removed the local session of profile '{}' (the server did not confirm: {e}).",
            g.profile
        ),
    }
    Ok(Exit::Ok)
}

fn token(cmd: TokenCommand, g: &GlobalArgs) -> Result<Exit> {
    let client = session::client(g)?;
    match cmd {
        TokenCommand::Create {
            name,
            scope,
            token_type,
            expires_in_days,
            json,
        } => {
            let scopes: Vec<String> = scope
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
            if scopes.is_empty() {
                return Err(CliError::new(Exit::Invalid, "--scope names no scope")
                    .hint("e.g. --scope \"configurations:write,gateways:read\"")
                    .into());
            }
            let req = CreateToken {
                name,
                scopes,
                token_type: Some(token_type),
                expires_in_days,
            };
            let t = client.create_token(&req).map_err(api_error)?;
            if json {
                print_json(&t)?;
            } else {
                println!(
                    "Created token {} '{}' ({})",
                    t.info.id,
                    t.info.name,
                    t.info.scopes.join(", ")
                );
                println!("{}", t.token);
                eprintln!("This secret is shown once: store it now (e.g. as KEEPTRUSTS_API_TOKEN).");
            }
        }
        TokenCommand::List { token_type, json } => {
            let list = client.list_tokens(token_type.as_deref()).map_err(api_error)?;
            if json {
                print_json(&list)?;
            } else if list.data.is_empty() {
                println!("No tokens.");
            } else {
                println!("{:<22} {:<20} {:<8} {:<8} SCOPES", "ID", "NAME", "TYPE", "STATE");
                for t in &list.data {
                    println!(
                        "{:<22} {:<20} {:<8} {:<8} {}",
                        t.id,
                        t.name,
                        t.token_type,
                        t.state,
                        t.scopes.join(",")
                    );
                }
            }
        }
        TokenCommand::Revoke { token_id, json, .. } => {
            let t = client.revoke_token(&token_id).map_err(api_error)?;
            if json {
                print_json(&t)?;
            } else {
                println!("Revoked token {} '{}'.", t.id, t.name);
            }
        }
        TokenCommand::Rotate { id, json } => {
            let r = client.rotate_token(&id).map_err(api_error)?;
            if json {
                print_json(&r)?;
            } else {
                // The new secret first: the old token is already revoked, so nothing may
                // stand between the answer and the secret reaching the reader.
                println!("{}", r.created.token);
                eprintln!("This secret is shown once: store it now.");
                eprintln!(
                    "Revoked {} and issued {} '{}'.",
                    r.revoked.id, r.created.info.id, r.created.info.name
                );
            }
        }
    }
    Ok(Exit::Ok)
}
