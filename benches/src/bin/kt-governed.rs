//! kt-governed: the governed fleet harness (a benchmark, not a test). On loopback it runs
//! two `kt server` replicas on one fresh PostgreSQL database, three `kt run --managed`
//! gateways (two following replica A, one replica B) sharing one Redis, and the
//! `kt-load mock` provider, then drives concurrent streaming clients with gateway keys:
//!
//! - **rate limit**: one key limited to `--rate-limit` requests per hour; every client
//!   streams until refused. Admitted answers are compared with the limit.
//! - **budget**: one consumer group with a hard budget; every client streams until
//!   refused. What the admitted answers cost (by the usage the provider reported) is
//!   compared with the budget.
//! - **revocation**: while clients stream with a key, it is revoked through replica B; a
//!   probe per gateway measures when each refuses it.
//! - **replica loss**: while clients stream, replica A is killed; every answer is counted.
//!
//! ```text
//! scripts/fleet-governed [--clients 500] [--rate-limit 3000] [--budget-usd 2]
//! ```
//! Needs `KT_TEST_DATABASE_URL` (an admin URL; a database is created and dropped) and
//! `KT_TEST_REDIS_URL`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kt_benches::harness::{Res, exchange, free_port, memmem, wait_listening};
use kt_testkit::db::PgDb;
use kt_testkit::{ManagedProcess, ServerProcess, http_with};
use serde_json::{Value, json};
use tokio::net::TcpStream;

const EMAIL: &str = "owner@example.com";
const PASSWORD: &str = "governed-bench-password";
/// Prices of the model `m` (US dollars per 1,000 tokens) and what the mock reports.
const INPUT_PRICE: f64 = 0.01;
const OUTPUT_PRICE: f64 = 0.02;
const PROMPT_TOKENS: f64 = 250.0;
const EVENTS: usize = 20;

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn num(args: &[String], name: &str, default: f64) -> Res<f64> {
    flag(args, name).map_or(Ok(default), |v| v.parse().map_err(|e| format!("{name} {v}: {e}")))
}

struct Mock(Child);

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A blocking JSON call to a replica (setup and control).
fn api(addr: &str, method: &str, path: &str, token: &str, body: Option<Value>) -> Res<Value> {
    let auth = format!("Bearer {token}");
    let text = body.map(|b| b.to_string());
    let r = http_with(
        addr,
        method,
        path,
        text.as_deref().map(str::as_bytes),
        &[("authorization", auth.as_str())],
    )
    .ok_or_else(|| format!("{method} {path}: no answer from {addr}"))?;
    if !(200..300).contains(&r.status) {
        return Err(format!("{method} {path}: HTTP {}: {}", r.status, r.text()));
    }
    Ok(r.json())
}

fn config(mock: &str, redis: &str, prefix: &str, budget_usd: f64) -> String {
    format!(
        "pack: {{name: governed, version: 1.0.0, enabled: true}}
policies: {{chain: []}}
caller_auth: {{mode: control_plane}}
shared_state: {{redis_url: '{redis}', key_prefix: {prefix}, timeout_ms: 500}}
consumer_groups:
  - {{name: limited}}
  - {{name: budgeted}}
  - {{name: steady}}
pricing: {{models: {{m: {{input_cost_per_1k_tokens: {INPUT_PRICE}, output_cost_per_1k_tokens: {OUTPUT_PRICE}}}}}}}
budgets:
  limits:
    - {{name: team, scope: consumer_group, id: budgeted, limit_usd: {budget_usd}, period: day, mode: hard}}
providers:
  targets:
    - {{id: mock, provider: openai-compatible, base_url: 'http://{mock}/v1', model: m}}
"
    )
}

/// A streaming chat request with `key`: 1.2 KB of prompt (so the gateway's reservation,
/// which counts body bytes as tokens, covers the mock's 250 prompt tokens).
fn stream_request(addr: &str, key: &str) -> Vec<u8> {
    let body = json!({
        "model": "m", "stream": true, "max_tokens": EVENTS, "mock_events": EVENTS,
        "messages": [{"role": "user", "content": "summarise the quarter ".repeat(55)}]
    })
    .to_string();
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {key}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The `error.code` of an answer's JSON body, or `?`.
fn error_code(answer: &[u8]) -> String {
    let body = memmem(answer, b"\r\n\r\n").map_or(answer, |i| &answer[i + 4..]);
    let start = body.iter().position(|b| *b == b'{').unwrap_or(body.len());
    serde_json::from_slice::<serde_json::Value>(&body[start..])
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

/// What the clients of one phase saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    /// 200 answers whose stream ran to `[DONE]`.
    complete: AtomicU64,
    refused: AtomicU64,
    other: AtomicU64,
    io_errors: AtomicU64,
    /// Each other status seen, with the error code of its first answer.
    others: std::sync::Mutex<std::collections::BTreeMap<u16, String>>,
}

impl Tally {
    fn line(&self) -> String {
        let others = self.others.lock().map(|m| m.clone()).unwrap_or_default();
        let named = if others.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = others.iter().map(|(s, c)| format!("{s} {c}")).collect();
            format!(" ({})", list.join(", "))
        };
        format!(
            "200: {} (complete {}), 429: {}, other status: {}{named}, transport errors: {}",
            self.ok.load(Ordering::Relaxed),
            self.complete.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            self.other.load(Ordering::Relaxed),
            self.io_errors.load(Ordering::Relaxed)
        )
    }
}

/// One client: streams on a kept-alive connection until refused (`until_refused`) or
/// until `stop`.
async fn client(addr: String, key: String, tally: Arc<Tally>, stop: Arc<AtomicBool>, until_refused: bool) {
    let req = stream_request(&addr, &key);
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut sock: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        if sock.is_none() {
            match TcpStream::connect(&addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    sock = Some(s);
                }
                Err(_) => {
                    tally.io_errors.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(s) = sock.as_mut() else { continue };
        match exchange(s, &req, &mut buf).await {
            Ok(200) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if memmem(&buf, b"data: [DONE]").is_some() {
                    tally.complete.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(429) => {
                tally.refused.fetch_add(1, Ordering::Relaxed);
                if until_refused {
                    return;
                }
            }
            Ok(status) => {
                tally.other.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut m) = tally.others.lock() {
                    m.entry(status).or_insert_with(|| error_code(&buf));
                }
                sock = None;
            }
            Err(_) => {
                tally.io_errors.fetch_add(1, Ordering::Relaxed);
                sock = None;
            }
        }
    }
}

/// Runs `clients` clients spread over `gateways`; returns when every client stopped (or
/// after `for_secs`, when given).
async fn drive(gateways: &[String], key: &str, clients: usize, for_secs: Option<u64>, tally: &Arc<Tally>) {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(clients);
    for i in 0..clients {
        let addr = gateways[i % gateways.len()].clone();
        tasks.push(tokio::spawn(client(
            addr,
            key.to_owned(),
            Arc::clone(tally),
            Arc::clone(&stop),
            for_secs.is_none(),
        )));
    }
    if let Some(s) = for_secs {
        tokio::time::sleep(Duration::from_secs(s)).await;
        stop.store(true, Ordering::Relaxed);
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// The status a gateway gives `key` for a streaming request.
async fn probe(addr: &str, key: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return 0;
    };
    let mut buf = Vec::new();
    exchange(&mut s, &stream_request(addr, key), &mut buf)
        .await
        .unwrap_or(0)
}

fn new_key(api_addr: &str, session: &str, name: &str, group: &str, rate: Option<u64>) -> Res<(String, String)> {
    let mut body = json!({"name": name, "consumer_group": group});
    if let Some(r) = rate {
        body["rate_limit"] = json!({"max_requests": r, "window_seconds": 3600});
    }
    let v = api(api_addr, "POST", "/v1/gateway-keys", session, Some(body))?;
    Ok((
        v["id"].as_str().unwrap_or_default().to_owned(),
        v["key"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Waits until each gateway, in turn, answers `key` with `status` (each gives that
/// answer exactly once here); returns how long it took.
async fn until_status(gateways: &[String], key: &str, status: u16) -> Res<Duration> {
    let t = Instant::now();
    let deadline = t + Duration::from_secs(30);
    for g in gateways {
        while probe(g, key).await != status {
            if Instant::now() > deadline {
                return Err(format!("gateway {g} did not answer {status} to a key within 30 s"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(t.elapsed())
}

struct Fleet {
    a: Option<ServerProcess>,
    b: ServerProcess,
    session: String,
    gateways: Vec<ManagedProcess>,
    addrs: Vec<String>,
    _mock: Mock,
    _db: PgDb,
}

fn start_fleet(kt: &str, kt_load: &str, dir: &Path, budget_usd: f64) -> Res<Fleet> {
    let db = PgDb::create().ok_or("KT_TEST_DATABASE_URL is not set: the replicas need PostgreSQL")?;
    let redis =
        std::env::var("KT_TEST_REDIS_URL").map_err(|_| "KT_TEST_REDIS_URL is not set: the limits need Redis")?;
    let mock_addr = free_port()?;
    let mock = Mock(
        Command::new(kt_load)
            .args(["mock", "--listen", &mock_addr])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {kt_load} mock: {e}"))?,
    );
    wait_listening(&mock_addr)?;
    let url = db.url();
    let secrets = "cd".repeat(32);
    let env = [
        ("KT_BOOTSTRAP_EMAIL", EMAIL),
        ("KT_BOOTSTRAP_PASSWORD", PASSWORD),
        ("KT_DATABASE_URL", url.as_str()),
        ("KT_SECRETS_KEY", secrets.as_str()),
    ];
    let a = ServerProcess::start(kt, &dir.join("replica-a"), &[], &env);
    let b = ServerProcess::start(kt, &dir.join("replica-b"), &[], &env);
    let login = http_with(
        &a.addr,
        "POST",
        "/v1/auth/login",
        Some(json!({"email": EMAIL, "password": PASSWORD}).to_string().as_bytes()),
        &[],
    )
    .ok_or("login: no answer")?;
    let session = login.json()["token"].as_str().ok_or("login failed")?.to_owned();
    let prefix = format!("ktgov{}", std::process::id());
    let yaml = config(&mock_addr, &redis, &prefix, budget_usd);
    let mut ids = Vec::new();
    for i in 1..=3 {
        let g = api(
            &a.addr,
            "POST",
            "/v1/gateways",
            &session,
            Some(json!({"name": format!("edge-{i}")})),
        )?;
        ids.push((
            g["gateway"]["id"].as_str().unwrap_or_default().to_owned(),
            g["token"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    let pushed = api(
        &a.addr,
        "POST",
        "/v1/admin/configurations",
        &session,
        Some(json!({"yaml": yaml, "gateway_id": ids[0].0})),
    )?;
    let cfg = pushed["configuration_id"].as_str().unwrap_or_default().to_owned();
    let all: Vec<&str> = ids.iter().map(|(g, _)| g.as_str()).collect();
    api(
        &a.addr,
        "POST",
        "/v1/admin/configurations/rollout",
        &session,
        Some(json!({"configuration_id": cfg, "version": 1, "gateway_ids": all})),
    )?;
    let mut gateways = Vec::new();
    for (i, (gid, token)) in ids.iter().enumerate() {
        let replica = if i < 2 { &a.addr } else { &b.addr };
        gateways.push(ManagedProcess::start(
            kt,
            &format!("http://{replica}"),
            gid,
            token,
            &dir.join(format!("gateway-{}", i + 1)),
            &["--poll-interval", "30"],
        ));
    }
    let addrs = gateways.iter().map(|g| g.addr.clone()).collect();
    Ok(Fleet {
        a: Some(a),
        b,
        session,
        gateways,
        addrs,
        _mock: mock,
        _db: db,
    })
}

/// What one answer costs: the mock's usage at the configured prices.
fn answer_cost() -> f64 {
    (PROMPT_TOKENS * INPUT_PRICE + EVENTS as f64 * OUTPUT_PRICE) / 1000.0
}

fn replica_a(f: &Fleet) -> String {
    f.a.as_ref().map(|a| a.addr.clone()).unwrap_or_default()
}

/// Every client streams with a rate-limited key until refused.
async fn rate_limit_phase(f: &Fleet, clients: usize, rate_limit: u64) -> Res<()> {
    let (_, limited) = new_key(&replica_a(f), &f.session, "limited", "limited", Some(rate_limit))?;
    until_status(&f.addrs, &limited, 200).await?;
    let hour = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() / 3600)
    };
    let start_hour = hour(std::time::SystemTime::now());
    let tally = Arc::new(Tally::default());
    let t = Instant::now();
    drive(&f.addrs, &limited, clients, None, &tally).await;
    let took = t.elapsed();
    // The probes of `until_status` were admitted too (one per gateway).
    let admitted = tally.ok.load(Ordering::Relaxed) + f.addrs.len() as u64;
    let same_window = start_hour == hour(std::time::SystemTime::now());
    println!("rate limit  : limit {rate_limit}/h, {clients} clients, 3 gateways, {took:.1?}");
    println!("              {}", tally.line());
    println!(
        "              admitted {admitted} = limit {:+.2} %{}",
        (admitted as f64 - rate_limit as f64) / rate_limit as f64 * 100.0,
        if same_window {
            ""
        } else {
            " (the run crossed an hour: two windows)"
        }
    );
    Ok(())
}

/// Every client streams with a key of the budgeted group until refused.
async fn budget_phase(f: &Fleet, clients: usize, budget_usd: f64) -> Res<()> {
    let cost = answer_cost();
    let (_, budgeted) = new_key(&replica_a(f), &f.session, "budgeted", "budgeted", None)?;
    until_status(&f.addrs[..1], &budgeted, 200).await?;
    let tally = Arc::new(Tally::default());
    let t = Instant::now();
    drive(&f.addrs, &budgeted, clients, None, &tally).await;
    let took = t.elapsed();
    let spent = (tally.ok.load(Ordering::Relaxed) + 1) as f64 * cost;
    println!("budget      : hard ${budget_usd:.2}/day, ${cost:.4} an answer, {clients} clients, {took:.1?}");
    println!("              {}", tally.line());
    println!(
        "              spent ${spent:.4} = {:.1} % of the budget; overshoot ${:.4}",
        spent / budget_usd * 100.0,
        (spent - budget_usd).max(0.0)
    );
    Ok(())
}

/// A key revoked through replica B while clients stream with it.
async fn revocation_phase(f: &Fleet, clients: usize) -> Res<()> {
    let (steady_id, steady) = new_key(&replica_a(f), &f.session, "steady", "steady", None)?;
    until_status(&f.addrs, &steady, 200).await?;
    let tally = Arc::new(Tally::default());
    let load = {
        let (addrs, key, tally) = (f.addrs.clone(), steady.clone(), Arc::clone(&tally));
        tokio::spawn(async move { drive(&addrs, &key, clients, Some(4), &tally).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (b_addr, session) = (f.b.addr.clone(), f.session.clone());
    let t = Instant::now();
    tokio::task::spawn_blocking(move || {
        api(
            &b_addr,
            "DELETE",
            &format!("/v1/gateway-keys/{steady_id}"),
            &session,
            None,
        )
    })
    .await
    .map_err(|e| e.to_string())??;
    let api_took = t.elapsed();
    // Gateways are probed one after the other: each time is an upper bound.
    let mut slowest = Duration::ZERO;
    for g in &f.addrs {
        until_status(std::slice::from_ref(g), &steady, 401).await?;
        slowest = slowest.max(t.elapsed());
    }
    let _ = load.await;
    println!("revocation  : through replica B while {clients} clients stream");
    println!(
        "              refused by all 3 gateways within {slowest:.1?} of the revoke call (API answered in {api_took:.1?})"
    );
    Ok(())
}

/// Replica A killed while clients stream; every answer counted.
async fn replica_loss_phase(f: &mut Fleet, clients: usize) -> Res<()> {
    let (_, survivor) = new_key(&f.b.addr, &f.session, "survivor", "steady", None)?;
    until_status(&f.addrs, &survivor, 200).await?;
    let tally = Arc::new(Tally::default());
    let load = {
        let (addrs, key, tally) = (f.addrs.clone(), survivor.clone(), Arc::clone(&tally));
        tokio::spawn(async move { drive(&addrs, &key, clients, Some(5), &tally).await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(f.a.take());
    let _ = load.await;
    let lost = tally.other.load(Ordering::Relaxed) + tally.io_errors.load(Ordering::Relaxed);
    println!("replica loss: replica A killed after 2 s of a 5 s run, {clients} clients");
    println!("              {}", tally.line());
    println!("              requests lost: {lost}");
    let alive = api(&f.b.addr, "GET", "/v1/gateway-keys", &f.session, None)?;
    println!(
        "              replica B still serves the API ({} keys listed)",
        alive["data"].as_array().map_or(0, Vec::len)
    );
    Ok(())
}

async fn phases(f: &mut Fleet, clients: usize, rate_limit: u64, budget_usd: f64) -> Res<()> {
    rate_limit_phase(f, clients, rate_limit).await?;
    budget_phase(f, clients, budget_usd).await?;
    revocation_phase(f, clients).await?;
    replica_loss_phase(f, clients).await
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let kt = flag(&args, "--kt").unwrap_or_else(|| "target/release/kt".into());
    let kt_load = flag(&args, "--kt-load").unwrap_or_else(|| "target/release/kt-load".into());
    let clients = num(&args, "--clients", 500.0)? as usize;
    let rate_limit = num(&args, "--rate-limit", 3000.0)? as u64;
    let budget_usd = num(&args, "--budget-usd", 2.0)?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let work: PathBuf = dir.path().to_owned();
    let mut fleet = start_fleet(&kt, &kt_load, &work, budget_usd)?;
    println!(
        "fleet: 2 kt server replicas on PostgreSQL, 3 managed gateways on one Redis, mock provider; {} clients",
        clients
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let result = rt.block_on(phases(&mut fleet, clients, rate_limit, budget_usd));
    drop(fleet.gateways);
    result
}
