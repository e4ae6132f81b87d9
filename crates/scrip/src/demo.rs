//! `scrip demo`: the whole trust triangle against an in-process server.
//!
//! The operator sets up a customer, an orchestrator credential and two
//! providers; the orchestrator vaults the person's card and issues a scoped
//! token; an agent holding only that token buys a plan from a provider that
//! is a real HTTP server on loopback, which redeems the token with its own
//! secret. Then the token leaks to the wrong provider (refused and revoked),
//! a refund restores headroom, and revoking the credential stops every token
//! at once. Every response body that any party received is recorded, and the
//! demo proves that none of them carries the card number.
//!
//! Each step checks its outcome; the demo fails naming the first step that
//! did not behave as expected.

use std::fmt::Display;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{ensure, Context};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use clap::Args;
use rand::distributions::Alphanumeric;
use rand::Rng;
use scrip_client::{
    ApiError, BodyObserver, CardParams, ChargeParams, Client, CustomerParams, DeriveParams,
    TokenParams, TokenSelf,
};
use scrip_server::server::{self, Config};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::cli::{cap_label, card_label, money};

/// The person's card: the one thing that must never leave the vault.
const CARD_NUMBER: &str = "4242424242424242";
const CARD_TYPED: &str = "4242 4242 4242 4242";
const CLOUDFLARE: &str = "Cloudflare (demo)";
const OTHER: &str = "Other provider (demo)";
/// $100 a month, in cents.
const CAP_CENTS: i64 = 10_000;
/// What the demo providers charge per plan, in cents.
const PLANS: [(&str, i64); 2] = [("starter", 500), ("pro", 2_500)];

#[derive(Args)]
pub struct DemoArgs {
    /// Print only the verdict, not the step-by-step narration.
    #[arg(long)]
    quiet: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let say = Narrator { quiet: args.quiet };
    let data = tempfile::TempDir::new().context("cannot create a temporary data directory")?;
    let admin_key: String = format!(
        "sk_admin_{}",
        rand::thread_rng()
            .sample_iter(&Alphanumeric)
            .take(40)
            .map(char::from)
            .collect::<String>()
    );
    let running = server::start(Config {
        listen: "127.0.0.1:0".parse()?,
        data_dir: data.path().to_path_buf(),
        test_clock: false,
        admin_key: Some(admin_key.clone()),
        master_key: None,
        ..Default::default()
    })
    .await
    .context("cannot start the in-process Scrip server")?;
    let scrip_url = format!("http://{}", running.addr);
    say.line(format!(
        "Scrip is running in-process at {scrip_url} (a fresh vault in a temporary directory)."
    ));

    let mut world = World::new(&scrip_url, &admin_key, say);
    let outcome = world.play().await;
    world.stop_providers().await;
    drop(world);
    let stopped = running.shutdown().await;
    drop(data);
    outcome?;
    stopped.context("the in-process server did not stop cleanly")?;
    println!(
        "\nDemo complete: all 8 steps behaved as expected ({} ms).",
        started.elapsed().as_millis()
    );
    Ok(())
}

/// Plain-text narration, silenced by `--quiet`.
#[derive(Clone, Copy)]
struct Narrator {
    quiet: bool,
}

impl Narrator {
    fn step(&self, n: u32, title: &str) {
        if !self.quiet {
            println!("\nStep {n}. {title}");
        }
    }

    fn line(&self, text: impl Display) {
        if !self.quiet {
            println!("  {text}");
        }
    }

    fn ok(&self, text: impl Display) {
        if !self.quiet {
            println!("  ok: {text}");
        }
    }
}

/// Every response body each party received, byte for byte.
#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Seen {
    party: &'static str,
    body: Vec<u8>,
}

impl Recorder {
    fn record(&self, party: &'static str, body: &[u8]) {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        seen.push(Seen {
            party,
            body: body.to_vec(),
        });
    }

    /// An observer for a client that records what `party` receives.
    fn observer(&self, party: &'static str) -> BodyObserver {
        let me = self.clone();
        Arc::new(move |body: &[u8]| me.record(party, body))
    }

    /// Calls `f` with the records.
    fn with<R>(&self, f: impl FnOnce(&[Seen]) -> R) -> R {
        let seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&seen)
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

// --- the demo providers: real HTTP servers on loopback ------------------------

/// A provider's own service: it sells plans and gets paid by redeeming the
/// agent's token with its own Scrip secret.
#[derive(Clone)]
struct ProviderApp {
    name: &'static str,
    scrip: Client,
    say: Narrator,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProvisionRequest {
    token: String,
    plan: String,
}

async fn provision(
    State(app): State<ProviderApp>,
    Json(request): Json<ProvisionRequest>,
) -> (StatusCode, Json<Value>) {
    let Some(&(plan, price)) = PLANS.iter().find(|(name, _)| *name == request.plan) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": {"code": "unknown_plan", "message": "plan must be starter or pro"}}),
            ),
        );
    };
    let params = ChargeParams {
        token: request.token,
        amount: price,
        currency: "usd".to_owned(),
        capture: None,
        description: Some(format!("{}: {plan} plan", app.name)),
    };
    match app.scrip.create_charge(&params).await {
        Ok(charge) => {
            app.say.line(format!(
                "[{}] redeemed the token with its own secret: charge {} for {} ({}, {})",
                app.name,
                charge.id,
                money(charge.amount, &charge.currency),
                charge.status,
                card_label(
                    &charge.payment_method_details.card.brand,
                    &charge.payment_method_details.card.last4
                ),
            ));
            (
                StatusCode::OK,
                Json(json!({
                    "provisioned": format!("{plan} plan on {}", app.name),
                    "plan": plan,
                    "charge": charge.id,
                    "amount": charge.amount,
                    "currency": charge.currency,
                })),
            )
        }
        Err(scrip_client::Error::Api(e)) => {
            app.say.line(format!(
                "[{}] Scrip refused the redemption: HTTP {} {}",
                app.name, e.status, e.code
            ));
            (
                StatusCode::PAYMENT_REQUIRED,
                Json(json!({"error": {
                    "message": format!("{} could not get paid with this token: {}", app.name, e.message),
                    "scrip_status": e.status,
                    "type": e.kind,
                    "code": e.code,
                }})),
            )
        }
        Err(other) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"error": {"code": "payment_unavailable", "message": other.to_string()}})),
        ),
    }
}

struct ProviderServer {
    name: &'static str,
    id: String,
    url: String,
    /// The provider's own Scrip client (its secret, its recorder).
    scrip: Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl ProviderServer {
    async fn start(
        name: &'static str,
        id: String,
        scrip: Client,
        say: Narrator,
    ) -> anyhow::Result<ProviderServer> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .with_context(|| format!("cannot start {name}'s server"))?;
        let addr = listener.local_addr()?;
        let app = ProviderApp {
            name,
            scrip: scrip.clone(),
            say,
        };
        let router = Router::new()
            .route("/provision", post(provision))
            .with_state(app);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(ProviderServer {
            name,
            id,
            url: format!("http://{addr}"),
            scrip,
            stop: Some(stop),
            task: Some(task),
        })
    }

    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

// --- the agent: holds only the token string ----------------------------------

/// What a provider answered the agent.
struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    fn error_code(&self) -> &str {
        self.body
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    fn scrip_status(&self) -> i64 {
        self.body
            .pointer("/error/scrip_status")
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }
}

struct Agent {
    /// The one secret the agent has.
    token: String,
    scrip: Client,
    http: reqwest::Client,
    recorder: Recorder,
}

impl Agent {
    fn new(token: String, scrip_url: &str, recorder: &Recorder) -> Agent {
        Agent {
            scrip: Client::new(scrip_url)
                .with_secret(token.clone())
                .with_body_observer(recorder.observer("agent")),
            token,
            http: reqwest::Client::new(),
            recorder: recorder.clone(),
        }
    }

    /// `GET /v1/tokens/self`: what the token allows.
    async fn inspect(&self) -> anyhow::Result<TokenSelf> {
        Ok(self.scrip.token_self().await?)
    }

    /// Asks a provider for a plan, paying with the token.
    async fn provision(&self, provider: &ProviderServer, plan: &str) -> anyhow::Result<Reply> {
        let response = self
            .http
            .post(format!("{}/provision", provider.url))
            .json(&json!({"token": self.token, "plan": plan}))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", provider.name))?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        self.recorder.record("agent", &bytes);
        let body: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{} answered HTTP {status} without JSON", provider.name))?;
        Ok(Reply { status, body })
    }
}

// --- the story -----------------------------------------------------------------

/// Who exists so far, filled in as the story goes.
struct World {
    scrip_url: String,
    admin_key: String,
    say: Narrator,
    recorder: Recorder,
    operator: Client,
    orchestrator: Option<Client>,
    credential_id: String,
    payment_method_id: String,
    cloudflare: Option<ProviderServer>,
    other: Option<ProviderServer>,
    /// Every secret shown once: (what, secret).
    secrets: Vec<(&'static str, String)>,
    /// Tokens the agent derived for a sub-agent (the agent may see these).
    derived_tokens: Vec<String>,
}

impl World {
    fn new(scrip_url: &str, admin_key: &str, say: Narrator) -> World {
        let recorder = Recorder::default();
        World {
            scrip_url: scrip_url.to_owned(),
            admin_key: admin_key.to_owned(),
            say,
            operator: Client::new(scrip_url)
                .with_secret(admin_key)
                .with_body_observer(recorder.observer("operator")),
            recorder,
            orchestrator: None,
            credential_id: String::new(),
            payment_method_id: String::new(),
            cloudflare: None,
            other: None,
            secrets: Vec::new(),
            derived_tokens: Vec::new(),
        }
    }

    async fn stop_providers(&mut self) {
        for provider in [self.cloudflare.as_mut(), self.other.as_mut()]
            .into_iter()
            .flatten()
        {
            provider.stop().await;
        }
    }

    async fn play(&mut self) -> anyhow::Result<()> {
        self.setup()
            .await
            .context("step 1 (operator setup) failed")?;
        self.vault_card()
            .await
            .context("step 2 (vault the card) failed")?;
        let token1 = self
            .issue_cloudflare_token()
            .await
            .context("step 3 (issue a token) failed")?;
        self.agent_buys(&token1)
            .await
            .context("step 4 (the agent pays a provider) failed")?;
        let child = self
            .sub_agent_buys(&token1)
            .await
            .context("step 4 (the agent hands a sub-agent a narrower token) failed")?;
        self.token_leaks(&token1, &child)
            .await
            .context("step 5 (token presented to the wrong provider) failed")?;
        let token2 = self
            .refund()
            .await
            .context("step 6 (refund restores headroom) failed")?;
        self.revoke_credential(&token2)
            .await
            .context("step 7 (revoke the orchestrator) failed")?;
        self.who_saw_what()
            .context("step 8 (who saw what) failed")?;
        Ok(())
    }

    fn orchestrator(&self) -> anyhow::Result<&Client> {
        self.orchestrator
            .as_ref()
            .context("the orchestrator has no credential yet")
    }

    fn cloudflare(&self) -> anyhow::Result<&ProviderServer> {
        self.cloudflare
            .as_ref()
            .context("the Cloudflare demo provider is not running")
    }

    fn other(&self) -> anyhow::Result<&ProviderServer> {
        self.other
            .as_ref()
            .context("the other demo provider is not running")
    }

    /// a) customer, orchestrator credential, two providers.
    async fn setup(&mut self) -> anyhow::Result<()> {
        let say = self.say;
        say.step(
            1,
            "The operator sets up the triangle (admin secret sk_admin_…)",
        );
        let customer = self
            .operator
            .create_customer(&CustomerParams {
                email: "ada@example.com".to_owned(),
                name: "Ada Lovelace".to_owned(),
            })
            .await?;
        ensure!(
            customer.id.starts_with("cus_"),
            "customer id {} lacks cus_",
            customer.id
        );
        say.line(format!(
            "customer {} (Ada Lovelace, the person whose card it is)",
            customer.id
        ));

        let credential = self
            .operator
            .create_credential(&customer.id, Some("Ada's assistant"))
            .await?;
        let secret = credential.secret.clone().unwrap_or_default();
        ensure!(
            credential.status == "active" && secret.starts_with("sk_orch_"),
            "the credential came back {} with a secret that is not sk_orch_…",
            credential.status
        );
        say.line(format!(
            "orchestrator credential {} for {} (secret sk_orch_…, shown once, handed to the orchestrator)",
            credential.id, customer.id
        ));
        self.credential_id = credential.id;
        self.orchestrator = Some(
            Client::new(&self.scrip_url)
                .with_secret(secret.clone())
                .with_body_observer(self.recorder.observer("orchestrator")),
        );
        self.secrets.push(("orchestrator secret", secret));

        for (name, what) in [
            (CLOUDFLARE, "Cloudflare's secret"),
            (OTHER, "Other provider's secret"),
        ] {
            let provider = self.operator.create_provider(name).await?;
            let secret = provider.secret.clone().unwrap_or_default();
            ensure!(
                provider.name == name && secret.starts_with("sk_prov_"),
                "provider {name} came back without a sk_prov_… secret"
            );
            let scrip = Client::new(&self.scrip_url)
                .with_secret(secret.clone())
                .with_body_observer(self.recorder.observer(name));
            let server = ProviderServer::start(name, provider.id.clone(), scrip, say).await?;
            say.line(format!(
                "provider {} \"{name}\" (secret sk_prov_…, shown once, kept by the provider); its own service listens at {}",
                provider.id, server.url
            ));
            self.secrets.push((what, secret));
            if name == CLOUDFLARE {
                self.cloudflare = Some(server);
            } else {
                self.other = Some(server);
            }
        }
        say.ok("customer, credential and two providers exist; every secret was shown exactly once");
        Ok(())
    }

    /// b) the orchestrator vaults the card.
    async fn vault_card(&mut self) -> anyhow::Result<()> {
        let say = self.say;
        say.step(2, "The orchestrator vaults Ada's card (sk_orch_…)");
        let exp_year = i64::from(time::OffsetDateTime::now_utc().year()) + 3;
        say.line(format!(
            "POST /v1/payment_methods with the card ending {} (the full number goes only to Scrip), exp 12/{exp_year}, cvc ***",
            &CARD_NUMBER[CARD_NUMBER.len() - 4..]
        ));
        let method = self
            .orchestrator()?
            .add_card(&CardParams {
                number: CARD_TYPED.to_owned(),
                exp_month: 12,
                exp_year,
                cvc: "123".to_owned(),
                customer: None,
            })
            .await?;
        ensure!(
            method.status == "active" && method.card.brand == "visa" && method.card.last4 == "4242",
            "expected an active visa ending 4242, got {} {} ending {}",
            method.status,
            method.card.brand,
            method.card.last4
        );
        say.line(format!(
            "payment method {}: {}, exp {:02}/{}, fingerprint {}",
            method.id,
            card_label(&method.card.brand, &method.card.last4),
            method.card.exp_month,
            method.card.exp_year,
            method.card.fingerprint
        ));
        say.ok("the response shows brand, last4 and a fingerprint; the number is sealed in the vault and the CVC is already forgotten");
        self.payment_method_id = method.id;
        Ok(())
    }

    async fn issue(&mut self, provider_id: &str, cap: i64, usage: &str) -> anyhow::Result<String> {
        let provider_name = if self.cloudflare()?.id == provider_id {
            CLOUDFLARE
        } else {
            OTHER
        };
        let token = self
            .orchestrator()?
            .issue_token(&TokenParams {
                payment_method: self.payment_method_id.clone(),
                provider: provider_id.to_owned(),
                currency: "usd".to_owned(),
                cap_amount: cap,
                period: "month".to_owned(),
                usage: Some(usage.to_owned()),
                max_per_charge: None,
                expires_at: None,
            })
            .await?;
        let secret = token.token.clone().unwrap_or_default();
        ensure!(
            token.status == "active" && secret.starts_with("scrip_pt_"),
            "the token came back {} without a scrip_pt_… secret",
            token.status
        );
        ensure!(
            token.spend.remaining == cap && token.cap.amount == cap,
            "a new token should have all of its cap remaining, not {}",
            token.spend.remaining
        );
        self.say.line(format!(
            "token {}: {}, {}, redeemable only by {provider_name} ({}); the scrip_pt_… string is shown once",
            token.id,
            cap_label(token.cap.amount, &token.cap.period, &token.currency),
            token.usage,
            token.provider
        ));
        self.secrets.push(("a payment token", secret.clone()));
        Ok(secret)
    }

    /// c) a token for Cloudflare, $100 a month.
    async fn issue_cloudflare_token(&mut self) -> anyhow::Result<String> {
        self.say.step(
            3,
            "The orchestrator issues a token for Cloudflare (demo), capped at $100/month",
        );
        let cloudflare_id = self.cloudflare()?.id.clone();
        let token = self.issue(&cloudflare_id, CAP_CENTS, "multi_use").await?;
        self.say
            .ok("the orchestrator hands the agent this token string and nothing else");
        Ok(token)
    }

    /// d) the agent inspects its token and pays Cloudflare for a plan.
    async fn agent_buys(&self, token: &str) -> anyhow::Result<()> {
        let say = self.say;
        say.step(
            4,
            "The agent, holding only the token, buys a \"pro\" plan from Cloudflare (demo)",
        );
        let agent = Agent::new(token.to_owned(), &self.scrip_url, &self.recorder);
        let me = agent.inspect().await?;
        ensure!(
            me.status == "active" && me.provider.name == CLOUDFLARE && me.cap.amount == CAP_CENTS,
            "tokens/self showed {} for {} with cap {}",
            me.status,
            me.provider.name,
            me.cap.amount
        );
        say.line(format!(
            "agent: GET /v1/tokens/self -> {}, good at \"{}\" only, {}, {} remaining (nothing about the card or the person)",
            me.status,
            me.provider.name,
            cap_label(me.cap.amount, &me.cap.period, &me.currency),
            money(me.spend.remaining, &me.currency)
        ));
        let cloudflare = self.cloudflare()?;
        say.line(format!(
            "agent: POST {}/provision {{\"token\": \"scrip_pt_…\", \"plan\": \"pro\"}}",
            cloudflare.url
        ));
        let reply = agent.provision(cloudflare, "pro").await?;
        let charge = reply
            .body
            .get("charge")
            .and_then(Value::as_str)
            .unwrap_or("");
        ensure!(
            reply.status == 200
                && charge.starts_with("ch_")
                && reply.body.get("amount") == Some(&json!(2_500)),
            "Cloudflare answered HTTP {} {}",
            reply.status,
            reply.body
        );
        say.line(format!(
            "agent <- Cloudflare (demo): HTTP 200, provisioned \"{}\", charge {charge}",
            reply
                .body
                .get("provisioned")
                .and_then(Value::as_str)
                .unwrap_or("")
        ));
        let me = agent.inspect().await?;
        ensure!(
            me.spend.captured == 2_500
                && me.spend.pending == 0
                && me.spend.remaining == CAP_CENTS - 2_500,
            "after a 25.00 USD charge the spend is {:?}",
            me.spend
        );
        say.ok(format!(
            "spend this month: {} captured, {} remaining",
            money(me.spend.captured, &me.currency),
            money(me.spend.remaining, &me.currency)
        ));
        Ok(())
    }

    /// d') the agent derives a narrower child token for a sub-agent, which
    /// buys a plan of its own: the spend counts against both tokens.
    async fn sub_agent_buys(&mut self, token: &str) -> anyhow::Result<String> {
        let say = self.say;
        let agent = Agent::new(token.to_owned(), &self.scrip_url, &self.recorder);
        say.line(
            "agent: POST /v1/tokens/self/derive {\"cap\": {\"amount\": 1000, \"period\": \"day\"}} (a budget for a sub-agent, asking no one)",
        );
        let child = agent
            .scrip
            .derive_token(&DeriveParams {
                cap_amount: 1_000,
                period: "day".to_owned(),
                ..DeriveParams::default()
            })
            .await?;
        let secret = child.token.clone().unwrap_or_default();
        ensure!(
            child.status == "active"
                && secret.starts_with("scrip_pt_")
                && child.parent.is_some()
                && child.provider == self.cloudflare()?.id,
            "the derived token came back {} (parent {:?}, provider {})",
            child.status,
            child.parent,
            child.provider
        );
        self.derived_tokens.push(secret.clone());
        say.line(format!(
            "token {}: {}, child of the agent's token, same provider and card",
            child.id,
            cap_label(child.cap.amount, &child.cap.period, &child.currency)
        ));
        let sub_agent = Agent::new(secret.clone(), &self.scrip_url, &self.recorder);
        let reply = sub_agent.provision(self.cloudflare()?, "starter").await?;
        ensure!(
            reply.status == 200 && reply.body.get("amount") == Some(&json!(500)),
            "Cloudflare answered the sub-agent HTTP {} {}",
            reply.status,
            reply.body
        );
        say.line("sub-agent <- Cloudflare (demo): HTTP 200, provisioned \"starter\"");
        let (mine, parent) = (sub_agent.inspect().await?, agent.inspect().await?);
        ensure!(
            mine.spend.remaining == 500 && parent.spend.captured == 3_000,
            "after the sub-agent's 5.00 USD: child remaining {}, parent captured {}",
            mine.spend.remaining,
            parent.spend.captured
        );
        say.ok(format!(
            "the sub-agent has {} left today; the agent's token has {} captured this month (both charges count against it)",
            money(mine.spend.remaining, &mine.currency),
            money(parent.spend.captured, &parent.currency)
        ));
        Ok(secret)
    }

    /// e) the same token at the wrong provider: refused and revoked, and
    /// the child derived from it with it.
    async fn token_leaks(&self, token: &str, child: &str) -> anyhow::Result<()> {
        let say = self.say;
        say.step(
            5,
            "The token leaks: the agent presents it to Other provider (demo)",
        );
        let agent = Agent::new(token.to_owned(), &self.scrip_url, &self.recorder);
        let other = self.other()?;
        say.line(format!(
            "agent: POST {}/provision {{\"token\": \"scrip_pt_…\", \"plan\": \"starter\"}}",
            other.url
        ));
        let reply = agent.provision(other, "starter").await?;
        ensure!(
            reply.status == 402
                && reply.scrip_status() == 403
                && reply.error_code() == "token_scope_mismatch",
            "expected Scrip's 403 token_scope_mismatch, the provider relayed HTTP {} {}",
            reply.status,
            reply.body
        );
        say.line("agent <- Other provider (demo): could not get paid (Scrip said 403 token_scope_mismatch)");
        let me = agent.inspect().await?;
        ensure!(
            me.status == "revoked",
            "tokens/self says {}, not revoked",
            me.status
        );
        say.line(format!(
            "agent: GET /v1/tokens/self -> status {}",
            me.status
        ));
        let reply = agent.provision(self.cloudflare()?, "starter").await?;
        ensure!(
            reply.status == 402
                && reply.scrip_status() == 402
                && reply.error_code() == "token_revoked",
            "expected token_revoked at Cloudflare, got HTTP {} {}",
            reply.status,
            reply.body
        );
        say.line("agent <- Cloudflare (demo): refused too (Scrip said 402 token_revoked)");
        let sub_agent = Agent::new(child.to_owned(), &self.scrip_url, &self.recorder);
        let mine = sub_agent.inspect().await?;
        ensure!(
            mine.status == "revoked",
            "the child token says {}, not revoked with its parent",
            mine.status
        );
        say.line("sub-agent: GET /v1/tokens/self -> status revoked (revoking a token revokes its children)");
        say.ok("a token seen by the wrong provider has leaked, so Scrip revoked it: it is now worthless everywhere");
        Ok(())
    }

    /// f) a second token, a charge, a partial refund: headroom comes back.
    async fn refund(&mut self) -> anyhow::Result<String> {
        let say = self.say;
        say.step(6, "A refund gives headroom back");
        let cloudflare_id = self.cloudflare()?.id.clone();
        let token = self.issue(&cloudflare_id, CAP_CENTS, "multi_use").await?;
        let agent = Agent::new(token.clone(), &self.scrip_url, &self.recorder);
        let cloudflare = self.cloudflare()?;
        let reply = agent.provision(cloudflare, "pro").await?;
        let charge_id = reply
            .body
            .get("charge")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        ensure!(
            reply.status == 200 && charge_id.starts_with("ch_"),
            "Cloudflare answered HTTP {} {}",
            reply.status,
            reply.body
        );
        let before = agent.inspect().await?;
        ensure!(
            before.spend.captured == 2_500 && before.spend.remaining == CAP_CENTS - 2_500,
            "after the charge the spend is {:?}",
            before.spend
        );
        say.line(format!(
            "spend after the charge: {} captured, {} remaining",
            money(before.spend.captured, "usd"),
            money(before.spend.remaining, "usd")
        ));
        let refund = cloudflare
            .scrip
            .create_refund(&charge_id, Some(1_000))
            .await?;
        ensure!(
            refund.amount == 1_000 && refund.status == "succeeded" && refund.charge == charge_id,
            "the refund came back {} for {}",
            refund.status,
            refund.amount
        );
        say.line(format!(
            "[{}] refunds {} of {charge_id}: refund {} {}",
            cloudflare.name,
            money(refund.amount, &refund.currency),
            refund.id,
            refund.status
        ));
        let charge = cloudflare.scrip.get_charge(&charge_id).await?;
        ensure!(
            charge.amount_captured == 2_500 && charge.amount_refunded == 1_000,
            "the charge shows {} captured and {} refunded",
            charge.amount_captured,
            charge.amount_refunded
        );
        let after = agent.inspect().await?;
        ensure!(
            after.spend.captured == 1_500 && after.spend.remaining == CAP_CENTS - 1_500,
            "after the refund the spend is {:?}",
            after.spend
        );
        say.ok(format!(
            "spend after the refund: {} captured, {} remaining (up from {})",
            money(after.spend.captured, "usd"),
            money(after.spend.remaining, "usd"),
            money(before.spend.remaining, "usd")
        ));
        Ok(token)
    }

    /// g) revoking the credential stops every token it issued at once.
    async fn revoke_credential(&mut self, cloudflare_token: &str) -> anyhow::Result<()> {
        let say = self.say;
        say.step(7, "The operator revokes the orchestrator's credential");
        let other_id = self.other()?.id.clone();
        let other_token = self.issue(&other_id, 2_000, "single_use").await?;
        say.line("the orchestrator now has two live tokens, one for each provider");
        let credential = self.operator.revoke_credential(&self.credential_id).await?;
        ensure!(
            credential.status == "revoked",
            "the credential came back {}",
            credential.status
        );
        say.line(format!(
            "POST /v1/credentials/{}/revoke -> {}",
            credential.id, credential.status
        ));

        let first = Agent::new(cloudflare_token.to_owned(), &self.scrip_url, &self.recorder);
        let reply = first.provision(self.cloudflare()?, "starter").await?;
        ensure!(
            reply.status == 402 && reply.error_code() == "token_revoked",
            "the Cloudflare token should be refused with token_revoked, got HTTP {} {}",
            reply.status,
            reply.body
        );
        say.line("Cloudflare (demo) token: redemption refused, token_revoked");
        let second = Agent::new(other_token, &self.scrip_url, &self.recorder);
        let reply = second.provision(self.other()?, "starter").await?;
        ensure!(
            reply.status == 402 && reply.error_code() == "token_revoked",
            "the Other provider token should be refused with token_revoked, got HTTP {} {}",
            reply.status,
            reply.body
        );
        say.line("Other provider (demo) token: redemption refused, token_revoked");
        let me = first.inspect().await?;
        ensure!(
            me.status == "revoked",
            "tokens/self says {}, not revoked",
            me.status
        );

        let refused = self.orchestrator()?.list_tokens(None, None).await;
        let e = expect_api_error(refused, 401, "secret_invalid")?;
        say.line(format!(
            "the orchestrator's secret: HTTP {} {}/{}",
            e.status, e.kind, e.code
        ));
        say.ok(
            "one revocation stopped every token the credential issued, and the credential itself",
        );
        Ok(())
    }

    /// h) who saw what, checked against every recorded response body.
    fn who_saw_what(&self) -> anyhow::Result<()> {
        let say = self.say;
        say.step(8, "Who saw what");
        let cols = [
            "",
            "Ada",
            "operator",
            "orchestrator",
            "Scrip",
            "agent",
            "Cloudflare",
            "Other prov.",
        ];
        let rows: Vec<Vec<String>> = [
            [
                "card number",
                "yes",
                "-",
                "relayed once",
                "sealed",
                "-",
                "-",
                "-",
            ],
            [
                "CVC",
                "yes",
                "-",
                "relayed once",
                "checked, dropped",
                "-",
                "-",
                "-",
            ],
            ["brand + last4", "yes", "-", "yes", "yes", "-", "yes", "-"],
            [
                "payment token",
                "-",
                "-",
                "yes (once)",
                "hash",
                "yes",
                "yes",
                "yes (revoked)",
            ],
            [
                "orchestrator secret",
                "-",
                "once",
                "yes",
                "hash",
                "-",
                "-",
                "-",
            ],
            [
                "provider secret",
                "-",
                "once",
                "-",
                "hash",
                "-",
                "own only",
                "own only",
            ],
            ["admin secret", "-", "yes", "-", "hash", "-", "-", "-"],
        ]
        .iter()
        .map(|r| r.iter().map(|c| (*c).to_owned()).collect())
        .collect();
        if !say.quiet {
            crate::cli::table(&cols, rows);
            say.line("sealed: encrypted in the vault; hash: only a SHA-256 is kept; once: only in the response that created it");
        }

        let (count, bytes) = self
            .recorder
            .with(|seen| (seen.len(), seen.iter().map(|s| s.body.len()).sum::<usize>()));
        ensure!(count > 0, "no responses were recorded");
        // The card number, in any party's responses.
        self.recorder.with(|seen| {
            for s in seen {
                ensure!(
                    !contains(&s.body, CARD_NUMBER) && !contains(&s.body, CARD_TYPED),
                    "a response received by the {} contains the card number",
                    s.party
                );
            }
            Ok(())
        })?;
        // Every secret in exactly one response: the one that created it.
        for (what, secret) in &self.secrets {
            let n = self
                .recorder
                .with(|seen| seen.iter().filter(|s| contains(&s.body, secret)).count());
            ensure!(
                n == 1,
                "the {what} appears in {n} responses, not exactly once"
            );
        }
        let admin_seen = self.recorder.with(|seen| {
            seen.iter()
                .filter(|s| contains(&s.body, &self.admin_key))
                .count()
        });
        ensure!(
            admin_seen == 0,
            "the admin secret appears in {admin_seen} responses"
        );
        // Nothing but its own token reaches the agent; no provider sees
        // another party's secret.
        let leaked = self.recorder.with(|seen| {
            seen.iter()
                .filter(|s| s.party != "operator" && s.party != "orchestrator")
                .any(|s| {
                    self.secrets
                        .iter()
                        .any(|(_, secret)| contains(&s.body, secret))
                })
        });
        ensure!(
            !leaked,
            "a secret reached the agent or a provider in a response"
        );
        // A token the agent derived reaches the agent once, in the response
        // that created it, and nobody else.
        for secret in &self.derived_tokens {
            let parties: Vec<&'static str> = self.recorder.with(|seen| {
                seen.iter()
                    .filter(|s| contains(&s.body, secret))
                    .map(|s| s.party)
                    .collect()
            });
            ensure!(
                parties == ["agent"],
                "a derived token appears in responses to {parties:?}, not once to the agent"
            );
        }
        let by_party = self.recorder.with(|seen| {
            ["operator", "orchestrator", "agent", CLOUDFLARE, OTHER]
                .iter()
                .map(|p| format!("{p}: {}", seen.iter().filter(|s| s.party == *p).count()))
                .collect::<Vec<_>>()
                .join(", ")
        });
        say.line(format!(
            "checked {count} response bodies ({bytes} bytes) received by every party ({by_party})"
        ));
        say.ok(format!(
            "none contains the card number (ending {}); each secret appears only in the one response that created it",
            &CARD_NUMBER[CARD_NUMBER.len() - 4..]
        ));
        Ok(())
    }
}

/// The API error a refused call must have failed with.
fn expect_api_error<T>(
    result: Result<T, scrip_client::Error>,
    status: u16,
    code: &str,
) -> anyhow::Result<ApiError> {
    match result {
        Ok(_) => anyhow::bail!("expected HTTP {status} {code}, the call succeeded"),
        Err(scrip_client::Error::Api(e)) if e.status == status && e.code == code => Ok(e),
        Err(other) => anyhow::bail!("expected HTTP {status} {code}, got: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::{contains, run, DemoArgs};

    #[tokio::test]
    async fn the_demo_plays_through() {
        let outcome = run(DemoArgs { quiet: true }).await;
        assert!(outcome.is_ok(), "the demo failed: {outcome:?}");
    }

    #[test]
    fn finds_byte_substrings() {
        assert!(contains(b"xx4242424242424242yy", "4242424242424242"));
        assert!(!contains(b"4242", "4242424242424242"));
        assert!(!contains(b"abc", ""));
    }
}
