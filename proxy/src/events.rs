//! Decision events: one JSON line per evaluated request, written by a background task from
//! a bounded queue. Traffic never waits on it: when the queue is full the event is dropped
//! and counted, and the count is reported on `/health`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde_json::Value;
use tokio::sync::{Mutex, mpsc};

/// Events waiting to be written before new ones are dropped.
pub const QUEUE: usize = 8192;

/// Where events go.
#[derive(Debug, Clone)]
pub enum EventTarget {
    Stdout,
    File(PathBuf),
}

/// The sending side, shared by all requests.
#[derive(Debug, Clone)]
pub struct EventSink {
    tx: Option<mpsc::Sender<Value>>,
    dropped: Arc<AtomicU64>,
    written: Arc<AtomicU64>,
}

impl EventSink {
    /// A sink that records nothing (no `--events` given).
    pub fn disabled() -> Self {
        EventSink {
            tx: None,
            dropped: Arc::new(AtomicU64::new(0)),
            written: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Whether events are recorded at all (callers skip building them otherwise).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues an event without waiting; a full queue drops it.
    pub fn emit(&self, event: Value) {
        if let Some(tx) = &self.tx
            && tx.try_send(event).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
}

/// The writing side, run as a background service.
pub struct EventWriter {
    rx: Mutex<mpsc::Receiver<Value>>,
    target: EventTarget,
    written: Arc<AtomicU64>,
}

pub fn channel(target: EventTarget) -> (EventSink, EventWriter) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let written = Arc::new(AtomicU64::new(0));
    let sink = EventSink {
        tx: Some(tx),
        dropped: Arc::new(AtomicU64::new(0)),
        written: Arc::clone(&written),
    };
    (
        sink,
        EventWriter {
            rx: Mutex::new(rx),
            target,
            written,
        },
    )
}

/// Opens the events file for appending; a new one is readable by the owner only, and an
/// existing one is narrowed to that.
fn private_append(p: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let f = options.open(p)?;
    #[cfg(unix)]
    f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(f)
}

impl EventWriter {
    fn open(&self) -> Box<dyn Write + Send> {
        match &self.target {
            EventTarget::Stdout => Box::new(std::io::stdout()),
            EventTarget::File(p) => match private_append(p) {
                Ok(f) => Box::new(std::io::BufWriter::new(f)),
                Err(e) => {
                    tracing::warn!(
                        "cannot open events file {}: {e}; decision events go to stdout",
                        p.display()
                    );
                    Box::new(std::io::stdout())
                }
            },
        }
    }
}

#[async_trait]
impl BackgroundService for EventWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut out = self.open();
        let mut rx = self.rx.lock().await;
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    while let Ok(e) = rx.try_recv() {
                        let _ = writeln!(out, "{e}");
                    }
                    let _ = out.flush();
                    return;
                }
                next = rx.recv() => {
                    let Some(e) = next else { return };
                    let _ = writeln!(out, "{e}");
                    self.written.fetch_add(1, Ordering::Relaxed);
                    // Write what is already queued, then flush once.
                    while let Ok(e) = rx.try_recv() {
                        let _ = writeln!(out, "{e}");
                        self.written.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = out.flush();
                }
            }
        }
    }
}

/// The current UTC time as RFC 3339 with microseconds (`2026-11-25T16:30:00.123456Z`).
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    kt_api::rfc3339(now.as_secs() as i64, Some(now.subsec_micros()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        assert!(rfc3339_now().ends_with('Z') && rfc3339_now().len() == 27);
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (sink, _writer) = channel(EventTarget::Stdout);
        for i in 0..(QUEUE + 10) {
            sink.emit(serde_json::json!({"n": i}));
        }
        assert_eq!(sink.dropped(), 10);
    }
}
