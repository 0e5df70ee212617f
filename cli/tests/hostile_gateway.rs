//! The gateway under hostile traffic on loopback: a flood of idle and slow connections
//! under a low open-file limit never keeps a new client out; clients that never read a
//! large answer or stream do not hold the upstream slots; a malformed chunked body is a
//! 400; a body that stops arriving is a 408.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kt_testkit::handlers::{chat_chunks, chat_completion};
use kt_testkit::{MockProvider, Reply, free_addr, http_with};
use serde_json::json;

const KT: &str = env!("CARGO_BIN_EXE_kt");

struct Gateway {
    child: Child,
    addr: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kt gateway run` under `ulimit -n <nofile>`, with `extra` flags, in front of `provider`.
fn gateway(dir: &Path, provider: &MockProvider, nofile: u32, extra: &[&str]) -> Gateway {
    gateway_on(dir, provider, nofile, &free_addr(), extra)
}

fn gateway_on(dir: &Path, provider: &MockProvider, nofile: u32, listen: &str, extra: &[&str]) -> Gateway {
    std::fs::write(
        dir.join("policy-config.yaml"),
        format!(
            "pack: {{name: h, version: 1.0.0, enabled: true}}\npolicies: {{chain: []}}\nproviders:\n  targets:\n    - {{id: mock, provider: openai-compatible, base_url: \"{}\"}}\n",
            provider.url
        ),
    )
    .expect("write config");
    let script = format!("ulimit -n {nofile} && exec \"$0\" gateway run --listen {listen} \"$@\"");
    let addr = listen.replace("0.0.0.0", "127.0.0.1");
    let child = Command::new("sh")
        .args(["-c", &script, KT])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway starts");
    let gw = Gateway { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if http_with(&gw.addr, "GET", "/healthz", None, &[]).is_some_and(|r| r.status == 200) {
            return gw;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("gateway did not start on {}", gw.addr);
}

fn chat(addr: &str, stream: bool) -> kt_testkit::Answer {
    let body = json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    http_with(addr, "POST", "/v1/chat/completions", Some(body.as_bytes()), &[]).expect("an answer")
}

#[test]
fn idle_and_slow_connections_never_lock_a_new_client_out() {
    let tmp = tempfile::tempdir().expect("tmp");
    let provider = MockProvider::start(|_| Reply::json(200, chat_completion("fine", "m")));
    let gw = gateway(tmp.path(), &provider, 256, &["--header-timeout-secs", "30"]);
    // More idle sockets than the gateway has descriptors, and slow senders trickling heads.
    let mut idle: Vec<TcpStream> = Vec::new();
    let mut slow: Vec<TcpStream> = Vec::new();
    for i in 0..400 {
        let Ok(mut s) = TcpStream::connect(&gw.addr) else { break };
        if i % 4 == 0 {
            let _ = s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n");
            slow.push(s);
        } else {
            idle.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    for round in 0..5 {
        for s in &mut slow {
            let _ = s.write_all(b"X-Slow: 1\r\n");
        }
        // A new client gets in: at once, or within a few seconds when the machine is busy
        // accepting the backlog of hostile sockets (a lock-out never ends).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let answer = loop {
            let body = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).to_string();
            match http_with(&gw.addr, "POST", "/v1/chat/completions", Some(body.as_bytes()), &[]) {
                Some(r) if r.status == 200 => break Some(r),
                other if std::time::Instant::now() > deadline => break other,
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        let r = answer.unwrap_or_else(|| panic!("round {round}: locked out: no answer"));
        assert_eq!(r.status, 200, "round {round}: {}", r.text());
        std::thread::sleep(Duration::from_millis(300));
    }
    drop((idle, slow));
}

#[test]
fn clients_that_never_read_do_not_hold_upstream_slots() {
    let tmp = tempfile::tempdir().expect("tmp");
    let big = "x".repeat(8 * 1024 * 1024);
    let provider = MockProvider::start(move |req| {
        if req.wants_stream() {
            Reply::sse_data(chat_chunks(&big, 64 * 1024, false), 0)
        } else {
            Reply::json(200, chat_completion(&big, "m"))
        }
    });
    let gw = gateway(
        tmp.path(),
        &provider,
        4096,
        &["--max-concurrency", "4", "--write-timeout-secs", "2"],
    );
    for stream in [false, true] {
        // Four clients ask for 8 MiB and never read a byte of it.
        let body = json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let stalled: Vec<TcpStream> = (0..4)
            .map(|_| {
                let mut s = TcpStream::connect(&gw.addr).expect("connect");
                write!(
                    s,
                    "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .expect("write");
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        // A fifth client is served: the slots were given back (whole answers: once read
        // from upstream; streams: once the stalled writes timed out).
        let r = chat(&gw.addr, stream);
        assert_eq!(
            r.status,
            200,
            "stream={stream}: {}",
            &r.text()[..r.text().len().min(300)]
        );
        assert!(r.text().len() > 8 * 1024 * 1024, "stream={stream}: the whole answer");
        drop(stalled);
    }
}

#[test]
fn broken_bodies_get_400_and_408_not_500() {
    let tmp = tempfile::tempdir().expect("tmp");
    let provider = MockProvider::start(|_| Reply::json(200, chat_completion("fine", "m")));
    let gw = gateway(tmp.path(), &provider, 4096, &["--body-timeout-secs", "1"]);
    let answer = |raw: &[u8]| {
        let mut s = TcpStream::connect(&gw.addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        s.write_all(raw).expect("write");
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let bad_chunk = answer(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n{}\r\n0\r\n\r\n",
    );
    assert!(bad_chunk.starts_with("HTTP/1.1 400"), "{bad_chunk}");
    assert!(
        bad_chunk.contains("\"bad_request\"") && !bad_chunk.to_lowercase().contains("pingora"),
        "{bad_chunk}"
    );
    let stalled = answer(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":",
    );
    assert!(stalled.starts_with("HTTP/1.1 408"), "{stalled}");
    assert!(stalled.contains("request_timeout"), "{stalled}");
    assert_eq!(provider.hits(), 0, "nothing reached the provider");
}

#[test]
fn client_model_names_never_become_metric_series() {
    let tmp = tempfile::tempdir().expect("tmp");
    let provider = MockProvider::start(|_| Reply::json(200, chat_completion("fine", "m")));
    let gw = gateway(tmp.path(), &provider, 4096, &[]);
    for i in 0..40 {
        let model = format!("zz{i}{}", "q".repeat(100 * 1024));
        let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
        let r = http_with(&gw.addr, "POST", "/v1/chat/completions", Some(body.as_bytes()), &[]).expect("answer");
        assert!(r.status < 500, "{}", r.status);
    }
    let metrics = http_with(&gw.addr, "GET", "/metrics", None, &[])
        .expect("metrics")
        .text();
    assert!(metrics.len() < 64 * 1024, "/metrics grew to {} bytes", metrics.len());
    assert!(
        !metrics.contains("qqqq") && !metrics.contains("zz1"),
        "a client's model became a label"
    );
    assert!(
        metrics.contains("keeptrusts_gateway_requests_total{model=\"other\",provider=\"mock\",status=\"200\"} 40"),
        "{metrics}"
    );
}

/// A non-loopback address of this machine, if it has one (no packet is sent).
fn lan_ip() -> Option<std::net::IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn admin_routes_without_a_token_answer_only_on_loopback() {
    let Some(ip) = lan_ip() else {
        eprintln!("skipped: this machine has no non-loopback address to call the gateway from");
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let provider = MockProvider::start(|_| Reply::json(200, chat_completion("fine", "m")));
    let port = free_addr().rsplit(':').next().expect("port").to_owned();
    let gw = gateway_on(tmp.path(), &provider, 4096, &format!("0.0.0.0:{port}"), &[]);
    let remote = format!("{ip}:{port}");
    for (method, path) in [
        ("GET", "/keeptrusts/config"),
        ("POST", "/keeptrusts/config/reload"),
        ("GET", "/keeptrusts/providers/metrics"),
    ] {
        let r = http_with(&remote, method, path, None, &[]).expect("answer");
        assert_eq!(r.status, 403, "{method} {path} from {ip}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "admin_loopback_only");
        let local = http_with(&gw.addr, method, path, None, &[]).expect("answer");
        assert_eq!(local.status, 200, "{method} {path} on loopback: {}", local.text());
    }
    assert_eq!(
        http_with(&remote, "GET", "/healthz", None, &[]).expect("answer").status,
        200,
        "other routes stay open"
    );
}

#[test]
fn an_upstream_that_never_finishes_is_cut_off_at_the_deadline() {
    let tmp = tempfile::tempdir().expect("tmp");
    // Thirty events, 200 ms apart: six seconds in all, each read well within the target's
    // own timeout.
    let provider = MockProvider::start(|_| Reply::Sse {
        events: chat_chunks(&"slow ".repeat(30), 5, false)
            .into_iter()
            .map(|d| (None, d))
            .collect(),
        split: 0,
        pace: Duration::from_millis(200),
    });
    let gw = gateway(tmp.path(), &provider, 4096, &["--upstream-deadline-secs", "1"]);
    let whole = chat(&gw.addr, false);
    assert_eq!(whole.status, 504, "{}", whole.text());
    assert_eq!(whole.json()["error"]["code"], "upstream_timeout");
    assert!(whole.text().contains("--upstream-deadline-secs"), "{}", whole.text());
    let streamed = chat(&gw.addr, true);
    assert_eq!(streamed.status, 200, "the stream had begun");
    let text = streamed.text();
    assert!(text.matches("slow").count() < 30, "the stream was cut off: {text}");
    assert!(
        text.contains("upstream_stream_failed") && text.contains("--upstream-deadline-secs"),
        "and ended with the stream error event: {text}"
    );
}
