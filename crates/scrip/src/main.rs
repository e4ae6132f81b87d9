//! The `scrip` binary: `serve` runs the server, `demo` plays the trust
//! triangle end to end, and the other subcommands are API clients for each
//! role (see `cli`).

mod bench;
mod cli;
mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use scrip_server::server::{self, Config};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "scrip",
    version,
    about = "Scoped payment tokens for AI agents: the card stays in the vault."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the Scrip server.
    Serve(ServeArgs),
    /// Play the whole trust triangle against an in-process server.
    Demo(demo::DemoArgs),
    /// Load-test the API (spread, hot, mixed, revoke-storm), then verify invariants.
    Bench(bench::BenchArgs),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:4780", env = "SCRIP_LISTEN")]
    listen: SocketAddr,
    /// Directory for the database and (in development) the master key file.
    #[arg(long, default_value = "./scrip-data", env = "SCRIP_DATA_DIR")]
    data_dir: PathBuf,
    /// Test mode: a clock the admin can advance (`/v1/test_helpers/advance_clock`).
    #[arg(long, env = "SCRIP_TEST_CLOCK", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    test_clock: bool,
    /// Processor fee in basis points of each captured amount (290 = 2.9%).
    #[arg(long, env = "SCRIP_FEE_BPS", default_value_t = 290)]
    fee_bps: u32,
    /// Fixed processor fee per capture, in hundredths of the currency's major
    /// unit (cents for usd; scaled and rounded for zero-decimal currencies).
    #[arg(long, env = "SCRIP_FEE_FIXED", default_value_t = 30)]
    fee_fixed: i64,
    /// Days from capture until a provider's funds are available.
    #[arg(long, env = "SCRIP_SETTLEMENT_DELAY_DAYS", default_value_t = 2)]
    settlement_delay_days: i64,
    /// Pay out every provider's available balance once a UTC day.
    #[arg(long, env = "SCRIP_AUTO_PAYOUT", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    auto_payout: bool,
}

fn init_logging() {
    let filter = EnvFilter::try_from_env("SCRIP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging();
    let fees = scrip_core::ledger::Fees::new(args.fee_bps, args.fee_fixed)?;
    if !(0..=scrip_core::limits::SETTLEMENT_DELAY_DAYS_MAX).contains(&args.settlement_delay_days) {
        anyhow::bail!(
            "--settlement-delay-days must be from 0 to {}",
            scrip_core::limits::SETTLEMENT_DELAY_DAYS_MAX
        );
    }
    let config = Config {
        ledger: scrip_server::store::LedgerConfig {
            fees,
            settlement_delay_secs: args.settlement_delay_days * 86_400,
            ..Default::default()
        },
        auto_payout: args.auto_payout,
        listen: args.listen,
        data_dir: args.data_dir,
        test_clock: args.test_clock,
        admin_key: std::env::var("SCRIP_ADMIN_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        master_key: std::env::var("SCRIP_MASTER_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        ..Config::default()
    };
    let running = server::start(config).await?;
    if let Some(key) = &running.generated_admin_key {
        // Printed once, to stdout, and never again: only its hash is kept.
        println!(
            "Generated admin secret (shown once; store it now): {}",
            key.expose()
        );
    }
    println!("scrip listening on http://{}", running.addr);
    shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    running.shutdown().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Bench(args) => bench::run(args).await,
        Command::Client(command) => cli::run(command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
