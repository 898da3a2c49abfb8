//! The operator tools: schema generation, projection replay, audit export and event tail.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use aurora_adapters::kafka::{envelope_of, partition_watermarks, standalone_consumer};
use aurora_adapters::Config;
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

pub fn write_schemas(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let files = aurora_events::schema::generated_files();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        if name.ends_with(".json") && !files.contains_key(&name) {
            std::fs::remove_file(&path)?;
        }
    }
    for (name, content) in &files {
        std::fs::write(dir.join(name), content)?;
    }
    eprintln!("wrote {} files to {}", files.len(), dir.display());
    Ok(())
}

/// A rebuild's progress, drawn as a bar on the terminal.
struct Bar(ProgressBar);

impl aurora_projections::replay::Progress for Bar {
    fn start(&self, what: &str, total: u64) {
        self.0.set_length(total);
        self.0.set_message(what.to_owned());
    }
    fn grow(&self, more: u64) {
        self.0.inc_length(more);
    }
    fn advance(&self, done: u64) {
        self.0.inc(done);
    }
    fn finish(&self, what: &str) {
        self.0.finish_with_message(what.to_owned());
    }
}

fn progress_bar(unit: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    let template = format!("{{msg}} [{{bar:40}}] {{pos}}/{{len}} {unit} ({{per_sec}}, eta {{eta}})");
    bar.set_style(ProgressStyle::with_template(&template).expect("template is valid").progress_chars("=> "));
    bar
}

use aurora_projections::replay::PartialLog;

pub async fn replay(config: &Config, name: &str, force: bool) -> anyhow::Result<()> {
    let projection = aurora_projections::projection_named(config, name).ok_or_else(|| {
        let known: Vec<&str> = aurora_projections::all_projections(config).iter().map(|projection| projection.name()).collect();
        anyhow::anyhow!("unknown projection `{name}`; known: {}", known.join(", "))
    })?;
    let pool = aurora_adapters::postgres::connect(config).await?;
    aurora_commands::migrate(&pool).await?;
    let bar = Bar(progress_bar("events"));
    let partial_log = if force { PartialLog::Accept } else { PartialLog::Refuse };
    let report = aurora_projections::replay::rebuild(projection, config, &pool, &bar, partial_log).await?;
    let seconds = report.elapsed.as_secs_f64();
    eprintln!(
        "rebuilt {name}: {} events in {seconds:.1} s ({:.0} events/s), {} poison records skipped",
        report.events_applied,
        report.events_applied as f64 / seconds.max(1e-9),
        report.poison_skipped
    );
    Ok(())
}

pub async fn export_audit(config: &Config, out: &Path, org: Option<uuid::Uuid>) -> anyhow::Result<()> {
    let pool = aurora_adapters::postgres::connect(config).await?;
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE $1::uuid IS NULL OR org_id = $1").bind(org).fetch_one(&pool).await?;
    let bar = progress_bar("events");
    bar.set_length(total as u64);
    bar.set_message("exporting audit log");
    let to_stdout = out == Path::new("-");
    let mut writer: Box<dyn Write> = if to_stdout {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(std::io::BufWriter::new(std::fs::File::create(out)?))
    };
    let mut rows = sqlx::query_as::<
        _,
        (uuid::Uuid, uuid::Uuid, String, i64, String, i32, String, chrono::DateTime<chrono::Utc>, uuid::Uuid, Option<uuid::Uuid>),
    >(
        "SELECT event_id, org_id, stream, stream_version, event_type, schema_version, actor, occurred_at, correlation_id, causation_id \
         FROM audit_log WHERE $1::uuid IS NULL OR org_id = $1 ORDER BY occurred_at, event_id",
    )
    .bind(org)
    .fetch(&pool);
    let mut written = 0u64;
    while let Some((
        event_id,
        org_id,
        stream,
        stream_version,
        event_type,
        schema_version,
        actor,
        occurred_at,
        correlation_id,
        causation_id,
    )) = rows.try_next().await?
    {
        let line = serde_json::json!({
            "event_id": event_id,
            "org_id": org_id,
            "stream": stream,
            "stream_version": stream_version,
            "type": event_type,
            "schema_version": schema_version,
            "actor": actor,
            "occurred_at": occurred_at,
            "correlation_id": correlation_id,
            "causation_id": causation_id,
        });
        serde_json::to_writer(&mut writer, &line)?;
        writer.write_all(b"\n")?;
        written += 1;
        bar.inc(1);
    }
    writer.flush()?;
    bar.finish_with_message("audit log exported");
    if !to_stdout {
        eprintln!("wrote {written} events to {}", out.display());
    }
    Ok(())
}

pub async fn tail_events(
    config: &Config,
    topics: Vec<String>,
    from_beginning: bool,
    limit: Option<u64>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let topics = if topics.is_empty() { aurora_events::topics::all_event_topics(&config.kafka.topic_prefix) } else { topics };
    let probe = standalone_consumer(config)?;
    let mut assignment = TopicPartitionList::new();
    for topic in &topics {
        let marks = tokio::task::block_in_place(|| partition_watermarks(&probe, topic, Duration::from_secs(10)))?;
        if marks.is_empty() {
            eprintln!("topic {topic} does not exist (yet); skipping it");
        }
        for (partition, low, high) in marks {
            let start = if from_beginning { low } else { high };
            assignment.add_partition_offset(topic, partition, Offset::Offset(start))?;
        }
    }
    if assignment.count() == 0 {
        anyhow::bail!("none of the topics exist: {}", topics.join(", "));
    }
    let consumer: StreamConsumer =
        aurora_adapters::kafka::consumer_config(config, &format!("aurora-tail-{}", uuid::Uuid::now_v7())).create()?;
    consumer.assign(&assignment)?;
    let mut printed = 0u64;
    let stdout = std::io::stdout();
    while limit.is_none_or(|limit| printed < limit) {
        let message = tokio::select! {
            _ = shutdown.cancelled() => break,
            received = consumer.recv() => received?,
        };
        match envelope_of(&message) {
            Ok(envelope) => {
                let mut line = serde_json::to_vec(&aurora_events::cloudevents::to_structured_json(&envelope))?;
                line.push(b'\n');
                let mut out = stdout.lock();
                out.write_all(&line)?;
                out.flush()?;
                printed += 1;
            }
            Err(error) => {
                eprintln!("skipping {}[{}]@{}: not an Aurora CloudEvent: {error}", message.topic(), message.partition(), message.offset())
            }
        }
    }
    Ok(())
}
