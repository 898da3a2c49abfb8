//! The agent processor's consumer. It reads the chat topic and, for each event that moves a turn
//! (a question, a confirmation's answer or expiry, a cancel request), advances that session's
//! turn on the session's own worker, one step sequence at a time per session and many sessions at
//! once. A record's offset is stored only when the work it caused has ended or reached a wait, so
//! a processor that dies mid-turn finds the question again on restart and resumes the turn from
//! its events. It also fires durable timers (confirmation expiry) once, as the only owner.
//!
//! Ownership is a Postgres advisory lock, as for projections (Tansu 0.6's group coordinator does
//! not hand partitions back after a member dies); a second instance waits as a hot standby.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aurora_adapters::consumer::{fence_leader, own, Fence, Held, LiveConsumer};
use aurora_adapters::kafka::{consumer_config, ensure_topics, envelope_of};
use aurora_adapters::postgres::{Leadership, LeadershipLost};
use aurora_adapters::wakeup::LogSignals;
use aurora_adapters::Config;
use aurora_commands::CommandMeta;
use aurora_domain::chat::{ChatSession, ChatSessionCommand};
use aurora_events::chat::{ChatEventType, ChatSessionEvent};
use aurora_events::{Actor, EventPayload, OrgId, StreamId};
use rdkafka::Message;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{Agent, Pass, CONFIRMATION_EXPIRY};

const NAME: &str = "processor:agent";
/// The events that move a turn.
const TRIGGERS: &[ChatEventType] = &[
    ChatEventType::MessageSubmitted,
    ChatEventType::ConfirmationGranted,
    ChatEventType::ConfirmationDenied,
    ChatEventType::ConfirmationExpired,
    ChatEventType::TurnCancelRequested,
];

/// Offsets read but whose work has not ended, per partition, and the next offset to read.
#[derive(Default)]
struct Progress {
    partitions: HashMap<i32, (BTreeSet<i64>, i64)>,
}

impl Progress {
    fn seen(&mut self, partition: i32, offset: i64, in_flight: bool) {
        let entry = self.partitions.entry(partition).or_insert_with(|| (BTreeSet::new(), offset));
        if in_flight {
            entry.0.insert(offset);
        }
        entry.1 = entry.1.max(offset + 1);
    }

    fn done(&mut self, partition: i32, offset: i64) {
        if let Some(entry) = self.partitions.get_mut(&partition) {
            entry.0.remove(&offset);
        }
    }

    /// Where a restart must begin reading each partition.
    fn resume_points(&self) -> Vec<(i32, i64)> {
        self.partitions.iter().map(|(partition, (in_flight, next))| (*partition, in_flight.first().copied().unwrap_or(*next))).collect()
    }
}

struct Job {
    org_id: OrgId,
    partition: i32,
    offset: i64,
    /// The event that asks for the pass, and its trace.
    cause: Uuid,
    traceparent: Option<String>,
}

pub struct AgentRunner {
    config: Config,
    pool: PgPool,
    agent: Agent,
    signals: LogSignals,
}

impl AgentRunner {
    pub fn new(config: Config, pool: PgPool, agent: Agent, signals: LogSignals) -> Self {
        Self { config, pool, agent, signals }
    }

    /// Runs until `shutdown`: as the one leader of the agent's lock, or, with
    /// `AURORA_KAFKA_OWNERSHIP=group`, as a member of a consumer group that shares the chat
    /// topic's partitions (each session's questions come on one partition, so its turns run where
    /// its partition is read).
    pub async fn run(&self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let lock = format!("aurora-{NAME}");
        own("agent processor", self.config.kafka.ownership, &self.pool, &lock, &shutdown, |leadership| {
            self.run_owning(leadership, &shutdown)
        })
        .await;
        Ok(())
    }

    async fn run_owning(&self, leadership: Option<Arc<Leadership>>, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let chat_topic = ChatSessionEvent::topic(&self.config.kafka.topic_prefix);
        ensure_topics(&self.config, &[chat_topic.clone(), aurora_events::topics::deltas_topic(&self.config.kafka.topic_prefix)]).await?;
        let stop = shutdown.child_token();
        // Every member fires due timers: each fires by an idempotent command, so twice is once.
        let timers = tokio::spawn(fire_timers(self.agent.clone(), self.pool.clone(), leadership.clone(), stop.clone()));
        let outcome = self.consume(&chat_topic, leadership.as_ref(), &stop).await;
        stop.cancel();
        let _ = timers.await;
        outcome
    }

    async fn consume(&self, topic: &str, leadership: Option<&Arc<Leadership>>, stop: &CancellationToken) -> anyhow::Result<()> {
        // A question waits on this fetch before its turn starts: ask the broker to answer soon
        // (`kafka_live_fetch_wait`, 2 ms by default).
        let mut settings = consumer_config(&self.config, &format!("{}aurora-agent", self.config.kafka.topic_prefix));
        settings.set("fetch.wait.max.ms", self.config.kafka.live_fetch_wait.as_millis().to_string());
        let topics = [topic.to_owned()];
        let mut consumer = LiveConsumer::for_owner(leadership, NAME, settings, &topics, self.pool.clone(), &self.signals).await?;
        let held = consumer.held();
        let lost = leadership.map_or_else(CancellationToken::new, |leadership| leadership.lost());
        let mut lock_check = tokio::time::interval(Duration::from_secs(1));

        let progress = Arc::new(Mutex::new(Progress::default()));
        let workers: Arc<Mutex<HashMap<Uuid, mpsc::UnboundedSender<Job>>>> = Arc::default();
        let running: Arc<Mutex<HashMap<Uuid, CancellationToken>>> = Arc::default();
        let mut tasks = tokio::task::JoinSet::new();
        let flusher = tokio::spawn(flush_offsets(
            self.pool.clone(),
            topic.to_owned(),
            progress.clone(),
            leadership.is_none().then(|| held.clone()),
            stop.clone(),
        ));
        let outcome: anyhow::Result<()> = loop {
            let message = tokio::select! {
                _ = stop.cancelled() => break Ok(()),
                _ = lost.cancelled() => break Err(LeadershipLost(NAME.to_owned()).into()),
                _ = lock_check.tick() => {
                    // Noticed between questions too, not only at the next side effect.
                    if let Err(lost) = fence_leader(leadership).await {
                        break Err(lost.into());
                    }
                    continue;
                }
                message = consumer.recv() => message,
            };
            let message = match message {
                Ok(message) => message,
                Err(error) => break Err(error),
            };
            let (partition, offset) = (message.partition(), message.offset());
            let Ok(envelope) = envelope_of(&message) else {
                progress.lock().expect("progress lock").seen(partition, offset, false);
                continue;
            };
            let Some(trigger) = ChatEventType::from_name(&envelope.event_type).filter(|event_type| TRIGGERS.contains(event_type)) else {
                progress.lock().expect("progress lock").seen(partition, offset, false);
                continue;
            };
            let Ok(session_id) = Uuid::parse_str(envelope.stream.id()) else {
                progress.lock().expect("progress lock").seen(partition, offset, false);
                continue;
            };
            progress.lock().expect("progress lock").seen(partition, offset, true);
            if trigger == ChatEventType::TurnCancelRequested {
                if let Some(token) = running.lock().expect("running lock").get(&session_id) {
                    token.cancel();
                }
            }
            let job = Job { org_id: envelope.org_id, partition, offset, cause: envelope.id, traceparent: envelope.traceparent };
            let mut workers_now = workers.lock().expect("workers lock");
            let sender = workers_now.entry(session_id).or_insert_with(|| {
                let (sender, receiver) = mpsc::unbounded_channel();
                let worker = SessionWorker {
                    workers: workers.clone(),
                    agent: self.agent.clone(),
                    stream: ChatSessionEvent::stream_of(session_id),
                    session_id,
                    progress: progress.clone(),
                    running: running.clone(),
                    fence: match leadership {
                        Some(leadership) => Fence::Leader(leadership.clone()),
                        None => Fence::Partition { held: held.clone(), topic: topic.to_owned(), partition },
                    },
                };
                tasks.spawn(worker.run(receiver, stop.clone()));
                sender
            });
            if sender.send(job).is_err() {
                tracing::warn!(%session_id, "session worker gone; the turn resumes after a restart");
            }
        };
        stop.cancel();
        // Work in flight stops where it is; its offsets were not stored, so it resumes on restart.
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
        let _ = flusher.await;
        outcome
    }
}

/// Attempts at advancing a turn before the worker gives up on it (about 45 s of retries), unless
/// the failures are the event store being away, which is waited out however long it takes.
const GIVE_UP_AFTER: u32 = 30;

/// A session without questions or answers for this long lets its worker go.
const WORKER_IDLE: Duration = Duration::from_secs(300);

struct SessionWorker {
    workers: Arc<Mutex<HashMap<Uuid, mpsc::UnboundedSender<Job>>>>,
    agent: Agent,
    stream: StreamId,
    session_id: Uuid,
    progress: Arc<Mutex<Progress>>,
    running: Arc<Mutex<HashMap<Uuid, CancellationToken>>>,
    fence: Fence,
}

impl SessionWorker {
    async fn run(self, mut jobs: mpsc::UnboundedReceiver<Job>, stop: CancellationToken) {
        loop {
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                job = jobs.recv() => job,
                _ = tokio::time::sleep(WORKER_IDLE) => {
                    // Leave only if nothing arrived meanwhile: the consumer sends under this lock.
                    let mut workers = self.workers.lock().expect("workers lock");
                    match jobs.try_recv() {
                        Ok(job) => Some(job),
                        Err(_) => {
                            workers.remove(&self.session_id);
                            return;
                        }
                    }
                }
            };
            let Some(first) = first else { return };
            // Everything queued meanwhile is covered by one pass over the turn's events.
            let mut batch = vec![first];
            while let Ok(job) = jobs.try_recv() {
                batch.push(job);
            }
            let cancel = CancellationToken::new();
            self.running.lock().expect("running lock").insert(self.session_id, cancel.clone());
            let org_id = batch[0].org_id;
            // The pass answers the newest of the events queued: what it records, that event caused.
            let newest = batch.last().expect("a batch has a first job");
            let pass = Pass::new(newest.cause, newest.traceparent.as_deref());
            let passed = Pass::scope(pass, async {
            let mut attempt = 0u32;
            loop {
                match self.agent.advance(&self.stream, org_id, &cancel, &self.fence).await {
                    Ok(advanced) => {
                        tracing::debug!(stream = %self.stream, ?advanced, "turn advanced");
                        break;
                    }
                    // Another instance leads now and finishes the turn; its offsets stay unstored here.
                    Err(error) if error.is::<LeadershipLost>() => return false,
                    Err(error) if attempt >= GIVE_UP_AFTER && !is_transient(&error) => {
                        // A turn that cannot advance (say, an event this build cannot read) must
                        // not hold back the partition's offsets for ever.
                        tracing::error!(stream = %self.stream, error = %format!("{error:#}"), attempt, "giving up on advancing the turn");
                        break;
                    }
                    Err(error) => {
                        attempt += 1;
                        tracing::warn!(stream = %self.stream, error = %format!("{error:#}"), attempt, "advancing the turn failed, retrying");
                        let delay = Duration::from_millis(100 * u64::from(attempt.min(50)));
                        tokio::select! {
                            _ = stop.cancelled() => return false,
                            _ = tokio::time::sleep(delay) => {}
                        }
                    }
                }
            }
            true
            })
            .await;
            if !passed {
                // The session's work is another's now (or the process stops); if its partition
                // comes back, a new worker takes it up.
                self.workers.lock().expect("workers lock").remove(&self.session_id);
                return;
            }
            self.running.lock().expect("running lock").remove(&self.session_id);
            let mut progress = self.progress.lock().expect("progress lock");
            for job in batch {
                progress.done(job.partition, job.offset);
            }
        }
    }
}

fn is_transient(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<aurora_commands::HandleError>(),
        Some(aurora_commands::HandleError::Store(aurora_commands::StoreError::Unavailable(_)))
    )
}

/// Stores, every 100 ms, where a restart must resume each partition; a group member, only for
/// the partitions it still reads (what it knew of the others is forgotten: their new reader
/// stores them).
async fn flush_offsets(pool: PgPool, topic: String, progress: Arc<Mutex<Progress>>, held: Option<Held>, stop: CancellationToken) {
    let mut stored: HashMap<i32, i64> = HashMap::new();
    loop {
        let stopping = stop.is_cancelled();
        let points = {
            let mut progress = progress.lock().expect("progress lock");
            if let Some(held) = &held {
                progress.partitions.retain(|partition, _| held.contains(&topic, *partition));
                stored.retain(|partition, _| held.contains(&topic, *partition));
            }
            progress.resume_points()
        };
        for (partition, next) in points {
            if stored.get(&partition) == Some(&next) {
                continue;
            }
            let written = sqlx::query(
                "INSERT INTO projection_offsets (projection, topic, partition, next_offset, updated_at) VALUES ($1, $2, $3, $4, now()) \
                 ON CONFLICT (projection, topic, partition) DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
            )
            .bind(NAME)
            .bind(&topic)
            .bind(partition)
            .bind(next)
            .execute(&pool)
            .await;
            match written {
                Ok(_) => {
                    stored.insert(partition, next);
                }
                Err(error) => tracing::warn!(%error, "storing the agent's offsets failed; retrying"),
            }
        }
        if stopping {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Fires due timers, each once: the command it issues is idempotent by timer id, and the timer is
/// marked fired after. Sleeps until the next timer is due (or a new one is set), not polling.
async fn fire_timers(agent: Agent, pool: PgPool, leadership: Option<Arc<Leadership>>, stop: CancellationToken) {
    let changed = agent.timers_changed();
    // A lost lock stops the agent's consumer too, and the next owner fires the timers.
    let _lost = aurora_adapters::timers::run(CONFIRMATION_EXPIRY, &pool, leadership, changed, stop, |timer| {
        let agent = agent.clone();
        let pool = pool.clone();
        async move {
            let confirmation_id = timer
                .payload
                .get("confirmation_id")
                .and_then(|id| id.as_str())
                .and_then(|id| Uuid::parse_str(id).ok())
                .ok_or_else(|| anyhow::anyhow!("a confirmation timer without a confirmation id"))?;
            let stream: StreamId = timer.stream.parse()?;
            let meta = CommandMeta::idempotent(OrgId(timer.org_id), Actor::processor("timers"), timer.timer_id);
            let command = ChatSessionCommand::ExpireConfirmation { confirmation_id };
            agent.commands().handle::<ChatSession>(&stream, command, &meta, None).await?;
            aurora_commands::relay::wake(&pool).await;
            Ok(())
        }
    })
    .await;
}
