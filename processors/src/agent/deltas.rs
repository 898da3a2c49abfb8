//! Token deltas onto the short-retention deltas topic. Fire and forget: a delta that is lost costs
//! a flicker in one browser, never data (the completed message is an event), so the producer
//! neither waits for replicas nor retries, and a full queue drops the delta rather than slow the
//! model's stream.

use std::sync::Arc;

use aurora_adapters::Config;
use aurora_events::chat::TokenDelta;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use uuid::Uuid;

#[derive(Clone)]
pub struct DeltaPublisher {
    producer: Arc<FutureProducer>,
    topic: String,
}

impl DeltaPublisher {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &config.kafka_brokers)
            .set("acks", "1")
            .set("enable.idempotence", "false")
            .set("linger.ms", "0")
            .set("message.timeout.ms", "5000")
            .set("socket.nagle.disable", "true")
            .create()?;
        Ok(Self { producer: Arc::new(producer), topic: aurora_events::topics::deltas_topic(&config.topic_prefix) })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn publish(&self, session_id: Uuid, turn_id: Uuid, call_index: u32, seq: u32, text: &str) {
        let delta = TokenDelta { session_id, turn_id, call_index, seq, text: text.to_owned() };
        let payload = serde_json::to_vec(&delta).expect("deltas serialize");
        let key = session_id.to_string();
        let record = FutureRecord::to(&self.topic).key(&key).payload(&payload);
        if let Err((error, _)) = self.producer.send_result(record) {
            tracing::debug!(%error, %session_id, "token delta dropped");
        }
    }
}
