//! Wake-ups over Postgres notifications: a writer whose events a person waits for (a chat
//! question) announces them on [`CHANNEL`], and the relay publishes them at once instead of at
//! its next poll. A process that runs the relay listens on one connection of its own.
//!
//! An announcement is a hint, never the event: a lost one delays the event by one poll, and the
//! listener signals [`Signal::All`] whenever it (re)connects, for what it may have missed.

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::consumer::supervise;

/// The Postgres notification channel of announcements.
pub const CHANNEL: &str = "aurora_log";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Events appended to the store that a person waits for: the relay publishes at once.
    Appended,
    /// Anything may have changed (the listener reconnected).
    All,
}

/// The announcements this process hears. Cheap to clone.
#[derive(Clone)]
pub struct LogSignals {
    sender: broadcast::Sender<Signal>,
}

impl LogSignals {
    /// Listens on `database_url` until `shutdown`, reconnecting with backoff.
    pub fn listen(database_url: &str, shutdown: CancellationToken) -> Self {
        let (sender, _) = broadcast::channel(1024);
        let signals = Self { sender: sender.clone() };
        let database_url = database_url.to_owned();
        tokio::spawn(async move {
            let (sender, database_url, shutdown) = (&sender, &database_url, &shutdown);
            supervise("log signals", shutdown, move || async move {
                let mut listener = PgListener::connect(database_url).await?;
                listener.listen(CHANNEL).await?;
                let _ = sender.send(Signal::All);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        notification = listener.recv() => notification?,
                    };
                    let _ = sender.send(Signal::Appended);
                }
            })
            .await;
        });
        signals
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Signal> {
        self.sender.subscribe()
    }
}

/// Announces events appended to the store, for the relay to publish now rather than at its next poll.
pub async fn announce_appended(pool: &PgPool) {
    if let Err(error) = sqlx::query("SELECT pg_notify($1, '')").bind(CHANNEL).execute(pool).await {
        tracing::debug!(%error, "announcing new events failed; the relay finds them at its next poll");
    }
}
