//! Starting and stopping a server: data directory, master key, store,
//! vault, admin secret, clock, background sweeps, and graceful shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use scrip_core::limits;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::clock::{system_now, Clock};
use crate::dispatcher::Dispatcher;
use crate::keys::{EnvKeyProvider, FileKeyProvider, KeyError, KeyProvider};
use crate::network::Simulator;
use crate::secrets::{hash_secret, Secret, SecretHash, PREFIX_ADMIN};
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{LedgerConfig, Store, StoreError};
use crate::vault::{Vault, VaultError};

/// How often holds past their capture deadline are released.
const SWEEP_INTERVAL_SECS: u64 = 5;
/// The shortest admin secret accepted after its prefix.
const ADMIN_KEY_CHARS_MIN: usize = 32;

#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub test_clock: bool,
    /// `SCRIP_ADMIN_KEY`; when `None`, one is generated on first start.
    pub admin_key: Option<String>,
    /// `SCRIP_MASTER_KEY` (base64 of 32 bytes); when `None`, `master.key`
    /// in the data directory is used, created on first start.
    pub master_key: Option<String>,
    /// Fees, settlement delay, payout transit time.
    pub ledger: LedgerConfig,
    /// Pay out every provider's available balance once a UTC day.
    pub auto_payout: bool,
    /// How long a webhook endpoint has to answer (API.md: 10 s).
    pub webhook_timeout: Duration,
    /// Requests per second per secret (burst twice that); 0 disables.
    pub rate_limit_per_second: u32,
    /// Serve HTTPS with this certificate chain and private key (PEM).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `--database-url` / `SCRIP_DATABASE_URL`: a PostgreSQL database shared
    /// by every node; `None` keeps the embedded SQLite file in `data_dir`.
    /// With several nodes, every node needs the same `SCRIP_MASTER_KEY`: the
    /// data keys are stored in the database, wrapped under it.
    pub database_url: Option<String>,
}

impl Default for Config {
    /// The defaults of `scrip serve`.
    fn default() -> Config {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 4780)),
            data_dir: PathBuf::from("./scrip-data"),
            test_clock: false,
            admin_key: None,
            master_key: None,
            ledger: LedgerConfig::default(),
            auto_payout: false,
            webhook_timeout: Duration::from_secs(scrip_core::webhook::DELIVERY_TIMEOUT_SECS),
            rate_limit_per_second: limits::RATE_LIMIT_PER_SECOND_DEFAULT,
            tls: None,
            database_url: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {0}: {1}")]
    DataDir(PathBuf, std::io::Error),
    #[error("SCRIP_ADMIN_KEY must start with sk_admin_ and have at least {ADMIN_KEY_CHARS_MIN} characters after it")]
    AdminKeyFormat,
    #[error("master keys: {0}")]
    Keys(#[from] KeyError),
    #[error("master key: {0}")]
    MasterKey(#[from] VaultError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    #[error("webhook client: {0}")]
    Webhooks(String),
    #[error("{0}")]
    Tls(String),
}

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    /// The admin secret generated on this start, to print once.
    pub generated_admin_key: Option<Secret>,
    /// Whether the master key was generated or read from `master.key`.
    pub master_key_from_file: bool,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    sweeper: JoinHandle<()>,
    dispatcher: JoinHandle<()>,
}

impl Running {
    /// Stops accepting connections, lets in-flight requests finish (up to
    /// the grace period), and returns.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.sweeper.abort();
        // In-flight deliveries finish or are retried after the next start.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.dispatcher).await;
        match tokio::time::timeout(
            Duration::from_secs(limits::SHUTDOWN_GRACE_SECS),
            self.server,
        )
        .await
        {
            Ok(joined) => joined.unwrap_or(Ok(())),
            Err(_) => {
                tracing::warn!("in-flight requests did not finish within the grace period");
                Ok(())
            }
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Opens everything and starts serving on `config.listen` (port 0 picks a
/// free port; see [`Running::addr`]).
pub async fn start(config: Config) -> Result<Running, StartError> {
    create_private_dir(&config.data_dir)
        .map_err(|e| StartError::DataDir(config.data_dir.clone(), e))?;
    let keys: Arc<dyn KeyProvider> = match &config.master_key {
        Some(text) => Arc::new(EnvKeyProvider::parse(text)?),
        None => Arc::new(FileKeyProvider::open(&config.data_dir.join("master.key"))?),
    };
    let master_key_from_file = keys.is_development_default();
    if master_key_from_file {
        tracing::warn!(
            path = %config.data_dir.join("master.key").display(),
            "using the master key file in the data directory: a development default; set SCRIP_MASTER_KEY in production"
        );
    }
    let ledger = config.ledger;
    let store: Arc<dyn Store> = match &config.database_url {
        Some(url) => Arc::new(PgStore::connect(url, ledger).await?),
        None => {
            let db_path = config.data_dir.join("scrip.db");
            let store = tokio::task::spawn_blocking(move || SqliteStore::open(&db_path, ledger))
                .await
                .map_err(|e| StoreError::Database(e.to_string()))??;
            Arc::new(store)
        }
    };

    let stored_keys = store.data_keys().await?;
    let (mut vault, new_keys) = Vault::open(keys.keys()?, &stored_keys, system_now())?;
    if !new_keys.is_empty() {
        store.insert_data_keys(new_keys).await?;
        // Nodes sharing one database may have raced to create the first
        // data keys; the store kept the first: open over what it holds.
        let stored_keys = store.data_keys().await?;
        (vault, _) = Vault::open(keys.keys()?, &stored_keys, system_now())?;
    }

    let mut generated_admin_key = None;
    let admin_hash: SecretHash = match &config.admin_key {
        Some(key) => {
            let valid = key.strip_prefix(PREFIX_ADMIN).is_some_and(|rest| {
                rest.len() >= ADMIN_KEY_CHARS_MIN && rest.len() <= limits::SECRET_LEN_MAX
            });
            if !valid {
                return Err(StartError::AdminKeyFormat);
            }
            hash_secret(key)
        }
        None => match store.admin_key_hash().await? {
            Some(hash) => hash,
            None => {
                let secret = Secret::generate(PREFIX_ADMIN);
                let hash = secret.hash();
                store.set_admin_key_hash(hash).await?;
                generated_admin_key = Some(secret);
                hash
            }
        },
    };

    let clock = Arc::new(if config.test_clock {
        Clock::test(store.clock_offset().await?)
    } else {
        Clock::system()
    });

    let vault = Arc::new(vault);
    let dispatcher = Dispatcher::new(store.clone(), vault.clone(), config.webhook_timeout)
        .map_err(|e| StartError::Webhooks(e.to_string()))?;
    let state = AppState::new(api::Shared {
        store: store.clone(),
        vault,
        network: Arc::new(Simulator),
        clock: clock.clone(),
        admin_hash,
        in_flight: Default::default(),
        metrics: Default::default(),
        auto_payout: config.auto_payout,
        limiter: Arc::new(crate::api::ratelimit::Limiter::new(
            config.rate_limit_per_second,
        )),
        keys,
    });
    let limiter = state.limiter.clone();
    let router = api::app(state);
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Listen(config.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Listen(config.listen, e))?;
    let (shutdown, mut stop) = watch::channel(false);
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    let server = match &config.tls {
        None => tokio::spawn(async move {
            axum::serve(listener, service)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        }),
        Some((cert, key)) => {
            let tls =
                crate::tls::server_config(cert, key).map_err(|e| StartError::Tls(e.to_string()))?;
            let std_listener = listener
                .into_std()
                .map_err(|e| StartError::Listen(config.listen, e))?;
            let handle = axum_server::Handle::new();
            let on_stop = handle.clone();
            tokio::spawn(async move {
                let _ = stop.wait_for(|s| *s).await;
                on_stop.graceful_shutdown(Some(Duration::from_secs(limits::SHUTDOWN_GRACE_SECS)));
            });
            let server = axum_server::from_tcp_rustls(
                std_listener,
                axum_server::tls_rustls::RustlsConfig::from_config(tls),
            )
            .map_err(|e| StartError::Listen(config.listen, e))?
            .handle(handle);
            tokio::spawn(async move { server.serve(service).await })
        }
    };
    let sweeper = tokio::spawn(sweep(store, clock, config.auto_payout, limiter));
    let dispatcher = tokio::spawn(dispatcher.run(shutdown.subscribe()));
    tracing::info!(%addr, test_clock = config.test_clock, "scrip is serving");
    Ok(Running {
        addr,
        generated_admin_key,
        master_key_from_file,
        shutdown,
        server,
        sweeper,
        dispatcher,
    })
}

/// Background upkeep: releases expired holds, settles funds, completes
/// payouts (and makes the daily automatic ones), and forgets old
/// idempotency records.
async fn sweep(
    store: Arc<dyn Store>,
    clock: Arc<Clock>,
    auto_payout: bool,
    limiter: Arc<crate::api::ratelimit::Limiter>,
) {
    let mut ticks: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(SWEEP_INTERVAL_SECS)).await;
        ticks += 1;
        match store.upkeep(clock.now(), auto_payout).await {
            Ok(done) if done == Default::default() => {}
            Ok(done) => tracing::info!(?done, "upkeep"),
            Err(e) => tracing::error!(error = %e, "upkeep failed"),
        }
        if ticks.is_multiple_of(12) {
            limiter.retain_recent();
        }
        if ticks.is_multiple_of(60) {
            let before = clock.now() - limits::IDEMPOTENCY_TTL_SECS;
            if let Err(e) = store.purge_idempotency(before).await {
                tracing::error!(error = %e, "idempotency purge failed");
            }
        }
    }
}
