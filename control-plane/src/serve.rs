//! The control plane's HTTP/1.1 listener, with the limits a server on a shared network
//! needs: a deadline for each request head (idle keep-alive connections included), a
//! deadline for each request, and a cap on open connections beyond which new ones are
//! closed at once.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::ApiError;

/// Limits of the listener; `kt server` flags set them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head (and an idle keep-alive connection's next one) must arrive within this.
    pub header_timeout: Duration,
    /// A request body must arrive within this.
    pub body_timeout: Duration,
    /// A whole request, body and answer included (managed gateways' long-polls wait up to
    /// 60 s within it).
    pub request_timeout: Duration,
    /// Open connections at most; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// Open connections from one client address at most.
    pub max_connections_per_client: usize,
    /// A write to a client that makes no progress for this long ends the connection (a
    /// client that pipelines requests and never reads the answers).
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(90),
            max_connections: 1024,
            max_connections_per_client: 128,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let deadline = limits.request_timeout;
    let app = app.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        request_deadline(deadline, req, next)
    }));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let clients: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and similar: wait instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            tracing::debug!(%peer, "connection refused: {} connections open", limits.max_connections);
            drop(stream);
            continue;
        };
        let Some(per_client) = PerClient::enter(&clients, peer.ip(), limits.max_connections_per_client) else {
            tracing::debug!(%peer, "connection refused: {} connections open from this client", limits.max_connections_per_client);
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        // Handlers read the client's address (login throttling) as `ConnectInfo`.
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            req.extensions_mut().insert(BodyTimeout(limits.body_timeout));
            let mut app = app.clone();
            async move { tower_service::Service::call(&mut app, req).await }
        });
        let stream = StallGuard::new(stream, limits.write_timeout);
        tokio::spawn(async move {
            let _slot = slot;
            let _per_client = per_client;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .max_headers(100);
            if let Err(e) = http.serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, "connection closed: {e}");
            }
        });
    }
}

/// Counts a client address's open connections while held.
struct PerClient {
    clients: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl PerClient {
    fn enter(clients: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr, max: usize) -> Option<PerClient> {
        let mut map = clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(ip).or_insert(0);
        if *n >= max.max(1) {
            return None;
        }
        *n += 1;
        Some(PerClient {
            clients: Arc::clone(clients),
            ip,
        })
    }
}

impl Drop for PerClient {
    fn drop(&mut self) {
        let mut map = self.clients.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// A socket whose writes fail once they have made no progress for `limit`.
struct StallGuard {
    inner: tokio::net::TcpStream,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl StallGuard {
    fn new(inner: tokio::net::TcpStream, limit: Duration) -> Self {
        StallGuard {
            inner,
            limit,
            stalled: None,
        }
    }

    /// Pending writes wait on the stall timer too; it firing is a write error.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        let timer = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client has not read its answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for StallGuard {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for StallGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            done => {
                self.stalled = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The body deadline, read by the JSON body extractor.
#[derive(Debug, Clone, Copy)]
pub struct BodyTimeout(pub Duration);

async fn request_deadline(limit: Duration, req: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            let mut r =
                ApiError::Timeout(format!("the request did not complete within {} s", limit.as_secs())).into_response();
            r.headers_mut()
                .insert("connection", axum::http::HeaderValue::from_static("close"));
            r
        }
    }
}
