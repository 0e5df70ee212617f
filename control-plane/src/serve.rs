//! The control plane's HTTP/1.1 listener, with the limits a server on a shared network
//! needs: a deadline for each request head (idle keep-alive connections included), a
//! deadline for each request, and a cap on open connections beyond which new ones are
//! closed at once.

use std::sync::Arc;
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
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(90),
            max_connections: 1024,
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
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        // Handlers read the client's address (login throttling) as `ConnectInfo`.
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            req.extensions_mut().insert(BodyTimeout(limits.body_timeout));
            let mut app = app.clone();
            async move { tower_service::Service::call(&mut app, req).await }
        });
        tokio::spawn(async move {
            let _slot = slot;
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
