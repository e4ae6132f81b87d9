//! Client subcommands for each role (being written).

use clap::Subcommand;

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Show the server's health.
    Health {
        #[arg(long, env = "SCRIP_URL", default_value = "http://127.0.0.1:4780")]
        url: String,
    },
}

pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Health { url } => {
            let body = reqwest::get(format!("{url}/healthz")).await?.text().await?;
            println!("{body}");
            Ok(())
        }
    }
}
