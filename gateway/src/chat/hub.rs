//! Live chat for the sockets this gateway holds. Every gateway instance reads the deltas topic and
//! the chat topic from their ends and forwards what concerns a session to the sockets subscribed
//! to it here, so a socket gets its answer whichever processor runs the turn and whichever gateway
//! took the question. The text of each answer still streaming is kept, so that a client that
//! (re)connects mid-turn sees what was said so far.
//!
//! Deltas and events ride different topics, so a loaded broker can hand this hub the last deltas
//! of a call after the event that records it. Those come too late to be news: the hub drops them,
//! so a client never sees text streaming into an answer it already has whole.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aurora_adapters::consumer::{supervise, LiveConsumer, Start};
use aurora_adapters::kafka::{ensure_topics, envelope_of, header_str};
use aurora_adapters::wakeup::LogSignals;
use aurora_adapters::Config;
use aurora_events::chat::{ChatEventType, ChatSessionEvent, TokenDelta, ToolOutputDelta};
use aurora_events::EventPayload;
use rdkafka::{ClientConfig, Message};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Frames a socket may fall behind by before it is dropped (the client reconnects and resumes).
pub const SOCKET_BACKLOG: usize = 8192;

/// How long the end of a call is remembered, to drop its deltas arriving after it.
const LATE_DELTAS: Duration = Duration::from_secs(60);

/// The answer streaming in a session now.
#[derive(Debug, Clone, Default)]
pub struct Partial {
    pub turn_id: Uuid,
    pub call_index: u32,
    pub text: String,
}

/// What the hub knows of a session's streaming: the answer coming in, or the call last recorded.
enum Streaming {
    Partial(Partial),
    /// The turn's calls up to `call_index` are recorded (`u32::MAX`: the whole turn is over).
    Ended { turn_id: Uuid, call_index: u32, at: Instant },
}

#[derive(Default)]
pub struct ChatHub {
    subscribers: Mutex<HashMap<Uuid, Vec<mpsc::Sender<Value>>>>,
    streaming: Mutex<HashMap<Uuid, Streaming>>,
}

impl ChatHub {
    /// Starts following the topics from their current ends, and returns once it follows them, so
    /// that nothing said after the gateway starts is missed; the hub forwards until `shutdown`.
    /// If the broker cannot be reached now, the hub keeps trying in the background.
    pub async fn start(config: &Config, signals: &LogSignals, shutdown: CancellationToken) -> Arc<Self> {
        let hub = Arc::new(Self::default());
        let first = tokio::time::timeout(Duration::from_secs(10), Self::subscribe_to_topics(config, signals)).await;
        let mut first_consumer = match first {
            Ok(Ok(consumer)) => Some(consumer),
            Ok(Err(error)) => {
                tracing::warn!(error = %format!("{error:#}"), "chat hub cannot follow the topics yet; retrying in the background");
                None
            }
            Err(_) => None,
        };
        let (follower, config, signals) = (hub.clone(), config.clone(), signals.clone());
        tokio::spawn(async move {
            let (follower, config, signals, shutdown) = (&follower, &config, &signals, &shutdown);
            supervise("chat hub", shutdown, move || {
                let consumer = first_consumer.take();
                async move {
                    let consumer = match consumer {
                        Some(consumer) => consumer,
                        None => Self::subscribe_to_topics(config, signals).await?,
                    };
                    follower.follow(config, consumer, shutdown).await
                }
            })
            .await;
        });
        hub
    }

    /// Sends what happens in `session_id` to `socket` from now on.
    pub fn subscribe(&self, session_id: Uuid, socket: mpsc::Sender<Value>) {
        let mut subscribers = self.subscribers.lock().expect("hub lock");
        let sockets = subscribers.entry(session_id).or_default();
        if !sockets.iter().any(|known| known.same_channel(&socket)) {
            sockets.push(socket);
        }
    }

    /// Stops sending what happens in `session_id` to `socket`.
    pub fn unsubscribe(&self, session_id: Uuid, socket: &mpsc::Sender<Value>) {
        let mut subscribers = self.subscribers.lock().expect("hub lock");
        let Some(sockets) = subscribers.get_mut(&session_id) else { return };
        sockets.retain(|known| !known.same_channel(socket));
        if sockets.is_empty() {
            subscribers.remove(&session_id);
        }
    }

    pub fn partial(&self, session_id: Uuid) -> Option<Partial> {
        match self.streaming.lock().expect("hub lock").get(&session_id) {
            Some(Streaming::Partial(partial)) => Some(partial.clone()),
            _ => None,
        }
    }

    /// Records that `turn_id`'s calls up to `call_index` are over in `session_id`, forgetting
    /// ends older than [`LATE_DELTAS`].
    fn end(&self, session_id: Uuid, turn_id: Uuid, call_index: u32) {
        let mut streaming = self.streaming.lock().expect("hub lock");
        streaming.retain(|_, known| !matches!(known, Streaming::Ended { at, .. } if at.elapsed() > LATE_DELTAS));
        streaming.insert(session_id, Streaming::Ended { turn_id, call_index, at: Instant::now() });
    }

    fn forward(&self, session_id: Uuid, frame: Value) {
        let mut subscribers = self.subscribers.lock().expect("hub lock");
        let Some(sockets) = subscribers.get_mut(&session_id) else { return };
        // A closed socket is let go; so is one that fell SOCKET_BACKLOG frames behind, after
        // being told so (`lagged`), so that its client subscribes again and catches up.
        sockets.retain(|socket| match socket.try_send(frame.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Closed(_)) => false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                let socket = socket.clone();
                tokio::spawn(async move {
                    let _ = socket.send(json!({ "type": "lagged", "session_id": session_id })).await;
                });
                false
            }
        });
        if sockets.is_empty() {
            subscribers.remove(&session_id);
        }
    }

    /// A consumer of the two topics from their ends now.
    async fn subscribe_to_topics(config: &Config, signals: &LogSignals) -> anyhow::Result<LiveConsumer> {
        let deltas = aurora_events::topics::deltas_topic(&config.kafka.topic_prefix);
        let chat = ChatSessionEvent::topic(&config.kafka.topic_prefix);
        let topics = [deltas, chat];
        ensure_topics(config, &topics).await?;
        let mut settings = ClientConfig::new();
        settings
            .set("bootstrap.servers", &config.kafka.brokers)
            .set("group.id", format!("aurora-hub-{}", Uuid::now_v7()))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", config.kafka.live_fetch_wait.as_millis().to_string())
            .set("fetch.min.bytes", "1")
            .set("socket.nagle.disable", "true");
        LiveConsumer::open("chat hub", settings, &topics, Start::End, signals).await
    }

    async fn follow(&self, config: &Config, mut consumer: LiveConsumer, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let deltas = aurora_events::topics::deltas_topic(&config.kafka.topic_prefix);
        loop {
            let message = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                message = consumer.recv() => message?,
            };
            if message.topic() == deltas && header_str(&message, ToolOutputDelta::HEADER) == Some("tool_output") {
                let Some(Ok(output)) = message.payload().map(serde_json::from_slice::<ToolOutputDelta>) else { continue };
                let frame = json!({
                    "type": "tool_output", "session_id": output.session_id, "turn_id": output.turn_id,
                    "tool_call_id": output.tool_call_id, "seq": output.seq, "text": output.text,
                });
                self.forward(output.session_id, frame);
            } else if message.topic() == deltas {
                let Some(Ok(delta)) = message.payload().map(serde_json::from_slice::<TokenDelta>) else { continue };
                self.on_delta(delta);
            } else if let Ok(envelope) = envelope_of(&message) {
                let Ok(session_id) = Uuid::parse_str(envelope.stream.id()) else { continue };
                // The answer streaming so far is now recorded (or will not come).
                if let Some((turn_id, call_index)) = ended_call(&envelope.event_type, &envelope.payload) {
                    self.end(session_id, turn_id, call_index);
                }
                let frame = json!({
                    "type": envelope.event_type,
                    "session_id": session_id,
                    "event_id": envelope.id,
                    "stream_version": envelope.stream_version,
                    "payload": envelope.payload,
                });
                self.forward(session_id, frame);
            }
        }
    }

    fn on_delta(&self, delta: TokenDelta) {
        {
            let mut streaming = self.streaming.lock().expect("hub lock");
            let known = streaming.entry(delta.session_id).or_insert_with(|| Streaming::Partial(Partial::default()));
            match known {
                Streaming::Ended { turn_id, call_index, .. } if *turn_id == delta.turn_id && delta.call_index <= *call_index => return,
                Streaming::Partial(partial)
                    if delta.seq != 0 && partial.turn_id == delta.turn_id && partial.call_index == delta.call_index =>
                {
                    partial.text.push_str(&delta.text);
                }
                _ => {
                    *known = Streaming::Partial(Partial { turn_id: delta.turn_id, call_index: delta.call_index, text: delta.text.clone() });
                }
            }
        }
        let frame = json!({
            "type": "delta", "session_id": delta.session_id, "turn_id": delta.turn_id,
            "call_index": delta.call_index, "seq": delta.seq, "text": delta.text,
        });
        self.forward(delta.session_id, frame);
    }
}

/// The turn and the last call that an event of type `event_type` ends, if it ends any: a call's
/// completion ends that call, a turn's answer, failure or cancellation ends all of its calls.
fn ended_call(event_type: &str, payload: &Value) -> Option<(Uuid, u32)> {
    let turn_id = payload.get("turn_id").and_then(Value::as_str).and_then(|id| Uuid::parse_str(id).ok())?;
    match ChatEventType::from_name(event_type)? {
        ChatEventType::LlmCallCompleted => Some((turn_id, u32::try_from(payload.get("call_index")?.as_u64()?).ok()?)),
        ChatEventType::AssistantMessageCompleted | ChatEventType::TurnFailed | ChatEventType::TurnCancelled => Some((turn_id, u32::MAX)),
        _ => None,
    }
}
