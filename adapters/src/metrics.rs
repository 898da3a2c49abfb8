//! The process's metrics: counters and gauges that the code updates as it works, so that serving
//! `/metrics` costs a walk over a few atomics and never a query. Each process (gateway,
//! processors, projections, or all in one) exposes its own; Prometheus adds them up.

use std::sync::LazyLock;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

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
    /// Installation-wide gauges, sampled by the gateway every `metrics_interval`:
    /// events appended but not yet published,
    pub relay_backlog: IntGauge,
    /// records on the log not yet applied, per projection,
    pub projection_lag: IntGaugeVec,
    /// and records on the dead-letter topic.
    pub dead_letters_on_log: IntGauge,
    /// Stored offsets found above the log's end (the broker's log was reset or replaced).
    pub consumer_log_resets: IntCounterVec,
    /// Times a resting consumer woke up to fetch, per consumer.
    pub consumer_wakeups: IntCounterVec,
    /// 1 while a consumer rests on quiet topics (no fetch open on the broker), per consumer.
    pub consumer_resting: IntGaugeVec,
    /// Partitions a consumer reads now, per consumer.
    pub consumer_partitions: IntGaugeVec,
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
    let projection_lag = IntGaugeVec::new(
        Opts::new("aurora_projection_consumer_lag", "Records on the log not yet applied by each projection (sampled)"),
        &["projection"],
    )
    .expect("valid metric");
    registry.register(Box::new(projection_lag.clone())).expect("metric registered once");
    let consumer_resting = IntGaugeVec::new(
        Opts::new("aurora_consumer_resting", "1 while a consumer rests on quiet topics, with no fetch open on the broker"),
        &["consumer"],
    )
    .expect("valid metric");
    registry.register(Box::new(consumer_resting.clone())).expect("metric registered once");
    let consumer_partitions =
        IntGaugeVec::new(Opts::new("aurora_consumer_partitions", "Partitions a consumer reads now"), &["consumer"]).expect("valid metric");
    registry.register(Box::new(consumer_partitions.clone())).expect("metric registered once");
    let gauge = |name: &str, help: &str| {
        let gauge = IntGauge::new(name, help).expect("valid metric");
        registry.register(Box::new(gauge.clone())).expect("metric registered once");
        gauge
    };
    Metrics {
        relay_backlog: gauge("aurora_relay_backlog", "Events appended but not yet published to Kafka (sampled)"),
        dead_letters_on_log: gauge("aurora_dead_letters_total", "Records on the dead-letter topic (sampled)"),
        projection_lag,
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
        consumer_log_resets: counter_vec(
            &registry,
            "aurora_consumer_log_resets_total",
            "Stored offsets found beyond the end of the broker's log: the log was reset or replaced",
            &["consumer", "topic"],
        ),
        consumer_wakeups: counter_vec(
            &registry,
            "aurora_consumer_wakeups_total",
            "Times a consumer resting on quiet topics woke up to fetch",
            &["consumer"],
        ),
        consumer_resting,
        consumer_partitions,
        registry,
    }
});

pub fn metrics() -> &'static Metrics {
    &METRICS
}
