//! `kt secret` and `kt config-var` end to end, and a managed gateway resolving
//! `secret_key_ref.store`: values are write-only, encrypted at rest, and never reach CLI
//! output, error messages, logs or events.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use kt_testkit::db::PgDb;
use kt_testkit::handlers::openai_echo;
use kt_testkit::{ManagedProcess, MockProvider, ServerProcess, http_with};
use serde_json::{Value, json};

const KT: &str = env!("CARGO_BIN_EXE_kt");
const OWNER: &str = "owner@example.com";
const PASSWORD: &str = "correct horse battery";
const SECRET: &str = "sk-stored-7f3a9c-never-shown";

struct Cli {
    cfg: PathBuf,
    api: String,
}

impl Cli {
    fn run(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> Output {
        let mut c = Command::new(KT);
        c.args(args)
            .env("KEEPTRUSTS_CONFIG_DIR", &self.cfg)
            .env("KEEPTRUSTS_API_URL", &self.api)
            .env_remove("KEEPTRUSTS_API_TOKEN")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("kt runs");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kt finishes")
    }

    fn ok(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> String {
        let o = self.run(args, env, stdin);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(o.status.code(), Some(0), "kt {args:?}: {all}");
        assert!(!all.contains(SECRET), "a secret value reached CLI output: {all}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

fn setup(tmp: &Path, database_url: Option<&str>) -> (ServerProcess, Cli, String) {
    let mut env = vec![("KT_BOOTSTRAP_EMAIL", OWNER), ("KT_BOOTSTRAP_PASSWORD", PASSWORD)];
    if let Some(u) = database_url {
        env.push(("KT_DATABASE_URL", u));
    }
    let server = ServerProcess::start(KT, &tmp.join("data"), &[], &env);
    let cli = Cli {
        cfg: tmp.join("cfg"),
        api: format!("http://{}", server.addr),
    };
    cli.ok(&["auth", "login", "--email", OWNER, "--password", PASSWORD], &[], None);
    let creds: Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.join("cfg/credentials.json")).expect("creds")).expect("json");
    let session = creds["profiles"]["default"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    (server, cli, session)
}

fn api(server: &ServerProcess, method: &str, path: &str, token: &str, body: Option<Value>) -> kt_testkit::Answer {
    let auth = format!("Bearer {token}");
    let b = body.map(|b| b.to_string());
    http_with(
        &server.addr,
        method,
        path,
        b.as_deref().map(str::as_bytes),
        &[("authorization", auth.as_str())],
    )
    .expect("answer")
}

fn mint(server: &ServerProcess, session: &str, scopes: &[&str], token_type: &str) -> String {
    let r = api(
        server,
        "POST",
        "/v1/tokens",
        session,
        Some(json!({"name": "t", "scopes": scopes, "token_type": token_type})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["token"].as_str().expect("token").to_owned()
}

#[test]
fn secrets_are_write_only_encrypted_and_scoped() {
    let pg = PgDb::create();
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, cli, session) = setup(tmp.path(), None);

    // Values come from the environment, stdin or a keychain; never from a flag.
    let o = cli.run(
        &["secret", "create", "--name", "openai-key", "--value", SECRET],
        &[],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "no --value flag for secrets");
    let o = cli.run(&["secret", "create", "--name", "openai-key"], &[], None);
    assert_eq!(o.status.code(), Some(2), "a value source is required");
    let o = cli.run(
        &["secret", "create", "--name", "k", "--env-var", "KT_TEST_UNSET_VAR"],
        &[],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("KT_TEST_UNSET_VAR is not set"));
    let o = cli.run(
        &["secret", "create", "--name", "k", "--keychain", "svc:acct"],
        &[("PATH", "/nonexistent")],
        None,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("keychain"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let created: Value = serde_json::from_str(&cli.ok(
        &[
            "secret",
            "create",
            "--name",
            "openai-key",
            "--env-var",
            "KT_SECRET_SRC",
            "--json",
        ],
        &[("KT_SECRET_SRC", SECRET)],
        None,
    ))
    .expect("json");
    let id = created["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("secret_"));
    assert_eq!(created["encryption"], "aes-gcm-siv");
    cli.ok(
        &["secret", "create", "--name", "anthropic-key", "--stdin"],
        &[],
        Some(&format!("{SECRET}-2\n")),
    );
    let listed = cli.ok(&["secret", "list", "--json"], &[], None);
    assert!(listed.contains("openai-key") && listed.contains("anthropic-key"));
    cli.ok(&["secret", "get", "--secret-id", &id], &[], None);
    let o = cli.run(
        &["secret", "create", "--name", "openai-key", "--env-var", "KT_SECRET_SRC"],
        &[("KT_SECRET_SRC", SECRET)],
        None,
    );
    assert_eq!(o.status.code(), Some(1), "duplicate name");
    assert!(!String::from_utf8_lossy(&o.stderr).contains(SECRET));

    // Encrypted at rest: the value is nowhere in the database files.
    for f in ["kt.db", "kt.db-wal"] {
        if let Ok(bytes) = std::fs::read(tmp.path().join("data").join(f)) {
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{f} holds the plaintext"
            );
        }
    }

    // Scopes: read sees metadata only; write is needed to change; resolve hands values
    // to gateway tokens only.
    let reader = mint(&server, &session, &["secrets:read"], "access");
    let r = api(&server, "GET", "/v1/secrets", &reader, None);
    assert_eq!(r.status, 200);
    assert!(!r.text().contains(SECRET));
    let r = api(
        &server,
        "POST",
        "/v1/secrets",
        &reader,
        Some(json!({"name": "x", "value": "y"})),
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"]["details"]["required_scope"], "secrets:write");
    let r = api(
        &server,
        "PUT",
        &format!("/v1/secrets/{id}"),
        &reader,
        Some(json!({"value": "z"})),
    );
    assert_eq!(r.status, 403);
    let r = api(&server, "DELETE", &format!("/v1/secrets/{id}"), &reader, None);
    assert_eq!(r.status, 403);
    let resolver = mint(&server, &session, &["config_vars:resolve"], "access");
    let r = api(
        &server,
        "POST",
        "/v1/config-variables/resolve",
        &resolver,
        Some(json!({"names": ["openai-key"]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["data"][0]["value"].is_null(),
        "withheld from non-gateway tokens"
    );
    // A gateway-type token minted through /v1/tokens belongs to no gateway: values are
    // withheld from it like from any other token.
    let unbound = mint(&server, &session, &["config_vars:resolve", "control_plane"], "gateway");
    let r = api(
        &server,
        "POST",
        "/v1/config-variables/resolve",
        &unbound,
        Some(json!({"names": ["openai-key"]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        r.json()["data"][0]["value"].is_null(),
        "unbound gateway token: {}",
        r.text()
    );

    // Creating a gateway hands its token config_vars:resolve: a caller without it cannot.
    let gw_writer = mint(&server, &session, &["gateways:write"], "access");
    let r = api(
        &server,
        "POST",
        "/v1/gateways",
        &gw_writer,
        Some(json!({"name": "sneaky"})),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["details"]["required_scope"], "config_vars:resolve");
    // Holding what the gateway token gets is not enough: its token receives secret values,
    // so creating one decides where secrets go (secrets:bind).
    let almost = mint(
        &server,
        &session,
        &[
            "gateways:write",
            "config_vars:resolve",
            "control_plane",
            "configurations:write",
        ],
        "access",
    );
    let r = api(
        &server,
        "POST",
        "/v1/gateways",
        &almost,
        Some(json!({"name": "sneaky"})),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["details"]["required_scope"], "secrets:bind");

    // A gateway's own token resolves exactly the names its rolled-out configuration uses.
    let gateway = gateway_using(
        &cli,
        tmp.path(),
        &["openai-key", "anthropic-key", "legacy-key", "missing-one"],
    );
    let r = api(
        &server,
        "POST",
        "/v1/config-variables/resolve",
        &gateway,
        Some(json!({"names": ["openai-key", "anthropic-key"]})),
    );
    assert_eq!(r.json()["data"][0]["value"], SECRET, "{}", r.text());
    assert_eq!(
        r.json()["data"][1]["value"],
        format!("{SECRET}-2"),
        "stdin's newline dropped"
    );
    let r = api(
        &server,
        "POST",
        "/v1/config-variables/resolve",
        &gateway,
        Some(json!({"names": ["openai-key", "missing-one"]})),
    );
    assert_eq!(r.status, 404);
    assert!(r.text().contains("'missing-one'") && !r.text().contains(SECRET));
    cli.ok(
        &["secret", "create", "--name", "unused-key", "--stdin"],
        &[],
        Some("sk-unused-value"),
    );
    let r = api(
        &server,
        "POST",
        "/v1/config-variables/resolve",
        &gateway,
        Some(json!({"names": ["unused-key"]})),
    );
    assert_eq!(r.status, 403, "a secret its configuration does not use: {}", r.text());
    assert!(!r.text().contains("sk-unused-value"));
    let out = cli.ok(
        &["config-var", "resolve", "--name", "openai-key"],
        &[("KEEPTRUSTS_API_TOKEN", gateway.as_str())],
        None,
    );
    assert!(out.contains("withheld"), "{out}");

    // Config variables: plain ones show, sensitive ones do not.
    cli.ok(
        &["config-var", "create", "--name", "region", "--value", "eu-west-1"],
        &[],
        None,
    );
    cli.ok(
        &[
            "config-var",
            "create",
            "--name",
            "token-x",
            "--value",
            SECRET,
            "--sensitive",
            "--json",
        ],
        &[],
        None,
    );
    // A sensitive variable cannot be made plain: that would reveal its value.
    let o = cli.run(
        &["config-var", "update", "--name", "token-x", "--sensitive", "false"],
        &[],
        None,
    );
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!String::from_utf8_lossy(&o.stdout).contains(SECRET));
    let listed = cli.ok(&["config-var", "list"], &[], None);
    assert!(
        listed.contains("region = eu-west-1") && listed.contains("token-x = (sensitive)"),
        "{listed}"
    );
    assert!(
        cli.ok(&["config-var", "resolve", "--name", "region"], &[], None)
            .contains("eu-west-1")
    );
    cli.ok(
        &["config-var", "update", "--name", "region", "--value", "us-east-1"],
        &[],
        None,
    );
    assert!(
        cli.ok(&["config-var", "get", "--name", "region"], &[], None)
            .contains("us-east-1")
    );
    let o = cli.run(&["config-var", "delete", "--name", "region"], &[], None);
    assert_eq!(o.status.code(), Some(2), "delete needs --yes");
    cli.ok(&["config-var", "delete", "--name", "region", "--yes"], &[], None);

    // A legacy plaintext row is readable, then re-encrypted when updated.
    let db = tmp.path().join("data/kt.db");
    let org: String = server_org(&server, &session);
    kt_testkit::db::sqlite_execute(
        &db,
        &format!(
            "INSERT INTO secrets (id, org_id, name, description, value, encryption, created_at, updated_at) \
             VALUES ('secret_legacy', '{org}', 'legacy-key', '', 'legacy-plain-value', 'plaintext', 0, 0)"
        ),
    )
    .expect("legacy row");
    let r = api(
        &server,
        "POST",
        "/v1/config-variables/resolve",
        &gateway,
        Some(json!({"names": ["legacy-key"]})),
    );
    assert_eq!(r.json()["data"][0]["value"], "legacy-plain-value");
    let legacy: Value =
        serde_json::from_str(&cli.ok(&["secret", "get", "--secret-id", "secret_legacy", "--json"], &[], None))
            .expect("json");
    assert_eq!(legacy["encryption"], "plaintext");
    cli.ok(
        &["secret", "update", "--secret-id", "secret_legacy", "--stdin"],
        &[],
        Some("rotated-legacy-value"),
    );
    let legacy: Value =
        serde_json::from_str(&cli.ok(&["secret", "get", "--secret-id", "secret_legacy", "--json"], &[], None))
            .expect("json");
    assert_eq!(legacy["encryption"], "aes-gcm-siv");
    let r = api(
        &server,
        "POST",
        "/v1/config-variables/resolve",
        &gateway,
        Some(json!({"names": ["legacy-key"]})),
    );
    assert_eq!(r.json()["data"][0]["value"], "rotated-legacy-value");

    let o = cli.run(&["secret", "delete", "--secret-id", &id], &[], None);
    assert_eq!(o.status.code(), Some(2), "delete needs --yes");
    cli.ok(&["secret", "delete", "--secret-id", &id, "--yes"], &[], None);
    assert!(!server.output().contains(SECRET), "server log: {}", server.output());

    // The same API on PostgreSQL.
    if let Some(db) = pg {
        let tmp2 = tempfile::tempdir().expect("tmp");
        let (server2, cli2, _) = setup(tmp2.path(), Some(&db.url()));
        cli2.ok(
            &["secret", "create", "--name", "pg-key", "--env-var", "KT_SECRET_SRC"],
            &[("KT_SECRET_SRC", SECRET)],
            None,
        );
        assert!(cli2.ok(&["secret", "list"], &[], None).contains("pg-key"));
        drop(server2);
    }
}

/// A gateway whose rolled-out configuration sends each of `names` (as
/// `secret_key_ref.store`) to OpenAI's public endpoint; returns its token.
fn gateway_using(cli: &Cli, tmp: &Path, names: &[&str]) -> String {
    let gw: Value =
        serde_json::from_str(&cli.ok(&["gateway", "create", "--name", "resolver", "--json"], &[], None)).expect("json");
    let gid = gw["gateway"]["id"].as_str().expect("id");
    let targets: String = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("    - {{id: t{i}, provider: openai, model: m, secret_key_ref: {{store: {n}}}}}\n"))
        .collect();
    let file = tmp.join("resolver.yaml");
    std::fs::write(
        &file,
        format!("pack: {{name: r, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\nproviders:\n  targets:\n{targets}"),
    )
    .expect("write");
    let path = file.to_str().expect("path");
    cli.ok(&["policy", "push", "--file", path, "--gateway-id", gid], &[], None);
    cli.ok(&["policy", "deploy", "--gateway-id", gid, "--no-wait"], &[], None);
    gw["token"].as_str().expect("token").to_owned()
}

fn secret_id_of(cli: &Cli, name: &str) -> String {
    let list: Value = serde_json::from_str(&cli.ok(&["secret", "list", "--json"], &[], None)).expect("json");
    list["data"]
        .as_array()
        .and_then(|d| d.iter().find(|s| s["name"] == name))
        .and_then(|s| s["id"].as_str())
        .expect("listed")
        .to_owned()
}

fn server_org(server: &ServerProcess, session: &str) -> String {
    api(server, "GET", "/v1/whoami", session, None).json()["org"]["id"]
        .as_str()
        .expect("org")
        .to_owned()
}

#[test]
fn a_managed_gateway_resolves_stored_secrets_without_revealing_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (server, cli, session) = setup(tmp.path(), None);
    let provider = MockProvider::start(openai_echo(""));
    cli.ok(
        &["secret", "create", "--name", "openai-key", "--env-var", "KT_SECRET_SRC"],
        &[("KT_SECRET_SRC", SECRET)],
        None,
    );
    let gw: Value =
        serde_json::from_str(&cli.ok(&["gateway", "create", "--name", "edge", "--json"], &[], None)).expect("json");
    let (gid, token) = (
        gw["gateway"]["id"].as_str().expect("id").to_owned(),
        gw["token"].as_str().expect("token").to_owned(),
    );
    let yaml = |store: &str| {
        format!(
            "pack: {{name: s, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\nproviders:\n  targets:\n    - {{id: mock, provider: openai-compatible, base_url: \"http://{}/v1\", secret_key_ref: {{store: {store}}}}}\n",
            provider.addr
        )
    };
    let file = tmp.path().join("p.yaml");
    std::fs::write(&file, yaml("openai-key")).expect("write");
    let push = |cli: &Cli, env: &[(&str, &str)]| {
        cli.run(
            &[
                "policy",
                "push",
                "--file",
                file.to_str().expect("path"),
                "--gateway-id",
                &gid,
            ],
            env,
            None,
        )
    };
    // The secret was stored for the providers' public endpoints: a configuration sending it
    // to another host is refused at push, by secret, target and host.
    let o = push(&cli, &[]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_ne!(o.status.code(), Some(0), "{said}");
    assert!(
        said.contains("openai-key") && said.contains("127.0.0.1") && said.contains("may only be sent"),
        "{said}"
    );
    // A token that may write configurations and secrets, but not bind them, cannot move it.
    let writer = mint(
        &server,
        &session,
        &["configurations:write", "secrets:write", "secrets:read"],
        "access",
    );
    let secret_id = secret_id_of(&cli, "openai-key");
    let r = api(
        &server,
        "PUT",
        &format!("/v1/secrets/{secret_id}"),
        &writer,
        Some(json!({"allowed_hosts": ["127.0.0.1"]})),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["details"]["required_scope"], "secrets:bind");
    let o = push(&cli, &[("KEEPTRUSTS_API_TOKEN", writer.as_str())]);
    assert_ne!(o.status.code(), Some(0), "the narrow token is refused as well");
    // An administrator binds it to the provider's host; then the push goes through. The
    // refusal named the entry to allow; a bare host would mean https on 443 only.
    let entry = format!("http://{}", provider.addr);
    assert!(said.contains(&format!("--allowed-host {entry}")), "{said}");
    cli.ok(
        &[
            "secret",
            "update",
            "--secret-id",
            &secret_id,
            "--allowed-host",
            "127.0.0.1",
        ],
        &[],
        None,
    );
    let o = push(&cli, &[]);
    assert_ne!(o.status.code(), Some(0), "127.0.0.1 alone means https on port 443");
    cli.ok(
        &["secret", "update", "--secret-id", &secret_id, "--allowed-host", &entry],
        &[],
        None,
    );
    let shown = cli.ok(&["secret", "get", "--secret-id", &secret_id], &[], None);
    assert!(
        shown.contains(&format!("Sent to:     {entry}")) && shown.contains("Updated:     20"),
        "{shown}"
    );
    let o = push(&cli, &[]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    cli.ok(&["policy", "deploy", "--gateway-id", &gid, "--no-wait"], &[], None);

    let state = tmp.path().join("state");
    let events = state.join("events.jsonl");
    let g = ManagedProcess::start(
        KT,
        &cli.api,
        &gid,
        &token,
        &state,
        &["--poll-interval", "5", "--events", events.to_str().expect("path")],
    );
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let r = http_with(&g.addr, "POST", "/v1/chat/completions", Some(body.as_bytes()), &[]).expect("answer");
    assert_eq!(r.status, 200, "{}", r.text());
    let sent = provider.received();
    assert_eq!(
        sent.last().and_then(|q| q.header("authorization")),
        Some(format!("Bearer {SECRET}").as_str()),
        "the stored secret is the provider key"
    );

    // A rotated secret reaches the gateway with a reload, though the policy is unchanged.
    cli.ok(
        &["secret", "update", "--secret-id", &secret_id, "--stdin"],
        &[],
        Some("sk-rotated-value-2"),
    );
    cli.ok(&["gateway", "reload", "--id", &gid], &[], None);
    let mut sent_key = String::new();
    for _ in 0..50 {
        let r = http_with(&g.addr, "POST", "/v1/chat/completions", Some(body.as_bytes()), &[]).expect("answer");
        assert_eq!(r.status, 200, "{}", r.text());
        sent_key = provider
            .received()
            .last()
            .and_then(|q| q.header("authorization"))
            .unwrap_or_default()
            .to_owned();
        if sent_key == "Bearer sk-rotated-value-2" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sent_key, "Bearer sk-rotated-value-2", "the reload took the new key");

    // A version naming a secret that does not exist is refused, by name, and the gateway
    // keeps serving.
    std::fs::write(&file, yaml("no-such-secret")).expect("write");
    cli.ok(
        &[
            "policy",
            "push",
            "--file",
            file.to_str().expect("path"),
            "--gateway-id",
            &gid,
        ],
        &[],
        None,
    );
    let o = cli.run(
        &["policy", "deploy", "--gateway-id", &gid, "--timeout", "10"],
        &[],
        None,
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("no-such-secret"),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let r = http_with(&g.addr, "POST", "/v1/chat/completions", Some(body.as_bytes()), &[]).expect("answer");
    assert_eq!(r.status, 200);

    // Nowhere: the gateway's log, its events, its state directory, the server's log.
    std::thread::sleep(Duration::from_millis(300));
    let mut seen = String::new();
    for f in [
        &g.log,
        &events,
        &state.join("policy-config.yaml"),
        &state.join("applied.json"),
    ] {
        seen.push_str(&std::fs::read_to_string(f).unwrap_or_default());
    }
    seen.push_str(&server.output());
    assert!(!seen.is_empty());
    assert!(!seen.contains(SECRET), "a secret value leaked: {seen}");

    // The state directory and what it holds are the owner's only.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700, "state directory");
        for f in [&events, &state.join("policy-config.yaml"), &state.join("applied.json")] {
            assert_eq!(mode(f), 0o600, "{}", f.display());
        }
    }
}
