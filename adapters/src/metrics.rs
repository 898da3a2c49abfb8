//! The process's metrics: counters and gauges that the code updates as it works, so that serving
//! `/metrics` costs a walk over a few atomics and never a query. Each process (gateway,
//! processors, projections, or all in one) exposes its own; Prometheus adds them up.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    /// Events this process appended to the event store.
    pub events_appended: IntCounter,
    /// Records the relay published to Kafka.
    pub relay_published: IntCounter,
    /// Events the broker or the client refused, sent to the dead-letter topic by the relay.
    pub relay_dead_letters: IntCounter,
    /// Records a consumer gave up on and dead-lettered, per consumer.
    pub consumer_dead_letters: IntCounterVec,
    /// Records on the log not yet consumed, per consumer and topic, as the consumer last saw it.
    pub consumer_lag: IntGaugeVec,
    /// Stored offsets found above the log's end (the broker's log was reset or replaced).
    pub consumer_log_resets: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let counter = IntCounter::new(name, help).expect("valid metric");
    registry.register(Box::new(counter.clone())).expect("metric registered once");
    counter
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let counter = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(counter.clone())).expect("metric registered once");
    counter
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let consumer_lag = IntGaugeVec::new(
        Opts::new("aurora_consumer_lag", "Records on the log not yet consumed, per consumer and topic"),
        &["consumer", "topic"],
    )
    .expect("valid metric");
    registry.register(Box::new(consumer_lag.clone())).expect("metric registered once");
    Metrics {
        events_appended: counter(&registry, "aurora_events_appended_total", "Events appended to the event store by this process"),
        relay_published: counter(&registry, "aurora_relay_published_total", "Events the relay published to Kafka"),
        relay_dead_letters: counter(
            &registry,
            "aurora_relay_dead_letters_total",
            "Events the broker or the client refused, sent to the dead-letter topic by the relay",
        ),
        consumer_dead_letters: counter_vec(
            &registry,
            "aurora_consumer_dead_letters_total",
            "Records a consumer could not process and sent to the dead-letter topic",
            &["consumer"],
        ),
        consumer_lag,
        consumer_log_resets: counter_vec(
            &registry,
            "aurora_consumer_log_resets_total",
            "Stored offsets found beyond the end of the broker's log: the log was reset or replaced",
            &["consumer", "topic"],
        ),
        registry,
    }
});

pub fn metrics() -> &'static Metrics {
    &METRICS
}
