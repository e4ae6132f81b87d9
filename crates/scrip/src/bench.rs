//! `scrip bench`: drives the HTTP API with many concurrent keep-alive
//! connections, reports throughput and latency, then verifies through the
//! API that no interleaving broke an invariant.
//!
//! By default it starts a server in-process (a fresh data directory, the
//! embedded SQLite store, exactly as `scrip demo` does); with
//! `--database-url` that server stores its data in PostgreSQL instead, in a
//! fresh schema dropped afterwards; with `--url` it
//! targets a server that is already running, with the operator secret from
//! `--admin-key` / `SCRIP_ADMIN_KEY`. Everything it needs (a customer,
//! orchestrator credentials, a provider, a vaulted test card, tokens) is
//! provisioned through the API with the typed client.
//!
//! Each connection is one tokio task with its own HTTP client holding one
//! keep-alive connection; it sends one request at a time until the
//! duration is over. Request bodies are prepared before the clock starts
//! and response bodies are decoded only as far as the scenario needs, so
//! the load generator spends as little of the machine as it can.
//!
//! Scenarios:
//! - `spread`: charges of `--amount` (default 1) over `--tokens` tokens with
//!   lifetime caps far out of reach.
//! - `hot`: every connection charges one token whose cap is reached about
//!   halfway through the run (estimated from a warm-up on another token, or
//!   `--cap`); `cap_exceeded` refusals after that are expected.
//! - `mixed`: out of every 100 operations, 40 charges, 10 holds
//!   (`capture:false`), 10 captures of a hold, 10 partial refunds of a
//!   captured charge, 25 introspections (`GET /v1/tokens/self`) and 5 token
//!   issues; a capture with no hold to capture places a hold instead, a
//!   refund with nothing to refund charges instead.
//! - `issue`: token issuing only; `introspect`: `GET /v1/tokens/self` only,
//!   over `--tokens` tokens.
//! - `revoke-storm`: charges over tokens of `--credentials` orchestrator
//!   credentials; all but the first credential are revoked one after another
//!   during the run. `token_revoked` refusals are expected, but none before
//!   the revocation was sent, and no success for a request sent after the
//!   revocation's response.
//!
//! Verification: no token's spend exceeds its cap; each token's spend equals
//! the charges the server lists for it; the charges and amounts the bench saw
//! succeed equal what the server holds; in `hot` the captured amount is
//! exactly the successes' sum; the ledger is balanced when the server has
//! `GET /v1/ledger/verify`; and no request failed unexpectedly. Any failed
//! check makes the command exit non-zero.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use hyper::{Method, Uri};
use rand::distributions::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::HeaderValue;
use scrip_client::{CardParams, Charge, Client, CustomerParams, HttpMethod, TokenParams};
use scrip_server::server::{self, Config};
use scrip_server::store::postgres::{url_with_search_path, PgStore};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::wire::{Origin, Unanswered, Wire};

/// Cap of the tokens whose cap must never be reached (the API's maximum).
const CAP_UNREACHABLE: i64 = 1_000_000_000_000;
/// Requests in flight while provisioning and verifying.
const SETUP_PARALLELISM: usize = 16;
/// Most captured charges a `mixed` connection remembers for refunds.
const REFUNDABLE_KEPT_MAX: usize = 1_000;
/// Latency histogram range: 1 µs to 5 minutes, 3 significant digits.
const LATENCY_MAX_MICROS: u64 = 300_000_000;

#[derive(Args)]
pub struct BenchArgs {
    /// What to drive: spread, hot, mixed, revoke-storm, issue or introspect.
    #[arg(long, value_enum, default_value_t = Scenario::Spread)]
    scenario: Scenario,
    /// Target this running server instead of starting one in-process
    /// (`http://host:port`: the load is plain HTTP/1.1).
    #[arg(long)]
    url: Option<String>,
    /// The operator secret of the server given with --url.
    #[arg(long, env = "SCRIP_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Concurrent keep-alive connections, one request in flight on each.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// How long to drive the load: `10s`, `500ms`, `2m` or seconds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Tokens to spread charges over (spread, mixed, revoke-storm).
    #[arg(long, default_value_t = 1000)]
    tokens: usize,
    /// Amount of each charge in minor units [default: 1; 100 in mixed].
    #[arg(long)]
    amount: Option<i64>,
    /// hot: the token's cap [default: about half of what the warm-up rate
    /// would charge in the whole run].
    #[arg(long)]
    cap: Option<i64>,
    /// hot: how long to measure the charge rate before choosing the cap.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// revoke-storm: orchestrator credentials; all but one are revoked
    /// during the run.
    #[arg(long, default_value_t = 8)]
    credentials: usize,
    /// Start the in-process server on this PostgreSQL database (in a fresh
    /// schema, dropped afterwards) instead of SQLite.
    #[arg(long, env = "SCRIP_BENCH_DATABASE_URL", conflicts_with = "url")]
    database_url: Option<String>,
    /// Print a machine-readable summary on stdout instead of the report.
    #[arg(long)]
    json: bool,
    /// No progress display and no setup narration on stderr.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Spread,
    Hot,
    Mixed,
    RevokeStorm,
    /// Token issuing only (the orchestrator's `POST /v1/tokens`).
    Issue,
    /// Token introspection only (the agent's `GET /v1/tokens/self`).
    Introspect,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Spread => "spread",
            Scenario::Hot => "hot",
            Scenario::Mixed => "mixed",
            Scenario::RevokeStorm => "revoke-storm",
            Scenario::Issue => "issue",
            Scenario::Introspect => "introspect",
        }
    }

    /// Refusals the scenario provokes on purpose: counted apart from errors.
    fn expects(self, op: Op, status: u16, code: &str) -> bool {
        match self {
            Scenario::Hot => op == Op::Charge && status == 402 && code == "cap_exceeded",
            Scenario::RevokeStorm => op == Op::Charge && status == 402 && code == "token_revoked",
            Scenario::Spread | Scenario::Mixed | Scenario::Issue | Scenario::Introspect => false,
        }
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration like 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        _ => return Err(format!("`{text}`: the unit must be ms, s or m")),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > 86_400.0 {
        return Err(format!("`{text}` must be more than 0 and at most a day"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// The operations the bench sends, for per-operation statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Op {
    Charge,
    Hold,
    Capture,
    Refund,
    Introspect,
    Issue,
    Revoke,
}

const OPS: [Op; 7] = [
    Op::Charge,
    Op::Hold,
    Op::Capture,
    Op::Refund,
    Op::Introspect,
    Op::Issue,
    Op::Revoke,
];

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Charge => "charge",
            Op::Hold => "hold",
            Op::Capture => "capture",
            Op::Refund => "refund",
            Op::Introspect => "introspect",
            Op::Issue => "issue_token",
            Op::Revoke => "revoke_credential",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

// --- entry point -------------------------------------------------------------

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let plan = Plan::from_args(&args)?;
    let say = Say {
        quiet: args.quiet,
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    let target = Target::start(&args).await?;
    let outcome = bench(
        &plan,
        &target.url,
        &target.admin_key,
        &target.describe(),
        say,
    )
    .await;
    let stopped = target.stop().await;
    let report = outcome?;
    stopped?;
    if args.json {
        let text = serde_json::to_string_pretty(&report.to_json())?;
        println!("{text}");
    } else {
        print!("{}", report.render());
    }
    let failed: Vec<&Check> = report
        .checks
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .collect();
    if !failed.is_empty() {
        for check in &failed {
            eprintln!("FAILED: {}: {}", check.name, check.detail);
        }
        bail!("{} invariant check(s) failed", failed.len());
    }
    Ok(())
}

/// What the arguments ask for, validated.
struct Plan {
    scenario: Scenario,
    connections: usize,
    duration: Duration,
    tokens: usize,
    amount: i64,
    cap: Option<i64>,
    warmup: Duration,
    credentials: usize,
}

impl Plan {
    fn from_args(args: &BenchArgs) -> anyhow::Result<Plan> {
        if args.connections == 0 || args.connections > 10_000 {
            bail!("--connections must be from 1 to 10000");
        }
        let tokens = match args.scenario {
            Scenario::Hot => 1,
            _ => args.tokens,
        };
        if tokens == 0 || tokens > 1_000_000 {
            bail!("--tokens must be from 1 to 1000000");
        }
        let credentials = match args.scenario {
            Scenario::RevokeStorm => args.credentials,
            _ => 1,
        };
        if args.scenario == Scenario::RevokeStorm && !(2..=tokens).contains(&credentials) {
            bail!("revoke-storm needs --credentials from 2 to --tokens");
        }
        let amount = args.amount.unwrap_or(match args.scenario {
            Scenario::Mixed => 100,
            _ => 1,
        });
        if !(1..=99_999_999).contains(&amount) {
            bail!("--amount must be from 1 to 99999999 minor units");
        }
        if let Some(cap) = args.cap {
            if args.scenario != Scenario::Hot {
                bail!("--cap applies to the hot scenario only");
            }
            if !(amount..=CAP_UNREACHABLE).contains(&cap) {
                bail!("--cap must be from --amount to {CAP_UNREACHABLE}");
            }
        }
        Ok(Plan {
            scenario: args.scenario,
            connections: args.connections,
            duration: args.duration,
            tokens,
            amount,
            cap: args.cap,
            warmup: args.warmup,
            credentials,
        })
    }
}

/// Narration and progress on stderr.
#[derive(Clone, Copy)]
struct Say {
    quiet: bool,
    progress: bool,
}

impl Say {
    fn line(self, text: impl std::fmt::Display) {
        if !self.quiet {
            eprintln!("{text}");
        }
    }
}

/// The server under load: started here, or already running elsewhere.
struct Target {
    url: String,
    admin_key: String,
    in_process: Option<(server::Running, tempfile::TempDir)>,
    /// The PostgreSQL database and the schema made for this run.
    schema: Option<(String, String)>,
}

impl Target {
    async fn start(args: &BenchArgs) -> anyhow::Result<Target> {
        if let Some(url) = &args.url {
            let admin_key = args.admin_key.clone().filter(|k| !k.is_empty()).context(
                "--url needs the server's operator secret: --admin-key or SCRIP_ADMIN_KEY",
            )?;
            // The load is plain HTTP/1.1: refuse any other URL before
            // provisioning anything.
            Origin::parse(url)?;
            return Ok(Target {
                url: url.trim_end_matches('/').to_owned(),
                admin_key,
                in_process: None,
                schema: None,
            });
        }
        let data = tempfile::TempDir::new().context("cannot create a temporary data directory")?;
        let admin_key = format!(
            "sk_admin_{}",
            rand::thread_rng()
                .sample_iter(&Alphanumeric)
                .take(40)
                .map(char::from)
                .collect::<String>()
        );
        // The store is chosen here; everything after this talks HTTP only.
        let schema = match &args.database_url {
            Some(base) => {
                let name = format!(
                    "scrip_bench_{}",
                    rand::thread_rng()
                        .sample_iter(&Alphanumeric)
                        .take(12)
                        .map(char::from)
                        .collect::<String>()
                        .to_lowercase()
                );
                PgStore::create_schema(base, &name)
                    .await
                    .with_context(|| format!("cannot create schema {name} on {base}"))?;
                Some((base.clone(), name))
            }
            None => None,
        };
        let database_url = schema
            .as_ref()
            .map(|(base, name)| url_with_search_path(base, name));
        let running = server::start(Config {
            listen: "127.0.0.1:0".parse()?,
            data_dir: data.path().to_path_buf(),
            test_clock: false,
            admin_key: Some(admin_key.clone()),
            master_key: None,
            // The bench measures throughput; the per-secret limit would cap it.
            rate_limit_per_second: 0,
            database_url,
            ..Config::default()
        })
        .await;
        let running = match running {
            Ok(running) => running,
            Err(e) => {
                if let Some((base, name)) = &schema {
                    let _ = PgStore::drop_schema(base, name).await;
                }
                return Err(
                    anyhow::Error::new(e).context("cannot start the in-process Scrip server")
                );
            }
        };
        Ok(Target {
            url: format!("http://{}", running.addr),
            admin_key,
            in_process: Some((running, data)),
            schema,
        })
    }

    fn describe(&self) -> String {
        match self.in_process {
            Some(_) => match &self.schema {
                None => format!(
                    "in-process server at {} (SQLite, fresh data directory)",
                    self.url
                ),
                Some((_, name)) => format!(
                    "in-process server at {} (PostgreSQL, fresh schema {name})",
                    self.url
                ),
            },
            None => format!("server at {}", self.url),
        }
    }

    async fn stop(self) -> anyhow::Result<()> {
        if let Some((running, data)) = self.in_process {
            let stopped = running
                .shutdown()
                .await
                .context("the in-process server did not stop cleanly");
            drop(data);
            if let Some((base, name)) = &self.schema {
                PgStore::drop_schema(base, name)
                    .await
                    .with_context(|| format!("cannot drop schema {name}"))?;
            }
            stopped?;
        }
        Ok(())
    }
}

// --- provisioning ------------------------------------------------------------

/// A token the bench holds.
#[derive(Clone)]
struct BenchToken {
    id: String,
    secret: String,
    /// Index into `World::credentials`.
    credential: usize,
    cap: i64,
}

struct Credential {
    id: String,
    secret: String,
}

/// Everything provisioned through the API before the load starts.
struct World {
    provider_id: String,
    provider_secret: String,
    payment_method: String,
    credentials: Vec<Credential>,
}

async fn provision(admin: &Client, plan: &Plan, say: Say) -> anyhow::Result<World> {
    let run_tag: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(8)
        .map(char::from)
        .collect();
    let customer = admin
        .create_customer(&CustomerParams {
            email: format!("bench-{run_tag}@example.com"),
            name: format!("scrip bench {run_tag}"),
        })
        .await
        .context("cannot create the bench customer")?;
    let mut credentials = Vec::with_capacity(plan.credentials);
    for i in 0..plan.credentials {
        let c = admin
            .create_credential(&customer.id, Some(&format!("bench-{i}")))
            .await
            .context("cannot create an orchestrator credential")?;
        let secret = c
            .secret
            .context("the credential was created without its secret")?;
        credentials.push(Credential { id: c.id, secret });
    }
    let provider = admin
        .create_provider(&format!("scrip bench {run_tag}"))
        .await
        .context("cannot create the bench provider")?;
    let provider_secret = provider
        .secret
        .context("the provider was created without its secret")?;
    let first = credentials
        .first()
        .context("at least one credential is needed")?;
    let orchestrator = admin.with_secret(first.secret.clone());
    let exp_year = i64::from(time::OffsetDateTime::now_utc().year()) + 3;
    let pm = orchestrator
        .add_card(&CardParams {
            number: "4242424242424242".into(),
            exp_month: 12,
            exp_year,
            cvc: "123".into(),
            customer: None,
        })
        .await
        .context("cannot vault the test card")?;
    say.line(format!(
        "provisioned customer {}, provider {}, {} credential(s), card {}",
        customer.id,
        provider.id,
        credentials.len(),
        pm.id
    ));
    Ok(World {
        provider_id: provider.id,
        provider_secret,
        payment_method: pm.id,
        credentials,
    })
}

/// Issues `count` tokens with `cap` (lifetime), round-robin over the
/// world's credentials, `SETUP_PARALLELISM` at a time.
async fn issue_tokens(
    admin: &Client,
    world: &World,
    count: usize,
    cap: i64,
) -> anyhow::Result<Vec<BenchToken>> {
    let next = Arc::new(AtomicUsize::new(0));
    let issuers: Arc<Vec<Client>> = Arc::new(
        world
            .credentials
            .iter()
            .map(|c| admin.with_secret(c.secret.clone()))
            .collect(),
    );
    let params = Arc::new(TokenParams {
        payment_method: world.payment_method.clone(),
        provider: world.provider_id.clone(),
        currency: "usd".into(),
        cap_amount: cap,
        period: "none".into(),
        ..TokenParams::default()
    });
    let mut tasks = Vec::new();
    for _ in 0..SETUP_PARALLELISM.min(count) {
        let (next, issuers, params) = (next.clone(), issuers.clone(), params.clone());
        tasks.push(tokio::spawn(async move {
            let mut issued = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let credential = i % issuers.len();
                let issuer = issuers.get(credential).context("no issuer")?;
                let t = issuer
                    .issue_token(&params)
                    .await
                    .context("cannot issue a bench token")?;
                let secret = t.token.context("a token was issued without its secret")?;
                issued.push((
                    i,
                    BenchToken {
                        id: t.id,
                        secret,
                        credential,
                        cap,
                    },
                ));
            }
            anyhow::Ok(issued)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for task in tasks {
        all.extend(task.await.context("a provisioning task failed")??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

// --- the bench ---------------------------------------------------------------

async fn bench(
    plan: &Plan,
    url: &str,
    admin_key: &str,
    target: &str,
    say: Say,
) -> anyhow::Result<Report> {
    let admin = Client::new(url).with_secret(admin_key);
    admin
        .health()
        .await
        .with_context(|| format!("the server at {url} does not answer /healthz"))?;
    let world = provision(&admin, plan, say).await?;

    let mut warmup = None;
    let tokens = if plan.scenario == Scenario::Hot {
        let warm = issue_tokens(&admin, &world, 1, CAP_UNREACHABLE).await?;
        say.line(format!(
            "warm-up: {} on one token to estimate the charge rate",
            seconds(plan.warmup)
        ));
        let phase = Phase {
            scenario: Scenario::Spread,
            duration: plan.warmup,
            revocations: false,
            progress: false,
        };
        let result = drive(plan, &phase, &admin, &world, &warm).await?;
        let rate = result.recorder.ok(Op::Charge) as f64 / result.elapsed.as_secs_f64();
        let cap = match plan.cap {
            Some(cap) => cap,
            None => {
                let charges = (rate * plan.duration.as_secs_f64() / 2.0).max(10.0) as i64;
                (charges.saturating_mul(plan.amount)).clamp(plan.amount, CAP_UNREACHABLE)
            }
        };
        // A multiple of the amount, so that reaching the cap leaves 0.
        let cap = (cap / plan.amount).max(1) * plan.amount;
        warmup = Some(Warmup {
            tokens: warm,
            result,
            rate,
            cap,
        });
        issue_tokens(&admin, &world, 1, cap).await?
    } else {
        say.line(format!("issuing {} token(s)…", plan.tokens));
        let began = Instant::now();
        let tokens = issue_tokens(&admin, &world, plan.tokens, CAP_UNREACHABLE).await?;
        say.line(format!(
            "issued {} token(s) in {:.2} s",
            tokens.len(),
            began.elapsed().as_secs_f64()
        ));
        tokens
    };

    let before = store_counters(url).await;
    say.line(format!(
        "driving {} for {} with {} connections…",
        plan.scenario.name(),
        seconds(plan.duration),
        plan.connections
    ));
    let phase = Phase {
        scenario: plan.scenario,
        duration: plan.duration,
        revocations: plan.scenario == Scenario::RevokeStorm,
        progress: say.progress,
    };
    let result = drive(plan, &phase, &admin, &world, &tokens).await?;
    let after = store_counters(url).await;
    let store = match (before, after) {
        (Some(b), Some(a)) => Some(StoreDelta {
            groups: a.0.saturating_sub(b.0),
            operations: a.1.saturating_sub(b.1),
            log_syncs: a.2.saturating_sub(b.2),
        }),
        _ => None,
    };

    say.line("verifying invariants through the API…");
    let checks = verify(plan, &admin, &world, &tokens, &result, warmup.as_ref()).await?;
    Ok(Report {
        scenario: plan.scenario,
        connections: plan.connections,
        duration: plan.duration,
        tokens: tokens.len(),
        amount: plan.amount,
        target: target.to_owned(),
        result,
        warmup,
        store,
        checks,
    })
}

struct Warmup {
    tokens: Vec<BenchToken>,
    result: LoadResult,
    rate: f64,
    cap: i64,
}

struct Phase {
    scenario: Scenario,
    duration: Duration,
    revocations: bool,
    progress: bool,
}

/// `scrip_store_write_groups_total`, `scrip_store_write_operations_total`
/// and `scrip_store_log_syncs_total`.
async fn store_counters(url: &str) -> Option<(u64, u64, u64)> {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let counter = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
            rest.trim().parse::<f64>().ok().map(|v| v as u64)
        })
    };
    Some((
        counter("scrip_store_write_groups_total")?,
        counter("scrip_store_write_operations_total")?,
        counter("scrip_store_log_syncs_total")?,
    ))
}

struct StoreDelta {
    groups: u64,
    operations: u64,
    log_syncs: u64,
}

// --- load --------------------------------------------------------------------

/// What every connection shares during one phase.
struct Ctx {
    scenario: Scenario,
    duration: Duration,
    amount: i64,
    refund_amount: i64,
    origin: Origin,
    charges_uri: Uri,
    tokens_uri: Uri,
    self_uri: Uri,
    refunds_uri: Uri,
    health_uri: Uri,
    provider_auth: HeaderValue,
    orchestrator_auth: HeaderValue,
    tokens: Vec<BenchToken>,
    token_auth: Vec<HeaderValue>,
    charge_bodies: Vec<Bytes>,
    issue_body: Bytes,
    start: OnceLock<Instant>,
    /// Per credential: microseconds from `start` when its revocation was
    /// sent; `u64::MAX` while it was not.
    revoke_sent_us: Vec<AtomicU64>,
    recorder: Recorder,
}

impl Ctx {
    fn since_start_us(&self, at: Instant) -> u64 {
        match self.start.get() {
            Some(start) => at.saturating_duration_since(*start).as_micros() as u64,
            None => 0,
        }
    }
}

fn bearer(secret: &str) -> anyhow::Result<HeaderValue> {
    let mut value = HeaderValue::from_str(&format!("Bearer {secret}"))
        .context("a secret cannot be sent in a header")?;
    value.set_sensitive(true);
    Ok(value)
}

fn charge_body(token: &str, amount: i64, capture: bool) -> Bytes {
    let body = if capture {
        json!({"token": token, "amount": amount, "currency": "usd"})
    } else {
        json!({"token": token, "amount": amount, "currency": "usd", "capture": false})
    };
    body.to_string().into()
}

/// The outcome of one phase.
struct LoadResult {
    elapsed: Duration,
    recorder: RecorderSnapshot,
    /// Per token of the phase, what the bench saw succeed.
    tallies: Vec<Tally>,
    /// Tokens issued during the phase (mixed) with their tallies.
    issued: Vec<(BenchToken, Tally)>,
    /// Successful charge creations (charges and holds).
    created: u64,
    /// Charge creations whose outcome is unknown (no HTTP answer).
    created_unknown: u64,
    storm: StormTally,
    revocations: Vec<Revocation>,
}

/// What a token's spend should be after the bench's successes.
#[derive(Clone, Copy, Default)]
struct Tally {
    /// Successful charge creations on this token.
    charges: u64,
    /// Captured + pending, net of refunds.
    spend: i64,
    /// Amounts of requests without an answer: the server may or may not hold them.
    unknown: i64,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.charges += other.charges;
        self.spend += other.spend;
        self.unknown += other.unknown;
    }
}

/// revoke-storm bookkeeping, per credential.
#[derive(Clone, Default)]
struct StormTally {
    /// Latest request start (µs from the phase start) of a success.
    last_success_start_us: Vec<Option<u64>>,
    /// Successes whose request started after the revocation was sent (a
    /// legitimate race until the revocation's response).
    raced: Vec<u64>,
    /// `token_revoked` answers that arrived before the revocation was sent.
    premature: Vec<u64>,
}

impl StormTally {
    fn new(credentials: usize) -> StormTally {
        StormTally {
            last_success_start_us: vec![None; credentials],
            raced: vec![0; credentials],
            premature: vec![0; credentials],
        }
    }

    fn merge(&mut self, other: &StormTally) {
        for (mine, theirs) in self
            .last_success_start_us
            .iter_mut()
            .zip(&other.last_success_start_us)
        {
            *mine = (*mine).max(*theirs);
        }
        for (mine, theirs) in self.raced.iter_mut().zip(&other.raced) {
            *mine += theirs;
        }
        for (mine, theirs) in self.premature.iter_mut().zip(&other.premature) {
            *mine += theirs;
        }
    }
}

struct Revocation {
    credential: usize,
    id: String,
    sent_us: u64,
    answered_us: u64,
    outcome: Result<(), String>,
}

/// Runs one phase: `plan.connections` connections for `phase.duration`.
async fn drive(
    plan: &Plan,
    phase: &Phase,
    admin: &Client,
    world: &World,
    tokens: &[BenchToken],
) -> anyhow::Result<LoadResult> {
    let origin = Origin::parse(admin.base_url())?;
    let orchestrator = world
        .credentials
        .first()
        .context("at least one credential is needed")?;
    let ctx = Arc::new(Ctx {
        scenario: phase.scenario,
        duration: phase.duration,
        amount: plan.amount,
        refund_amount: (plan.amount / 2).max(1),
        charges_uri: origin.uri("/v1/charges")?,
        tokens_uri: origin.uri("/v1/tokens")?,
        self_uri: origin.uri("/v1/tokens/self")?,
        refunds_uri: origin.uri("/v1/refunds")?,
        health_uri: origin.uri("/healthz")?,
        origin,
        provider_auth: bearer(&world.provider_secret)?,
        orchestrator_auth: bearer(&orchestrator.secret)?,
        tokens: tokens.to_vec(),
        token_auth: tokens
            .iter()
            .map(|t| bearer(&t.secret))
            .collect::<anyhow::Result<_>>()?,
        charge_bodies: tokens
            .iter()
            .map(|t| charge_body(&t.secret, plan.amount, true))
            .collect(),
        issue_body: json!({
            "payment_method": world.payment_method,
            "provider": world.provider_id,
            "currency": "usd",
            "cap": {"amount": CAP_UNREACHABLE, "period": "none"},
        })
        .to_string()
        .into(),
        start: OnceLock::new(),
        revoke_sent_us: (0..world.credentials.len())
            .map(|_| AtomicU64::new(u64::MAX))
            .collect(),
        recorder: Recorder::new()?,
    });
    let ready = Arc::new(tokio::sync::Barrier::new(plan.connections + 1));
    let mut workers = Vec::with_capacity(plan.connections);
    for index in 0..plan.connections {
        let (ctx, ready) = (ctx.clone(), ready.clone());
        let credentials = world.credentials.len();
        workers.push(tokio::spawn(async move {
            connection(ctx, ready, index, credentials).await
        }));
    }
    ready.wait().await;
    let start = *ctx.start.get_or_init(Instant::now);

    let progress = phase.progress.then(|| {
        let ctx = ctx.clone();
        tokio::spawn(async move { show_progress(&ctx, start).await })
    });
    let revoker = phase.revocations.then(|| {
        let (ctx, admin) = (ctx.clone(), admin.clone());
        let credentials: Vec<String> = world.credentials.iter().map(|c| c.id.clone()).collect();
        tokio::spawn(async move { revoke_during(ctx, admin, credentials).await })
    });

    let mut tallies = vec![Tally::default(); tokens.len()];
    let mut issued = Vec::new();
    let mut created = 0;
    let mut created_unknown = 0;
    let mut storm = StormTally::new(world.credentials.len());
    let mut failure = None;
    for worker in workers {
        match worker.await {
            Ok(Ok(out)) => {
                for (i, theirs) in out.tallies {
                    if let Some(mine) = tallies.get_mut(i) {
                        mine.merge(theirs);
                    }
                }
                issued.extend(out.issued);
                created += out.created;
                created_unknown += out.created_unknown;
                storm.merge(&out.storm);
            }
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(anyhow::anyhow!("a connection task failed: {e}")),
        }
    }
    let elapsed = start.elapsed();
    if let Some(progress) = progress {
        progress.abort();
        let _ = progress.await;
        eprintln!();
    }
    let revocations = match revoker {
        Some(task) => task.await.context("the revocation task failed")??,
        None => Vec::new(),
    };
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(LoadResult {
        elapsed,
        recorder: ctx.recorder.snapshot(),
        tallies,
        issued,
        created,
        created_unknown,
        storm,
        revocations,
    })
}

/// What one connection saw.
struct ConnectionOut {
    /// By index of the phase's shared tokens, only those it charged: a
    /// dense list per connection would be connections × tokens (1.5 GB for
    /// 64 connections over 1,000,000 tokens), allocated as the clock starts.
    tallies: HashMap<usize, Tally>,
    issued: Vec<(BenchToken, Tally)>,
    created: u64,
    created_unknown: u64,
    storm: StormTally,
}

/// Which token: one of the phase's, or one this connection issued.
#[derive(Clone, Copy)]
enum TokenRef {
    Shared(usize),
    Issued(usize),
}

/// One answer, decoded only as far as needed.
enum Answer {
    Success(Bytes),
    Refused { status: u16, code: String },
    Unanswered,
}

/// `mixed` per-connection state.
#[derive(Default)]
struct MixedState {
    holds: Vec<(TokenRef, String)>,
    refundable: Vec<(TokenRef, String)>,
}

struct Conn<'a> {
    ctx: &'a Ctx,
    wire: Wire,
    out: ConnectionOut,
}

async fn connection(
    ctx: Arc<Ctx>,
    ready: Arc<tokio::sync::Barrier>,
    index: usize,
    credentials: usize,
) -> anyhow::Result<ConnectionOut> {
    // Open the keep-alive connection before the clock starts. Whatever
    // happens, reach the barrier so no one waits for this task forever.
    let mut wire = Wire::new(ctx.origin.clone());
    let _ = wire.send(Method::GET, &ctx.health_uri, None, None).await;
    ready.wait().await;
    let start = *ctx.start.get_or_init(Instant::now);
    let deadline = start + ctx.duration;
    let seed = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ rand::random::<u64>();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conn = Conn {
        ctx: &ctx,
        wire,
        out: ConnectionOut {
            tallies: HashMap::new(),
            issued: Vec::new(),
            created: 0,
            created_unknown: 0,
            storm: StormTally::new(credentials),
        },
    };
    let mut mixed = MixedState::default();
    let shared = ctx.tokens.len();
    while Instant::now() < deadline {
        match ctx.scenario {
            Scenario::Spread | Scenario::RevokeStorm => {
                let t = rng.gen_range(0..shared);
                conn.charge(TokenRef::Shared(t), true).await;
            }
            Scenario::Hot => {
                conn.charge(TokenRef::Shared(0), true).await;
            }
            Scenario::Mixed => conn.mixed_step(&mut rng, &mut mixed).await,
            Scenario::Issue => conn.issue().await,
            Scenario::Introspect => {
                let t = rng.gen_range(0..shared);
                conn.introspect(TokenRef::Shared(t)).await;
            }
        }
    }
    Ok(conn.out)
}

#[derive(Deserialize)]
struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
struct Issued {
    id: String,
    token: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorFields,
}

#[derive(Deserialize)]
struct ErrorFields {
    code: String,
}

impl Conn<'_> {
    /// Sends one request and records its latency and outcome.
    async fn exchange(
        &mut self,
        op: Op,
        method: Method,
        uri: &Uri,
        auth: &HeaderValue,
        body: Option<Bytes>,
    ) -> (Answer, Instant, Instant) {
        let sent = Instant::now();
        let answer = match self.wire.send(method, uri, Some(auth), body).await {
            Err(Unanswered) => Answer::Unanswered,
            Ok((status, bytes)) if status.is_success() => Answer::Success(bytes),
            Ok((status, bytes)) => Answer::Refused {
                status: status.as_u16(),
                code: serde_json::from_slice::<ErrorBody>(&bytes)
                    .map(|b| b.error.code)
                    .unwrap_or_else(|_| format!("http_{}", status.as_u16())),
            },
        };
        let done = Instant::now();
        let latency = done.saturating_duration_since(sent);
        let outcome = match &answer {
            Answer::Success(_) => Outcome::Success,
            Answer::Refused { status, code } if self.ctx.scenario.expects(op, *status, code) => {
                Outcome::Expected(*status, code)
            }
            Answer::Refused { status, code } => Outcome::Error(*status, code),
            Answer::Unanswered => Outcome::Error(0, "no_answer"),
        };
        self.ctx.recorder.record(op, latency, outcome);
        (answer, sent, done)
    }

    fn tally(&mut self, token: TokenRef) -> Option<&mut Tally> {
        match token {
            TokenRef::Shared(i) if i < self.ctx.tokens.len() => {
                Some(self.out.tallies.entry(i).or_default())
            }
            TokenRef::Shared(_) => None,
            TokenRef::Issued(i) => self.out.issued.get_mut(i).map(|(_, t)| t),
        }
    }

    fn token_secret(&self, token: TokenRef) -> Option<&str> {
        match token {
            TokenRef::Shared(i) => self.ctx.tokens.get(i).map(|t| t.secret.as_str()),
            TokenRef::Issued(i) => self.out.issued.get(i).map(|(t, _)| t.secret.as_str()),
        }
    }

    /// A charge (`capture`) or a hold; returns the charge id on success
    /// when `mixed` needs it.
    async fn charge(&mut self, token: TokenRef, capture: bool) -> Option<String> {
        let ctx = self.ctx;
        let body = match (token, capture) {
            (TokenRef::Shared(i), true) => ctx.charge_bodies.get(i).cloned(),
            _ => self
                .token_secret(token)
                .map(|s| charge_body(s, ctx.amount, capture)),
        }?;
        let op = if capture { Op::Charge } else { Op::Hold };
        let (answer, sent, done) = self
            .exchange(
                op,
                Method::POST,
                &ctx.charges_uri,
                &ctx.provider_auth,
                Some(body),
            )
            .await;
        let credential = match token {
            TokenRef::Shared(i) => ctx.tokens.get(i).map(|t| t.credential),
            TokenRef::Issued(_) => None,
        };
        let amount = ctx.amount;
        match answer {
            Answer::Success(bytes) => {
                self.out.created += 1;
                if let Some(t) = self.tally(token) {
                    t.charges += 1;
                    t.spend += amount;
                }
                if ctx.scenario == Scenario::RevokeStorm {
                    if let Some(c) = credential {
                        let started = ctx.since_start_us(sent);
                        let storm = &mut self.out.storm;
                        if let Some(last) = storm.last_success_start_us.get_mut(c) {
                            *last = (*last).max(Some(started));
                        }
                        let revoked_at = ctx
                            .revoke_sent_us
                            .get(c)
                            .map_or(u64::MAX, |a| a.load(Ordering::Acquire));
                        if started > revoked_at {
                            if let Some(n) = storm.raced.get_mut(c) {
                                *n += 1;
                            }
                        }
                    }
                }
                if ctx.scenario == Scenario::Mixed {
                    serde_json::from_slice::<IdOnly>(&bytes).ok().map(|b| b.id)
                } else {
                    None
                }
            }
            Answer::Refused { status, code } => {
                if ctx.scenario == Scenario::RevokeStorm && status == 402 && code == "token_revoked"
                {
                    if let Some(c) = credential {
                        let revoked_at = ctx
                            .revoke_sent_us
                            .get(c)
                            .map_or(u64::MAX, |a| a.load(Ordering::Acquire));
                        if ctx.since_start_us(done) < revoked_at {
                            if let Some(n) = self.out.storm.premature.get_mut(c) {
                                *n += 1;
                            }
                        }
                    }
                }
                None
            }
            Answer::Unanswered => {
                self.out.created_unknown += 1;
                if let Some(t) = self.tally(token) {
                    t.unknown += amount;
                }
                None
            }
        }
    }

    /// One `mixed` operation, chosen by the proportions in the module doc.
    async fn mixed_step(&mut self, rng: &mut StdRng, state: &mut MixedState) {
        let ctx = self.ctx;
        let token = if !self.out.issued.is_empty() && rng.gen_bool(0.2) {
            TokenRef::Issued(rng.gen_range(0..self.out.issued.len()))
        } else {
            TokenRef::Shared(rng.gen_range(0..ctx.tokens.len()))
        };
        let roll = rng.gen_range(0..100);
        match roll {
            0..40 => self.mixed_charge(token, state).await,
            40..50 => self.mixed_hold(token, state).await,
            50..60 => match state.holds.pop() {
                Some((held, id)) => {
                    let Ok(uri) = ctx.origin.uri(&format!("/v1/charges/{id}/capture")) else {
                        return;
                    };
                    let (answer, _, _) = self
                        .exchange(
                            Op::Capture,
                            Method::POST,
                            &uri,
                            &ctx.provider_auth,
                            Some(Bytes::from_static(b"{}")),
                        )
                        .await;
                    // A full capture moves the hold from pending to captured:
                    // the spend is unchanged.
                    if matches!(answer, Answer::Success(_)) {
                        remember(&mut state.refundable, (held, id));
                    }
                }
                None => self.mixed_hold(token, state).await,
            },
            60..70 => match state.refundable.pop() {
                Some((charged, id)) => {
                    let body = json!({"charge": id, "amount": ctx.refund_amount})
                        .to_string()
                        .into();
                    let (answer, _, _) = self
                        .exchange(
                            Op::Refund,
                            Method::POST,
                            &ctx.refunds_uri,
                            &ctx.provider_auth,
                            Some(body),
                        )
                        .await;
                    let refund = ctx.refund_amount;
                    match answer {
                        Answer::Success(_) => {
                            if let Some(t) = self.tally(charged) {
                                t.spend -= refund;
                            }
                        }
                        Answer::Unanswered => {
                            if let Some(t) = self.tally(charged) {
                                t.unknown += refund;
                            }
                        }
                        Answer::Refused { .. } => {}
                    }
                }
                None => self.mixed_charge(token, state).await,
            },
            70..95 => self.introspect(token).await,
            _ => self.issue().await,
        }
    }

    /// `GET /v1/tokens/self` with `token`.
    async fn introspect(&mut self, token: TokenRef) {
        let ctx = self.ctx;
        let auth = match token {
            TokenRef::Shared(i) => ctx.token_auth.get(i).cloned(),
            TokenRef::Issued(_) => self.token_secret(token).and_then(|s| bearer(s).ok()),
        };
        if let Some(auth) = auth {
            self.exchange(Op::Introspect, Method::GET, &ctx.self_uri, &auth, None)
                .await;
        }
    }

    /// Issues a token (lifetime cap out of reach), kept for verification.
    async fn issue(&mut self) {
        let ctx = self.ctx;
        let (answer, _, _) = self
            .exchange(
                Op::Issue,
                Method::POST,
                &ctx.tokens_uri,
                &ctx.orchestrator_auth,
                Some(ctx.issue_body.clone()),
            )
            .await;
        if let Answer::Success(bytes) = answer {
            if let Ok(t) = serde_json::from_slice::<Issued>(&bytes) {
                self.out.issued.push((
                    BenchToken {
                        id: t.id,
                        secret: t.token,
                        credential: 0,
                        cap: CAP_UNREACHABLE,
                    },
                    Tally::default(),
                ));
            }
        }
    }

    async fn mixed_charge(&mut self, token: TokenRef, state: &mut MixedState) {
        if let Some(id) = self.charge(token, true).await {
            remember(&mut state.refundable, (token, id));
        }
    }

    async fn mixed_hold(&mut self, token: TokenRef, state: &mut MixedState) {
        if let Some(id) = self.charge(token, false).await {
            state.holds.push((token, id));
        }
    }
}

/// Keeps the newest `REFUNDABLE_KEPT_MAX` entries.
fn remember<T>(list: &mut Vec<T>, item: T) {
    if list.len() >= REFUNDABLE_KEPT_MAX {
        list.remove(0);
    }
    list.push(item);
}

/// revoke-storm: revokes credentials 1..n evenly spaced over the run
/// (credential 0 stays active as the control).
async fn revoke_during(
    ctx: Arc<Ctx>,
    admin: Client,
    credentials: Vec<String>,
) -> anyhow::Result<Vec<Revocation>> {
    let Some(start) = ctx.start.get().copied() else {
        bail!("the phase has not started");
    };
    let n = credentials.len();
    let mut done = Vec::new();
    for (k, id) in credentials.iter().enumerate().skip(1) {
        let at = start + ctx.duration.mul_f64(k as f64 / n as f64);
        tokio::time::sleep_until(at.into()).await;
        let sent = Instant::now();
        let sent_us = ctx.since_start_us(sent);
        if let Some(slot) = ctx.revoke_sent_us.get(k) {
            slot.store(sent_us, Ordering::Release);
        }
        let result = admin.revoke_credential(id).await;
        let answered = Instant::now();
        let outcome = match &result {
            Ok(c) if c.status == "revoked" => Ok(()),
            Ok(c) => Err(format!("status is {} after revocation", c.status)),
            Err(e) => Err(e.to_string()),
        };
        ctx.recorder.record(
            Op::Revoke,
            answered.saturating_duration_since(sent),
            match &result {
                Ok(_) => Outcome::Success,
                Err(e) => Outcome::Error(e.status().unwrap_or(0), e.code().unwrap_or("no_answer")),
            },
        );
        done.push(Revocation {
            credential: k,
            id: id.clone(),
            sent_us,
            answered_us: ctx.since_start_us(answered),
            outcome,
        });
    }
    Ok(done)
}

async fn show_progress(ctx: &Ctx, start: Instant) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_total = 0;
    loop {
        tick.tick().await;
        let (total, ok, expected, errors, window_p99) = ctx.recorder.progress();
        let rate = total.saturating_sub(last_total);
        last_total = total;
        let line = format!(
            "[{:>5.1}s/{:.0}s] {:>8} req/s | total {:>9} | ok {:>9} | refused {:>8} | errors {:>6} | p99 {:>7.2} ms",
            start.elapsed().as_secs_f64(),
            ctx.duration.as_secs_f64(),
            rate,
            total,
            ok,
            expected,
            errors,
            window_p99 as f64 / 1000.0
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
}

// --- statistics --------------------------------------------------------------

enum Outcome<'a> {
    Success,
    /// A refusal the scenario provokes on purpose.
    Expected(u16, &'a str),
    /// Anything else: an unexpected status, or no answer at all (status 0).
    Error(u16, &'a str),
}

#[derive(Clone)]
struct OpStats {
    latency: Histogram<u64>,
    ok: u64,
    expected: u64,
    errors: u64,
}

/// Latency histograms and counts, shared by every connection of a phase.
struct Recorder {
    inner: Mutex<RecorderSnapshot>,
    /// Latencies of the current progress interval.
    window: Mutex<Histogram<u64>>,
}

#[derive(Clone)]
struct RecorderSnapshot {
    ops: Vec<OpStats>,
    all: Histogram<u64>,
    /// (operation, status, code) → count, for refusals and errors.
    answers: BTreeMap<(Op, u16, String), (u64, bool)>,
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3)
        .map_err(|e| anyhow::anyhow!("cannot create a latency histogram: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Recorder {
    fn new() -> anyhow::Result<Recorder> {
        let mut ops = Vec::with_capacity(OPS.len());
        for _ in OPS {
            ops.push(OpStats {
                latency: histogram()?,
                ok: 0,
                expected: 0,
                errors: 0,
            });
        }
        Ok(Recorder {
            inner: Mutex::new(RecorderSnapshot {
                ops,
                all: histogram()?,
                answers: BTreeMap::new(),
            }),
            window: Mutex::new(histogram()?),
        })
    }

    fn record(&self, op: Op, latency: Duration, outcome: Outcome<'_>) {
        let micros = (latency.as_micros() as u64).max(1);
        {
            let mut inner = lock(&self.inner);
            inner.all.saturating_record(micros);
            if let Some(stats) = inner.ops.get_mut(op.index()) {
                stats.latency.saturating_record(micros);
                match outcome {
                    Outcome::Success => stats.ok += 1,
                    Outcome::Expected(..) => stats.expected += 1,
                    Outcome::Error(..) => stats.errors += 1,
                }
            }
            let (status, code, expected) = match outcome {
                Outcome::Success => (0, "", false),
                Outcome::Expected(s, c) => (s, c, true),
                Outcome::Error(s, c) => (s, c, false),
            };
            if !code.is_empty() {
                let key = (op, status, code.to_owned());
                inner.answers.entry(key).or_insert((0, expected)).0 += 1;
            }
        }
        lock(&self.window).saturating_record(micros);
    }

    /// (requests, ok, expected refusals, errors, p99 µs of the last interval)
    fn progress(&self) -> (u64, u64, u64, u64, u64) {
        let p99 = {
            let mut window = lock(&self.window);
            let p99 = window.value_at_quantile(0.99);
            window.reset();
            p99
        };
        let inner = lock(&self.inner);
        let (mut ok, mut expected, mut errors) = (0, 0, 0);
        for s in &inner.ops {
            ok += s.ok;
            expected += s.expected;
            errors += s.errors;
        }
        (inner.all.len(), ok, expected, errors, p99)
    }

    fn snapshot(&self) -> RecorderSnapshot {
        lock(&self.inner).clone()
    }
}

impl RecorderSnapshot {
    fn op(&self, op: Op) -> Option<&OpStats> {
        self.ops.get(op.index())
    }

    fn ok(&self, op: Op) -> u64 {
        self.op(op).map_or(0, |s| s.ok)
    }

    fn errors(&self) -> u64 {
        self.ops.iter().map(|s| s.errors).sum()
    }
}

// --- verification ------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Fail,
    Skip,
}

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "ok",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "skip",
        }
    }
}

struct Check {
    name: &'static str,
    verdict: Verdict,
    detail: String,
}

fn check(name: &'static str, ok: bool, detail: String) -> Check {
    Check {
        name,
        verdict: if ok { Verdict::Pass } else { Verdict::Fail },
        detail,
    }
}

/// What the server says about one token.
struct TokenState {
    status: String,
    cap: i64,
    captured: i64,
    pending: i64,
}

/// What the charges the server lists add up to, per token.
#[derive(Default, Clone, Copy)]
struct Listed {
    charges: u64,
    captured: i64,
    pending: i64,
}

async fn fetch_token_states(
    admin: &Client,
    ids: Vec<String>,
) -> anyhow::Result<HashMap<String, TokenState>> {
    let ids = Arc::new(ids);
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..SETUP_PARALLELISM.min(ids.len()) {
        let (ids, next, admin) = (ids.clone(), next.clone(), admin.clone());
        tasks.push(tokio::spawn(async move {
            let mut states = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(id) = ids.get(i) else { break };
                let t = admin
                    .get_token(id)
                    .await
                    .with_context(|| format!("cannot read token {id}"))?;
                states.push((
                    t.id,
                    TokenState {
                        status: t.status,
                        cap: t.cap.amount,
                        captured: t.spend.captured,
                        pending: t.spend.pending,
                    },
                ));
            }
            anyhow::Ok(states)
        }));
    }
    let mut all = HashMap::new();
    for task in tasks {
        all.extend(task.await.context("a verification task failed")??);
    }
    Ok(all)
}

/// Every charge of the provider, paged 100 at a time.
async fn list_charges(provider: &Client) -> anyhow::Result<(Vec<Charge>, u64)> {
    let mut charges = Vec::new();
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(id) => format!("/v1/charges?limit=100&starting_after={id}"),
            None => "/v1/charges?limit=100".to_owned(),
        };
        let raw = provider
            .send(HttpMethod::GET, &path, None, None)
            .await
            .context("cannot list charges")?;
        if let Some(e) = raw.api_error() {
            bail!("listing charges: {e}");
        }
        let page: scrip_client::List<Charge> =
            serde_json::from_value(raw.body).context("an unexpected charge list")?;
        let Some(last) = page.data.last() else { break };
        after = Some(last.id.clone());
        for charge in page.data {
            if seen.insert(charge.id.clone()) {
                charges.push(charge);
            } else {
                duplicates += 1;
            }
        }
        if !page.has_more {
            break;
        }
    }
    Ok((charges, duplicates))
}

async fn verify(
    plan: &Plan,
    admin: &Client,
    world: &World,
    tokens: &[BenchToken],
    result: &LoadResult,
    warmup: Option<&Warmup>,
) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();

    // Every token the bench touched, with what the bench saw succeed.
    let mut expected: Vec<(BenchToken, Tally)> = tokens
        .iter()
        .cloned()
        .zip(result.tallies.iter().copied())
        .collect();
    expected.extend(result.issued.iter().cloned());
    let mut created = result.created;
    let mut created_unknown = result.created_unknown;
    if let Some(w) = warmup {
        expected.extend(
            w.tokens
                .iter()
                .cloned()
                .zip(w.result.tallies.iter().copied()),
        );
        created += w.result.created;
        created_unknown += w.result.created_unknown;
    }

    let states =
        fetch_token_states(admin, expected.iter().map(|(t, _)| t.id.clone()).collect()).await?;
    let provider = admin.with_secret(world.provider_secret.clone());
    let (charges, duplicates) = list_charges(&provider).await?;
    let mut listed: HashMap<&str, Listed> = HashMap::new();
    for c in &charges {
        let l = listed.entry(c.payment_token.as_str()).or_default();
        l.charges += 1;
        l.captured += c.amount_captured - c.amount_refunded;
        if c.status == "requires_capture" {
            l.pending += c.amount;
        }
    }

    // 1. No token over its cap.
    let mut over = Vec::new();
    let mut missing = Vec::new();
    for (t, _) in &expected {
        match states.get(&t.id) {
            Some(s) if s.captured + s.pending > s.cap || s.cap != t.cap => over.push(format!(
                "{}: captured {} + pending {} over cap {}",
                t.id, s.captured, s.pending, s.cap
            )),
            Some(_) => {}
            None => missing.push(t.id.clone()),
        }
    }
    checks.push(check(
        "no token over its cap",
        over.is_empty() && missing.is_empty(),
        if over.is_empty() && missing.is_empty() {
            format!("{} tokens read back", expected.len())
        } else {
            format!("over: {over:?}; unreadable: {missing:?}")
        },
    ));

    // 2. Each token's spend equals the charges listed for it.
    let mut disagree = Vec::new();
    for (t, _) in &expected {
        let Some(s) = states.get(&t.id) else { continue };
        let l = listed.get(t.id.as_str()).copied().unwrap_or_default();
        if s.captured != l.captured || s.pending != l.pending {
            disagree.push(format!(
                "{}: spend captured {} pending {}, charges captured {} pending {}",
                t.id, s.captured, s.pending, l.captured, l.pending
            ));
        }
    }
    checks.push(check(
        "every token's spend equals its listed charges",
        disagree.is_empty(),
        if disagree.is_empty() {
            format!(
                "{} charges listed over {} tokens",
                charges.len(),
                expected.len()
            )
        } else {
            format!(
                "{} token(s) disagree, e.g. {}",
                disagree.len(),
                disagree
                    .iter()
                    .take(3)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        },
    ));

    // 3. What the bench saw succeed is what the server holds.
    let known: HashSet<&str> = expected.iter().map(|(t, _)| t.id.as_str()).collect();
    let foreign = charges
        .iter()
        .filter(|c| !known.contains(c.payment_token.as_str()))
        .count();
    let listed_count = charges.len() as u64;
    let count_ok = duplicates == 0
        && foreign == 0
        && listed_count >= created
        && listed_count <= created + created_unknown;
    let seen_sum: i64 = expected.iter().map(|(_, t)| t.spend).sum();
    let server_sum: i64 = expected
        .iter()
        .filter_map(|(t, _)| states.get(&t.id))
        .map(|s| s.captured + s.pending)
        .sum();
    let mut off = Vec::new();
    for (t, tally) in &expected {
        let Some(s) = states.get(&t.id) else { continue };
        let held = s.captured + s.pending;
        if (held - tally.spend).abs() > tally.unknown {
            off.push(format!(
                "{}: bench saw {}, server holds {held}",
                t.id, tally.spend
            ));
        }
    }
    checks.push(check(
        "successful charges seen = charges the server holds",
        count_ok && off.is_empty(),
        format!(
            "bench saw {created} charge(s) succeed ({created_unknown} without an answer), server lists {listed_count} ({duplicates} duplicate(s) in paging, {foreign} on unknown tokens); spend seen {seen_sum}, held {server_sum}{}",
            if off.is_empty() { String::new() } else { format!("; {} token(s) off, e.g. {}", off.len(), off.iter().take(3).cloned().collect::<Vec<_>>().join("; ")) }
        ),
    ));

    // 4. hot: captured is exactly the successes' sum, within the cap.
    if plan.scenario == Scenario::Hot {
        if let (Some(w), Some((t, tally))) = (warmup, expected.first()) {
            let s = states.get(&t.id);
            let captured = s.map_or(-1, |s| s.captured);
            let pending = s.map_or(-1, |s| s.pending);
            let refused = result.recorder.op(Op::Charge).map_or(0, |o| o.expected);
            checks.push(check(
                "hot: captured = sum of successful charges ≤ cap",
                tally.unknown == 0
                    && captured == tally.spend
                    && pending == 0
                    && captured <= w.cap,
                format!(
                    "cap {}, captured {captured}, pending {pending}, successes sum {}; cap {} ({refused} cap_exceeded refusals)",
                    w.cap,
                    tally.spend,
                    if captured == w.cap { "reached exactly" } else { "not reached" }
                ),
            ));
        }
    }

    // 5. revoke-storm: nothing succeeds after the revocation's response.
    if plan.scenario == Scenario::RevokeStorm {
        let mut late = Vec::new();
        let mut raced = 0;
        let mut premature = 0;
        for r in &result.revocations {
            if let Err(e) = &r.outcome {
                late.push(format!("revoking {} failed: {e}", r.id));
            }
            let last = result
                .storm
                .last_success_start_us
                .get(r.credential)
                .copied()
                .flatten();
            if let Some(last) = last {
                if last > r.answered_us {
                    late.push(format!(
                        "{}: a charge sent {:.1} ms after the revocation's response succeeded",
                        r.id,
                        (last - r.answered_us) as f64 / 1000.0
                    ));
                }
            }
            raced += result.storm.raced.get(r.credential).copied().unwrap_or(0);
            premature += result
                .storm
                .premature
                .get(r.credential)
                .copied()
                .unwrap_or(0);
        }
        if premature > 0 {
            late.push(format!(
                "{premature} token_revoked refusal(s) before any revocation was sent"
            ));
        }
        let revoked: HashSet<usize> = result
            .revocations
            .iter()
            .filter(|r| r.outcome.is_ok())
            .map(|r| r.credential)
            .collect();
        let wrong_status = expected
            .iter()
            .filter(|(t, _)| {
                let want_revoked = revoked.contains(&t.credential);
                let status = states.get(&t.id).map(|s| s.status.as_str());
                (status == Some("revoked")) != want_revoked
            })
            .count();
        if wrong_status > 0 {
            late.push(format!(
                "{wrong_status} token(s) whose status disagrees with their credential's revocation"
            ));
        }
        let expected_revocations = world.credentials.len().saturating_sub(1);
        if result.revocations.len() != expected_revocations {
            late.push(format!(
                "{} of {expected_revocations} revocations were sent",
                result.revocations.len()
            ));
        }
        checks.push(check(
            "revoke-storm: no success after a revocation's response",
            late.is_empty(),
            if late.is_empty() {
                format!(
                    "{} credential(s) revoked; {raced} charge(s) sent between a revocation's request and its response succeeded (allowed)",
                    result.revocations.len()
                )
            } else {
                late.join("; ")
            },
        ));
    }

    // 6. The ledger, when the server keeps one.
    let ledger = admin
        .send(HttpMethod::GET, "/v1/ledger/verify", None, None)
        .await;
    checks.push(match ledger {
        Ok(raw) if raw.status == 404 => Check {
            name: "ledger balanced",
            verdict: Verdict::Skip,
            detail: "ledger: not available (GET /v1/ledger/verify is 404)".into(),
        },
        Ok(raw) if raw.is_success() => {
            let balanced = raw.body.get("balanced").and_then(Value::as_bool);
            check(
                "ledger balanced",
                balanced == Some(true),
                format!("GET /v1/ledger/verify: {}", raw.body),
            )
        }
        Ok(raw) => check(
            "ledger balanced",
            false,
            format!(
                "GET /v1/ledger/verify answered {}: {}",
                raw.status, raw.body
            ),
        ),
        Err(e) => check(
            "ledger balanced",
            false,
            format!("GET /v1/ledger/verify: {e}"),
        ),
    });

    // 7. No request failed unexpectedly.
    let mut errors = result.recorder.errors();
    if let Some(w) = warmup {
        errors += w.result.recorder.errors();
    }
    checks.push(check(
        "no unexpected errors",
        errors == 0,
        format!("{errors} request(s) failed unexpectedly"),
    ));
    Ok(checks)
}

// --- report ------------------------------------------------------------------

struct Report {
    scenario: Scenario,
    connections: usize,
    duration: Duration,
    tokens: usize,
    amount: i64,
    target: String,
    result: LoadResult,
    warmup: Option<Warmup>,
    store: Option<StoreDelta>,
    checks: Vec<Check>,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn seconds(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Report {
    fn per_second(&self, n: u64) -> f64 {
        n as f64 / self.result.elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    fn render(&self) -> String {
        use std::fmt::Write as _;
        let r = &self.result;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\nscrip bench: {} on {}\n{} connections, {} (measured {:.2} s), {} token(s), amount {}",
            self.scenario.name(),
            self.target,
            self.connections,
            seconds(self.duration),
            r.elapsed.as_secs_f64(),
            self.tokens,
            self.amount
        );
        if let Some(w) = &self.warmup {
            let _ = writeln!(
                s,
                "warm-up: {:.0} charges/s over {:.2} s → cap {}",
                w.rate,
                w.result.elapsed.as_secs_f64(),
                w.cap
            );
        }
        let _ = writeln!(
            s,
            "\n{:<18} {:>9} {:>9} {:>9} {:>7} {:>10} {:>10} {:>8} {:>8} {:>8} {:>8}",
            "operation",
            "requests",
            "ok",
            "refused",
            "errors",
            "req/s",
            "ok/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms"
        );
        let row = |s: &mut String, name: &str, h: &Histogram<u64>, ok: u64, exp: u64, err: u64| {
            let _ = writeln!(
                s,
                "{:<18} {:>9} {:>9} {:>9} {:>7} {:>10.0} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                name,
                h.len(),
                ok,
                exp,
                err,
                self.per_second(h.len()),
                self.per_second(ok),
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.9)),
                ms(h.value_at_quantile(0.99)),
                ms(h.max())
            );
        };
        let (mut ok, mut exp, mut err) = (0, 0, 0);
        for op in OPS {
            if let Some(o) = r.recorder.op(op).filter(|o| !o.latency.is_empty()) {
                row(&mut s, op.name(), &o.latency, o.ok, o.expected, o.errors);
                ok += o.ok;
                exp += o.expected;
                err += o.errors;
            }
        }
        row(&mut s, "all", &r.recorder.all, ok, exp, err);
        let refusals: Vec<_> = r.recorder.answers.iter().filter(|(_, v)| v.1).collect();
        let errors: Vec<_> = r.recorder.answers.iter().filter(|(_, v)| !v.1).collect();
        let _ = writeln!(s, "\nexpected refusals:");
        if refusals.is_empty() {
            let _ = writeln!(s, "  none");
        }
        for ((op, status, code), (n, _)) in refusals {
            let _ = writeln!(s, "  {:<18} {status} {code}: {n}", op.name());
        }
        let _ = writeln!(s, "errors:");
        if errors.is_empty() {
            let _ = writeln!(s, "  none");
        }
        for ((op, status, code), (n, _)) in errors {
            let status = if *status == 0 {
                "no answer".to_owned()
            } else {
                status.to_string()
            };
            let _ = writeln!(s, "  {:<18} {status} {code}: {n}", op.name());
        }
        match &self.store {
            Some(d) => {
                let _ = writeln!(
                    s,
                    "\nstore: {} write groups, {} operations: {:.1} operations per group commit ({:.0} commits/s); {} log syncs ({:.0}/s)",
                    d.groups,
                    d.operations,
                    d.operations as f64 / d.groups.max(1) as f64,
                    self.per_second(d.groups),
                    d.log_syncs,
                    self.per_second(d.log_syncs)
                );
            }
            None => {
                let _ = writeln!(s, "\nstore: write-group counters not in /metrics");
            }
        }
        if !r.revocations.is_empty() {
            let _ = writeln!(s, "revocations (ms from start: sent → answered):");
            for v in &r.revocations {
                let _ = writeln!(
                    s,
                    "  {} {:>9.1} → {:>9.1}{}",
                    v.id,
                    ms(v.sent_us),
                    ms(v.answered_us),
                    match &v.outcome {
                        Ok(()) => String::new(),
                        Err(e) => format!("  FAILED: {e}"),
                    }
                );
            }
        }
        let _ = writeln!(s, "\nverification:");
        for c in &self.checks {
            let _ = writeln!(s, "  {:<4} {}: {}", c.verdict.name(), c.name, c.detail);
        }
        s
    }

    fn to_json(&self) -> Value {
        let r = &self.result;
        let latency = |h: &Histogram<u64>| {
            json!({
                "p50": ms(h.value_at_quantile(0.5)),
                "p90": ms(h.value_at_quantile(0.9)),
                "p99": ms(h.value_at_quantile(0.99)),
                "max": ms(h.max()),
                "mean": h.mean() / 1000.0,
            })
        };
        let mut operations = serde_json::Map::new();
        for op in OPS {
            if let Some(o) = r.recorder.op(op).filter(|o| !o.latency.is_empty()) {
                operations.insert(
                    op.name().to_owned(),
                    json!({
                        "requests": o.latency.len(),
                        "ok": o.ok,
                        "refused": o.expected,
                        "errors": o.errors,
                        "requests_per_s": self.per_second(o.latency.len()),
                        "ok_per_s": self.per_second(o.ok),
                        "latency_ms": latency(&o.latency),
                    }),
                );
            }
        }
        let answers = |expected: bool| {
            r.recorder
                .answers
                .iter()
                .filter(|(_, v)| v.1 == expected)
                .map(|((op, status, code), (n, _))| {
                    json!({"operation": op.name(), "status": status, "code": code, "count": n})
                })
                .collect::<Vec<_>>()
        };
        json!({
            "scenario": self.scenario.name(),
            "target": self.target,
            "connections": self.connections,
            "duration_s": self.duration.as_secs_f64(),
            "elapsed_s": r.elapsed.as_secs_f64(),
            "tokens": self.tokens,
            "amount": self.amount,
            "requests": r.recorder.all.len(),
            "requests_per_s": self.per_second(r.recorder.all.len()),
            "latency_ms": latency(&r.recorder.all),
            "operations": operations,
            "refusals": answers(true),
            "errors": answers(false),
            "store": self.store.as_ref().map(|d| json!({
                "write_groups": d.groups,
                "write_operations": d.operations,
                "operations_per_group": d.operations as f64 / d.groups.max(1) as f64,
                "log_syncs": d.log_syncs,
            })),
            "hot": self.warmup.as_ref().map(|w| json!({
                "warmup_charges_per_s": w.rate,
                "cap": w.cap,
            })),
            "revocations": r.revocations.iter().map(|v| json!({
                "credential": v.id,
                "sent_ms": ms(v.sent_us),
                "answered_ms": ms(v.answered_us),
                "ok": v.outcome.is_ok(),
            })).collect::<Vec<_>>(),
            "checks": self.checks.iter().map(|c| json!({
                "name": c.name,
                "result": c.verdict.name(),
                "detail": c.detail,
            })).collect::<Vec<_>>(),
            "passed": self.checks.iter().all(|c| c.verdict != Verdict::Fail),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("3h").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn expected_refusals_depend_on_the_scenario() {
        assert!(Scenario::Hot.expects(Op::Charge, 402, "cap_exceeded"));
        assert!(!Scenario::Spread.expects(Op::Charge, 402, "cap_exceeded"));
        assert!(Scenario::RevokeStorm.expects(Op::Charge, 402, "token_revoked"));
        assert!(!Scenario::RevokeStorm.expects(Op::Charge, 402, "cap_exceeded"));
        assert!(!Scenario::Mixed.expects(Op::Refund, 409, "charge_already_refunded"));
    }

    #[test]
    fn remember_keeps_the_newest() {
        let mut list = Vec::new();
        for i in 0..(REFUNDABLE_KEPT_MAX + 5) {
            remember(&mut list, i);
        }
        assert_eq!(list.len(), REFUNDABLE_KEPT_MAX);
        assert_eq!(list.first(), Some(&5));
    }
}
