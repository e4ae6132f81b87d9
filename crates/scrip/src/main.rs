//! The `scrip` binary: `serve` runs the server, `demo` plays the trust
//! triangle end to end, and the other subcommands are API clients for each
//! role (see `cli`).

mod bench;
mod cli;
mod demo;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use scrip_server::server::{self, Config};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator: a request allocates many small,
/// short-lived buffers on every core, and glibc's malloc showed up at ~7% of
/// the server's CPU time under `scrip bench` (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Master keys: status and rotation, online (through the API) or
    /// offline (against a data directory).
    #[command(subcommand)]
    Keys(KeysCommand),
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
    /// Serve HTTPS: the certificate chain (PEM). Needs --tls-key.
    #[arg(long, env = "SCRIP_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Serve HTTPS: the certificate's private key (PEM). Needs --tls-cert.
    #[arg(long, env = "SCRIP_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, env = "SCRIP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Requests per second allowed per secret (burst twice that); 0 disables.
    #[arg(long, env = "SCRIP_RATE_LIMIT_PER_SECOND", default_value_t = scrip_core::limits::RATE_LIMIT_PER_SECOND_DEFAULT)]
    rate_limit_per_second: u32,
    /// A PostgreSQL database shared by several nodes
    /// (`postgres://user@host:5432/db`) instead of the SQLite file in
    /// --data-dir. Every node needs the same SCRIP_MASTER_KEY and SCRIP_ADMIN_KEY.
    #[arg(long, env = "SCRIP_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Pay out every provider's available balance once a UTC day.
    #[arg(long, env = "SCRIP_AUTO_PAYOUT", value_parser = clap::builder::BoolishValueParser::new(), default_value_t = false, num_args = 0..=1, default_missing_value = "true")]
    auto_payout: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr, filtered by `SCRIP_LOG` (else `default_filter`).
fn init_logging(format: LogFormat, default_filter: &str) {
    let mut filter =
        EnvFilter::try_from_env("SCRIP_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    // The PostgreSQL driver logs every statement's parameters at debug
    // level, and a parameter can be anything a client sent (a card number
    // typed as an id): never below info, whatever SCRIP_LOG says.
    if let Ok(quiet) = "tokio_postgres=info".parse() {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format, "info");
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
        rate_limit_per_second: args.rate_limit_per_second,
        tls: args.tls_cert.zip(args.tls_key),
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url.filter(|u| !u.is_empty()),
        test_clock: args.test_clock,
        admin_key: std::env::var("SCRIP_ADMIN_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        master_key: std::env::var("SCRIP_MASTER_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        ..Config::default()
    };
    let tls = config.tls.is_some();
    let running = server::start(config).await?;
    if let Some(key) = &running.generated_admin_key {
        // Printed once, to stdout, and never again: only its hash is kept.
        println!(
            "Generated admin secret (shown once; store it now): {}",
            key.expose()
        );
    }
    let scheme = if tls { "https" } else { "http" };
    println!("scrip listening on {scheme}://{}", running.addr);
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
        Command::Demo(args) => {
            // The narration is the demo's output; logs only on request.
            init_logging(LogFormat::Text, "warn");
            demo::run(args).await
        }
        Command::Bench(args) => bench::run(args).await,
        Command::Client(command) => cli::run(command).await,
        Command::Keys(command) => keys(command).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a new master key active and re-wrap every data key under it.
    /// With --data-dir, offline against a stopped server's data; otherwise
    /// online through `POST /v1/keys/rotate` (admin secret).
    Rotate {
        /// Rotate offline, against this data directory (the server must be
        /// stopped).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, env = "SCRIP_URL", default_value = "http://127.0.0.1:4780")]
        url: String,
        #[arg(long, env = "SCRIP_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
    /// Show the master keys and which one wraps each data key (ids only).
    Status {
        #[arg(long, env = "SCRIP_URL", default_value = "http://127.0.0.1:4780")]
        url: String,
        #[arg(long, env = "SCRIP_API_KEY", hide_env_values = true)]
        api_key: Option<String>,
    },
}

async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    use scrip_server::keys::{EnvKeyProvider, FileKeyProvider, KeyProvider};
    use scrip_server::store::Store;
    let online = |url: String,
                  api_key: Option<String>,
                  method: reqwest::Method,
                  path: &'static str| async move {
        let key = api_key.ok_or_else(|| {
            anyhow::anyhow!("set SCRIP_API_KEY (or --api-key) to the admin secret")
        })?;
        let body = serde_json::json!({});
        let r = scrip_client::Client::new(url)
            .with_secret(key)
            .send(
                method,
                path,
                Some(&body).filter(|_| path.ends_with("rotate")),
                None,
            )
            .await?;
        if r.status != 200 {
            anyhow::bail!(
                "{} ({}/{})",
                r.body["error"]["message"]
                    .as_str()
                    .unwrap_or("request failed"),
                r.body["error"]["type"].as_str().unwrap_or("?"),
                r.body["error"]["code"].as_str().unwrap_or("?")
            );
        }
        println!("{}", serde_json::to_string_pretty(&r.body)?);
        Ok(())
    };
    match command {
        KeysCommand::Status { url, api_key } => {
            online(url, api_key, reqwest::Method::GET, "/v1/keys").await
        }
        KeysCommand::Rotate {
            data_dir: None,
            url,
            api_key,
        } => online(url, api_key, reqwest::Method::POST, "/v1/keys/rotate").await,
        KeysCommand::Rotate {
            data_dir: Some(dir),
            ..
        } => {
            let provider: Box<dyn KeyProvider> = match std::env::var("SCRIP_MASTER_KEY")
                .ok()
                .filter(|k| !k.is_empty())
            {
                Some(text) => Box::new(EnvKeyProvider::parse(&text)?),
                None => Box::new(FileKeyProvider::open(&dir.join("master.key"))?),
            };
            let db = dir.join("scrip.db");
            if !db.exists() {
                anyhow::bail!("{} holds no Scrip database", dir.display());
            }
            let store = scrip_server::store::sqlite::SqliteStore::open(&db, Default::default())?;
            let stored = store.data_keys().await?;
            let (vault, created) = scrip_server::vault::Vault::open(provider.keys()?, &stored, 0)?;
            if !created.is_empty() {
                store.insert_data_keys(created).await?;
            }
            let r = scrip_server::keys::rotate(provider.as_ref(), &vault, &store).await?;
            println!(
                "active master key {}; re-wrapped {} data key(s); retired {:?}",
                r.active_master_key, r.rewrapped, r.retired
            );
            Ok(())
        }
    }
}
