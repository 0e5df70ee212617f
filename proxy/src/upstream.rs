//! The upstream target and the one call the gateway makes to it: resolve the host off the
//! worker (no blocking DNS), reuse pooled connections, send the policy-checked body with an
//! exact `Content-Length`, and read the answer whole, bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use pingora::connectors::TransportConnector;
use pingora::protocols::Stream;
use pingora::time::fast_timeout::fast_timeout;
use pingora::upstreams::peer::{HttpPeer, Peer};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};

use crate::h1::{Answer, ReadError};

/// Where allowed requests go.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub id: String,
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix of the base URL, without a trailing slash (e.g. `/v1`).
    pub base_path: String,
    /// Credential header sent upstream (name, value); `None` passes the client's
    /// `Authorization` through.
    pub auth: Option<(String, String)>,
    /// The API the upstream speaks.
    pub format: WireFormat,
    /// Azure OpenAI: (deployment, api-version); paths become
    /// `/openai/deployments/<deployment>/<api>?api-version=<version>`.
    pub azure: Option<(String, String)>,
    /// Full path for chat requests (`path_template`), replacing the computed one.
    pub chat_path: Option<String>,
    /// The `Host` header value (the port only when it is not the scheme's default).
    host_header: String,
    /// The peer built for the last resolved address, and when it was built. Pingora peers
    /// are built once and reused: the connection pool keys on them.
    peer: std::sync::Arc<std::sync::Mutex<Option<CachedPeer>>>,
}

#[derive(Debug)]
struct CachedPeer {
    peer: Arc<HttpPeer>,
    /// The peer's pool key (address, TLS, SNI…), computed once.
    key: u64,
    at: Instant,
    timeout: Duration,
}

/// How long an upstream connection may sit idle in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream address.
const IDLE_PER_PEER: usize = 256;

/// Upstream connections: new ones through Pingora's transport connector (TCP, TLS), idle
/// ones kept here. Taking or returning one is a lock and a `Vec` push or pop: no task per
/// idle connection and no hand-over between tasks. A connection the upstream closed while
/// idle is noticed when it is taken (its socket is readable: a readiness check, no system
/// call) and dropped.
pub struct UpstreamPool {
    transport: TransportConnector,
    /// (pool key, idle connections, most recently returned last).
    idle: std::sync::Mutex<Vec<(u64, IdleConns)>>,
    /// The longest a whole upstream answer (head, body or stream) may take.
    pub(crate) answer_deadline: Duration,
}

/// The default of `--upstream-deadline-secs`.
pub const ANSWER_DEADLINE: Duration = Duration::from_secs(900);

/// Idle connections to one peer and when each was returned, oldest first.
type IdleConns = Vec<(Stream, Instant)>;

impl Default for UpstreamPool {
    fn default() -> Self {
        UpstreamPool {
            transport: TransportConnector::new(None),
            idle: std::sync::Mutex::new(Vec::new()),
            answer_deadline: ANSWER_DEADLINE,
        }
    }
}

impl UpstreamPool {
    /// An idle connection to `key` that is still open, if any.
    fn take(&self, key: u64) -> Option<Stream> {
        let mut idle = self.idle.lock().ok()?;
        let (_, conns) = idle.iter_mut().find(|(k, _)| *k == key)?;
        expire(conns);
        while let Some((mut stream, _)) = conns.pop() {
            if still_idle(&mut stream) {
                return Some(stream);
            }
        }
        None
    }

    /// Keeps `stream` for the next request to `key`.
    fn put(&self, key: u64, mut stream: Stream) {
        if !still_idle(&mut stream) {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else { return };
        let i = match idle.iter().position(|(k, _)| *k == key) {
            Some(i) => i,
            None => {
                idle.push((key, Vec::new()));
                idle.len() - 1
            }
        };
        let conns = &mut idle[i].1;
        expire(conns);
        if conns.len() >= IDLE_PER_PEER {
            conns.remove(0);
        }
        conns.push((stream, Instant::now()));
    }

    /// Idle connections kept for `key`.
    #[cfg(test)]
    fn idle_count(&self, key: u64) -> usize {
        let idle = self.idle.lock().expect("pool lock");
        idle.iter().find(|(k, _)| *k == key).map_or(0, |(_, c)| c.len())
    }
}

/// Drops the connections idle for longer than `IDLE_TIMEOUT` (the oldest come first).
fn expire(conns: &mut IdleConns) {
    let stale = conns
        .iter()
        .take_while(|(_, since)| since.elapsed() >= IDLE_TIMEOUT)
        .count();
    if stale > 0 {
        conns.drain(..stale);
    }
}

/// Whether an idle connection can carry another request: nothing to read (the upstream
/// neither closed it nor sent anything unasked). Polled once with a no-op waker; a socket
/// with no pending readiness answers `Pending` without a system call.
fn still_idle(stream: &mut Stream) -> bool {
    let mut byte = [0u8; 1];
    let mut buf = ReadBuf::new(&mut byte);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(stream).poll_read(&mut cx, &mut buf).is_pending()
}

/// How long a resolved upstream address is reused.
const DNS_TTL: Duration = Duration::from_secs(30);

/// Bodies up to this size are copied behind the request head so both leave in one write.
const COALESCE_MAX: usize = 64 * 1024;

/// Request/response format of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// OpenAI chat completions (`/chat/completions`).
    OpenAi,
    /// Anthropic Messages (`/messages`, `anthropic-version` header).
    Anthropic,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("invalid upstream URL '{0}': {1}")]
    BadUrl(String, String),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, String),
    #[error("upstream {0} failed: {1}")]
    Io(String, String),
    #[error("upstream answer is larger than {0} bytes")]
    TooLarge(u64),
    #[error("upstream {0} did not answer within {1} ms")]
    Timeout(String, u64),
    #[error("upstream {0} did not finish its answer within {1} s (--upstream-deadline-secs)")]
    Deadline(String, u64),
}

impl Upstream {
    /// Parses an http(s) base URL such as `https://api.openai.com/v1`.
    /// An empty path means the conventional `/v1`.
    pub fn from_url(id: &str, url: &str, auth: Option<(String, String)>) -> Result<Self, UpstreamError> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| UpstreamError::BadUrl(url.into(), e.to_string()))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(UpstreamError::BadUrl(url.into(), "scheme must be http or https".into())),
        };
        let host = uri
            .host()
            .ok_or_else(|| UpstreamError::BadUrl(url.into(), "no host".into()))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let base_path = match uri.path().trim_end_matches('/') {
            "" => "/v1".to_owned(),
            p => p.to_owned(),
        };
        let host_header = if (tls && port == 443) || (!tls && port == 80) {
            host.clone()
        } else {
            format!("{host}:{port}")
        };
        Ok(Upstream {
            id: id.to_owned(),
            tls,
            host,
            port,
            host_header,
            base_path,
            auth,
            format: WireFormat::OpenAi,
            azure: None,
            chat_path: None,
            peer: Default::default(),
        })
    }

    /// An Azure OpenAI resource such as `https://<resource>.openai.azure.com`.
    pub fn azure(
        id: &str,
        url: &str,
        deployment: &str,
        api_version: &str,
        auth: Option<(String, String)>,
    ) -> Result<Self, UpstreamError> {
        let mut u = Upstream::from_url(id, url, auth)?;
        let path = url.split("://").nth(1).and_then(|r| r.find('/').map(|i| &r[i..]));
        u.base_path = path.unwrap_or("").trim_end_matches('/').to_owned();
        u.azure = Some((deployment.to_owned(), api_version.to_owned()));
        Ok(u)
    }

    /// The request path for an API path such as `/chat/completions`.
    pub fn path_for(&self, api: &str) -> String {
        if api == "/chat/completions"
            && let Some(p) = &self.chat_path
        {
            return p.clone();
        }
        match &self.azure {
            Some((deployment, version)) => {
                format!(
                    "{}/openai/deployments/{deployment}{api}?api-version={version}",
                    self.base_path
                )
            }
            None => [self.base_path.as_str(), api].concat(),
        }
    }

    /// The peer to connect to: IP literals directly, host names through the resolver (off
    /// the worker threads). Built once and reused for `DNS_TTL` (IP literals: for good).
    async fn peer(&self, timeout: Duration) -> Result<(Arc<HttpPeer>, u64), UpstreamError> {
        if let Ok(cached) = self.peer.lock()
            && let Some(c) = cached.as_ref()
            && c.timeout == timeout
            && (self.ip_literal().is_some() || c.at.elapsed() < DNS_TTL)
        {
            return Ok((Arc::clone(&c.peer), c.key));
        }
        let addr = match self.ip_literal() {
            Some(ip) => SocketAddr::new(ip, self.port),
            None => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|e| UpstreamError::Resolve(self.host.clone(), e.to_string()))?
                .next()
                .ok_or_else(|| UpstreamError::Resolve(self.host.clone(), "no address".into()))?,
        };
        let mut peer = HttpPeer::new(addr, self.tls, self.host.clone());
        peer.options.connection_timeout = Some(Duration::from_secs(5));
        peer.options.total_connection_timeout = Some(Duration::from_secs(10));
        // Reads and writes are bounded by the gateway's own timer (`fast_timeout`, see
        // `send` and `Exchange::chunk`), which costs no system call when armed.
        peer.options.idle_timeout = Some(IDLE_TIMEOUT);
        let key = peer.reuse_hash();
        let peer = Arc::new(peer);
        if let Ok(mut cached) = self.peer.lock() {
            *cached = Some(CachedPeer {
                peer: Arc::clone(&peer),
                key,
                at: Instant::now(),
                timeout,
            });
        }
        Ok((peer, key))
    }

    /// The upstream request's header fields, in order (name, value).
    fn request_fields<'a>(&'a self, len: &'a str, client_auth: Option<&'a str>) -> [Option<(&'a str, &'a str)>; 6] {
        let auth = match (&self.auth, client_auth) {
            (Some((name, value)), _) => Some((name.as_str(), value.as_str())),
            (None, Some(client)) => Some(("authorization", client)),
            (None, None) => None,
        };
        [
            Some(("host", self.host_header.as_str())),
            Some(("content-type", "application/json")),
            Some(("content-length", len)),
            Some(("accept-encoding", "identity")),
            (self.format == WireFormat::Anthropic).then_some(("anthropic-version", "2023-06-01")),
            auth,
        ]
    }

    /// The HTTP/1.1 request head for a POST of `len` bytes to the API path `path`, with room
    /// for the body behind it. Header values that could split the head are refused.
    fn request_head(&self, path: &str, len: usize, client_auth: Option<&str>) -> Result<Vec<u8>, UpstreamError> {
        let target = self.path_for(path);
        if !target.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(UpstreamError::BadUrl(
                target,
                "the request path has a space or control byte".into(),
            ));
        }
        let mut len_text = String::with_capacity(20);
        crate::ids::push_decimal(&mut len_text, len as u64);
        let mut head = Vec::with_capacity(256 + target.len() + len.min(COALESCE_MAX));
        head.extend_from_slice(b"POST ");
        head.extend_from_slice(target.as_bytes());
        head.extend_from_slice(b" HTTP/1.1\r\n");
        for (name, value) in self.request_fields(&len_text, client_auth).into_iter().flatten() {
            let bad_name = !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            if bad_name || value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
                return Err(UpstreamError::Io(
                    self.id.clone(),
                    format!("the upstream header '{name}' has an invalid name or a control character in its value"),
                ));
            }
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"\r\n");
        Ok(head)
    }

    fn ip_literal(&self) -> Option<std::net::IpAddr> {
        self.host.trim_matches(['[', ']']).parse().ok()
    }

    /// POSTs `body` to the API path `path` and reads the response header within `timeout`;
    /// the body is read from the returned exchange (each read bounded by `timeout` too).
    pub async fn send<'c>(
        &self,
        pool: &'c UpstreamPool,
        path: &str,
        body: Bytes,
        client_auth: Option<&str>,
        timeout: Duration,
    ) -> Result<Exchange<'c>, UpstreamError> {
        match fast_timeout(timeout, self.send_inner(pool, path, body, client_auth, timeout)).await {
            Ok(r) => r,
            Err(_) => Err(UpstreamError::Timeout(self.id.clone(), timeout.as_millis() as u64)),
        }
    }

    async fn send_inner<'c>(
        &self,
        pool: &'c UpstreamPool,
        path: &str,
        body: Bytes,
        client_auth: Option<&str>,
        timeout: Duration,
    ) -> Result<Exchange<'c>, UpstreamError> {
        let started = Instant::now();
        let io = |e: Box<pingora::Error>| {
            if matches!(
                e.etype(),
                pingora::ErrorType::ReadTimedout | pingora::ErrorType::ConnectTimedout
            ) {
                UpstreamError::Timeout(self.id.clone(), timeout.as_millis() as u64)
            } else {
                UpstreamError::Io(self.id.clone(), e.to_string())
            }
        };
        let (peer, key) = self.peer(timeout).await?;
        // Head and body leave in one write (one segment, one wake-up of the upstream).
        let mut wire = self.request_head(path, body.len(), client_auth)?;
        let coalesced = body.len() <= COALESCE_MAX;
        if coalesced {
            wire.extend_from_slice(&body);
        }
        let rest: &[u8] = if coalesced { &[] } else { &body };
        let mut pooled = pool.take(key);
        let (stream, answer) = loop {
            let reused = pooled.is_some();
            let stream = match pooled.take() {
                Some(stream) => stream,
                // Boxed: connecting (TCP, TLS) is most of this future's size.
                None => Box::pin(pool.transport.new_stream(&*peer)).await.map_err(io)?,
            };
            match exchange_once(stream, &wire, rest).await {
                Ok(x) => break x,
                // A pooled connection the upstream closed as it was taken (the request could
                // not be written, or the connection ended before any answer): it goes once
                // more on a fresh connection.
                Err(Failed::Stale(_)) if reused => {}
                Err(Failed::Stale(e)) => {
                    return Err(UpstreamError::Io(
                        self.id.clone(),
                        format!("while writing the request: {e}"),
                    ));
                }
                Err(Failed::Answer(e)) => return Err(UpstreamError::Io(self.id.clone(), e)),
            }
        };
        Ok(Exchange {
            pool,
            stream,
            answer,
            key,
            id: self.id.clone(),
            timeout,
            deadline: started + pool.answer_deadline,
        })
    }
}

/// Why one try on one connection failed.
enum Failed {
    /// The request could not be written, or the connection ended before any answer.
    Stale(String),
    Answer(String),
}

/// Writes the request (`wire`, then `rest` when the body did not fit behind the head) and
/// reads the answer's head.
async fn exchange_once(mut stream: Stream, wire: &[u8], rest: &[u8]) -> Result<(Stream, Answer), Failed> {
    let mut wrote = stream.write_all(wire).await;
    if wrote.is_ok() && !rest.is_empty() {
        wrote = stream.write_all(rest).await;
    }
    wrote
        .and(stream.flush().await)
        .map_err(|e| Failed::Stale(e.to_string()))?;
    match Answer::read_head(&mut stream).await {
        Ok(answer) => Ok((stream, answer)),
        Err(ReadError::NothingRead(e)) => Err(Failed::Stale(e)),
        Err(ReadError::Broken(e)) => Err(Failed::Answer(e)),
    }
}

/// An upstream response being read.
pub struct Exchange<'c> {
    pool: &'c UpstreamPool,
    stream: Stream,
    answer: Answer,
    /// The pool key of the connection.
    key: u64,
    id: String,
    /// Bound on each body read.
    timeout: Duration,
    /// The whole answer must be read by then (`--upstream-deadline-secs`).
    deadline: Instant,
}

impl Exchange<'_> {
    /// The answer's status code.
    pub fn status(&self) -> u16 {
        self.answer.status
    }

    /// The next body chunk if it can be had without waiting (already read, or readable
    /// now). A read that is not ready has consumed nothing.
    pub fn ready_chunk(&mut self) -> Option<Result<Option<Bytes>, UpstreamError>> {
        let read = poll_once(self.answer.next(&mut self.stream))?;
        Some(read.map_err(|e| UpstreamError::Io(self.id.clone(), e)))
    }

    /// The next body chunk; `None` at the end. Only a read that has to wait arms the timer.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        let read = match poll_once(self.answer.next(&mut self.stream)) {
            Some(read) => read,
            None => {
                let left = self.deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(UpstreamError::Deadline(
                        self.id.clone(),
                        self.pool.answer_deadline.as_secs(),
                    ));
                }
                match fast_timeout(self.timeout.min(left), self.answer.next(&mut self.stream)).await {
                    Ok(read) => read,
                    Err(_) if left <= self.timeout => {
                        return Err(UpstreamError::Deadline(
                            self.id.clone(),
                            self.pool.answer_deadline.as_secs(),
                        ));
                    }
                    Err(_) => return Err(UpstreamError::Timeout(self.id.clone(), self.timeout.as_millis() as u64)),
                }
            }
        };
        read.map_err(|e| UpstreamError::Io(self.id.clone(), e))
    }

    /// A response header value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.answer.headers.get(name).map(str::to_owned)
    }

    /// Reads the rest of the body, bounded, and returns the connection to the pool. A gzip
    /// or deflate body (sent although the gateway asked for identity) is decompressed,
    /// bounded the same way.
    pub async fn body(mut self, max: u64) -> Result<Bytes, UpstreamError> {
        let encoding = self.answer.headers.get("content-encoding").map(str::to_ascii_lowercase);
        // A body read in one chunk (the common case) is kept as it is; only more chunks are
        // gathered into one buffer.
        let mut first: Option<Bytes> = None;
        let mut out = Vec::new();
        while let Some(c) = self.chunk().await? {
            match first.take() {
                None if out.is_empty() => first = Some(c),
                f => {
                    out.extend_from_slice(f.as_deref().unwrap_or_default());
                    out.extend_from_slice(&c);
                }
            }
            if (first.as_ref().map_or(0, Bytes::len) + out.len()) as u64 > max {
                return Err(UpstreamError::TooLarge(max));
            }
        }
        let out = first.unwrap_or_else(|| Bytes::from(out));
        let id = std::mem::take(&mut self.id);
        self.release();
        match encoding.as_deref() {
            None | Some("identity") | Some("") => Ok(out),
            Some("gzip") | Some("x-gzip") => inflate(flate2::read::GzDecoder::new(&out[..]), max, &id),
            Some("deflate") => inflate(flate2::read::ZlibDecoder::new(&out[..]), max, &id),
            Some(other) => Err(UpstreamError::Io(id, format!("unsupported content-encoding '{other}'"))),
        }
    }

    /// Returns the connection to the pool when the body was read to its end and the
    /// connection can carry another request; otherwise it is closed.
    pub fn release(self) {
        if self.answer.reusable() {
            self.pool.put(self.key, self.stream);
        }
    }
}

/// Polls `f` once; its output if it was ready.
fn poll_once<F: std::future::Future>(f: F) -> Option<F::Output> {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

fn inflate(reader: impl std::io::Read, max: u64, id: &str) -> Result<Bytes, UpstreamError> {
    use std::io::Read as _;
    let mut out = Vec::new();
    reader
        .take(max + 1)
        .read_to_end(&mut out)
        .map_err(|e| UpstreamError::Io(id.to_owned(), format!("cannot decompress the answer: {e}")))?;
    if out.len() as u64 > max {
        return Err(UpstreamError::TooLarge(max));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_base_urls() {
        let u = Upstream::from_url("t", "https://api.openai.com/v1/", None).expect("valid");
        assert!(u.tls && u.port == 443 && u.host == "api.openai.com" && u.base_path == "/v1");
        let u = Upstream::from_url("t", "http://127.0.0.1:8000", None).expect("valid");
        assert!(!u.tls && u.port == 8000 && u.base_path == "/v1");
        assert!(Upstream::from_url("t", "ftp://x", None).is_err());
        assert!(Upstream::from_url("t", "not a url", None).is_err());
    }

    #[test]
    fn request_head_is_one_http1_head_ready_for_the_body() {
        let mut u = Upstream::from_url("t", "http://127.0.0.1:8000/v1", Some(("x-api-key".into(), "k1".into())))
            .expect("valid");
        u.format = WireFormat::Anthropic;
        let head = u.request_head("/messages", 42, Some("Bearer client")).expect("head");
        assert_eq!(
            String::from_utf8(head).expect("ascii"),
            "POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:8000\r\ncontent-type: application/json\r\n\
             content-length: 42\r\naccept-encoding: identity\r\nanthropic-version: 2023-06-01\r\n\
             x-api-key: k1\r\n\r\n",
            "the target's own key wins over the client's"
        );
        let u = Upstream::from_url("t", "https://api.example.com/v1", None).expect("valid");
        let head =
            String::from_utf8(u.request_head("/chat/completions", 0, Some("Bearer c")).expect("head")).expect("ascii");
        assert!(head.contains("host: api.example.com\r\n") && head.ends_with("authorization: Bearer c\r\n\r\n"));
    }

    /// A connected pair: the gateway's end as a pool stream, and the upstream's end.
    async fn pair() -> (Stream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (ours, theirs) = tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        let ours: pingora::protocols::l4::stream::Stream = ours.expect("connect").into();
        (Box::new(ours), theirs.expect("accept").0)
    }

    #[test]
    fn the_pool_reuses_open_connections_and_drops_closed_ones() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let pool = UpstreamPool::default();
            assert!(pool.take(1).is_none(), "empty pool");
            let (a, _a_peer) = pair().await;
            let (b, b_peer) = pair().await;
            pool.put(1, a);
            pool.put(1, b);
            assert_eq!(pool.idle_count(1), 2);
            assert!(pool.take(2).is_none(), "another key has nothing");
            // The upstream closes the most recently returned connection while it is idle.
            drop(b_peer);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let reused = pool.take(1).expect("the open connection is taken");
            assert_eq!(pool.idle_count(1), 0, "the closed one was dropped on the way");
            pool.put(1, reused);
            assert_eq!(pool.idle_count(1), 1);
            // A connection the upstream wrote to unasked is not kept.
            let (c, mut c_peer) = pair().await;
            c_peer.write_all(b"HTTP/1.1 200 OK\r\n").await.expect("write");
            tokio::time::sleep(Duration::from_millis(50)).await;
            pool.put(1, c);
            assert_eq!(pool.idle_count(1), 1, "only the clean connection stays");
        });
    }

    /// Reads one request (head and a small body) from `sock`; `false` at end of stream.
    async fn read_request(sock: &mut tokio::net::TcpStream) -> bool {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 4096];
        let mut got = 0;
        loop {
            match sock.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => got += n,
            }
            let text = String::from_utf8_lossy(&buf[..got]);
            if let Some(end) = text.find("\r\n\r\n") {
                let len: usize = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if got >= end + 4 + len {
                    return true;
                }
            }
        }
    }

    #[test]
    fn a_pooled_connection_closed_under_the_request_is_retried_once_on_a_fresh_one() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
            let server = tokio::spawn(async move {
                let mut served = 0;
                // The first connection answers once, then takes the next request and closes
                // without answering: the race of an upstream closing an idle connection.
                let (mut first, _) = listener.accept().await.expect("accept");
                assert!(read_request(&mut first).await);
                first.write_all(OK).await.expect("answer");
                served += 1;
                assert!(read_request(&mut first).await, "the pooled connection is reused");
                drop(first);
                let (mut second, _) = listener.accept().await.expect("accept");
                assert!(read_request(&mut second).await, "the request goes again");
                second.write_all(OK).await.expect("answer");
                served + 1
            });
            let u = Upstream::from_url("t", &format!("http://{addr}/v1"), None).expect("valid");
            let pool = UpstreamPool::default();
            let t = Duration::from_secs(5);
            let first = u
                .send(&pool, "/chat/completions", Bytes::from_static(b"{}"), None, t)
                .await;
            let first = first.expect("first answer");
            assert_eq!(&first.body(1024).await.expect("body")[..], b"{}");
            let again = u
                .send(&pool, "/chat/completions", Bytes::from_static(b"{}"), None, t)
                .await;
            let again = again.expect("the retry on a fresh connection answers");
            assert_eq!(again.status(), 200);
            assert_eq!(server.await.expect("server"), 2);
        });
    }

    #[test]
    fn request_head_refuses_what_would_split_it() {
        let u = Upstream::from_url(
            "t",
            "http://127.0.0.1:8000",
            Some(("api-key".into(), "k\r\nx-evil: 1".into())),
        )
        .expect("valid");
        let e = u
            .request_head("/chat/completions", 1, None)
            .expect_err("CRLF in a value");
        assert!(e.to_string().contains("'api-key'"), "{e}");
        let u = Upstream::from_url("t", "http://127.0.0.1:8000", Some(("bad name".into(), "k".into()))).expect("valid");
        assert!(
            u.request_head("/chat/completions", 1, None).is_err(),
            "space in a header name"
        );
        let mut u = Upstream::from_url("t", "http://127.0.0.1:8000", None).expect("valid");
        u.chat_path = Some("/v1/chat completions".into());
        assert!(
            u.request_head("/chat/completions", 1, None).is_err(),
            "space in the path"
        );
    }
}
