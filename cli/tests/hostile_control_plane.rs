//! `kt server` under hostile traffic: half-sent heads and idle sockets are closed, the
//! connection cap holds, slow bodies time out, parallel password guesses are throttled
//! with 429 whether the account exists or not, a busy port fails before anything is
//! created, and the data directory is private.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use kt_testkit::{ServerProcess, http_with};
use serde_json::json;

const KT: &str = env!("CARGO_BIN_EXE_kt");
const OWNER: &str = "owner@example.com";
const PASSWORD: &str = "correct horse battery";

fn start(dir: &Path, extra: &[&str]) -> ServerProcess {
    ServerProcess::start(
        KT,
        dir,
        extra,
        &[("KT_BOOTSTRAP_EMAIL", OWNER), ("KT_BOOTSTRAP_PASSWORD", PASSWORD)],
    )
}

/// Whether the server closed `s` within `within` (EOF or reset; an answer counts too).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

fn login(addr: &str, email: &str, password: &str) -> kt_testkit::Answer {
    let body = json!({"email": email, "password": password}).to_string();
    http_with(addr, "POST", "/v1/auth/login", Some(body.as_bytes()), &[]).expect("answer")
}

#[test]
fn idle_and_half_sent_connections_are_closed_and_the_cap_holds() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = start(
        tmp.path(),
        &[
            "--header-timeout-secs",
            "1",
            "--body-timeout-secs",
            "1",
            "--max-connections",
            "4",
        ],
    );
    // A head that never ends, and a connection that never sends one.
    let mut half = TcpStream::connect(&server.addr).expect("connect");
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").expect("write");
    let mut idle = TcpStream::connect(&server.addr).expect("connect");
    assert!(
        closed_within(&mut half, Duration::from_secs(5)),
        "half-sent head kept open"
    );
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)),
        "idle connection kept open"
    );

    // A body that stops arriving: 408.
    let mut slow = TcpStream::connect(&server.addr).expect("connect");
    slow.write_all(
        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"email\":",
    )
    .expect("write");
    slow.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let mut head = [0u8; 12];
    slow.read_exact(&mut head).expect("an answer");
    assert_eq!(&head, b"HTTP/1.1 408", "{}", String::from_utf8_lossy(&head));

    // Four open connections fill the cap: a fifth is closed at once, and once they go,
    // clients are served again.
    let held: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut s = TcpStream::connect(&server.addr).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").expect("write");
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = TcpStream::connect(&server.addr).expect("connect");
    let _ = fifth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = String::new();
    fifth.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let _ = fifth.read_to_string(&mut answer);
    assert!(!answer.contains("200 OK"), "served beyond the cap: {answer}");
    drop(held);
    let mut served = false;
    for _ in 0..50 {
        if http_with(&server.addr, "GET", "/healthz", None, &[]).is_some_and(|r| r.status == 200) {
            served = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(served, "a new client is served once the cap frees");
}

#[test]
fn parallel_guesses_are_throttled_alike_for_known_and_unknown_accounts() {
    let pg = kt_testkit::db::PgDb::create();
    let mut urls = vec![None];
    if let Some(db) = &pg {
        urls.push(Some(db.url()));
    }
    for url in urls {
        let tmp = tempfile::tempdir().expect("tmp");
        let mut env = vec![("KT_BOOTSTRAP_EMAIL", OWNER), ("KT_BOOTSTRAP_PASSWORD", PASSWORD)];
        if let Some(u) = url.as_deref() {
            env.push(("KT_DATABASE_URL", u));
        }
        let server = ServerProcess::start(KT, tmp.path(), &[], &env);
        guesses_are_throttled(&server);
    }
}

fn guesses_are_throttled(server: &ServerProcess) {
    for email in [OWNER, "nobody@example.com"] {
        let answers: Vec<kt_testkit::Answer> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..20)
                .map(|i| {
                    let addr = server.addr.clone();
                    s.spawn(move || login(&addr, email, &format!("wrong guess {i}")))
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        let refused = answers.iter().filter(|a| a.status == 401).count();
        let throttled: Vec<&kt_testkit::Answer> = answers.iter().filter(|a| a.status == 429).collect();
        assert_eq!(refused + throttled.len(), 20, "{email}: only 401 or 429");
        assert_eq!(refused, 10, "{email}: ten guesses per account and window are checked");
        let t = throttled[0];
        assert_eq!(t.json()["error"]["code"], "auth.throttled");
        assert!(
            t.header("retry-after")
                .and_then(|v| v.parse::<u64>().ok())
                .is_some_and(|s| s >= 1),
            "{email}: Retry-After"
        );
    }
    // The right password is throttled too while the window lasts: no oracle.
    assert_eq!(login(&server.addr, OWNER, PASSWORD).status, 429);
}

#[test]
fn a_busy_port_fails_before_bootstrap_and_the_data_directory_is_private() {
    let tmp = tempfile::tempdir().expect("tmp");
    let busy = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let data = tmp.path().join("busy");
    let out = std::process::Command::new(KT)
        .args(["server", "--listen", &addr, "--data-dir"])
        .arg(&data)
        .env("KT_BOOTSTRAP_EMAIL", OWNER)
        .env("KT_BOOTSTRAP_PASSWORD", PASSWORD)
        .env_remove("KT_DATABASE_URL")
        .output()
        .expect("kt runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(said.contains("cannot listen"), "{said}");
    assert!(
        !said.contains("Created organisation") && !said.contains("Log in with"),
        "{said}"
    );
    assert!(!data.join("kt.db").exists(), "nothing created on a busy port");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let dir = tmp.path().join("data");
        let server = start(&dir, &[]);
        assert_eq!(login(&server.addr, OWNER, PASSWORD).status, 200);
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700, "data directory");
        for f in ["kt.db", "kt.db-wal", "kt.db-shm", "secrets.key"] {
            let p = dir.join(f);
            if p.exists() {
                assert_eq!(mode(&p), 0o600, "{f}");
            } else {
                assert_ne!(f, "kt.db", "the database exists");
            }
        }
    }
}

#[test]
fn one_client_cannot_hold_every_connection_or_a_stalled_write() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = start(
        tmp.path(),
        &[
            "--max-connections-per-client",
            "3",
            "--write-timeout-secs",
            "1",
            "--header-timeout-secs",
            "30",
        ],
    );
    // Each held connection is served once (so the server has surely counted it) and
    // then stays open, idle, on keep-alive. The readiness probe's connection may still be
    // counted for a moment after it closed: a refused one is tried again.
    let held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut last = String::new();
            for _ in 0..50 {
                let mut s = TcpStream::connect(&server.addr).expect("connect");
                s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").expect("write");
                s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
                last = read_head(&mut s);
                if last.contains("200 OK") {
                    return s;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("a held connection was never served: {last}");
        })
        .collect();
    let mut fourth = TcpStream::connect(&server.addr).expect("connect");
    let _ = fourth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = String::new();
    fourth.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
    let _ = fourth.read_to_string(&mut answer);
    assert!(
        !answer.contains("200 OK"),
        "served a fourth connection from one client: {answer}"
    );
    drop(held);

    // A client that pipelines requests and never reads its answers is cut off.
    let mut greedy = TcpStream::connect(&server.addr).expect("connect");
    greedy.set_write_timeout(Some(Duration::from_secs(5))).expect("timeout");
    let one = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut sent = 0;
    while sent < 1_000_000 {
        if greedy.write_all(one).is_err() {
            break;
        }
        sent += 1;
    }
    std::thread::sleep(Duration::from_secs(3));
    greedy.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut buf = [0u8; 65536];
    let mut got = 0usize;
    let ended = loop {
        match greedy.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got += n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => break false,
            Err(_) => break true,
        }
    };
    assert!(ended, "the stalled connection was closed (read {got} bytes of answers)");
    assert_eq!(
        http_with(&server.addr, "GET", "/healthz", None, &[])
            .expect("answer")
            .status,
        200,
        "others are served"
    );
}

/// The peak resident memory of a process, in MiB (Linux: VmHWM).
fn peak_rss_mib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[test]
fn parallel_logins_hash_a_few_at_a_time() {
    let tmp = tempfile::tempdir().expect("tmp");
    let server = start(tmp.path(), &[]);
    let Some(before) = peak_rss_mib(server.child.id()) else {
        eprintln!("skipped: /proc/<pid>/status is not readable here");
        return;
    };
    // Forty-eight logins at once, each for an unknown account (each password hash takes
    // 19 MiB while it runs): they queue for a few hashing slots instead of all at once.
    let answers: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..48)
            .map(|i| {
                let addr = server.addr.clone();
                s.spawn(move || login(&addr, &format!("nobody{i}@example.com"), "wrong password").status)
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("thread")).collect()
    });
    assert!(answers.iter().all(|s| *s == 401), "{answers:?}");
    let after = peak_rss_mib(server.child.id()).expect("readable");
    assert!(
        after.saturating_sub(before) < 300,
        "peak memory grew by {} MiB for 48 parallel logins",
        after.saturating_sub(before)
    );
}

/// Reads one answer's head and its `Content-Length` body from a keep-alive connection.
fn read_head(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match s.read(&mut byte) {
            Ok(1) => buf.push(byte[0]),
            _ => break,
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_owned())
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    let _ = s.read_exact(&mut body);
    head
}
