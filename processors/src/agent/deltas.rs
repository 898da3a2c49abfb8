//! Token deltas onto the short-retention deltas topic. Fire and forget: a delta that is lost costs
//! a flicker in one browser, never data (the completed message is an event), so the producer
//! neither waits for replicas nor retries, and a full queue drops the delta rather than slow the
//! model's stream. Each delta is announced ([`Announcer`]), so that resting consumers of the
//! topic (the gateways' chat hubs) wake up for it.

use std::sync::Arc;

use aurora_adapters::kafka::{OutgoingRecord, Producer};
use aurora_adapters::wakeup::Announcer;
use aurora_adapters::Config;
use aurora_events::chat::{TokenDelta, ToolOutputDelta};
use rdkafka::message::OwnedHeaders;
use rdkafka::ClientConfig;
use uuid::Uuid;

#[derive(Clone)]
pub struct DeltaPublisher {
    producer: Arc<Producer>,
    topic: String,
    announcer: Announcer,
}

impl DeltaPublisher {
    pub fn new(config: &Config, announcer: Announcer) -> anyhow::Result<Self> {
        let producer = Producer::create(
            ClientConfig::new()
                .set("bootstrap.servers", &config.kafka.brokers)
                .set("acks", "1")
                .set("enable.idempotence", "false")
                .set("linger.ms", "0")
                .set("message.timeout.ms", "5000")
                .set("socket.nagle.disable", "true"),
        )?;
        Ok(Self { producer: Arc::new(producer), topic: aurora_events::topics::deltas_topic(&config.kafka.topic_prefix), announcer })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn publish(&self, session_id: Uuid, turn_id: Uuid, call_index: u32, seq: u32, text: &str) {
        let delta = TokenDelta { session_id, turn_id, call_index, seq, text: text.to_owned() };
        self.send(session_id, OwnedHeaders::new(), serde_json::to_vec(&delta).expect("deltas serialize"));
    }

    /// A piece of what the tool call `tool_call_id` prints as it runs.
    pub fn publish_tool_output(&self, session_id: Uuid, turn_id: Uuid, tool_call_id: &str, seq: u32, text: &str) {
        let delta = ToolOutputDelta { session_id, turn_id, tool_call_id: tool_call_id.to_owned(), seq, text: text.to_owned() };
        let headers = OwnedHeaders::new().insert(rdkafka::message::Header { key: ToolOutputDelta::HEADER, value: Some("tool_output") });
        self.send(session_id, headers, serde_json::to_vec(&delta).expect("deltas serialize"));
    }

    fn send(&self, session_id: Uuid, headers: OwnedHeaders, payload: Vec<u8>) {
        let record = OutgoingRecord { topic: self.topic.clone(), key: session_id.to_string(), headers, value: payload };
        // The delivery is not awaited: a lost delta costs a flicker.
        if let Err(error) = self.producer.send(&record) {
            tracing::debug!(%error, %session_id, "token delta dropped");
            return;
        }
        self.announcer.publishing(&self.topic);
    }
}
