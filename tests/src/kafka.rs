//! Reading and writing topics directly, as an external consumer or a misbehaving producer would.

use std::time::Duration;

use aurora_adapters::kafka::{partition_watermarks, standalone_consumer};
use aurora_adapters::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// Every record on `topic` from the beginning up to the high watermarks seen now.
pub async fn read_all(config: &Config, topic: &str) -> Vec<OwnedMessage> {
    let config = config.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_all_blocking(&config, &topic)).await.unwrap()
}

fn read_all_blocking(config: &Config, topic: &str) -> Vec<OwnedMessage> {
    let consumer: BaseConsumer = standalone_consumer(config).unwrap();
    let marks = partition_watermarks(&consumer, topic, Duration::from_secs(10)).unwrap();
    let mut assignment = TopicPartitionList::new();
    // Per partition: the next offset to read, and the high watermark seen at the start.
    let mut next: Vec<(i32, i64, i64)> = Vec::new();
    for (partition, low, high) in &marks {
        if high > low {
            assignment.add_partition_offset(topic, *partition, Offset::Offset(*low)).unwrap();
            next.push((*partition, *low, *high));
        }
    }
    let mut records = Vec::new();
    if next.is_empty() {
        return records;
    }
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while next.iter().any(|(_, offset, high)| offset < high) {
        assert!(std::time::Instant::now() < deadline, "reading {topic} timed out with {} records read", records.len());
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let Some(entry) = next.iter_mut().find(|(partition, _, _)| *partition == message.partition()) else { continue };
                if message.offset() < entry.2 {
                    entry.1 = message.offset() + 1;
                    records.push(message.detach());
                }
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            // Nothing came: the broker may have deleted what was left (retention) since the
            // watermarks were read; what is below its low watermark now will never come. The
            // consumer is moved to the new low watermark: left at a deleted offset, it would
            // reset to the end (librdkafka's default) and never see the records still kept.
            // Tansu 0.6 reads both marks from the records it still holds, and answers 0 for
            // both once a partition's last record is deleted: what is above its high watermark
            // now will never come either.
            None => {
                let mut moved = false;
                for (partition, low, high) in partition_watermarks(&consumer, topic, Duration::from_secs(10)).unwrap() {
                    if let Some(entry) = next.iter_mut().find(|(known, _, _)| *known == partition) {
                        moved |= low > entry.1;
                        entry.1 = entry.1.max(low);
                        entry.2 = entry.2.min(high);
                    }
                }
                if moved {
                    let mut assignment = TopicPartitionList::new();
                    for (partition, offset, high) in &next {
                        if offset < high {
                            assignment.add_partition_offset(topic, *partition, Offset::Offset(*offset)).unwrap();
                        }
                    }
                    consumer.assign(&assignment).unwrap();
                }
            }
        }
    }
    records
}

/// Sends one raw record.
pub async fn produce_raw(config: &Config, topic: &str, key: &str, headers: &[(&str, &str)], value: &[u8]) {
    let producer: FutureProducer = ClientConfig::new().set("bootstrap.servers", &config.kafka.brokers).create().unwrap();
    let mut owned = OwnedHeaders::new();
    for (name, text) in headers {
        owned = owned.insert(Header { key: name, value: Some(text.as_bytes()) });
    }
    producer
        .send(FutureRecord::to(topic).key(key).payload(value).headers(owned), Duration::from_secs(10))
        .await
        .map_err(|(error, _)| error)
        .unwrap();
}
