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
    let mut remaining = 0i64;
    for (partition, low, high) in &marks {
        if high > low {
            assignment.add_partition_offset(topic, *partition, Offset::Offset(*low)).unwrap();
            remaining += high - low;
        }
    }
    let mut records = Vec::new();
    if remaining == 0 {
        return records;
    }
    consumer.assign(&assignment).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (records.len() as i64) < remaining {
        assert!(std::time::Instant::now() < deadline, "reading {topic} timed out with {} of {remaining}", records.len());
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(message)) => {
                let high = marks.iter().find(|(partition, _, _)| *partition == message.partition()).unwrap().2;
                if message.offset() < high {
                    records.push(message.detach());
                }
            }
            Some(Err(error)) => panic!("reading {topic}: {error}"),
            None => {}
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
