//! `kt gateway install|status|uninstall`: the generated systemd user unit (checked with
//! `systemd-analyze verify` where it exists) and its private environment file.

use std::path::Path;
use std::process::{Command, Output};

const KT: &str = env!("CARGO_BIN_EXE_kt");

fn kt(home: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(KT)
        .args(args)
        .current_dir(dir)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("KEEPTRUSTS_CONFIG_DIR", home.join(".config/keeptrusts"))
        .env_remove("KEEPTRUSTS_GATEWAY_TOKEN")
        .env_remove("KEEPTRUSTS_GATEWAY_ID")
        .output()
        .expect("kt runs")
}

#[cfg(target_os = "linux")]
#[test]
fn install_writes_a_valid_user_unit_with_credentials_kept_apart() {
    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path().join("home");
    let dir = tmp.path().join("pack");
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("policy-config.yaml"),
        "pack: {name: s, version: 1.0.0, enabled: true}\npolicies: {chain: []}\n",
    )
    .expect("write");
    let o = kt(
        &home,
        &dir,
        &[
            "gateway",
            "install",
            "--env",
            "OPENAI_API_KEY=sk-service-secret",
            "--listen",
            "127.0.0.1:41999",
            "--no-enable",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let unit_path = home.join(".config/systemd/user/kt-gateway.service");
    let unit = std::fs::read_to_string(&unit_path).expect("unit written");
    let config = std::fs::canonicalize(dir.join("policy-config.yaml")).expect("path");
    assert!(
        unit.contains(&format!(
            "ExecStart={KT} gateway run --listen 127.0.0.1:41999 --policy-config {}",
            config.display()
        )),
        "{unit}"
    );
    assert!(unit.contains("Restart=on-failure") && unit.contains("WantedBy=default.target"));
    assert!(!unit.contains("sk-service-secret"), "credentials stay out of the unit");
    let env_path = home.join(".config/keeptrusts/kt-gateway.env");
    assert!(unit.contains(&format!("EnvironmentFile=-{}", env_path.display())));
    let env = std::fs::read_to_string(&env_path).expect("env file");
    assert!(env.contains("OPENAI_API_KEY=sk-service-secret"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&env_path).expect("env").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    match Command::new("systemd-analyze").arg("verify").arg(&unit_path).output() {
        Ok(v) => assert!(
            v.status.success(),
            "systemd-analyze verify: {}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        ),
        Err(_) => eprintln!("SKIP systemd-analyze verify: systemd-analyze is not installed"),
    }

    // Managed: the token goes to the environment file only.
    let o = kt(
        &home,
        &dir,
        &[
            "gateway",
            "install",
            "--name",
            "edge",
            "--managed",
            "--gateway-id",
            "gw_123",
            "--gateway-token",
            "kt_gk_topsecret",
            "--control-plane-url",
            "http://cp:41001",
            "--dry-run",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("kt_gk_topsecret"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(
        v["unit"]
            .as_str()
            .is_some_and(|u| u.contains(" run --managed --listen 0.0.0.0:8080")),
        "{v}"
    );
    assert_eq!(
        v["env_names"],
        serde_json::json!([
            "KEEPTRUSTS_GATEWAY_ID",
            "KEEPTRUSTS_GATEWAY_TOKEN",
            "KEEPTRUSTS_API_URL"
        ])
    );
    assert!(
        !home.join(".config/systemd/user/edge.service").exists(),
        "dry run writes nothing"
    );
    let o = kt(&home, &dir, &["gateway", "install", "--name", "edge", "--managed"]);
    assert_eq!(o.status.code(), Some(2), "managed needs an id and a token");

    // Unknown services are named; uninstall removes both files.
    let o = kt(&home, &dir, &["gateway", "status", "--name", "nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no service 'nope' installed"));
    let o = kt(&home, &dir, &["gateway", "uninstall"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(!unit_path.exists() && !env_path.exists());
    let o = kt(&home, &dir, &["gateway", "install", "--name", "../evil", "--no-enable"]);
    assert_eq!(o.status.code(), Some(2));
}
