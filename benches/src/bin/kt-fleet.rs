//! kt-fleet: the control plane's scale harness (a benchmark, not a test). It starts one
//! `kt server` on SQLite and simulates N managed gateways against it, each doing what
//! `kt run --managed` does: long-poll `GET /v1/gateway/config` with its ETag and report
//! every applied version with `PUT …/runtime-state`. It measures
//!
//! - how long N gateways take to fetch and report their first configuration,
//! - the server's request rate and CPU while the fleet idles at the poll interval,
//! - the time for a rollout to reach every gateway (received, and reported applied),
//! - the server's capacity under back-to-back polling (requests/s, p50/p99, CPU µs each).
//!
//! ```text
//! scripts/fleet [--gateways 1000] [--poll-interval 30] [--idle-seconds 20]
//! ```

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kt_benches::harness::{Res, cpu_seconds, exchange, free_port, memmem, wait_listening};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(kt: &str, dir: &std::path::Path) -> Res<Server> {
    let addr = free_port()?;
    // The server on CPU 0 (this harness runs on CPU 1 under scripts/fleet).
    let child = Command::new("taskset")
        .args(["-c", "0", kt, "server", "--listen", &addr, "--data-dir"])
        .arg(dir)
        .env("KT_BOOTSTRAP_EMAIL", "owner@example.com")
        .env("KT_BOOTSTRAP_PASSWORD", "fleet-bench-password")
        .env_remove("KT_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {kt} server: {e}"))?;
    let s = Server { child, addr };
    wait_listening(&s.addr)?;
    Ok(s)
}

/// Who a request goes to, as whom.
#[derive(Clone, Copy)]
struct Peer<'a> {
    addr: &'a str,
    token: &'a str,
}

/// One request on a kept-alive connection: (status, body, microseconds).
async fn call(
    sock: &mut TcpStream,
    peer: Peer<'_>,
    method: &str,
    path: &str,
    extra: &str,
    body: Option<&Value>,
    buf: &mut Vec<u8>,
) -> std::io::Result<(u16, Vec<u8>, u64)> {
    let Peer { addr, token } = peer;
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let t = Instant::now();
    let status = exchange(sock, req.as_bytes(), buf).await?;
    let us = t.elapsed().as_micros() as u64;
    let start = memmem(buf, b"\r\n\r\n").map_or(buf.len(), |p| p + 4);
    Ok((status, buf[start..].to_vec(), us))
}

async fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// A blocking JSON call for setup.
fn setup_call(addr: &str, method: &str, path: &str, token: &str, body: Option<Value>) -> Res<Value> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut s = connect(addr).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let (status, body, _) = call(&mut s, Peer { addr, token }, method, path, "", body.as_ref(), &mut buf)
            .await
            .map_err(|e| e.to_string())?;
        if !(200..300).contains(&status) {
            return Err(format!(
                "{method} {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            ));
        }
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    })
}

/// What every simulated gateway records.
#[derive(Default)]
struct Fleet {
    requests: AtomicU64,
    /// Gateways that received / reported the target version.
    received: AtomicU64,
    reported: AtomicU64,
    /// Latencies (µs) of answered polls (not the waiting ones) and reports.
    lat: std::sync::Mutex<Vec<u64>>,
}

fn pct(v: &mut [u64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_unstable();
    v[((v.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
}

/// One managed gateway: long-polls, and reports each version it receives.
async fn gateway(
    addr: String,
    id: String,
    token: String,
    poll: u64,
    fleet: Arc<Fleet>,
    mut target: watch::Receiver<i64>,
) -> Res<()> {
    let mut sock = connect(&addr).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    let mut etag: Option<String> = None;
    let mut applied = 0i64;
    let peer = Peer {
        addr: &addr,
        token: &token,
    };
    loop {
        let extra = etag
            .as_ref()
            .map(|e| format!("if-none-match: {e}\r\n"))
            .unwrap_or_default();
        let path = format!("/v1/gateway/config?wait={poll}&poll_interval={poll}");
        let (status, body, us) = call(&mut sock, peer, "GET", &path, &extra, None, &mut buf)
            .await
            .map_err(|e| format!("{id}: {e}"))?;
        fleet.requests.fetch_add(1, Ordering::Relaxed);
        match status {
            304 => {}
            200 => {
                // A long-poll's answer time includes its wait; only direct answers count.
                if etag.is_none()
                    && let Ok(mut l) = fleet.lat.lock()
                {
                    l.push(us);
                }
                let v: Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                etag = v["etag"].as_str().map(str::to_owned);
                let version = v["version"].as_i64().unwrap_or(0);
                if version == *target.borrow_and_update() {
                    fleet.received.fetch_add(1, Ordering::Relaxed);
                }
                let report = json!({
                    "applied": {"configuration_id": v["configuration_id"], "version": version},
                    "generation": v["generation"],
                    "runtime_version": "kt-fleet",
                });
                let (st, _, us) = call(
                    &mut sock,
                    peer,
                    "PUT",
                    &format!("/v1/admin/configurations/gateways/{id}/runtime-state"),
                    "",
                    Some(&report),
                    &mut buf,
                )
                .await
                .map_err(|e| format!("{id}: {e}"))?;
                fleet.requests.fetch_add(1, Ordering::Relaxed);
                if st != 200 {
                    return Err(format!("{id}: report answered {st}"));
                }
                if let Ok(mut l) = fleet.lat.lock() {
                    l.push(us);
                }
                if version == *target.borrow() && version != applied {
                    fleet.reported.fetch_add(1, Ordering::Relaxed);
                }
                applied = version;
            }
            other => {
                return Err(format!(
                    "{id}: poll answered {other}: {}",
                    String::from_utf8_lossy(&body)
                ));
            }
        }
        if target.has_changed().is_err() {
            return Ok(());
        }
    }
}

/// Back-to-back polls without an ETag from every gateway for `secs`.
async fn stress(addr: String, tokens: Vec<String>, secs: f64) -> (u64, Vec<u64>) {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for token in tokens {
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let Ok(mut sock) = connect(&addr).await else {
                return lat;
            };
            let mut buf = Vec::new();
            let peer = Peer {
                addr: &addr,
                token: &token,
            };
            while Instant::now() < deadline {
                match call(&mut sock, peer, "GET", "/v1/gateway/config", "", None, &mut buf).await {
                    Ok((200, _, us)) => lat.push(us),
                    _ => break,
                }
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        if let Ok(l) = t.await {
            all.extend(l);
        }
    }
    (all.len() as u64, all)
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Res<Duration> {
    let t = Instant::now();
    while !done() {
        if t.elapsed() > limit {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(t.elapsed())
}

fn run(args: &[String]) -> Res<()> {
    let n: usize = flag(args, "--gateways").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let poll: u64 = flag(args, "--poll-interval").and_then(|v| v.parse().ok()).unwrap_or(30);
    let idle: f64 = flag(args, "--idle-seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(20.0);
    let stress_secs: f64 = flag(args, "--stress-seconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(5.0);
    let kt = flag(args, "--kt").unwrap_or_else(|| "target/release/kt".into());
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let server = start_server(&kt, dir.path())?;
    let pid = server.child.id();
    let addr = server.addr.clone();
    println!(
        "kt server on {addr} (SQLite in {}), {n} gateways, poll interval {poll} s",
        dir.path().display()
    );

    // Setup: an owner session, one configuration, N gateways, version 1 rolled out.
    let login = setup_call(
        &addr,
        "POST",
        "/v1/auth/login",
        "",
        Some(json!({"email": "owner@example.com", "password": "fleet-bench-password"})),
    )?;
    let owner = login["token"].as_str().unwrap_or_default().to_owned();
    let yaml = |v: &str| format!("pack: {{name: fleet, version: {v}, enabled: true}}\npolicies: {{chain: []}}\n");
    let cfg = setup_call(
        &addr,
        "POST",
        "/v1/admin/configurations",
        &owner,
        Some(json!({"yaml": yaml("1.0.0")})),
    )?;
    let cfg_id = cfg["configuration_id"].as_str().unwrap_or_default().to_owned();
    let t = Instant::now();
    let mut gws = Vec::with_capacity(n);
    for i in 0..n {
        let g = setup_call(
            &addr,
            "POST",
            "/v1/gateways",
            &owner,
            Some(json!({"name": format!("gw-{i:05}")})),
        )?;
        gws.push((
            g["gateway"]["id"].as_str().unwrap_or_default().to_owned(),
            g["token"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    println!("created {n} gateways in {:.1} s", t.elapsed().as_secs_f64());
    let ids: Vec<&str> = gws.iter().map(|(id, _)| id.as_str()).collect();
    setup_call(
        &addr,
        "POST",
        "/v1/admin/configurations/rollout",
        &owner,
        Some(json!({"configuration_id": cfg_id, "version": 1, "gateway_ids": ids})),
    )?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let fleet = Arc::new(Fleet::default());
    let (target_tx, target_rx) = watch::channel(1i64);
    let cpu0 = cpu_seconds(pid);
    for (id, token) in &gws {
        rt.spawn(gateway(
            addr.clone(),
            id.clone(),
            token.clone(),
            poll,
            Arc::clone(&fleet),
            target_rx.clone(),
        ));
    }
    let first = wait_until("every gateway's first report", Duration::from_secs(120), || {
        fleet.reported.load(Ordering::Relaxed) >= n as u64
    })?;
    let cpu_first = cpu_seconds(pid) - cpu0;
    let mut lat = fleet.lat.lock().map(|l| l.clone()).unwrap_or_default();
    println!(
        "first sync: all {n} fetched and reported in {:.2} s (server CPU {:.2} s; answered requests p50 {:.2} ms, p99 {:.2} ms)",
        first.as_secs_f64(),
        cpu_first,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );

    // Idle: the fleet waits on its long-polls.
    let r0 = fleet.requests.load(Ordering::Relaxed);
    let c0 = cpu_seconds(pid);
    std::thread::sleep(Duration::from_secs_f64(idle));
    let idle_rps = (fleet.requests.load(Ordering::Relaxed) - r0) as f64 / idle;
    let idle_cpu = (cpu_seconds(pid) - c0) / idle * 100.0;
    println!("idle: {idle_rps:.1} requests/s, server CPU {idle_cpu:.2} % of one core over {idle:.0} s");

    // Rollout of version 2 to all.
    setup_call(
        &addr,
        "POST",
        &format!("/v1/admin/configurations/{cfg_id}/versions"),
        &owner,
        Some(json!({"yaml": yaml("2.0.0")})),
    )?;
    fleet.received.store(0, Ordering::Relaxed);
    fleet.reported.store(0, Ordering::Relaxed);
    if let Ok(mut l) = fleet.lat.lock() {
        l.clear();
    }
    let _ = target_tx.send(2);
    let c0 = cpu_seconds(pid);
    let t = Instant::now();
    setup_call(
        &addr,
        "POST",
        "/v1/admin/configurations/rollout",
        &owner,
        Some(json!({"configuration_id": cfg_id, "version": 2, "gateway_ids": ids})),
    )?;
    let rollout_call = t.elapsed();
    let received = wait_until(
        "the rollout to reach every gateway",
        Duration::from_secs(2 * poll + 30),
        || fleet.received.load(Ordering::Relaxed) >= n as u64,
    )?;
    let received = received + rollout_call;
    let reported = wait_until("every gateway to report version 2", Duration::from_secs(60), || {
        fleet.reported.load(Ordering::Relaxed) >= n as u64
    })? + received;
    let state = setup_call(&addr, "GET", "/v1/admin/configurations", &owner, None)?;
    let in_sync = state["items"].as_array().map_or(0, |i| {
        i.iter()
            .filter(|x| x["sync"] == "in_sync" && x["desired_version"] == 2)
            .count()
    });
    let mut lat = fleet.lat.lock().map(|l| l.clone()).unwrap_or_default();
    println!(
        "rollout: POST answered in {:.0} ms; all {n} received version 2 after {:.2} s, all reported after {:.2} s; {in_sync}/{n} in_sync per GET /v1/admin/configurations; server CPU {:.2} s; p99 of the reports {:.2} ms",
        rollout_call.as_secs_f64() * 1e3,
        received.as_secs_f64(),
        reported.as_secs_f64(),
        cpu_seconds(pid) - c0,
        pct(&mut lat, 0.99),
    );
    drop(target_tx);

    // Capacity: every gateway polls back to back, no ETag.
    let tokens: Vec<String> = gws.iter().map(|(_, t)| t.clone()).collect();
    let c0 = cpu_seconds(pid);
    let (count, mut lat) = rt.block_on(stress(addr.clone(), tokens, stress_secs));
    let cpu = cpu_seconds(pid) - c0;
    println!(
        "capacity: {:.0} polls/s from {n} connections for {stress_secs:.0} s, p50 {:.2} ms, p99 {:.2} ms, server CPU {:.0} µs per poll",
        count as f64 / stress_secs,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        cpu / count.max(1) as f64 * 1e6
    );
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Err(e) = run(&args) {
        eprintln!("kt-fleet: {e}");
        std::process::exit(1);
    }
}
