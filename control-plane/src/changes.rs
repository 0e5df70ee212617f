//! Change announcements between the handlers that change what gateways run or accept and
//! the long-polls gateways wait on. In one process a watch channel carries them; replicas
//! that share a PostgreSQL database also send each change with `NOTIFY`, and every
//! replica `LISTEN`s, so a rollout or a key revoked through one replica reaches gateways
//! connected to any other at once.

use std::time::Duration;

use sqlx::postgres::PgListener;

use crate::AppState;

/// The PostgreSQL channel replicas announce changes on.
const CHANNEL: &str = "kt_changes";

/// What changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// What a gateway should run (rollout, revert, reload, reconcile).
    Fleet,
    /// An organisation's gateway keys.
    Keys,
}

impl Change {
    fn payload(self) -> &'static str {
        match self {
            Change::Fleet => "fleet",
            Change::Keys => "keys",
        }
    }

    fn of(payload: &str) -> Option<Change> {
        match payload {
            "fleet" => Some(Change::Fleet),
            "keys" => Some(Change::Keys),
            _ => None,
        }
    }
}

/// Wakes this process's long-polls waiting on `change`.
fn wake(st: &AppState, change: Change) {
    let tx = match change {
        Change::Fleet => &st.fleet,
        Change::Keys => &st.keys,
    };
    tx.send_modify(|g| *g = g.wrapping_add(1));
}

/// Announces a committed change to this replica and, on PostgreSQL, to every other.
pub(crate) async fn announce(st: &AppState, change: Change) {
    wake(st, change);
    if st.postgres_url.is_none() {
        return;
    }
    let sent = sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(change.payload())
        .execute(&st.db)
        .await;
    if let Err(e) = sent {
        // The other replicas' gateways see the change at their next poll instead.
        tracing::warn!(
            "could not announce a {} change to the other replicas: {e}",
            change.payload()
        );
    }
}

/// Listens for the other replicas' announcements until the process ends. A lost
/// connection is re-established (every 1 s at most); since announcements made meanwhile
/// are lost, every long-poll is woken to look again.
pub async fn listen(st: AppState, url: String) {
    let mut healthy = true;
    loop {
        match subscribe(&url).await {
            Ok(mut listener) => {
                if !healthy {
                    tracing::info!("listening for other replicas' changes again");
                }
                wake(&st, Change::Fleet);
                wake(&st, Change::Keys);
                loop {
                    match listener.try_recv().await {
                        Ok(Some(n)) => {
                            if let Some(c) = Change::of(n.payload()) {
                                wake(&st, c);
                            }
                        }
                        // The connection dropped and is re-established by the next call.
                        Ok(None) => {
                            wake(&st, Change::Fleet);
                            wake(&st, Change::Keys);
                        }
                        Err(e) => {
                            tracing::warn!("lost the change listener: {e}");
                            healthy = false;
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                if healthy {
                    tracing::warn!(
                        "cannot listen for other replicas' changes ({e}); gateways of other replicas see them at their next poll"
                    );
                    healthy = false;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn subscribe(url: &str) -> Result<PgListener, sqlx::Error> {
    let mut l = PgListener::connect(url).await?;
    l.listen(CHANNEL).await?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        for c in [Change::Fleet, Change::Keys] {
            assert_eq!(Change::of(c.payload()), Some(c));
        }
        assert_eq!(Change::of("other"), None);
    }
}
