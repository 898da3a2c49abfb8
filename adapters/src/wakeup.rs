//! Wake-ups over Postgres notifications, so that no worker has to poll to be quick:
//!
//! - a writer whose events a person waits for (a chat question) announces them
//!   ([`announce_appended`]), and the relay publishes them at once instead of at its next poll;
//! - whoever puts records on a topic (the relay, the agent's token deltas) announces the topic
//!   ([`Announcer`]), and consumers resting on it ([`crate::consumer::LiveConsumer`]) wake up
//!   and fetch, instead of keeping a fetch open on the broker all the time.
//!
//! Each process listens on one connection of its own ([`LogSignals`]). An announcement is a
//! hint, never the record: a lost one delays a record until the listener's next check, and the
//! listener signals [`Signal::All`] whenever it (re)connects, for what it may have missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::consumer::supervise;

/// The Postgres notification channel of announcements.
pub const CHANNEL: &str = "aurora_log";

/// The payload of an announcement of records put on topics: this, then the topics, by commas.
const PUBLISHED: &str = "published:";

/// The payload of an announcement of a read model's change: this, the read model, `:`, the
/// organisation.
pub const PROJECTED: &str = "projected:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signal {
    /// Events appended to the store that a person waits for: the relay publishes at once.
    Appended,
    /// Records put on these topics.
    Published(Vec<String>),
    /// A projection changed an organisation's rows of a read model (`documents`).
    Projected { read_model: String, org_id: uuid::Uuid },
    /// Anything may have changed (the listener reconnected).
    All,
}

impl Signal {
    /// Whether this tells a consumer of `topics` that there may be something to read.
    pub fn concerns(&self, topics: &[String]) -> bool {
        match self {
            Signal::Appended | Signal::Projected { .. } => false,
            Signal::Published(published) => published.iter().any(|topic| topics.contains(topic)),
            Signal::All => true,
        }
    }

    fn parse(payload: &str) -> Self {
        if let Some(topics) = payload.strip_prefix(PUBLISHED) {
            return Signal::Published(topics.split(',').map(str::to_owned).collect());
        }
        let projected = payload.strip_prefix(PROJECTED).and_then(|rest| rest.rsplit_once(':'));
        match projected.and_then(|(read_model, org)| Some((read_model, org.parse().ok()?))) {
            Some((read_model, org_id)) => Signal::Projected { read_model: read_model.to_owned(), org_id },
            None => Signal::Appended,
        }
    }

    /// Whether this tells a watcher of `read_model` of `org_id` that its rows may have changed.
    pub fn changed(&self, read_model: &str, org_id: uuid::Uuid) -> bool {
        match self {
            Signal::Projected { read_model: changed, org_id: changed_org } => changed == read_model && *changed_org == org_id,
            Signal::All => true,
            _ => false,
        }
    }
}

/// The announcements this process hears. Cheap to clone.
#[derive(Clone)]
pub struct LogSignals {
    sender: broadcast::Sender<Signal>,
}

impl LogSignals {
    /// Listens on `database_url` until `shutdown`, reconnecting with backoff.
    pub fn listen(database_url: &SecretString, shutdown: CancellationToken) -> Self {
        let (sender, _) = broadcast::channel(1024);
        let signals = Self { sender: sender.clone() };
        let database_url = database_url.to_owned();
        tokio::spawn(async move {
            let (sender, database_url, shutdown) = (&sender, &database_url, &shutdown);
            supervise("log signals", shutdown, move || async move {
                let mut listener = PgListener::connect(database_url.expose_secret()).await?;
                listener.listen(CHANNEL).await?;
                let _ = sender.send(Signal::All);
                loop {
                    let notification = tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        notification = listener.recv() => notification?,
                    };
                    let _ = sender.send(Signal::parse(notification.payload()));
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

/// The payload that announces a change of `org_id`'s rows of `read_model`; a projection sends it
/// with `pg_notify` on [`CHANNEL`] in the transaction that made the change.
pub fn projected_payload(read_model: &str, org_id: uuid::Uuid) -> String {
    format!("{PROJECTED}{read_model}:{org_id}")
}

/// Appends are announced at most this often to one database: the first at once, those that
/// follow within the spacing by one announcement at its end. A NOTIFY serialises committing
/// transactions and wakes every listener, so a burst of webhook deliveries must not send one each.
pub const APPENDED_SPACING: Duration = Duration::from_millis(5);

/// When appends were last announced to each database, and whether an announcement is due.
#[derive(Default)]
struct AppendedThrottle {
    last: Option<Instant>,
    due: bool,
}

fn appended_throttle(pool: &PgPool) -> Arc<Mutex<AppendedThrottle>> {
    static THROTTLES: std::sync::OnceLock<Mutex<HashMap<String, Arc<Mutex<AppendedThrottle>>>>> = std::sync::OnceLock::new();
    let options = pool.connect_options();
    let database = format!("{}:{}/{}", options.get_host(), options.get_port(), options.get_database().unwrap_or_default());
    THROTTLES.get_or_init(Default::default).lock().expect("throttles lock").entry(database).or_default().clone()
}

/// Announces events appended to the store, for the relay to publish now rather than at its next
/// poll: at once, or when an announcement went out less than [`APPENDED_SPACING`] ago, by the one
/// due at the end of the spacing (sent after this call's events were committed, so none waits
/// for a poll).
pub async fn announce_appended(pool: &PgPool) {
    let throttle = appended_throttle(pool);
    let wait = {
        let mut state = throttle.lock().expect("throttle lock");
        let now = Instant::now();
        match state.last {
            _ if state.due => return,
            Some(last) if now.duration_since(last) < APPENDED_SPACING => {
                state.due = true;
                APPENDED_SPACING - now.duration_since(last)
            }
            _ => {
                state.last = Some(now);
                Duration::ZERO
            }
        }
    };
    if wait.is_zero() {
        notify(pool, "").await;
        return;
    }
    let pool = pool.clone();
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        {
            let mut state = throttle.lock().expect("throttle lock");
            state.due = false;
            state.last = Some(Instant::now());
        }
        notify(&pool, "").await;
    });
}

/// Announces that `org_id`'s `read_model` changed, outside a projection's transaction (a
/// gateway's cache of what it wrote itself, say).
pub async fn announce_changed(pool: &PgPool, read_model: &str, org_id: uuid::Uuid) {
    notify(pool, &projected_payload(read_model, org_id)).await;
}

async fn notify(pool: &PgPool, payload: &str) {
    if let Err(error) = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(pool).await {
        tracing::debug!(%error, "announcing on the log channel failed; listeners find out at their next check");
    }
}

/// A topic is announced at most this often by one [`Announcer`]. A consumer stays awake for
/// [`crate::consumer::REST_AFTER`] after its last record, longer than this, so the records put
/// on a topic between two announcements find it awake.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(250);

/// Announces the topics its owner puts records on, each at most once per [`ANNOUNCE_EVERY`], so
/// that a steady flow costs a few notifications a second, not one per record.
#[derive(Clone)]
pub struct Announcer {
    pool: PgPool,
    last: Arc<Mutex<HashMap<String, Instant>>>,
}

impl Announcer {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, last: Arc::default() }
    }

    /// The topics among `topics` not announced for [`ANNOUNCE_EVERY`], marked as announced now.
    fn due<'topic>(&self, topics: impl IntoIterator<Item = &'topic str>) -> Vec<&'topic str> {
        let now = Instant::now();
        let mut last = self.last.lock().expect("announcer lock");
        let mut due: Vec<&str> = Vec::new();
        for topic in topics {
            if due.contains(&topic) {
                continue;
            }
            match last.get_mut(topic) {
                Some(at) if now.duration_since(*at) < ANNOUNCE_EVERY => {}
                Some(at) => {
                    *at = now;
                    due.push(topic);
                }
                None => {
                    last.insert(topic.to_owned(), now);
                    due.push(topic);
                }
            }
        }
        due
    }

    /// Announces the records just put on `topics` (call once they are on the broker).
    pub async fn published<'topic>(&self, topics: impl IntoIterator<Item = &'topic str>) {
        let due = self.due(topics);
        if !due.is_empty() {
            notify(&self.pool, &format!("{PUBLISHED}{}", due.join(","))).await;
        }
    }

    /// Announces records being put on `topic` without waiting for the announcement: for a
    /// producer that does not wait for its records either (token deltas).
    pub fn publishing(&self, topic: &str) {
        if self.due([topic]).is_empty() {
            return;
        }
        let (pool, payload) = (self.pool.clone(), format!("{PUBLISHED}{topic}"));
        tokio::spawn(async move { notify(&pool, &payload).await });
    }
}
