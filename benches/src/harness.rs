//! Helpers the loopback harnesses (`kt-load`, `kt-fleet`) share: a minimal HTTP/1.1
//! client over tokio, process CPU accounting from /proc, and port handling.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type Res<T> = Result<T, String>;

pub fn memmem(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Reads up to the end of a header block: (head text, body offset, content-length).
pub async fn read_head(sock: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Option<(String, usize, usize)>> {
    loop {
        if let Some(p) = memmem(buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..p]).into_owned();
            let len = header_value(&head, "content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            return Ok(Some((head, p + 4, len)));
        }
        let mut tmp = [0u8; 65536];
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

/// One HTTP/1.1 request on a kept-alive connection; reads the whole answer (content-length
/// or chunked). Returns the status.
pub async fn exchange(sock: &mut TcpStream, req: &[u8], buf: &mut Vec<u8>) -> std::io::Result<u16> {
    sock.write_all(req).await?;
    buf.clear();
    let (head, start, len) = read_head(sock, buf)
        .await?
        .ok_or_else(|| std::io::Error::other("closed"))?;
    let status: u16 = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let chunked = header_value(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let mut tmp = [0u8; 65536];
    if chunked {
        while !(buf.len() >= start + 5 && (buf[start..].starts_with(b"0\r\n\r\n") || buf.ends_with(b"\r\n0\r\n\r\n"))) {
            let n = sock.read(&mut tmp).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed mid-body"));
            }
            buf.extend_from_slice(&tmp[..n]);
        }
    } else {
        while buf.len() < start + len {
            let n = sock.read(&mut tmp).await?;
            if n == 0 {
                return Err(std::io::Error::other("closed mid-body"));
            }
            buf.extend_from_slice(&tmp[..n]);
        }
    }
    Ok(status)
}

/// CPU seconds (user + system) a process has used, from /proc.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after ") ".
    let rest = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime, stime, cutime, cstime are fields 14-17 (1-based) → 11..=14 here.
    (ticks(11) + ticks(12) + ticks(13) + ticks(14)) / 100.0
}

/// Every pid in a process tree (nginx forks its worker).
pub fn tree(pid: u32) -> Vec<u32> {
    let mut out = vec![pid];
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
        for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            out.extend(tree(c));
        }
    }
    out
}

pub fn free_port() -> Res<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.to_string())
}

pub fn wait_listening(addr: &str) -> Res<()> {
    let sa: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&sa, Duration::from_millis(100)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listens on {addr}"))
}
