//! `kt gateway install|start|status|stop|uninstall`: run a gateway as a per-user service —
//! a `systemd --user` unit on Linux, a launchd agent on macOS. Credentials go to a 0600
//! environment file beside the unit, never into the unit itself.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::json;

use crate::output::{CliError, Exit, print_json};

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write (and enable) a per-user service running this gateway
    Install(InstallArgs),
    /// Start the installed service
    Start(NameArg),
    /// Show the service's state
    Status(NameArg),
    /// Stop the service
    Stop(NameArg),
    /// Stop, disable and remove the service and its environment file
    Uninstall(NameArg),
}

#[derive(Debug, Args)]
pub struct NameArg {
    /// Service name
    #[arg(long, default_value = "kt-gateway")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Service name (unit kt-gateway.service / agent com.keeptrusts.kt-gateway)
    #[arg(long, default_value = "kt-gateway")]
    pub name: String,
    /// Run `kt run --managed` (configuration from the control plane) instead of `kt gateway run`
    #[arg(long)]
    pub managed: bool,
    /// Policy config for `kt gateway run` (made absolute)
    #[arg(long = "policy-config", value_name = "FILE")]
    pub policy_config: Vec<PathBuf>,
    /// Listen address (default: 0.0.0.0:41002, or 0.0.0.0:8080 managed)
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Managed: gateway id
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_ID", value_name = "ID")]
    pub gateway_id: Option<String>,
    /// Managed: gateway token (written to the 0600 environment file only)
    #[arg(long, env = "KEEPTRUSTS_GATEWAY_TOKEN", value_name = "TOKEN", hide_env_values = true)]
    pub gateway_token: Option<String>,
    /// Managed: control-plane URL
    #[arg(long = "control-plane-url", env = "KEEPTRUSTS_API_URL", value_name = "URL")]
    pub api_url: Option<String>,
    /// Extra environment for the service, NAME=VALUE (repeatable; e.g. provider keys)
    #[arg(long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Write the files but do not enable or start the service
    #[arg(long)]
    pub no_enable: bool,
    /// Print what would be written, write nothing
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub json: bool,
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from)
}

fn macos() -> bool {
    cfg!(target_os = "macos")
}

/// Where the unit (or agent) and its environment file live.
fn paths(name: &str) -> (PathBuf, PathBuf) {
    if macos() {
        let dir = home().join("Library/LaunchAgents");
        (
            dir.join(format!("com.keeptrusts.{name}.plist")),
            crate::session::config_dir().join(format!("{name}.env")),
        )
    } else {
        let base = std::env::var_os("XDG_CONFIG_HOME")
            .filter(|v| !v.is_empty())
            .map_or_else(|| home().join(".config"), PathBuf::from);
        (
            base.join("systemd/user").join(format!("{name}.service")),
            crate::session::config_dir().join(format!("{name}.env")),
        )
    }
}

fn valid_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(CliError::new(
            Exit::Invalid,
            format!("service name '{name}' must be letters, digits, '-' or '_'"),
        )
        .into());
    }
    Ok(())
}

/// systemd's quoting for one ExecStart word.
fn systemd_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+".contains(&b))
    {
        word.to_owned()
    } else {
        format!(
            "\"{}\"",
            word.replace('\\', "\\\\").replace('"', "\\\"").replace('%', "%%")
        )
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The unit text for `argv` (program first).
pub fn systemd_unit(name: &str, description: &str, argv: &[String], env_file: &Path) -> String {
    let exec: Vec<String> = argv.iter().map(|w| systemd_quote(w)).collect();
    format!(
        "# Written by `kt gateway install`; remove with `kt gateway uninstall --name {name}`.\n\
         [Unit]\n\
         Description={description}\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={}\n\
         EnvironmentFile=-{}\n\
         Restart=on-failure\n\
         RestartSec=2\n\
         KillSignal=SIGTERM\n\
         TimeoutStopSec=15\n\
         NoNewPrivileges=true\n\
         LimitNOFILE=65536\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        exec.join(" "),
        systemd_quote(&env_file.display().to_string()),
    )
}

/// The launchd agent for `argv`, with `env` as its environment.
pub fn launchd_plist(name: &str, argv: &[String], env: &[(String, String)], log_dir: &Path) -> String {
    let args: String = argv
        .iter()
        .map(|a| format!("    <string>{}</string>\n", xml_escape(a)))
        .collect();
    let vars: String = env
        .iter()
        .map(|(k, v)| {
            format!(
                "    <key>{}</key>\n    <string>{}</string>\n",
                xml_escape(k),
                xml_escape(v)
            )
        })
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <!DOCTYPE plist PUBLIC \"-//Apple//DTD PLIST 1.0//EN\" \"http://www.apple.com/DTDs/PropertyList-1.0.dtd\">\n\
         <plist version=\"1.0\">\n<dict>\n\
         \x20 <key>Label</key>\n  <string>com.keeptrusts.{name}</string>\n\
         \x20 <key>ProgramArguments</key>\n  <array>\n{args}  </array>\n\
         \x20 <key>EnvironmentVariables</key>\n  <dict>\n{vars}  </dict>\n\
         \x20 <key>RunAtLoad</key>\n  <true/>\n\
         \x20 <key>KeepAlive</key>\n  <dict>\n    <key>SuccessfulExit</key>\n    <false/>\n  </dict>\n\
         \x20 <key>StandardOutPath</key>\n  <string>{}</string>\n\
         \x20 <key>StandardErrorPath</key>\n  <string>{}</string>\n\
         </dict>\n</plist>\n",
        xml_escape(&log_dir.join(format!("{name}.log")).display().to_string()),
        xml_escape(&log_dir.join(format!("{name}.log")).display().to_string()),
    )
}

fn env_file_text(env: &[(String, String)]) -> String {
    let mut out = String::from("# Environment of the kt gateway service (mode 0600).\n");
    for (k, v) in env {
        out.push_str(&format!("{k}={}\n", systemd_quote(v)));
    }
    out
}

#[cfg(unix)]
fn write_mode(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_mode(path: &Path, text: &str, _mode: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| std::env::current_dir().map_or_else(|_| p.to_owned(), |d| d.join(p)))
}

/// Runs a service manager command; `None` when the manager is not available.
fn manager(args: &[&str]) -> Option<std::process::Output> {
    let (program, args): (&str, Vec<&str>) = if macos() {
        ("launchctl", args.to_vec())
    } else {
        let mut a = vec!["--user"];
        a.extend_from_slice(args);
        ("systemctl", a)
    };
    Command::new(program).args(&args).output().ok()
}

fn install(a: InstallArgs) -> Result<Exit> {
    valid_name(&a.name)?;
    let kt =
        std::env::current_exe().map_err(|e| CliError::new(Exit::Error, format!("cannot locate the kt binary: {e}")))?;
    let mut argv = vec![kt.display().to_string()];
    let mut env: Vec<(String, String)> = Vec::new();
    let description = if a.managed {
        let id = a.gateway_id.clone().ok_or_else(|| {
            CliError::new(Exit::Invalid, "--gateway-id is required with --managed").hint("or set KEEPTRUSTS_GATEWAY_ID")
        })?;
        let token = a.gateway_token.clone().ok_or_else(|| {
            CliError::new(Exit::Invalid, "--gateway-token is required with --managed")
                .hint("or set KEEPTRUSTS_GATEWAY_TOKEN; it goes to the service's 0600 environment file")
        })?;
        argv.extend(["run".into(), "--managed".into(), "--listen".into()]);
        argv.push(a.listen.clone().unwrap_or_else(|| "0.0.0.0:8080".into()));
        env.push(("KEEPTRUSTS_GATEWAY_ID".into(), id.clone()));
        env.push(("KEEPTRUSTS_GATEWAY_TOKEN".into(), token));
        if let Some(u) = &a.api_url {
            env.push(("KEEPTRUSTS_API_URL".into(), u.clone()));
        }
        format!("kt managed gateway {id}")
    } else {
        let files = if a.policy_config.is_empty() {
            vec![PathBuf::from("policy-config.yaml")]
        } else {
            a.policy_config.clone()
        };
        argv.extend(["gateway".into(), "run".into(), "--listen".into()]);
        argv.push(a.listen.clone().unwrap_or_else(|| "0.0.0.0:41002".into()));
        for f in &files {
            if !f.exists() {
                return Err(CliError::new(Exit::Invalid, format!("{} does not exist", f.display()))
                    .hint("pass --policy-config FILE, or use --managed")
                    .into());
            }
            argv.push("--policy-config".into());
            argv.push(absolute(f).display().to_string());
        }
        "kt gateway".to_owned()
    };
    for kv in &a.env {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(CliError::new(Exit::Invalid, format!("--env '{kv}' is not NAME=VALUE")).into());
        };
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(CliError::new(Exit::Invalid, format!("--env name '{k}' is not a variable name")).into());
        }
        env.push((k.to_owned(), v.to_owned()));
    }
    let (unit_path, env_path) = paths(&a.name);
    let log_dir = crate::session::config_dir().join("logs");
    let unit = if macos() {
        launchd_plist(&a.name, &argv, &env, &log_dir)
    } else {
        systemd_unit(&a.name, &description, &argv, &env_path)
    };
    if a.dry_run {
        if a.json {
            print_json(&json!({"unit_path": unit_path, "env_path": env_path, "unit": unit,
                "env_names": env.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()}))?;
        } else {
            println!("# {}\n{unit}", unit_path.display());
            println!(
                "# {} (mode 0600): {}",
                env_path.display(),
                env.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        return Ok(Exit::Ok);
    }
    let io = |p: &Path, e: std::io::Error| CliError::new(Exit::Error, format!("cannot write {}: {e}", p.display()));
    if macos() {
        write_mode(&unit_path, &unit, 0o600).map_err(|e| io(&unit_path, e))?;
        std::fs::create_dir_all(&log_dir).map_err(|e| io(&log_dir, e))?;
    } else {
        write_mode(&unit_path, &unit, 0o644).map_err(|e| io(&unit_path, e))?;
        write_mode(&env_path, &env_file_text(&env), 0o600).map_err(|e| io(&env_path, e))?;
    }
    let mut enabled = false;
    let mut note = None;
    if !a.no_enable {
        let result = if macos() {
            manager(&["load", "-w", &unit_path.display().to_string()])
        } else {
            match manager(&["daemon-reload"]) {
                Some(o) if o.status.success() => manager(&["enable", "--now", &format!("{}.service", a.name)]),
                other => other,
            }
        };
        match result {
            Some(o) if o.status.success() => enabled = true,
            Some(o) => note = Some(String::from_utf8_lossy(&o.stderr).trim().to_owned()),
            None => note = Some("no service manager available".to_owned()),
        }
    }
    if a.json {
        print_json(&json!({"unit_path": unit_path, "env_path": env_path, "enabled": enabled, "note": note}))?;
    } else {
        println!("Wrote {}", unit_path.display());
        if !macos() {
            println!("Wrote {} (mode 0600)", env_path.display());
        }
        if enabled {
            println!("Service {} enabled and started.", a.name);
        } else if let Some(n) = note {
            println!(
                "Not started ({n}). Start it later with `kt gateway start --name {}`{}.",
                a.name,
                if macos() {
                    ""
                } else {
                    " once a systemd user session is available (loginctl enable-linger $USER)"
                }
            );
        }
    }
    Ok(Exit::Ok)
}

fn control(action: &str, name: &str) -> Result<Exit> {
    valid_name(name)?;
    let (unit_path, env_path) = paths(name);
    if !unit_path.exists() {
        return Err(CliError::new(
            Exit::Error,
            format!("no service '{name}' installed ({} not found)", unit_path.display()),
        )
        .hint("install it with `kt gateway install`")
        .into());
    }
    let unit = format!("{name}.service");
    let label = format!("com.keeptrusts.{name}");
    let plist = unit_path.display().to_string();
    let args: Vec<&str> = match (macos(), action) {
        (false, "start") => vec!["start", &unit],
        (false, "stop") => vec!["stop", &unit],
        (false, "status") => vec!["status", "--no-pager", &unit],
        (false, "uninstall") => vec!["disable", "--now", &unit],
        (true, "start") => vec!["start", &label],
        (true, "stop") => vec!["stop", &label],
        (true, "status") => vec!["list", &label],
        (true, _) => vec!["unload", "-w", &plist],
        _ => vec![],
    };
    let out = manager(&args);
    if action == "uninstall" {
        let _ = std::fs::remove_file(&unit_path);
        let _ = std::fs::remove_file(&env_path);
        if !macos() {
            let _ = manager(&["daemon-reload"]);
        }
        println!("Removed service {name} ({}).", unit_path.display());
        return Ok(Exit::Ok);
    }
    match out {
        Some(o) => {
            print!("{}", String::from_utf8_lossy(&o.stdout));
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
            // `systemctl status` exits 3 for a stopped unit: that is an answer, not a failure.
            Ok(
                if o.status.success() || (action == "status" && o.status.code() == Some(3)) {
                    Exit::Ok
                } else {
                    Exit::Error
                },
            )
        }
        None => Err(CliError::new(Exit::Error, "no service manager available (systemctl / launchctl)").into()),
    }
}

pub fn run(cmd: ServiceCommand) -> Result<Exit> {
    match cmd {
        ServiceCommand::Install(a) => install(a),
        ServiceCommand::Start(n) => control("start", &n.name),
        ServiceCommand::Stop(n) => control("stop", &n.name),
        ServiceCommand::Status(n) => control("status", &n.name),
        ServiceCommand::Uninstall(n) => control("uninstall", &n.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_quote_their_words_and_keep_secrets_out() {
        let argv = vec![
            "/opt/kt bin/kt".to_owned(),
            "run".into(),
            "--managed".into(),
            "--listen".into(),
            "0.0.0.0:8080".into(),
        ];
        let unit = systemd_unit(
            "kt-gateway",
            "kt managed gateway gw_1",
            &argv,
            Path::new("/home/u/.config/keeptrusts/kt-gateway.env"),
        );
        assert!(
            unit.contains("ExecStart=\"/opt/kt bin/kt\" run --managed --listen 0.0.0.0:8080\n"),
            "{unit}"
        );
        assert!(unit.contains("EnvironmentFile=-/home/u/.config/keeptrusts/kt-gateway.env"));
        assert!(unit.contains("WantedBy=default.target"));
        assert!(
            unit.contains("\nLimitNOFILE=65536\n"),
            "room for client connections: {unit}"
        );
        assert_eq!(systemd_quote("50%"), "\"50%%\"");
        let env = env_file_text(&[("KEEPTRUSTS_GATEWAY_TOKEN".into(), "kt_gk_x".into())]);
        assert!(env.contains("KEEPTRUSTS_GATEWAY_TOKEN=kt_gk_x\n"));
        let plist = launchd_plist("kt-gateway", &argv, &[("A".into(), "<b>".into())], Path::new("/tmp"));
        assert!(plist.contains("<string>com.keeptrusts.kt-gateway</string>"));
        assert!(plist.contains("<string>&lt;b&gt;</string>"));
        assert!(valid_name("edge-1").is_ok() && valid_name("../x").is_err());
    }
}
