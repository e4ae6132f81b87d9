//! `scrip demo` (being written).

use clap::Args;

#[derive(Args)]
pub struct DemoArgs {}

pub async fn run(_args: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("the demo is not written yet")
}
