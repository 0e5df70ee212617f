//! Client connection limits: how long a connection may idle between requests, how long a
//! request head and body may take to arrive, how long a write may stall, and how many
//! connections are served at once. Past the cap, a new connection first closes the
//! connections that have been waiting for a request head (idle keep-alive sockets and
//! slow senders), so a flood of them never keeps a new client out; when there are none to
//! close, the new connection is closed at once.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// The limits (`kt gateway run` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// A kept-alive connection waits this long for its next request.
    pub idle_timeout: Duration,
    /// A new connection's request head must be complete within this.
    pub header_timeout: Duration,
    /// A request body must be complete within this (408).
    pub body_timeout: Duration,
    /// A write to the client may stall this long before the connection is dropped.
    pub write_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Descriptors kept free for upstream connections, files and the listener.
const FD_RESERVE: u64 = 64;

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            idle_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            max_connections: default_max_connections(),
        }
    }
}

/// 10 000, or fewer when the open-file limit is lower: half of what the limit leaves
/// after a reserve (each client connection may need an upstream one).
pub fn default_max_connections() -> usize {
    let cap = 10_000u64;
    let limit = open_file_limit().unwrap_or(1024);
    usize::try_from(cap.min(limit.saturating_sub(FD_RESERVE) / 2).max(16)).unwrap_or(16)
}

/// The soft open-file limit of this process (Linux: `/proc/self/limits`).
pub fn open_file_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.trim_start_matches("Max open files").split_whitespace().next()?;
    match soft {
        "unlimited" => Some(u64::MAX),
        n => n.parse().ok(),
    }
}

/// The connections of one listener.
#[derive(Debug, Default)]
pub struct Connections {
    open: AtomicUsize,
    /// Of those, waiting for a request head.
    waiting: AtomicUsize,
    shed: Notify,
}

/// Held while a connection is served; counts it.
#[derive(Debug)]
pub struct Open<'a>(&'a Connections);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Held while a connection waits for a request head.
#[derive(Debug)]
pub struct Waiting<'a> {
    c: &'a Connections,
    since: Instant,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.c.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a connection must have waited for a head before a new one may close it.
const SHED_AFTER: Duration = Duration::from_millis(250);
/// A connection over the cap waits up to `ROOM_CHECKS × ROOM_WAIT` (a little more than
/// `SHED_AFTER`) for shed ones to close.
const ROOM_CHECKS: u32 = 30;
const ROOM_WAIT: Duration = Duration::from_millis(10);

impl Connections {
    /// Admits a connection: `None` when the cap is reached and nothing could be closed to
    /// make room within a moment. A reused (kept-alive) connection is always admitted: it
    /// already counts. Connections that have waited for a head for a while give way.
    pub async fn admit(&self, max: usize, reused: bool) -> Option<Open<'_>> {
        let n = self.open.fetch_add(1, Ordering::AcqRel) + 1;
        let guard = Open(self);
        if n <= max || reused {
            return Some(guard);
        }
        // Ask the connections waiting for a head to give way, again as they come of age:
        // within `SHED_AFTER` and a little, any that was waiting when this one came can go.
        for _ in 0..ROOM_CHECKS {
            if self.waiting.load(Ordering::Acquire) == 0 {
                return None;
            }
            self.shed.notify_waiters();
            tokio::time::sleep(ROOM_WAIT).await;
            if self.open() <= max {
                return Some(guard);
            }
        }
        None
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    pub fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting {
            c: self,
            since: Instant::now(),
        }
    }

    /// Resolves when a new connection needs room and `w` has waited long enough to give it.
    pub async fn shed(&self, w: &Waiting<'_>) {
        loop {
            let notified = self.shed.notified();
            notified.await;
            if w.since.elapsed() >= SHED_AFTER {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_cap_admits_reused_connections_and_sheds_waiting_ones() {
        let c = std::sync::Arc::new(Connections::default());
        let a = c.admit(2, false).await.expect("first");
        let b = c.admit(2, false).await.expect("second");
        assert!(c.admit(2, false).await.is_none(), "full, and nobody waits for a head");
        assert_eq!(c.open(), 2, "a refused connection is not counted");
        let again = c.admit(2, true).await.expect("a reused connection already counts");
        drop(again);
        // One of the two waits for a head, long enough to give way: it is shed.
        drop(b);
        let c2 = std::sync::Arc::clone(&c);
        let idler = tokio::spawn(async move {
            let _open = c2.admit(2, false).await.expect("admitted");
            let mut w = c2.waiting();
            w.since -= SHED_AFTER * 2;
            c2.shed(&w).await;
        });
        tokio::task::yield_now().await;
        let third = c.admit(2, false).await.expect("room is made from a waiting connection");
        idler.await.expect("the idler was shed");
        drop((a, third));
        assert_eq!(c.open(), 0);
    }

    #[test]
    fn only_connections_that_waited_are_shed() {
        let c = Connections::default();
        let mut old = c.waiting();
        old.since -= SHED_AFTER * 2;
        let fresh = c.waiting();
        let shed_old = c.shed(&old);
        let shed_fresh = c.shed(&fresh);
        tokio::pin!(shed_old, shed_fresh);
        // Register both waits, then ask for room.
        assert!(futures_poll(&mut shed_old).is_none());
        assert!(futures_poll(&mut shed_fresh).is_none());
        c.shed.notify_waiters();
        assert!(futures_poll(&mut shed_old).is_some(), "the old waiter gives way");
        assert!(futures_poll(&mut shed_fresh).is_none(), "the fresh one keeps waiting");
    }

    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }

    #[test]
    fn the_default_cap_fits_the_open_file_limit() {
        let n = default_max_connections();
        assert!((16..=10_000).contains(&n));
        if let Some(limit) = open_file_limit().filter(|l| *l >= 2 * 16 + FD_RESERVE) {
            assert!(
                (n as u64) * 2 + FD_RESERVE <= limit,
                "{n} connections under a limit of {limit}"
            );
        }
    }
}
