//! kt-load: the gateway load harness (a benchmark, not a test). It runs the same loopback
//! load against
//!
//! - (a) `direct`: the mock provider itself,
//! - (b) `nginx`: Debian's nginx-light with `proxy_pass` (1 worker, upstream keep-alive),
//! - (c) `pingora`: a bare Pingora passthrough with default settings (`proxy/examples`),
//! - (d) `kt-none`: `kt gateway run` with an empty policy chain,
//! - (e) `kt-chain`: `kt gateway run` with the realistic input chain of the benchmarks,
//! - (f) `kt-governed`: `kt-chain` plus governance: every request carries a caller key and
//!   counts against the key's and its consumer group's rate limits and an organisation
//!   budget, all held in Redis (`KT_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`),
//!
//! interleaving the targets within each round and repeating rounds, and prints ratios from
//! the same run plus the CPU time each target process spent per request. The proxies run
//! on CPU 0 with one worker thread; the mock provider and the load generator share CPU 1.
//!
//! ```text
//! scripts/load [--rounds N] [--seconds S]     # builds everything, then runs `kt-load run`
//! ```
//!
//! Subcommands: `run` (the whole harness), `mock --listen ADDR` (the mock provider).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use kt_benches::harness::{Res, cpu_seconds, exchange, free_port, memmem, read_head, tree, wait_listening};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("mock") => mock_main(&args[1..]),
        Some("run") => run_main(&args[1..]),
        Some("hit") => hit_main(&args[1..]),
        Some("config") => {
            // The realistic chain the harness runs as kt-chain, or with `--governed` as
            // kt-governed (for profiling by hand; the caller key is KT_LOAD_CALLER_KEY).
            print!("{}", kt_benches::realistic_config(1000));
            if args.iter().any(|a| a == "--governed") {
                let redis = std::env::var("KT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
                print!("{}", governance(&redis));
            }
            Ok(())
        }
        _ => Err("usage: kt-load run [--rounds N] [--seconds S] [--root DIR] | kt-load mock --listen ADDR | kt-load hit --addr ADDR [--seconds S] [--connections C] [--kib N] [--doc] [--stream] [--rate R] [--auth KEY] | kt-load config [--governed]".into()),
    };
    if let Err(e) = result {
        eprintln!("kt-load: {e}");
        std::process::exit(1);
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn runtime() -> Res<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------
// The mock provider: fixed answers, keep-alive, as cheap as an HTTP server gets.

/// A 733-byte chat completion (the size the baseline measurements used).
fn chat_answer() -> Vec<u8> {
    let mut content = String::from("The quarterly report is attached; revenue grew in every region. ");
    let mut body = String::new();
    for _ in 0..40 {
        body = json!({
            "id": "chatcmpl-load", "object": "chat.completion", "created": 1, "model": "load",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 250, "completion_tokens": 120, "total_tokens": 370}
        })
        .to_string();
        if body.len() >= 733 {
            break;
        }
        content.push_str("More detail follows. ");
    }
    body.into_bytes()
}

/// An SSE answer: `events` chat chunks of 8 words, usage, `[DONE]`.
fn sse_events(events: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..events {
        let v = json!({"id": "chatcmpl-load", "object": "chat.completion.chunk", "created": 1, "model": "load",
            "choices": [{"index": 0, "delta": {"content": format!("word{i} of the streamed answer goes here ")}, "finish_reason": null}]});
        out.push(format!("data: {v}\n\n").into_bytes());
    }
    let fin = json!({"id": "chatcmpl-load", "object": "chat.completion.chunk", "created": 1, "model": "load",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    out.push(format!("data: {fin}\n\n").into_bytes());
    let usage = json!({"id": "chatcmpl-load", "object": "chat.completion.chunk", "created": 1, "model": "load", "choices": [],
        "usage": {"prompt_tokens": 250, "completion_tokens": events, "total_tokens": 250 + events}});
    out.push(format!("data: {usage}\n\n").into_bytes());
    out.push(b"data: [DONE]\n\n".to_vec());
    out
}

fn mock_main(args: &[String]) -> Res<()> {
    let listen = flag(args, "--listen").unwrap_or("127.0.0.1:41090").to_owned();
    runtime()?.block_on(async move {
        let listener = TcpListener::bind(&listen).await.map_err(|e| e.to_string())?;
        let answer = Arc::new(chat_answer());
        loop {
            let Ok((sock, _)) = listener.accept().await else {
                continue;
            };
            let answer = Arc::clone(&answer);
            tokio::spawn(async move {
                let _ = mock_conn(sock, &answer).await;
            });
        }
    })
}

async fn mock_conn(mut sock: TcpStream, answer: &[u8]) -> std::io::Result<()> {
    let _ = sock.set_nodelay(true);
    let mut buf = Vec::with_capacity(32 * 1024);
    loop {
        let Some((head, body_start, len)) = read_head(&mut sock, &mut buf).await? else {
            return Ok(());
        };
        while buf.len() < body_start + len {
            let mut tmp = [0u8; 65536];
            let n = sock.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        let body = &buf[body_start..body_start + len];
        let stream = memmem(body, b"\"stream\":true").is_some() || memmem(body, b"\"stream\": true").is_some();
        // Pacing comes in the body (gateways do not forward arbitrary headers upstream).
        let pace = body_number(body, "mock_pace_ms").map(|v| v as u64);
        let events = body_number(body, "mock_events").unwrap_or(20);
        // `mock_split`: each event in a write of its own instead of the whole stream in one.
        let split = body_number(body, "mock_split").is_some();
        let _ = head;
        buf.drain(..body_start + len);
        if stream {
            sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            let mut all = Vec::new();
            for e in sse_events(events) {
                let framed = [format!("{:x}\r\n", e.len()).as_bytes(), &e, b"\r\n"].concat();
                match pace {
                    Some(ms) => {
                        sock.write_all(&framed).await?;
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                    }
                    None if split => sock.write_all(&framed).await?,
                    None => all.extend_from_slice(&framed),
                }
            }
            all.extend_from_slice(b"0\r\n\r\n");
            sock.write_all(&all).await?;
        } else {
            let mut out = Vec::with_capacity(answer.len() + 128);
            out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: ");
            out.extend_from_slice(answer.len().to_string().as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(answer);
            sock.write_all(&out).await?;
        }
    }
}

/// The number after `"name":` in a JSON body, if any.
fn body_number(body: &[u8], name: &str) -> Option<usize> {
    let key = format!("\"{name}\":");
    let at = memmem(body, key.as_bytes())? + key.len();
    let digits: String = body[at..]
        .iter()
        .skip_while(|b| **b == b' ')
        .take_while(|b| b.is_ascii_digit())
        .map(|b| *b as char)
        .collect();
    digits.parse().ok()
}

// ---------------------------------------------------------------------------------------
// The load generator.

/// What one load run measured.
#[derive(Debug, Default, Clone)]
struct Stats {
    ok: u64,
    errors: u64,
    seconds: f64,
    /// Latencies in microseconds, sorted.
    lat: Vec<u32>,
}

impl Stats {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.seconds.max(1e-9)
    }
    fn pct(&self, p: f64) -> f64 {
        if self.lat.is_empty() {
            return 0.0;
        }
        let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
        f64::from(self.lat[i.min(self.lat.len() - 1)]) / 1000.0
    }
}

/// A chat request; `auth` (header lines) replaces the default `authorization: Bearer load`.
fn request_bytes(addr: &str, body: &[u8], auth: &str) -> Vec<u8> {
    let auth = if auth.is_empty() {
        "authorization: Bearer load\r\n"
    } else {
        auth
    };
    let mut r = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// Closed loop: `conns` connections each sending back to back for `secs`.
async fn closed_loop(addr: &str, req: Arc<Vec<u8>>, conns: usize, secs: f64) -> Stats {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for _ in 0..conns {
        let (addr, req, stop) = (addr.to_owned(), Arc::clone(&req), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let mut st = Stats::default();
            let mut buf = Vec::with_capacity(64 * 1024);
            'outer: while !stop.load(Ordering::Relaxed) {
                let Ok(mut sock) = TcpStream::connect(&addr).await else {
                    st.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = sock.set_nodelay(true);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match exchange(&mut sock, &req, &mut buf).await {
                        Ok(200) => {
                            st.ok += 1;
                            st.lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                        Ok(_) => st.errors += 1,
                        Err(_) => {
                            st.errors += 1;
                            continue 'outer;
                        }
                    }
                }
            }
            st
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    stop.store(true, Ordering::Relaxed);
    let seconds = started.elapsed().as_secs_f64();
    let mut all = Stats {
        seconds,
        ..Stats::default()
    };
    for t in tasks {
        if let Ok(st) = t.await {
            all.ok += st.ok;
            all.errors += st.errors;
            all.lat.extend(st.lat);
        }
    }
    all.lat.sort_unstable();
    all
}

/// Open loop at `rate` requests per second; latency counts from each request's scheduled
/// start (no coordinated omission). Tokio's timer wheel has a 1 ms resolution, which would
/// release requests in bursts of `rate / 1000`; a dispatcher thread sleeps on the system's
/// high-resolution timer instead and hands each request to the connections as it falls due.
async fn fixed_rate(addr: &str, req: Arc<Vec<u8>>, rate: f64, secs: f64, conns: usize) -> Stats {
    let total = (rate * secs) as u64;
    let next = Arc::new(AtomicU64::new(0));
    let due = Arc::new(tokio::sync::Semaphore::new(0));
    let started = Instant::now();
    let at = move |i: u64| started + Duration::from_secs_f64(i as f64 / rate);
    let dispatcher = {
        let due = Arc::clone(&due);
        std::thread::spawn(move || {
            for i in 0..total {
                let when = at(i);
                let now = Instant::now();
                if when > now {
                    std::thread::sleep(when - now);
                }
                due.add_permits(1);
            }
            // Wakes the connections so that they see the end.
            due.close();
        })
    };
    let mut tasks = Vec::new();
    for _ in 0..conns {
        let (addr, req, next, due) = (addr.to_owned(), Arc::clone(&req), Arc::clone(&next), Arc::clone(&due));
        tasks.push(tokio::spawn(async move {
            let mut st = Stats::default();
            let mut buf = Vec::with_capacity(64 * 1024);
            let mut sock: Option<TcpStream> = None;
            loop {
                // An error means closed: every request has fallen due; take what is left.
                if let Ok(p) = due.acquire().await {
                    p.forget();
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let scheduled = at(i);
                if sock.is_none() {
                    sock = TcpStream::connect(&addr).await.ok();
                    if let Some(s) = &sock {
                        let _ = s.set_nodelay(true);
                    }
                }
                let Some(s) = sock.as_mut() else {
                    st.errors += 1;
                    continue;
                };
                match exchange(s, &req, &mut buf).await {
                    Ok(200) => {
                        st.ok += 1;
                        st.lat
                            .push(scheduled.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    }
                    _ => {
                        st.errors += 1;
                        sock = None;
                    }
                }
            }
            st
        }));
    }
    let mut all = Stats::default();
    for t in tasks {
        if let Ok(st) = t.await {
            all.ok += st.ok;
            all.errors += st.errors;
            all.lat.extend(st.lat);
        }
    }
    // The connections end only once the dispatcher has closed the semaphore.
    let _ = dispatcher.join();
    all.seconds = started.elapsed().as_secs_f64();
    all.lat.sort_unstable();
    all
}

// ---------------------------------------------------------------------------------------
// Processes under test.

fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Target {
    name: &'static str,
    addr: String,
    child: Option<Child>,
    /// Header lines every request to this target carries.
    extra: String,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Target {
    fn cpu(&self) -> f64 {
        self.child
            .as_ref()
            .map_or(0.0, |c| tree(c.id()).into_iter().map(cpu_seconds).sum())
    }
    fn rss(&self) -> f64 {
        self.child
            .as_ref()
            .map_or(0.0, |c| tree(c.id()).into_iter().map(rss_mb).sum())
    }
}

fn spawn_on_cpu0(program: &Path, args: &[&str], dir: &Path) -> Res<Child> {
    spawn_on_cpu0_env(program, args, dir, &[])
}

fn spawn_on_cpu0_env(program: &Path, args: &[&str], dir: &Path, env: &[(&str, &str)]) -> Res<Child> {
    Command::new("taskset")
        .arg("-c")
        .arg("0")
        .arg(program)
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))
}

fn nginx_target(dir: &Path, mock: &str) -> Res<Target> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or("nginx is not installed (apt-get install nginx-light)")?;
    let addr = free_port()?;
    let d = dir.join("nginx");
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    let conf = format!(
        "user root;\nworker_processes 1;\ndaemon off;\nmaster_process off;\npid {p}/nginx.pid;\nerror_log {p}/error.log;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {p}/body; proxy_temp_path {p}/proxy; fastcgi_temp_path {p}/fcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n  client_max_body_size 64m; client_body_buffer_size 1m;\n  upstream mock {{ server {mock}; keepalive 256; }}\n  server {{\n    listen {addr} backlog=4096;\n    keepalive_requests 1000000;\n    location / {{ proxy_pass http://mock; proxy_http_version 1.1; proxy_set_header Connection \"\"; proxy_buffering off; }}\n  }}\n}}\n",
        p = d.display()
    );
    let path = d.join("nginx.conf");
    std::fs::write(&path, conf).map_err(|e| e.to_string())?;
    let child = spawn_on_cpu0(&nginx, &["-c", &path.display().to_string()], &d)?;
    wait_listening(&addr)?;
    Ok(Target {
        name: "nginx",
        addr,
        child: Some(child),
        extra: String::new(),
    })
}

/// What a kt lane runs.
#[derive(Clone, Copy, PartialEq)]
enum Lane {
    None,
    Chain,
    Governed,
}

/// The caller key of the governed lane.
const LOAD_KEY: &str = "kt-load-caller-key-0123456789";

/// The governance the governed lane adds to the realistic chain: a caller key with its
/// own rate limit, a consumer group with one, and an organisation budget, in Redis. The
/// limits are far above what a run sends, so every request is counted and none refused.
fn governance(redis: &str) -> String {
    format!(
        "caller_auth:
  mode: keys
  keys:
    - {{id: load, secret_key_ref: {{env: KT_LOAD_CALLER_KEY}}, rate_limit: {{max_requests: 1000000000, window_seconds: 3600}}}}
consumer_groups:
  - {{name: load, match: {{gateway_key_ids: [load]}}, rate_limits: {{requests_per_minute: 1000000000}}}}
budgets:
  limits:
    - {{name: org, limit_usd: 1000000000, period: day}}
shared_state: {{redis_url: '{redis}', key_prefix: ktload{}}}
",
        std::process::id()
    )
}

fn kt_target(name: &'static str, kt: &Path, dir: &Path, mock: &str, lane: Lane) -> Res<Target> {
    let addr = free_port()?;
    let d = dir.join(name);
    std::fs::create_dir_all(&d).map_err(|e| e.to_string())?;
    let providers = format!(
        "providers:\n  targets:\n    - {{id: mock, provider: openai-compatible, base_url: \"http://{mock}/v1\"}}\n"
    );
    let redis = std::env::var("KT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let yaml = match lane {
        Lane::Chain => format!("{}{providers}", kt_benches::realistic_config(1000)),
        Lane::Governed => format!(
            "{}{}{providers}",
            kt_benches::realistic_config(1000),
            governance(&redis)
        ),
        Lane::None => {
            format!("pack: {{name: none, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\n{providers}")
        }
    };
    std::fs::write(d.join("policy-config.yaml"), yaml).map_err(|e| e.to_string())?;
    let child = spawn_on_cpu0_env(
        kt,
        &[
            "gateway",
            "run",
            "--listen",
            &addr,
            "--threads",
            "1",
            "--policy-config",
            "policy-config.yaml",
        ],
        &d,
        &[("KT_LOAD_CALLER_KEY", LOAD_KEY)],
    )?;
    wait_listening(&addr)?;
    let extra = if lane == Lane::Governed {
        format!("authorization: Bearer {LOAD_KEY}\r\n")
    } else {
        String::new()
    };
    Ok(Target {
        name,
        addr,
        child: Some(child),
        extra,
    })
}

// ---------------------------------------------------------------------------------------
// The harness.

#[derive(Default)]
struct Sample {
    rps: Vec<f64>,
    cpu_us: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    errors: u64,
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let mid = s.len() / 2;
    if s.len().is_multiple_of(2) {
        (s[mid - 1] + s[mid]) / 2.0
    } else {
        s[mid]
    }
}

/// Load on one address (for profiling a single target).
fn hit_main(args: &[String]) -> Res<()> {
    let addr = flag(args, "--addr").ok_or("--addr is required")?.to_owned();
    let secs: f64 = flag(args, "--seconds").and_then(|v| v.parse().ok()).unwrap_or(10.0);
    let conns: usize = flag(args, "--connections").and_then(|v| v.parse().ok()).unwrap_or(32);
    let kib: usize = flag(args, "--kib").and_then(|v| v.parse().ok()).unwrap_or(1);
    let mut body = if args.iter().any(|a| a == "--doc") {
        kt_benches::document_body(kib * 1024, 7)
    } else {
        kt_benches::chat_body(kib * 1024, 7)
    };
    if args.iter().any(|a| a == "--stream") {
        body["stream"] = json!(true);
    }
    let auth = flag(args, "--auth").map_or(String::new(), |k| format!("authorization: Bearer {k}\r\n"));
    let req = Arc::new(request_bytes(
        &addr,
        &serde_json::to_vec(&body).unwrap_or_default(),
        &auth,
    ));
    let st = match flag(args, "--rate").and_then(|v| v.parse::<f64>().ok()) {
        Some(rate) => runtime()?.block_on(fixed_rate(&addr, req, rate, secs, conns)),
        None => runtime()?.block_on(closed_loop(&addr, req, conns, secs)),
    };
    println!(
        "{:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, errors {}",
        st.rps(),
        st.pct(0.5),
        st.pct(0.99),
        st.pct(0.999),
        st.errors
    );
    Ok(())
}

/// The request shapes of a run: chat bodies of alternating turns; one 16 KiB document in a
/// single user message; a stream the upstream writes in one piece, and one it writes event
/// by event.
fn scenarios() -> Vec<(&'static str, Vec<u8>)> {
    let chat = |kib: usize| serde_json::to_vec(&kt_benches::chat_body(kib * 1024, 7)).unwrap_or_default();
    let mut sse_body = kt_benches::chat_body(1024, 7);
    sse_body["stream"] = json!(true);
    let sse_body = serde_json::to_vec(&sse_body).unwrap_or_default();
    let document = serde_json::to_vec(&kt_benches::document_body(16 * 1024, 7)).unwrap_or_default();
    let mut sse_split = kt_benches::chat_body(1024, 7);
    sse_split["stream"] = json!(true);
    sse_split["mock_split"] = json!(1);
    let sse_split = serde_json::to_vec(&sse_split).unwrap_or_default();
    vec![
        ("chat 1 KiB", chat(1)),
        ("chat 16 KiB", chat(16)),
        ("doc 16 KiB", document),
        ("sse 1 KiB", sse_body),
        ("sse split", sse_split),
    ]
}

/// Throughput, closed loop, targets interleaved within each round (rotated each round so
/// no target always runs first): per (scenario, target), each round's figures.
fn throughput(
    rt: &tokio::runtime::Runtime,
    targets: &[&Target],
    scenarios: &[(&'static str, Vec<u8>)],
    (rounds, secs, conns): (usize, f64, usize),
) -> BTreeMap<(usize, &'static str), Sample> {
    let mut results: BTreeMap<(usize, &'static str), Sample> = BTreeMap::new();
    eprintln!(
        "kt-load: {rounds} round(s), {secs} s per run, {conns} connections; proxies on CPU 0, load + mock on CPU 1"
    );
    for round in 0..rounds {
        for (si, (sname, body)) in scenarios.iter().enumerate() {
            // Rotate the order each round so no target always runs first.
            for k in 0..targets.len() {
                let t = targets[(k + round) % targets.len()];
                let req = Arc::new(request_bytes(&t.addr, body, &t.extra));
                rt.block_on(closed_loop(&t.addr, Arc::clone(&req), conns, 0.5));
                let cpu0 = t.cpu();
                let st = rt.block_on(closed_loop(&t.addr, req, conns, secs));
                let cpu = t.cpu() - cpu0;
                let s = results.entry((si, t.name)).or_default();
                s.rps.push(st.rps());
                s.cpu_us.push(cpu * 1e6 / st.ok.max(1) as f64);
                s.p50.push(st.pct(0.5));
                s.p99.push(st.pct(0.99));
                s.errors += st.errors;
                eprintln!(
                    "  round {} {sname:<12} {:<8} {:>9.0} req/s  cpu {:>6.1} µs/req  p50 {:.2} ms  p99 {:.2} ms  errors {}",
                    round + 1,
                    t.name,
                    st.rps(),
                    cpu * 1e6 / st.ok.max(1) as f64,
                    st.pct(0.5),
                    st.pct(0.99),
                    st.errors
                );
            }
        }
    }
    results
}

/// Light load, one connection: per target, each round's p50 and p99.
fn light_load(
    rt: &tokio::runtime::Runtime,
    targets: &[&Target],
    body: &[u8],
    rounds: usize,
    secs: f64,
) -> BTreeMap<&'static str, (Vec<f64>, Vec<f64>)> {
    let mut light: BTreeMap<&'static str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for round in 0..rounds {
        for k in 0..targets.len() {
            let t = targets[(k + round) % targets.len()];
            let req = Arc::new(request_bytes(&t.addr, body, &t.extra));
            let st = rt.block_on(closed_loop(&t.addr, req, 1, secs.min(2.0)));
            let e = light.entry(t.name).or_default();
            e.0.push(st.pct(0.5));
            e.1.push(st.pct(0.99));
        }
    }
    light
}

/// `streams` concurrent paced streams (20 events 50 ms apart, about 1 s each) through
/// `addr`: the durations of those completed, how many failed, and the wall time of all.
fn paced_streams(rt: &tokio::runtime::Runtime, addr: &str, streams: usize) -> (Vec<f64>, usize, f64) {
    let mut paced = kt_benches::chat_body(1024, 7);
    paced["stream"] = json!(true);
    paced["mock_pace_ms"] = json!(50);
    paced["mock_events"] = json!(20);
    let req = Arc::new(request_bytes(addr, &serde_json::to_vec(&paced).unwrap_or_default(), ""));
    rt.block_on(async {
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..streams {
            let (addr, req) = (addr.to_owned(), Arc::clone(&req));
            tasks.push(tokio::spawn(async move {
                let mut buf = Vec::new();
                let t = Instant::now();
                match TcpStream::connect(&addr).await {
                    Ok(mut s) => exchange(&mut s, &req, &mut buf)
                        .await
                        .ok()
                        .filter(|c| *c == 200)
                        .map(|_| t.elapsed().as_secs_f64()),
                    Err(_) => None,
                }
            }));
        }
        let mut done = Vec::new();
        let mut failed = 0;
        for t in tasks {
            match t.await.ok().flatten() {
                Some(d) => done.push(d),
                None => failed += 1,
            }
        }
        (done, failed, t0.elapsed().as_secs_f64())
    })
}

/// The throughput tables: per scenario, each target's medians and the ratios between them.
fn report_throughput(
    out: &mut String,
    results: &BTreeMap<(usize, &'static str), Sample>,
    scenarios: &[(&'static str, Vec<u8>)],
    targets: &[&Target],
    rounds: usize,
) {
    let get = |si: usize, name: &'static str| results.get(&(si, name));
    for (si, (sname, _)) in scenarios.iter().enumerate() {
        out.push_str(&format!(
            "\n{sname} — medians of {rounds} round(s)\n{:<11} {:>10} {:>9} {:>12} {:>9} {:>9} {:>7}\n",
            "target", "req/s", "× pingora", "CPU µs/req", "p50 ms", "p99 ms", "errors"
        ));
        let base = get(si, "pingora").map_or(1.0, |s| median(&s.rps));
        for t in targets {
            if let Some(s) = get(si, t.name) {
                out.push_str(&format!(
                    "{:<11} {:>10.0} {:>9.2} {:>12.1} {:>9.2} {:>9.2} {:>7}\n",
                    t.name,
                    median(&s.rps),
                    median(&s.rps) / base,
                    median(&s.cpu_us),
                    median(&s.p50),
                    median(&s.p99),
                    s.errors
                ));
            }
        }
        let ratio = |a: &'static str, b: &'static str| {
            let (Some(x), Some(y)) = (get(si, a), get(si, b)) else {
                return 0.0;
            };
            median(&x.rps) / median(&y.rps).max(1e-9)
        };
        out.push_str(&format!(
            "ratios: kt-chain/pingora {:.2}, kt-none/pingora {:.2}, kt-chain/nginx {:.2}, pingora/nginx {:.2}, kt-governed/kt-chain {:.2}\n",
            ratio("kt-chain", "pingora"),
            ratio("kt-none", "pingora"),
            ratio("kt-chain", "nginx"),
            ratio("pingora", "nginx"),
            ratio("kt-governed", "kt-chain"),
        ));
        // Targets of one round run back to back, so on a machine whose speed drifts the
        // ratio within each round says more than the ratio of the medians.
        let paired = |a: &'static str, b: &'static str| {
            let (Some(x), Some(y)) = (get(si, a), get(si, b)) else {
                return String::from("-");
            };
            let per: Vec<f64> = x.rps.iter().zip(&y.rps).map(|(p, q)| p / q.max(1e-9)).collect();
            let list: Vec<String> = per.iter().map(|r| format!("{r:.2}")).collect();
            format!("{:.2} ({})", median(&per), list.join(", "))
        };
        out.push_str(&format!(
            "paired, median of per-round ratios: kt-chain/pingora {}, kt-none/pingora {}, kt-chain/nginx {}, kt-governed/kt-chain {}\n",
            paired("kt-chain", "pingora"),
            paired("kt-none", "pingora"),
            paired("kt-chain", "nginx"),
            paired("kt-governed", "kt-chain"),
        ));
    }
}

/// The mock provider (the `direct` target, on CPU 1 with this process, which runs under
/// `taskset -c 1`) and the bare Pingora passthrough in front of it (on CPU 0).
fn mock_and_pingora(me: &Path, bare: &Path, dir: &Path) -> Res<(Target, Target)> {
    let mock_addr = free_port()?;
    let mock = Command::new(me)
        .args(["mock", "--listen", &mock_addr])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let mock = Target {
        name: "direct",
        addr: mock_addr.clone(),
        child: Some(mock),
        extra: String::new(),
    };
    wait_listening(&mock_addr)?;
    let bare_addr = free_port()?;
    let bare_child = spawn_on_cpu0(bare, &[&bare_addr, &mock_addr, "1"], dir)?;
    wait_listening(&bare_addr)?;
    let pingora = Target {
        name: "pingora",
        addr: bare_addr,
        child: Some(bare_child),
        extra: String::new(),
    };
    Ok((mock, pingora))
}

fn run_main(args: &[String]) -> Res<()> {
    let rounds: usize = flag(args, "--rounds").and_then(|v| v.parse().ok()).unwrap_or(3);
    let secs: f64 = flag(args, "--seconds").and_then(|v| v.parse().ok()).unwrap_or(3.0);
    let conns: usize = flag(args, "--connections").and_then(|v| v.parse().ok()).unwrap_or(32);
    let root = PathBuf::from(flag(args, "--root").unwrap_or("."));
    let release = root.join("target/release");
    let kt = release.join("kt");
    let bare = release.join("examples/bare_passthrough");
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    for p in [&kt, &bare] {
        if !p.exists() {
            return Err(format!("{} is missing: run scripts/load, which builds it", p.display()));
        }
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;

    let (mock, pingora) = mock_and_pingora(&me, &bare, dir.path())?;
    let mock_addr = mock.addr.clone();
    let nginx = nginx_target(dir.path(), &mock_addr)?;
    let kt_none = kt_target("kt-none", &kt, dir.path(), &mock_addr, Lane::None)?;
    let kt_chain = kt_target("kt-chain", &kt, dir.path(), &mock_addr, Lane::Chain)?;
    let kt_governed = kt_target("kt-governed", &kt, dir.path(), &mock_addr, Lane::Governed)?;
    std::thread::sleep(Duration::from_millis(500));
    let idle_rss = kt_chain.rss();
    let targets = [&mock, &nginx, &pingora, &kt_none, &kt_chain, &kt_governed];

    let rt = runtime()?;
    let scenarios = scenarios();

    let results = throughput(&rt, &targets, &scenarios, (rounds, secs, conns));

    let light = light_load(&rt, &targets, &scenarios[0].1, rounds, secs);

    // A fixed rate of half of kt-chain's 1 KiB maximum.
    let kt_max = median(&results.get(&(0, "kt-chain")).map(|s| s.rps.clone()).unwrap_or_default());
    let rate = (kt_max / 2.0).max(100.0);
    // The same schedule against the mock and the bare Pingora shows the floor this machine
    // and generator set (their tails come from the machine, not from a proxy's work).
    let mut fixed = Vec::new();
    for t in [&mock, &pingora, &kt_chain] {
        let req = Arc::new(request_bytes(&t.addr, &scenarios[0].1, ""));
        fixed.push((t.name, rt.block_on(fixed_rate(&t.addr, req, rate, secs.max(3.0), 64))));
    }

    let streams = 512;
    let (durations, stream_failures, streams_wall) = paced_streams(&rt, &kt_chain.addr, streams);
    let slowest = durations.iter().copied().fold(0.0, f64::max);
    let busy_rss = kt_chain.rss();

    // Report.
    let mut out = String::new();
    report_throughput(&mut out, &results, &scenarios, &targets, rounds);
    out.push_str("\nlight load (1 connection, chat 1 KiB): p50 / p99 ms, added over direct\n");
    let (d50, d99) = light.get("direct").map_or((0.0, 0.0), |(a, b)| (median(a), median(b)));
    for t in &targets {
        if let Some((a, b)) = light.get(t.name) {
            out.push_str(&format!(
                "{:<11} {:>7.3} / {:>7.3}   +{:.3} / +{:.3}\n",
                t.name,
                median(a),
                median(b),
                median(a) - d50,
                median(b) - d99
            ));
        }
    }
    out.push_str(&format!(
        "\nfixed rate {rate:.0} req/s (half of kt-chain's max), {:.1} s each, 64 connections:\n",
        secs.max(3.0)
    ));
    for (name, st) in &fixed {
        out.push_str(&format!(
            "{name:<10} p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, errors {}\n",
            st.pct(0.5),
            st.pct(0.99),
            st.pct(0.999),
            st.errors
        ));
    }
    out.push_str(&format!(
        "{streams} concurrent streams (20 events, 50 ms apart) through kt-chain: {} completed, {} failed, slowest {:.2} s, all done in {:.2} s\n",
        durations.len(),
        stream_failures,
        slowest,
        streams_wall
    ));
    out.push_str(&format!(
        "kt-chain RSS: idle {idle_rss:.1} MB, after the load {busy_rss:.1} MB\n"
    ));
    print!("{out}");
    let _ = std::io::stdout().flush();
    Ok(())
}
