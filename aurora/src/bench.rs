//! `aurora bench`: figures measured against the running stack, each beside a raw baseline.

use aurora_adapters::Config;

#[derive(Debug, clap::Args)]
pub struct BackboneOptions {
    /// Seconds to run each throughput measurement.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
}

pub async fn backbone(_config: &Config, _options: BackboneOptions) -> anyhow::Result<()> {
    anyhow::bail!("not built yet")
}
