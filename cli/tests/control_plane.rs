//! `kt server` end to end: a real server process on SQLite (always) and on PostgreSQL
//! (when KT_TEST_DATABASE_URL is set; each test gets a fresh database), driven over HTTP
//! and through the `kt` CLI.

use std::path::Path;
use std::process::{Command, Output};

use kt_testkit::db::PgDb;
use kt_testkit::{Answer, ServerProcess, http_with};
use serde_json::{Value, json};

const KT: &str = env!("CARGO_BIN_EXE_kt");
const OWNER: &str = "owner@example.com";
const PASSWORD: &str = "correct horse battery";

/// Where a test's server keeps its data.
enum Backend {
    Sqlite,
    Postgres(PgDb),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres(_) => "postgresql",
        }
    }

    fn database_url(&self) -> Option<String> {
        match self {
            Backend::Sqlite => None,
            Backend::Postgres(db) => Some(db.url()),
        }
    }
}

/// SQLite always; PostgreSQL too when KT_TEST_DATABASE_URL is set.
fn backends() -> Vec<Backend> {
    let mut out = vec![Backend::Sqlite];
    out.extend(PgDb::create().map(Backend::Postgres));
    out
}

fn start(backend: &Backend, data: &Path) -> ServerProcess {
    let url = backend.database_url();
    let mut env = vec![("KT_BOOTSTRAP_EMAIL", OWNER), ("KT_BOOTSTRAP_PASSWORD", PASSWORD)];
    if let Some(u) = url.as_deref() {
        env.push(("KT_DATABASE_URL", u));
    }
    ServerProcess::start(KT, data, &[], &env)
}

fn call(addr: &str, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Answer {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![];
    if let Some(a) = auth.as_deref() {
        headers.push(("authorization", a));
    }
    let body = body.map(|b| b.to_string());
    http_with(addr, method, path, body.as_deref().map(str::as_bytes), &headers).expect("server answers")
}

fn login(addr: &str) -> String {
    let r = call(
        addr,
        "POST",
        "/v1/auth/login",
        None,
        Some(json!({"email": OWNER, "password": PASSWORD})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["token"].as_str().expect("token").to_owned()
}

fn create_token(addr: &str, token: &str, name: &str, scopes: &[&str]) -> (String, String) {
    let r = call(
        addr,
        "POST",
        "/v1/tokens",
        Some(token),
        Some(json!({"name": name, "scopes": scopes})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    (
        v["id"].as_str().expect("id").to_owned(),
        v["token"].as_str().expect("secret").to_owned(),
    )
}

fn assert_error(r: &Answer, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    let v = r.json();
    assert_eq!(v["error"]["code"], code, "{v}");
    assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    assert!(v["error"].get("details").is_some(), "{v}");
}

/// Runs the CLI with its own config directory and the server's URL.
fn kt(cfg: &Path, addr: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(KT);
    c.args(args)
        .env("KEEPTRUSTS_CONFIG_DIR", cfg)
        .env("KEEPTRUSTS_API_URL", format!("http://{addr}"))
        .env_remove("KEEPTRUSTS_API_TOKEN")
        .env_remove("KEEPTRUSTS_PROFILE");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("kt runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn first_run_bootstraps_and_the_cli_logs_in_and_out() {
    for backend in backends() {
        let tmp = tempfile::tempdir().expect("tmp");
        let server = start(&backend, &tmp.path().join("data"));
        let out = server.output();
        assert!(
            out.contains("Created organisation 'default'"),
            "{}: {out}",
            backend.name()
        );
        assert!(out.contains(&format!("Storage: {}", backend.name())), "{out}");
        assert!(out.contains("kt auth login --email owner@example.com"), "{out}");
        assert!(
            !out.contains(PASSWORD),
            "the bootstrap password is never printed: {out}"
        );
        let ready = call(&server.addr, "GET", "/readyz", None, None).json();
        assert_eq!(ready["status"], "ready");
        assert!(
            ready["migrations"]["applied"].as_u64().is_some_and(|n| n >= 1),
            "{ready}"
        );

        let cfg = tmp.path().join("cfg");
        let o = kt(&cfg, &server.addr, &["auth", "whoami"], &[]);
        assert_eq!(o.status.code(), Some(3), "not logged in is an auth error");

        let o = kt(
            &cfg,
            &server.addr,
            &["auth", "login", "--email", OWNER, "--password", PASSWORD, "--json"],
            &[],
        );
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
        assert_eq!(v["user"]["email"], OWNER);
        assert!(!stdout(&o).contains("kt_sess_"), "the session secret is not printed");
        let creds = cfg.join("credentials.json");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&creds).expect("credentials").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "session file is private");
        }
        let session: Value = serde_json::from_str(&std::fs::read_to_string(&creds).expect("read")).expect("creds json");
        let secret = session["profiles"]["default"]["token"]
            .as_str()
            .expect("token")
            .to_owned();

        let o = kt(&cfg, &server.addr, &["auth", "whoami", "--json"], &[]);
        let me: Value = serde_json::from_str(&stdout(&o)).expect("whoami json");
        assert_eq!(me["role"], "owner");
        assert_eq!(me["org"]["name"], "default");
        assert_eq!(me["token_type"], "session");

        let o = kt(&cfg, &server.addr, &["auth", "logout"], &[]);
        assert_eq!(o.status.code(), Some(0));
        let r = call(&server.addr, "GET", "/v1/whoami", Some(&secret), None);
        assert_error(&r, 401, "auth.unauthenticated");
        let o = kt(&cfg, &server.addr, &["auth", "whoami"], &[]);
        assert_eq!(o.status.code(), Some(3));

        // Profiles keep separate sessions.
        let o = kt(
            &cfg,
            &server.addr,
            &[
                "--profile",
                "staging",
                "auth",
                "login",
                "--email",
                OWNER,
                "--password",
                PASSWORD,
            ],
            &[],
        );
        assert_eq!(o.status.code(), Some(0));
        let o = kt(
            &cfg,
            &server.addr,
            &["auth", "whoami"],
            &[("KEEPTRUSTS_PROFILE", "staging")],
        );
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let o = kt(&cfg, &server.addr, &["auth", "whoami"], &[]);
        assert_eq!(o.status.code(), Some(3), "the default profile stays logged out");

        // A restart keeps the organisation and does not bootstrap twice.
        drop(server);
        let server = start(&backend, &tmp.path().join("data"));
        assert!(server.output().contains("already set up"), "{}", server.output());
        login(&server.addr);
    }
}

#[test]
fn wrong_passwords_are_refused_without_revealing_accounts() {
    // Throttling itself (429 after ten failures, alike for unknown accounts) is in
    // hostile_control_plane.rs.
    for backend in backends() {
        let tmp = tempfile::tempdir().expect("tmp");
        let server = start(&backend, &tmp.path().join("data"));
        for _ in 0..3 {
            let r = call(
                &server.addr,
                "POST",
                "/v1/auth/login",
                None,
                Some(json!({"email": OWNER, "password": "not the password"})),
            );
            assert_error(&r, 401, "auth.unauthenticated");
            assert!(!r.text().contains("not the password"));
        }
        let r = call(
            &server.addr,
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"email": "nobody@example.com", "password": PASSWORD})),
        );
        assert_error(&r, 401, "auth.unauthenticated");
        assert_eq!(
            r.json()["error"]["message"],
            "wrong email or password",
            "unknown accounts are not revealed"
        );
        login(&server.addr);
        let cfg = tmp.path().join("cfg");
        let o = kt(
            &cfg,
            &server.addr,
            &["auth", "login", "--email", OWNER, "--password", "wrong password"],
            &[],
        );
        assert_eq!(o.status.code(), Some(3), "{}", backend.name());
    }
}

#[test]
fn tokens_are_shown_once_scoped_revoked_and_rotated() {
    for backend in backends() {
        let tmp = tempfile::tempdir().expect("tmp");
        let server = start(&backend, &tmp.path().join("data"));
        let owner = login(&server.addr);
        let cfg = tmp.path().join("cfg");
        let env = [("KEEPTRUSTS_API_TOKEN", owner.as_str())];

        let o = kt(
            &cfg,
            &server.addr,
            &[
                "auth",
                "token",
                "create",
                "--name",
                "ci-deploy",
                "--scope",
                "tokens:read,gateways:read",
                "--json",
            ],
            &env,
        );
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let created: Value = serde_json::from_str(&stdout(&o)).expect("json");
        let secret = created["token"].as_str().expect("secret").to_owned();
        let id = created["id"].as_str().expect("id").to_owned();
        assert!(secret.starts_with("kt_live_"), "{secret}");

        let list = call(&server.addr, "GET", "/v1/tokens", Some(&owner), None);
        assert_eq!(list.status, 200);
        assert!(!list.text().contains(&secret), "a secret is never listed");
        assert_eq!(list.json()["data"][0]["state"], "active");

        // The token works for what it holds and nothing else.
        let me = call(&server.addr, "GET", "/v1/whoami", Some(&secret), None).json();
        assert_eq!(me["token_type"], "access");
        assert_eq!(call(&server.addr, "GET", "/v1/tokens", Some(&secret), None).status, 200);
        let r = call(
            &server.addr,
            "POST",
            "/v1/tokens",
            Some(&secret),
            Some(json!({"name": "x", "scopes": ["tokens:read"]})),
        );
        assert_error(&r, 403, "auth.forbidden");
        assert_eq!(r.json()["error"]["details"]["required_scope"], "tokens:write");

        // No one grants a scope they do not hold.
        let (_, writer) = create_token(&server.addr, &owner, "writer", &["tokens:write"]);
        let r = call(
            &server.addr,
            "POST",
            "/v1/tokens",
            Some(&writer),
            Some(json!({"name": "escalate", "scopes": ["secrets:write"]})),
        );
        assert_error(&r, 403, "auth.forbidden");

        // Rotation: the old secret stops working, the new one works, both show in the list.
        let o = kt(
            &cfg,
            &server.addr,
            &["auth", "token", "rotate", "--id", &id, "--json"],
            &env,
        );
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        let rotated: Value = serde_json::from_str(&stdout(&o)).expect("json");
        let new_secret = rotated["created"]["token"].as_str().expect("secret").to_owned();
        let new_id = rotated["created"]["id"].as_str().expect("id").to_owned();
        assert_eq!(rotated["created"]["scopes"], json!(["gateways:read", "tokens:read"]));
        assert_error(
            &call(&server.addr, "GET", "/v1/whoami", Some(&secret), None),
            401,
            "auth.unauthenticated",
        );
        assert_eq!(
            call(&server.addr, "GET", "/v1/whoami", Some(&new_secret), None).status,
            200
        );

        // Revocation is immediate; a second revocation is a conflict.
        let o = kt(
            &cfg,
            &server.addr,
            &["auth", "token", "revoke", "--token-id", &new_id],
            &env,
        );
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        assert_error(
            &call(&server.addr, "GET", "/v1/whoami", Some(&new_secret), None),
            401,
            "auth.unauthenticated",
        );
        let r = call(
            &server.addr,
            "DELETE",
            &format!("/v1/tokens/{new_id}"),
            Some(&owner),
            None,
        );
        assert_error(&r, 409, "conflict");
        let o = kt(&cfg, &server.addr, &["auth", "token", "list", "--json"], &env);
        let listed: Value = serde_json::from_str(&stdout(&o)).expect("json");
        let states: Vec<&str> = listed["data"]
            .as_array()
            .expect("list")
            .iter()
            .filter(|t| t["name"] == "ci-deploy")
            .map(|t| t["state"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(states, ["revoked", "revoked"], "{listed}");

        // An expired token is refused and listed as expired.
        let r = call(
            &server.addr,
            "POST",
            "/v1/tokens",
            Some(&owner),
            Some(json!({"name": "short", "scopes": ["tokens:read"], "expires_in_days": 1})),
        );
        let short = r.json();
        assert!(short["expires_at"].as_i64().is_some(), "{short}");
        if let Backend::Sqlite = backend {
            kt_testkit::db::sqlite_execute(
                &tmp.path().join("data/kt.db"),
                &format!(
                    "UPDATE tokens SET expires_at = 1 WHERE id = '{}'",
                    short["id"].as_str().unwrap_or("")
                ),
            )
            .expect("expire the token");
            let r = call(&server.addr, "GET", "/v1/whoami", short["token"].as_str(), None);
            assert_error(&r, 401, "auth.unauthenticated");
            assert!(r.text().contains("expired"), "{}", r.text());
            let list = call(&server.addr, "GET", "/v1/tokens", Some(&owner), None).json();
            assert!(
                list["data"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|t| t["name"] == "short" && t["state"] == "expired")),
                "{list}"
            );
        }

        // Gateway tokens carry their own prefix and filter.
        let r = call(
            &server.addr,
            "POST",
            "/v1/tokens",
            Some(&owner),
            Some(json!({"name": "gw-1", "scopes": ["control_plane"], "token_type": "gateway"})),
        );
        assert!(r.json()["token"].as_str().is_some_and(|t| t.starts_with("kt_rt_")));
        let gws = call(&server.addr, "GET", "/v1/tokens?type=gateway", Some(&owner), None).json();
        assert_eq!(gws["data"].as_array().map(Vec::len), Some(1), "{gws}");
        let r = call(&server.addr, "GET", "/v1/tokens?type=bogus", Some(&owner), None);
        assert_error(&r, 422, "validation.failed");

        // No secret reaches the server's log.
        let log = server.output();
        for s in [&owner, &secret, &new_secret, &writer] {
            assert!(!log.contains(s.as_str()), "secret in the server log: {log}");
        }
        assert!(!log.contains(PASSWORD));
    }
}

#[test]
fn every_endpoint_refuses_a_token_without_its_scope() {
    // (method, path, body, scope the endpoint needs)
    let matrix: &[(&str, &str, Option<Value>, &str)] = &[
        ("GET", "/v1/tokens", None, "tokens:read"),
        (
            "POST",
            "/v1/tokens",
            Some(json!({"name": "m", "scopes": ["tokens:write"]})),
            "tokens:write",
        ),
        ("DELETE", "/v1/tokens/tok_0000000000000000", None, "tokens:write"),
        ("POST", "/v1/tokens/tok_0000000000000000/rotate", None, "tokens:write"),
    ];
    for backend in backends() {
        let tmp = tempfile::tempdir().expect("tmp");
        let server = start(&backend, &tmp.path().join("data"));
        let owner = login(&server.addr);
        for (method, path, body, scope) in matrix {
            let others: Vec<&str> = kt_api::SCOPES.iter().copied().filter(|s| s != scope).collect();
            let (_, without) = create_token(&server.addr, &owner, "matrix", &others);
            let r = call(&server.addr, method, path, Some(&without), body.clone());
            assert_error(&r, 403, "auth.forbidden");
            assert_eq!(
                r.json()["error"]["details"]["required_scope"],
                *scope,
                "{method} {path}"
            );
            let r = call(&server.addr, method, path, None, body.clone());
            assert_error(&r, 401, "auth.unauthenticated");
            let r = call(&server.addr, method, path, Some("kt_live_forged"), body.clone());
            assert_error(&r, 401, "auth.unauthenticated");
            // With the scope the request gets past authorisation (to success or not_found).
            let (_, with) = create_token(&server.addr, &owner, "matrix", &[scope]);
            let r = call(&server.addr, method, path, Some(&with), body.clone());
            assert!(
                [200, 201, 404].contains(&r.status),
                "{method} {path} with {scope}: {}",
                r.text()
            );
        }
    }
}

#[test]
fn bad_input_gets_the_error_envelope_and_changes_nothing() {
    for backend in backends() {
        let tmp = tempfile::tempdir().expect("tmp");
        let server = start(&backend, &tmp.path().join("data"));
        let owner = login(&server.addr);
        let auth = format!("Bearer {owner}");
        let send = |body: &[u8]| {
            http_with(
                &server.addr,
                "POST",
                "/v1/tokens",
                Some(body),
                &[("authorization", auth.as_str())],
            )
            .expect("answer")
        };
        assert_error(&send(b"{not json"), 422, "validation.failed");
        assert_error(&send(b"[]"), 422, "validation.failed");
        assert_error(&send(br#"{"name": "x"}"#), 422, "validation.failed");
        let big = format!(
            r#"{{"name": "{}", "scopes": ["tokens:read"]}}"#,
            "a".repeat(2 * 1024 * 1024)
        );
        assert_error(&send(big.as_bytes()), 413, "validation.too_large");
        assert_error(
            &send(br#"{"name": "x", "scopes": ["root:everything"]}"#),
            422,
            "validation.failed",
        );
        assert_error(
            &send(br#"{"name": "", "scopes": ["tokens:read"]}"#),
            422,
            "validation.failed",
        );
        assert_error(
            &send(br#"{"name": "x", "scopes": ["tokens:read"], "expires_in_days": 0}"#),
            422,
            "validation.failed",
        );
        let r = http_with(
            &server.addr,
            "POST",
            "/v1/tokens",
            Some(br#"{"name": "x", "scopes": ["tokens:read"]}"#),
            &[("authorization", auth.as_str()), ("content-type", "text/plain")],
        )
        .expect("answer");
        assert_error(&r, 422, "validation.failed");
        assert_error(&call(&server.addr, "GET", "/v1/nope", None, None), 404, "not_found");
        let list = call(&server.addr, "GET", "/v1/tokens", Some(&owner), None).json();
        assert_eq!(list["data"], json!([]), "nothing was created by bad requests");

        // SQL-ish strings are data, stored and returned verbatim.
        for name in ["x'); DROP TABLE tokens;--", "\" OR 1=1 --", "tok_%' OR '1'='1"] {
            let (id, _) = create_token(&server.addr, &owner, name, &["tokens:read"]);
            let list = call(&server.addr, "GET", "/v1/tokens", Some(&owner), None).json();
            assert!(
                list["data"]
                    .as_array()
                    .is_some_and(|d| d.iter().any(|t| t["id"] == id.as_str() && t["name"] == name)),
                "{list}"
            );
            let r = call(
                &server.addr,
                "DELETE",
                &format!("/v1/tokens/{}", kt_api::encode_segment(name)),
                Some(&owner),
                None,
            );
            assert_error(&r, 404, "not_found");
        }
        let r = call(
            &server.addr,
            "POST",
            "/v1/auth/login",
            None,
            Some(json!({"email": "' OR '1'='1", "password": "' OR '1'='1"})),
        );
        assert_error(&r, 401, "auth.unauthenticated");
        assert_eq!(call(&server.addr, "GET", "/v1/whoami", Some(&owner), None).status, 200);
    }
}

#[test]
fn concurrent_rotations_issue_exactly_one_successor() {
    for backend in backends() {
        let tmp = tempfile::tempdir().expect("tmp");
        let server = start(&backend, &tmp.path().join("data"));
        let owner = login(&server.addr);
        let (id, _) = create_token(&server.addr, &owner, "rotate-me", &["tokens:read"]);
        let addr = server.addr.clone();
        let results: Vec<u16> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let (addr, owner, id) = (&addr, &owner, &id);
                    s.spawn(move || call(addr, "POST", &format!("/v1/tokens/{id}/rotate"), Some(owner), None).status)
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        assert_eq!(
            results.iter().filter(|&&s| s == 200).count(),
            1,
            "{}: {results:?}",
            backend.name()
        );
        assert!(results.iter().all(|s| [200, 409].contains(s)), "{results:?}");
        let list = call(&server.addr, "GET", "/v1/tokens", Some(&owner), None).json();
        let active = list["data"]
            .as_array()
            .expect("list")
            .iter()
            .filter(|t| t["name"] == "rotate-me" && t["state"] == "active")
            .count();
        assert_eq!(active, 1, "{list}");
    }
}

#[test]
fn an_organisation_never_holds_more_than_its_budgets_even_under_concurrent_creates() {
    for backend in backends() {
        let tmp = tempfile::tempdir().expect("tmp");
        let server = start(&backend, &tmp.path().join("data"));
        let owner = login(&server.addr);
        let addr = server.addr.clone();
        // 1,000 is the most; 8 writers ask for 1,040 between them.
        let statuses: Vec<u16> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|w| {
                    let (addr, owner) = (&addr, &owner);
                    s.spawn(move || {
                        (0..130)
                            .map(|i| {
                                let body = json!({"name": format!("b-{w}-{i}"), "limit_usd": 1});
                                call(addr, "POST", "/v1/budgets", Some(owner), Some(body)).status
                            })
                            .collect::<Vec<u16>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("thread")).collect()
        });
        assert!(statuses.iter().all(|s| [201, 409].contains(s)), "{statuses:?}");
        let list = call(&server.addr, "GET", "/v1/budgets", Some(&owner), None).json();
        let held = list["data"].as_array().map_or(0, Vec::len);
        let created = statuses.iter().filter(|s| **s == 201).count();
        assert_eq!(held, created, "{}: every 201 is held", backend.name());
        assert!((990..=1000).contains(&held), "{}: {held} budgets", backend.name());
    }
}

#[test]
fn token_rotation_needs_an_mfa_session_once_mfa_is_on() {
    for backend in backends() {
        token_rotation_needs_mfa_on(&backend);
    }
}

fn token_rotation_needs_mfa_on(backend: &Backend) {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = start(backend, &tmp.path().join("data"));
    let cfg = tmp.path().join("cfg");
    let o = kt(
        &cfg,
        &server.addr,
        &["auth", "login", "--email", OWNER, "--password", PASSWORD],
        &[],
    );
    assert_eq!(o.status.code(), Some(0));
    let owner = login(&server.addr);
    let (id, _) = create_token(&server.addr, &owner, "ci", &["tokens:read"]);
    let (early_target, _) = create_token(&server.addr, &owner, "early-target", &["tokens:read"]);
    let (_, early_writer) = create_token(&server.addr, &owner, "early-writer", &["tokens:write", "tokens:read"]);

    let o = kt(&cfg, &server.addr, &["auth", "mfa", "enroll", "--json"], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let enrol: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let secret = enrol["secret"].as_str().expect("secret").to_owned();
    assert!(
        enrol["otpauth_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("otpauth://totp/"))
    );
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
    };
    let o = kt(&cfg, &server.addr, &["auth", "mfa", "verify", "--code", "000000"], &[]);
    assert_eq!(o.status.code(), Some(3), "a wrong code is an auth error");
    let code = kt_control::mfa::totp(&secret, now()).expect("code");
    let o = kt(&cfg, &server.addr, &["auth", "mfa", "verify", "--code", &code], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));

    // Rotation now needs MFA, for the CLI session and any other session of the user.
    let o = kt(&cfg, &server.addr, &["auth", "token", "rotate", "--id", &id], &[]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("auth.mfa_required") && err.contains("kt auth mfa challenge"),
        "{err}"
    );
    let r = call(
        &server.addr,
        "POST",
        &format!("/v1/tokens/{id}/rotate"),
        Some(&owner),
        None,
    );
    assert_error(&r, 403, "auth.mfa_required");

    // The code used for enrolment is spent; the next one opens an MFA session.
    let o = kt(&cfg, &server.addr, &["auth", "mfa", "challenge", "--code", &code], &[]);
    assert_eq!(o.status.code(), Some(3), "a code is good once");
    let next = kt_control::mfa::totp(&secret, now() + 30).expect("code");
    let o = kt(&cfg, &server.addr, &["auth", "mfa", "challenge", "--token", &next], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let o = kt(&cfg, &server.addr, &["auth", "whoami", "--json"], &[]);
    let me: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(me["mfa_authenticated"], true);
    let o = kt(
        &cfg,
        &server.addr,
        &["auth", "token", "rotate", "--id", &id, "--json"],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    // A password-only session of an MFA user cannot mint tokens or gateways; a token it
    // minted before MFA was on cannot rotate tokens; tokens minted by the MFA session can.
    let r = call(
        &server.addr,
        "POST",
        "/v1/tokens",
        Some(&owner),
        Some(json!({"name": "sneaky", "scopes": ["tokens:write"]})),
    );
    assert_error(&r, 403, "auth.mfa_required");
    let r = call(
        &server.addr,
        "POST",
        "/v1/gateways",
        Some(&owner),
        Some(json!({"name": "g"})),
    );
    assert_error(&r, 403, "auth.mfa_required");
    let r = call(
        &server.addr,
        "POST",
        &format!("/v1/tokens/{early_target}/rotate"),
        Some(&early_writer),
        None,
    );
    assert_error(&r, 403, "auth.mfa_required");
    let mfa_session = profile_token(&cfg);
    let (other, _) = create_token(&server.addr, &mfa_session, "ci-2", &["tokens:read"]);
    let (_, writer) = create_token(&server.addr, &mfa_session, "rotator", &["tokens:write", "tokens:read"]);
    let r = call(
        &server.addr,
        "POST",
        &format!("/v1/tokens/{other}/rotate"),
        Some(&writer),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // In text, the new secret is the first line: nothing stands between it and the reader.
    let (third, _) = create_token(&server.addr, &mfa_session, "ci-3", &["tokens:read"]);
    let o = kt(&cfg, &server.addr, &["auth", "token", "rotate", "--id", &third], &[]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout(&o).lines().next().is_some_and(|l| l.starts_with("kt_live_")),
        "{}",
        stdout(&o)
    );

    // Seeds are sealed at rest.
    if let Backend::Sqlite = backend {
        let db = std::fs::read(tmp.path().join("data/kt.db")).expect("db");
        let wal = std::fs::read(tmp.path().join("data/kt.db-wal")).unwrap_or_default();
        for bytes in [db, wal] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the TOTP seed is stored in the clear"
            );
        }
    }

    // Wrong codes are counted: after five, the factor locks (429), the right code included.
    for _ in 0..5 {
        let o = kt(
            &cfg,
            &server.addr,
            &["auth", "mfa", "challenge", "--code", "000000"],
            &[],
        );
        assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let r = call(
        &server.addr,
        "POST",
        "/v1/auth/mfa/challenge",
        Some(&mfa_session),
        Some(json!({"code": kt_control::mfa::totp(&secret, now() + 60).expect("code")})),
    );
    assert_eq!(r.status, 429, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "auth.throttled");
    assert!(r.header("retry-after").is_some());
}

fn profile_token(cfg: &Path) -> String {
    let creds: Value =
        serde_json::from_str(&std::fs::read_to_string(cfg.join("credentials.json")).expect("creds")).expect("json");
    creds["profiles"]["default"]["token"]
        .as_str()
        .expect("token")
        .to_owned()
}

#[test]
fn config_show_names_sources_and_doctor_checks_the_setup() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = start(&Backend::Sqlite, &tmp.path().join("data"));
    let cfg = tmp.path().join("cfg");
    let owner = login(&server.addr);
    let (_, token) = create_token(&server.addr, &owner, "ci", &["tokens:read"]);

    let o = kt(
        &cfg,
        &server.addr,
        &["config", "show", "--json"],
        &[("KEEPTRUSTS_API_TOKEN", &token)],
    );
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(!out.contains(&token), "the token is masked: {out}");
    let v: Value = serde_json::from_str(&out).expect("json");
    let get = |k: &str| {
        v["settings"]
            .as_array()
            .and_then(|s| s.iter().find(|x| x["key"] == k))
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(get("api_url")["source"], "env");
    assert_eq!(get("api_url")["value"], format!("http://{}", server.addr));
    assert_eq!(get("api_token")["source"], "env");
    assert!(get("api_token")["value"].as_str().is_some_and(|t| t.ends_with("****")));
    assert_eq!(get("profile")["source"], "default");
    let o = kt(
        &cfg,
        &server.addr,
        &["--api-url", "http://127.0.0.1:9", "config", "show", "--json"],
        &[],
    );
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    let url = v["settings"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["key"] == "api_url"))
        .cloned()
        .expect("api_url");
    assert_eq!(url["source"], "flag");

    // doctor: all good with a valid config and credentials.
    let dir = tmp.path().join("pack");
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        format!(
            "pack: {{name: d, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\nproviders:\n  targets:\n    - {{id: local, provider: openai-compatible, base_url: \"http://{}/v1\"}}\n",
            server.addr
        ),
    )
    .expect("write");
    let gw = format!("http://{}", kt_testkit::free_addr());
    let o = kt(
        &cfg,
        &server.addr,
        &[
            "doctor",
            "--config",
            good.to_str().expect("path"),
            "--gateway-url",
            &gw,
            "--json",
        ],
        &[("KEEPTRUSTS_API_TOKEN", &token)],
    );
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(o.status.code(), Some(0), "{v}");
    assert_eq!(v["ok"], true);
    let status = |v: &Value, name: &str| {
        v["checks"]
            .as_array()
            .and_then(|c| c.iter().find(|x| x["name"] == name))
            .map(|x| x["status"].as_str().unwrap_or("").to_owned())
            .unwrap_or_default()
    };
    for name in ["api", "auth", "config", "state_dir", "provider:local"] {
        assert_eq!(status(&v, name), "ok", "{name}: {v}");
    }
    assert_eq!(status(&v, "gateway"), "skip");
    let o = kt(
        &cfg,
        &server.addr,
        &["doctor", "--config", good.to_str().expect("path")],
        &[],
    );
    let text = stdout(&o);
    assert!(text.starts_with("Keeptrusts Gateway Diagnostics"), "{text}");
    assert!(text.contains("✓ Configuration file valid"), "{text}");

    // ... and each failure named, with a hint and exit 1.
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "pack: {name: d}\npolicies: {chain: [nope]}\n").expect("write");
    let o = kt(
        &cfg,
        &server.addr,
        &[
            "--api-url",
            "http://127.0.0.1:9",
            "doctor",
            "--config",
            bad.to_str().expect("path"),
            "--json",
        ],
        &[("KEEPTRUSTS_API_TOKEN", &token)],
    );
    assert_eq!(o.status.code(), Some(1));
    let v: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(status(&v, "api"), "fail");
    assert_eq!(status(&v, "config"), "fail");
    assert!(
        v["checks"][0]["hint"].as_str().is_some_and(|h| h.contains("kt server")),
        "{v}"
    );
}

#[test]
fn a_stored_session_is_sent_only_to_the_api_that_issued_it() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = start(&Backend::Sqlite, &tmp.path().join("data"));
    let cfg = tmp.path().join("cfg");
    let o = kt(
        &cfg,
        &server.addr,
        &["auth", "login", "--email", OWNER, "--password", PASSWORD],
        &[],
    );
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    // Another API URL (a listener that records what reaches it) never sees the session.
    let elsewhere = kt_testkit::MockProvider::start(|_| kt_testkit::Reply::json(200, json!({})));
    let o = kt(&cfg, &elsewhere.addr, &["auth", "whoami"], &[]);
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("belongs to"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(elsewhere.hits(), 0, "nothing was sent to the other URL");
    let o = kt(&cfg, &server.addr, &["auth", "whoami"], &[]);
    assert_eq!(o.status.code(), Some(0), "the issuing API still works");
}

#[test]
fn rotation_never_widens_a_token_and_keeps_a_gateway_token_bound() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = start(&Backend::Sqlite, &tmp.path().join("data"));
    let owner = login(&server.addr);
    let (broad, _) = create_token(&server.addr, &owner, "broad", &["secrets:read", "tokens:read"]);
    let (_, narrow) = create_token(&server.addr, &owner, "narrow", &["tokens:write"]);
    let r = call(
        &server.addr,
        "POST",
        &format!("/v1/tokens/{broad}/rotate"),
        Some(&narrow),
        None,
    );
    assert_error(&r, 403, "auth.forbidden");
    assert_eq!(r.json()["error"]["details"]["required_scope"], "secrets:read");
    assert!(!r.text().contains("kt_live_"), "no new secret handed out");

    let g = call(
        &server.addr,
        "POST",
        "/v1/gateways",
        Some(&owner),
        Some(json!({"name": "edge"})),
    );
    assert_eq!(g.status, 201, "{}", g.text());
    let token_id = g.json()["token_id"].as_str().expect("token id").to_owned();
    let r = call(
        &server.addr,
        "POST",
        &format!("/v1/tokens/{token_id}/rotate"),
        Some(&owner),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rotated = r.json()["created"]["token"].as_str().expect("secret").to_owned();
    // The successor still acts for its gateway (404: nothing rolled out yet, not 403).
    let r = call(&server.addr, "GET", "/v1/gateway/config", Some(&rotated), None);
    assert_eq!(r.status, 404, "{}", r.text());
}
