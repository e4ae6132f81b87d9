//! Client subcommands for each role: the operator (`customers`,
//! `credentials`, `providers`, `ledger`, `audit`), the orchestrator
//! (`cards`, `tokens`), the provider (`charges`, `refunds`, `balance`,
//! `payouts`), orchestrators and providers alike (`events`, `webhooks`) and
//! the agent (`tokens inspect-self`, `tokens derive`).
//!
//! Every command takes the same connection options (`--url`, `--api-key`,
//! `--json`). Output is a key/value layout or a table for people, or the
//! JSON object with `--json`. Card numbers and CVCs are read from a hidden
//! prompt or from standard input, never from the command line.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use scrip_client::webhook::{self, VerifyError};
use scrip_client::{
    AuditEvent, AuditVerification, Balance, CardParams, Charge, ChargeParams, Client, Credential,
    Customer, CustomerParams, Delivery, DeriveParams, Event, EventListParams, LedgerReport,
    LedgerVerification, List, PaymentMethod, PaymentToken, Payout, Provider, Refund, Spend,
    TokenParams, TokenSelf, WebhookEndpoint, WebhookEndpointParams, WebhookEndpointUpdate,
};
use scrip_core::money::Currency;
use scrip_core::webhook::EVENT_TYPES;
use serde::Serialize;
use zeroize::{Zeroize, Zeroizing};

/// Where the server is, who you are, and how to print.
#[derive(Args, Clone)]
pub struct Conn {
    /// Base URL of the Scrip server.
    #[arg(long, env = "SCRIP_URL", default_value = "http://127.0.0.1:4780")]
    url: String,
    /// The secret of the role you act as: sk_admin_…, sk_orch_…, sk_prov_…,
    /// or a scrip_pt_… payment token.
    #[arg(long, env = "SCRIP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the JSON object instead of a readable layout.
    #[arg(long)]
    json: bool,
}

impl Conn {
    fn client(&self) -> anyhow::Result<Client> {
        let secret = self
            .api_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .context("no API secret: pass --api-key or set SCRIP_API_KEY")?;
        Ok(Client::new(&self.url)
            .with_secret(secret)
            .with_body_observer(Arc::new(remember_body)))
    }
}

/// [`Conn`] for commands whose own `--url` is a webhook URL: there the
/// server's URL is `--server-url` (or `SCRIP_URL`).
#[derive(Args, Clone)]
pub struct EndpointConn {
    /// Base URL of the Scrip server.
    #[arg(
        long = "server-url",
        env = "SCRIP_URL",
        default_value = "http://127.0.0.1:4780"
    )]
    server_url: String,
    /// The secret of the role you act as: sk_orch_… or sk_prov_….
    #[arg(long, env = "SCRIP_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print the JSON object instead of a readable layout.
    #[arg(long)]
    json: bool,
}

impl From<EndpointConn> for Conn {
    fn from(c: EndpointConn) -> Conn {
        Conn {
            url: c.server_url,
            api_key: c.api_key,
            json: c.json,
        }
    }
}

/// The raw body of the last response, printed as is by `--json`.
static LAST_BODY: Mutex<Vec<u8>> = Mutex::new(Vec::new());

fn remember_body(body: &[u8]) {
    let mut last = LAST_BODY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    last.clear();
    last.extend_from_slice(body);
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Operator: the people whose cards are vaulted.
    #[command(subcommand)]
    Customers(CustomersCommand),
    /// Operator: orchestrator credentials (sk_orch_…), one customer each.
    #[command(subcommand)]
    Credentials(CredentialsCommand),
    /// Operator: providers, the services that redeem tokens (sk_prov_…).
    #[command(subcommand)]
    Providers(ProvidersCommand),
    /// Orchestrator: vault cards and manage them.
    #[command(subcommand)]
    Cards(CardsCommand),
    /// Orchestrator: issue, list and revoke payment tokens; agent: inspect one.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Provider: redeem tokens, capture or cancel holds.
    #[command(subcommand)]
    Charges(ChargesCommand),
    /// Provider: refund charges.
    #[command(subcommand)]
    Refunds(RefundsCommand),
    /// Provider: funds pending settlement and available to pay out.
    Balance {
        #[command(flatten)]
        conn: Conn,
    },
    /// Provider: pay out available funds; list and show payouts.
    #[command(subcommand)]
    Payouts(PayoutsCommand),
    /// Operator: verify the double-entry ledger; report money moved.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Orchestrator, provider or operator: events about your objects.
    #[command(subcommand)]
    Events(EventsCommand),
    /// Orchestrator or provider: webhook endpoints and their deliveries;
    /// verify a delivery's signature; forward events to a local server.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// Operator: the hash-chained audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Find Scrip secrets and card numbers in files (no server needed).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Check that the server answers (GET /healthz, no secret needed).
    Health {
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum CustomersCommand {
    /// Create a customer (admin secret).
    Create {
        /// The customer's email address.
        #[arg(long)]
        email: Option<String>,
        /// The customer's name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a customer (admin secret).
    Get {
        /// Customer id (cus_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum CredentialsCommand {
    /// Create an orchestrator credential for a customer; its secret is shown once.
    Create {
        /// Customer id (cus_…) the credential acts for.
        #[arg(long)]
        customer: String,
        /// A label for the credential.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a credential: every token it issued is refused from now on.
    Revoke {
        /// Credential id (oc_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum ProvidersCommand {
    /// Create a provider; its secret is shown once.
    Create {
        /// The provider's name, shown to agents.
        #[arg(long)]
        name: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Replace a provider's secret; the old one stops working at once.
    RollSecret {
        /// Provider id (prov_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum CardsCommand {
    /// Vault a card. The number and CVC are read from a hidden prompt, or
    /// from the first two lines of standard input when it is not a terminal.
    Add {
        /// Customer id (cus_…); needed with the admin secret only.
        #[arg(long)]
        customer: Option<String>,
        /// Expiry month, 1 to 12.
        #[arg(long)]
        exp_month: i64,
        /// Expiry year, four digits.
        #[arg(long)]
        exp_year: i64,
        #[command(flatten)]
        conn: Conn,
    },
    /// List vaulted cards, newest first.
    List {
        /// How many to show (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a vaulted card.
    Show {
        /// Payment method id (pm_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Detach a card: every token backed by it is refused from now on.
    Detach {
        /// Payment method id (pm_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Issue a payment token scoped to one provider, currency and cap.
    Issue {
        /// Payment method id (pm_…) the token charges.
        #[arg(long)]
        payment_method: String,
        /// Provider id (prov_…): the only one that can redeem the token.
        #[arg(long)]
        provider: String,
        /// Currency, lowercase ISO 4217 (usd, eur, gbp, jpy, cad, aud, chf).
        #[arg(long)]
        currency: String,
        /// Cap per period, in the currency's minor unit (cents for usd).
        #[arg(long)]
        cap: i64,
        /// The cap's period.
        #[arg(long, value_parser = ["day", "week", "month", "year", "none"])]
        period: String,
        /// multi_use (default) or single_use.
        #[arg(long, value_parser = ["multi_use", "single_use"])]
        usage: Option<String>,
        /// Largest single charge, in minor units.
        #[arg(long)]
        max_per_charge: Option<i64>,
        /// Expiry as Unix seconds (default: 30 days from now).
        #[arg(long)]
        expires_at: Option<i64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List tokens, newest first.
    List {
        /// Only tokens with this status.
        #[arg(long, value_parser = ["active", "revoked", "expired", "exhausted", "suspended"])]
        status: Option<String>,
        /// How many to show (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a token and its spend in the current period.
    Show {
        /// Token id (pt_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Revoke a token (and every token derived from it).
    Revoke {
        /// Token id (pt_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// As the agent: what the token in --api-key (scrip_pt_…) allows.
    InspectSelf {
        #[command(flatten)]
        conn: Conn,
    },
    /// As the agent: derive a narrower child of the token in --api-key
    /// (scrip_pt_…) for a sub-agent; its token is printed once.
    Derive {
        /// The child's cap per period, in minor units (at most the parent's).
        #[arg(long)]
        cap: i64,
        /// The child's cap period.
        #[arg(long, value_parser = ["day", "week", "month", "year", "none"])]
        period: String,
        /// multi_use or single_use [default: the parent's].
        #[arg(long, value_parser = ["multi_use", "single_use"])]
        usage: Option<String>,
        /// Largest single charge, in minor units [default: the parent's].
        #[arg(long)]
        max_per_charge: Option<i64>,
        /// Expiry as Unix seconds [default: the parent's; never later].
        #[arg(long)]
        expires_at: Option<i64>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum ChargesCommand {
    /// Redeem a payment token (provider secret).
    Create {
        /// The scrip_pt_… token the agent sent.
        #[arg(long, env = "SCRIP_PAYMENT_TOKEN", hide_env_values = true)]
        token: String,
        /// Amount in the currency's minor unit (cents for usd).
        #[arg(long)]
        amount: i64,
        /// Currency, lowercase ISO 4217; must be the token's.
        #[arg(long)]
        currency: String,
        /// Only place an authorization hold; capture it later.
        #[arg(long)]
        hold: bool,
        /// A description stored with the charge.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Capture a hold, in full or in part (the rest is released).
    Capture {
        /// Charge id (ch_…).
        id: String,
        /// Amount to capture, in minor units (default: all of it).
        #[arg(long)]
        amount: Option<i64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Cancel a hold and release it to the token's cap.
    Cancel {
        /// Charge id (ch_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// List charges, newest first.
    List {
        /// How many to show (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a charge.
    Show {
        /// Charge id (ch_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum RefundsCommand {
    /// Refund a charge, in full (default) or in part.
    Create {
        /// Charge id (ch_…).
        #[arg(long)]
        charge: String,
        /// Amount in minor units (default: all not yet refunded).
        #[arg(long)]
        amount: Option<i64>,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum PayoutsCommand {
    /// Pay out available funds in one currency (provider secret).
    Create {
        /// Currency, lowercase ISO 4217 (usd, eur, gbp, jpy, cad, aud, chf).
        #[arg(long)]
        currency: String,
        /// Amount in minor units (default: all that is available).
        #[arg(long)]
        amount: Option<i64>,
        #[command(flatten)]
        conn: Conn,
    },
    /// List payouts, newest first (a provider's own; all with the admin secret).
    List {
        /// How many to show (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a payout.
    Show {
        /// Payout id (po_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum LedgerCommand {
    /// Recompute the ledger from its entries (admin secret); fails unless
    /// every transaction, balance and token spend agrees.
    Verify {
        #[command(flatten)]
        conn: Conn,
    },
    /// Gross, fees, refunds, net and paid out per provider and currency
    /// (admin secret), for transactions from --from up to, not including, --to.
    Report {
        /// Start, Unix seconds, inclusive (default: the beginning).
        #[arg(long, allow_hyphen_values = true)]
        from: Option<i64>,
        /// End, Unix seconds, exclusive (default: no end).
        #[arg(long, allow_hyphen_values = true)]
        to: Option<i64>,
        /// Print RFC 4180 CSV in minor units instead of a table.
        #[arg(long, conflicts_with = "json")]
        csv: bool,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum EventsCommand {
    /// List events, newest first.
    List {
        /// Only events of this type.
        #[arg(long = "type", value_name = "TYPE", value_parser = clap::builder::PossibleValuesParser::new(EVENT_TYPES))]
        kind: Option<String>,
        /// How many to show (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Show events older than this event id (evt_…).
        #[arg(long)]
        starting_after: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show an event and the object it carries.
    Show {
        /// Event id (evt_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Queue an event again to your webhook endpoints that want it.
    Resend {
        /// Event id (evt_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Create a webhook endpoint; its signing secret (whsec_…) is shown once.
    ///
    /// Here --url is the endpoint's URL; the server's is --server-url (or
    /// SCRIP_URL).
    Create {
        /// Where Scrip POSTs events (http or https).
        #[arg(long)]
        url: String,
        /// Comma-separated event types, or * for all.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        events: Vec<String>,
        /// A note about the endpoint.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        conn: EndpointConn,
    },
    /// List webhook endpoints, newest first.
    List {
        /// How many to show (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Show a webhook endpoint.
    Show {
        /// Webhook endpoint id (we_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// Change an endpoint's URL, events or description.
    ///
    /// Here --url is the endpoint's URL; the server's is --server-url (or
    /// SCRIP_URL).
    Update {
        /// Webhook endpoint id (we_…).
        id: String,
        /// The new URL.
        #[arg(long)]
        url: Option<String>,
        /// The new comma-separated event types, or * for all.
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        /// The new description.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        conn: EndpointConn,
    },
    /// Delete a webhook endpoint: nothing more is delivered to it.
    Delete {
        /// Webhook endpoint id (we_…).
        id: String,
        #[command(flatten)]
        conn: Conn,
    },
    /// An endpoint's deliveries and their attempts, newest first.
    Deliveries {
        /// Webhook endpoint id (we_…).
        id: String,
        /// How many to show (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Check a delivery's Scrip-Signature header against its raw body.
    ///
    /// The body is read from standard input (or --payload-file) byte for
    /// byte. Fails unless a v1 signature matches and the timestamp is within
    /// the tolerance.
    Verify {
        /// The endpoint's signing secret (whsec_…).
        #[arg(long, env = "SCRIP_WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// The Scrip-Signature header's value: t=…,v1=…
        #[arg(long)]
        header: String,
        /// Seconds the signature's timestamp may be from now, either way.
        #[arg(long, default_value_t = webhook::TOLERANCE_SECS)]
        tolerance: i64,
        /// Read the raw body from this file instead of standard input.
        #[arg(long)]
        payload_file: Option<PathBuf>,
    },
    /// Forward your new events to a local URL until Ctrl-C.
    ///
    /// Prints a fresh local signing secret (whsec_…), then polls GET
    /// /v1/events and POSTs each event created since it started to
    /// --forward-to with a Scrip-Signature made with that secret. No
    /// webhook endpoint is created on the server.
    Listen {
        /// Where to POST each event, e.g. http://127.0.0.1:8000/webhooks.
        #[arg(long)]
        forward_to: String,
        /// Comma-separated event types to forward, or * for all.
        #[arg(long, value_delimiter = ',', default_value = "*")]
        events: Vec<String>,
        /// How often to poll for new events, in milliseconds.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..=600_000))]
        poll_ms: u64,
        #[command(flatten)]
        conn: Conn,
    },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// List audit records, newest first (admin secret).
    List {
        /// How many to show (1 to 100).
        #[arg(long)]
        limit: Option<u32>,
        /// Show records older than this audit record id.
        #[arg(long)]
        starting_after: Option<String>,
        #[command(flatten)]
        conn: Conn,
    },
    /// Recompute the audit log's hash chain (admin secret); fails if any
    /// record was altered, removed or reordered.
    Verify {
        #[command(flatten)]
        conn: Conn,
    },
}

pub async fn run(command: ClientCommand) -> anyhow::Result<()> {
    match command {
        ClientCommand::Customers(c) => customers(c).await,
        ClientCommand::Credentials(c) => credentials(c).await,
        ClientCommand::Providers(c) => providers(c).await,
        ClientCommand::Cards(c) => cards(c).await,
        ClientCommand::Tokens(c) => tokens(c).await,
        ClientCommand::Charges(c) => charges(c).await,
        ClientCommand::Refunds(c) => refunds(c).await,
        ClientCommand::Balance { conn } => {
            let b = conn.client()?.balance().await?;
            emit(&conn, &b, show_balance)
        }
        ClientCommand::Payouts(c) => payouts(c).await,
        ClientCommand::Ledger(c) => ledger(c).await,
        ClientCommand::Events(c) => events(c).await,
        ClientCommand::Webhooks(c) => webhooks(c).await,
        ClientCommand::Audit(c) => audit(c).await,
        ClientCommand::Secrets(SecretsCommand::Scan { paths }) => scan_paths(&paths),
        ClientCommand::Health { conn } => {
            let body = Client::new(&conn.url)
                .with_body_observer(Arc::new(remember_body))
                .health()
                .await?;
            emit(&conn, &body, |b| {
                let status = b
                    .get("status")
                    .and_then(|s| s.as_str())
                    .unwrap_or("unknown");
                kv(&[("server", conn.url.clone()), ("status", status.to_owned())]);
            })
        }
    }
}

async fn customers(command: CustomersCommand) -> anyhow::Result<()> {
    match command {
        CustomersCommand::Create { email, name, conn } => {
            let params = CustomerParams {
                email: email.unwrap_or_default(),
                name: name.unwrap_or_default(),
            };
            let c = conn.client()?.create_customer(&params).await?;
            emit(&conn, &c, show_customer)
        }
        CustomersCommand::Get { id, conn } => {
            let c = conn.client()?.get_customer(&id).await?;
            emit(&conn, &c, show_customer)
        }
    }
}

async fn credentials(command: CredentialsCommand) -> anyhow::Result<()> {
    match command {
        CredentialsCommand::Create {
            customer,
            name,
            conn,
        } => {
            let c = conn
                .client()?
                .create_credential(&customer, name.as_deref())
                .await?;
            emit(&conn, &c, show_credential)?;
            once_note(&conn, c.secret.is_some());
            Ok(())
        }
        CredentialsCommand::Revoke { id, conn } => {
            let c = conn.client()?.revoke_credential(&id).await?;
            emit(&conn, &c, show_credential)
        }
    }
}

async fn providers(command: ProvidersCommand) -> anyhow::Result<()> {
    let (p, conn) = match command {
        ProvidersCommand::Create { name, conn } => {
            (conn.client()?.create_provider(&name).await?, conn)
        }
        ProvidersCommand::RollSecret { id, conn } => {
            (conn.client()?.roll_provider_secret(&id).await?, conn)
        }
    };
    emit(&conn, &p, show_provider)?;
    once_note(&conn, p.secret.is_some());
    Ok(())
}

async fn cards(command: CardsCommand) -> anyhow::Result<()> {
    match command {
        CardsCommand::Add {
            customer,
            exp_month,
            exp_year,
            conn,
        } => {
            let client = conn.client()?;
            let (mut number, mut cvc) = read_card_secrets()?;
            let mut params = CardParams {
                number: std::mem::take(&mut *number),
                exp_month,
                exp_year,
                cvc: std::mem::take(&mut *cvc),
                customer,
            };
            let result = client.add_card(&params).await;
            params.number.zeroize();
            params.cvc.zeroize();
            let m = result?;
            emit(&conn, &m, show_payment_method)
        }
        CardsCommand::List { limit, conn } => {
            let list = conn.client()?.list_payment_methods(limit).await?;
            emit(&conn, &list, |l| {
                let rows = l
                    .data
                    .iter()
                    .map(|m| {
                        vec![
                            m.id.clone(),
                            m.status.clone(),
                            card_label(&m.card.brand, &m.card.last4),
                            format!("{:02}/{}", m.card.exp_month, m.card.exp_year),
                            m.customer.clone(),
                            datetime(m.created),
                        ]
                    })
                    .collect();
                table(
                    &["ID", "STATUS", "CARD", "EXPIRES", "CUSTOMER", "CREATED"],
                    rows,
                );
                more_note(l);
            })
        }
        CardsCommand::Show { id, conn } => {
            let m = conn.client()?.get_payment_method(&id).await?;
            emit(&conn, &m, show_payment_method)
        }
        CardsCommand::Detach { id, conn } => {
            let m = conn.client()?.detach_payment_method(&id).await?;
            emit(&conn, &m, show_payment_method)
        }
    }
}

async fn tokens(command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Issue {
            payment_method,
            provider,
            currency,
            cap,
            period,
            usage,
            max_per_charge,
            expires_at,
            conn,
        } => {
            let params = TokenParams {
                payment_method,
                provider,
                currency,
                cap_amount: cap,
                period,
                usage,
                max_per_charge,
                expires_at,
            };
            let t = conn.client()?.issue_token(&params).await?;
            emit(&conn, &t, show_token)?;
            once_note(&conn, t.token.is_some());
            Ok(())
        }
        TokensCommand::List {
            status,
            limit,
            conn,
        } => {
            let list = conn.client()?.list_tokens(status.as_deref(), limit).await?;
            emit(&conn, &list, |l| {
                let rows = l
                    .data
                    .iter()
                    .map(|t| {
                        vec![
                            t.id.clone(),
                            t.status.clone(),
                            t.provider.clone(),
                            cap_label(t.cap.amount, &t.cap.period, &t.currency),
                            money(t.spend.captured + t.spend.pending, &t.currency),
                            money(t.spend.remaining, &t.currency),
                            datetime(t.expires_at),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "STATUS",
                        "PROVIDER",
                        "CAP",
                        "SPENT",
                        "REMAINING",
                        "EXPIRES",
                    ],
                    rows,
                );
                more_note(l);
            })
        }
        TokensCommand::Show { id, conn } => {
            let t = conn.client()?.get_token(&id).await?;
            emit(&conn, &t, show_token)
        }
        TokensCommand::Revoke { id, conn } => {
            let t = conn.client()?.revoke_token(&id).await?;
            emit(&conn, &t, show_token)
        }
        TokensCommand::InspectSelf { conn } => {
            let t = conn.client()?.token_self().await?;
            emit(&conn, &t, show_token_self)
        }
        TokensCommand::Derive {
            cap,
            period,
            usage,
            max_per_charge,
            expires_at,
            conn,
        } => {
            let params = DeriveParams {
                cap_amount: cap,
                period,
                usage,
                max_per_charge,
                expires_at,
            };
            let t = conn.client()?.derive_token(&params).await?;
            emit(&conn, &t, show_token)?;
            once_note(&conn, t.token.is_some());
            Ok(())
        }
    }
}

async fn charges(command: ChargesCommand) -> anyhow::Result<()> {
    match command {
        ChargesCommand::Create {
            token,
            amount,
            currency,
            hold,
            description,
            conn,
        } => {
            let params = ChargeParams {
                token,
                amount,
                currency,
                capture: hold.then_some(false),
                description,
            };
            let c = conn.client()?.create_charge(&params).await?;
            emit(&conn, &c, show_charge)
        }
        ChargesCommand::Capture { id, amount, conn } => {
            let c = conn.client()?.capture_charge(&id, amount).await?;
            emit(&conn, &c, show_charge)
        }
        ChargesCommand::Cancel { id, conn } => {
            let c = conn.client()?.cancel_charge(&id).await?;
            emit(&conn, &c, show_charge)
        }
        ChargesCommand::List { limit, conn } => {
            let list = conn.client()?.list_charges(limit).await?;
            emit(&conn, &list, |l| {
                let rows = l
                    .data
                    .iter()
                    .map(|c| {
                        vec![
                            c.id.clone(),
                            c.status.clone(),
                            money(c.amount, &c.currency),
                            money(c.amount_captured, &c.currency),
                            money(c.amount_refunded, &c.currency),
                            card_label(
                                &c.payment_method_details.card.brand,
                                &c.payment_method_details.card.last4,
                            ),
                            datetime(c.created),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID", "STATUS", "AMOUNT", "CAPTURED", "REFUNDED", "CARD", "CREATED",
                    ],
                    rows,
                );
                more_note(l);
            })
        }
        ChargesCommand::Show { id, conn } => {
            let c = conn.client()?.get_charge(&id).await?;
            emit(&conn, &c, show_charge)
        }
    }
}

async fn refunds(command: RefundsCommand) -> anyhow::Result<()> {
    match command {
        RefundsCommand::Create {
            charge,
            amount,
            conn,
        } => {
            let r = conn.client()?.create_refund(&charge, amount).await?;
            emit(&conn, &r, show_refund)
        }
    }
}

async fn payouts(command: PayoutsCommand) -> anyhow::Result<()> {
    match command {
        PayoutsCommand::Create {
            currency,
            amount,
            conn,
        } => {
            let p = conn.client()?.create_payout(&currency, amount).await?;
            emit(&conn, &p, show_payout)
        }
        PayoutsCommand::List { limit, conn } => {
            let list = conn.client()?.list_payouts(limit).await?;
            emit(&conn, &list, |l| {
                let rows = l
                    .data
                    .iter()
                    .map(|p| {
                        vec![
                            p.id.clone(),
                            p.status.clone(),
                            money(p.amount, &p.currency),
                            p.provider.clone(),
                            datetime(p.arrival_date),
                            yes_no(p.automatic).to_owned(),
                            datetime(p.created),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "STATUS",
                        "AMOUNT",
                        "PROVIDER",
                        "ARRIVAL",
                        "AUTOMATIC",
                        "CREATED",
                    ],
                    rows,
                );
                more_note(l);
            })
        }
        PayoutsCommand::Show { id, conn } => {
            let p = conn.client()?.get_payout(&id).await?;
            emit(&conn, &p, show_payout)
        }
    }
}

async fn ledger(command: LedgerCommand) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Verify { conn } => {
            let v = conn.client()?.verify_ledger().await?;
            emit(&conn, &v, show_verification)?;
            if !v.balanced {
                bail!(
                    "the ledger does not verify: {} problem(s) found",
                    verification_problems(&v)
                );
            }
            Ok(())
        }
        LedgerCommand::Report {
            from,
            to,
            csv,
            conn,
        } => {
            let r = conn.client()?.ledger_report(from, to).await?;
            if csv {
                let mut out = std::io::stdout().lock();
                out.write_all(report_csv(&r).as_bytes())?;
                out.flush()?;
                return Ok(());
            }
            emit(&conn, &r, show_report)
        }
    }
}

async fn events(command: EventsCommand) -> anyhow::Result<()> {
    match command {
        EventsCommand::List {
            kind,
            limit,
            starting_after,
            conn,
        } => {
            let params = EventListParams {
                kind,
                limit,
                starting_after,
                ..EventListParams::default()
            };
            let list = conn.client()?.list_events(&params).await?;
            emit(&conn, &list, |l| {
                let rows = l
                    .data
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.clone(),
                            e.kind.clone(),
                            event_object_label(e),
                            datetime(e.created),
                        ]
                    })
                    .collect();
                table(&["ID", "TYPE", "OBJECT", "CREATED"], rows);
                more_note(l);
            })
        }
        EventsCommand::Show { id, conn } => {
            let e = conn.client()?.get_event(&id).await?;
            emit(&conn, &e, show_event)
        }
        EventsCommand::Resend { id, conn } => {
            let r = conn.client()?.resend_event(&id).await?;
            emit(&conn, &r, |r| {
                kv(&[
                    ("event", r.event.clone()),
                    ("deliveries queued", r.deliveries_queued.to_string()),
                ]);
            })
        }
    }
}

async fn webhooks(command: WebhooksCommand) -> anyhow::Result<()> {
    match command {
        WebhooksCommand::Create {
            url,
            events,
            description,
            conn,
        } => {
            let conn = Conn::from(conn);
            let params = WebhookEndpointParams {
                url,
                enabled_events: events,
                description,
            };
            let e = conn.client()?.create_webhook_endpoint_with(&params).await?;
            emit(&conn, &e, show_endpoint)?;
            secret_note(
                &conn,
                e.secret.is_some(),
                "note: the signing secret above is shown only once; verify deliveries with it (scrip webhooks verify). Store it now.",
            );
            Ok(())
        }
        WebhooksCommand::List { limit, conn } => {
            let list = conn
                .client()?
                .list_webhook_endpoints_page(limit, None)
                .await?;
            emit(&conn, &list, |l| {
                let rows = l
                    .data
                    .iter()
                    .map(|e| {
                        vec![
                            e.id.clone(),
                            e.status.clone(),
                            e.url.clone(),
                            e.enabled_events.join(","),
                            datetime(e.created),
                        ]
                    })
                    .collect();
                table(&["ID", "STATUS", "URL", "EVENTS", "CREATED"], rows);
                more_note(l);
            })
        }
        WebhooksCommand::Show { id, conn } => {
            let e = conn.client()?.get_webhook_endpoint(&id).await?;
            emit(&conn, &e, show_endpoint)
        }
        WebhooksCommand::Update {
            id,
            url,
            events,
            description,
            conn,
        } => {
            let conn = Conn::from(conn);
            if url.is_none() && events.is_none() && description.is_none() {
                bail!("nothing to update: pass --url, --events or --description");
            }
            let update = WebhookEndpointUpdate {
                url,
                enabled_events: events,
                description,
            };
            let e = conn.client()?.update_webhook_endpoint(&id, &update).await?;
            emit(&conn, &e, show_endpoint)
        }
        WebhooksCommand::Delete { id, conn } => {
            let d = conn.client()?.delete_webhook_endpoint(&id).await?;
            emit(&conn, &d, |d| {
                kv(&[
                    ("id", d.id.clone()),
                    ("deleted", yes_no(d.deleted).to_owned()),
                ]);
            })
        }
        WebhooksCommand::Deliveries { id, limit, conn } => {
            let list = conn
                .client()?
                .list_deliveries_page(&id, limit, None)
                .await?;
            emit(&conn, &list, |l| {
                let rows = l
                    .data
                    .iter()
                    .map(|d| {
                        vec![
                            d.id.clone(),
                            d.event.clone(),
                            d.event_type.clone(),
                            d.status.clone(),
                            d.attempt_count.to_string(),
                            last_attempt_label(d),
                            d.next_attempt_at.map_or_else(|| "-".to_owned(), datetime),
                        ]
                    })
                    .collect();
                table(
                    &[
                        "ID",
                        "EVENT",
                        "TYPE",
                        "STATUS",
                        "ATTEMPTS",
                        "LAST RESULT",
                        "NEXT ATTEMPT",
                    ],
                    rows,
                );
                more_note(l);
            })
        }
        WebhooksCommand::Verify {
            secret,
            header,
            tolerance,
            payload_file,
        } => verify_signature(&secret, &header, tolerance, payload_file),
        WebhooksCommand::Listen {
            forward_to,
            events,
            poll_ms,
            conn,
        } => listen(conn, forward_to, events, poll_ms).await,
    }
}

async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List {
            limit,
            starting_after,
            conn,
        } => {
            let list = conn
                .client()?
                .list_audit_events(limit, starting_after.as_deref())
                .await?;
            emit(&conn, &list, |l| {
                let rows = l
                    .data
                    .iter()
                    .map(|a| {
                        vec![
                            a.seq.to_string(),
                            datetime(a.created),
                            a.actor.clone(),
                            a.action.clone(),
                            a.object_id.clone(),
                            audit_outcome(a),
                        ]
                    })
                    .collect();
                table(
                    &["SEQ", "CREATED", "ACTOR", "ACTION", "OBJECT", "OUTCOME"],
                    rows,
                );
                more_note(l);
            })
        }
        AuditCommand::Verify { conn } => {
            let v = conn.client()?.verify_audit().await?;
            emit(&conn, &v, show_audit_verification)?;
            if !v.valid {
                match v.first_broken_seq {
                    Some(seq) => bail!(
                        "the audit log does not verify: the hash chain breaks at record seq {seq}; that record or one before it was altered, removed or reordered"
                    ),
                    None => bail!("the audit log does not verify"),
                }
            }
            Ok(())
        }
    }
}

// --- webhook signatures and forwarding ------------------------------------------

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `webhooks verify`: checks the signature of the raw payload from a file
/// or standard input, and names the event it carries.
fn verify_signature(
    secret: &str,
    header: &str,
    tolerance: i64,
    payload_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let payload = match payload_file {
        Some(path) => std::fs::read(&path)
            .with_context(|| format!("cannot read the payload from {}", path.display()))?,
        None => {
            if std::io::stdin().is_terminal() {
                bail!("pipe the raw request body on standard input, or pass --payload-file");
            }
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .context("cannot read the payload from standard input")?;
            buf
        }
    };
    // A header pasted whole (`Scrip-Signature: t=…`) is accepted too.
    let header = header.trim();
    let header = match header.split_once(':') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case(webhook::SIGNATURE_HEADER) => value,
        _ => header,
    };
    let now = unix_now();
    match webhook::verify(&payload, header, secret, now, tolerance) {
        Ok(signed_at) => {
            let signed = format!(
                "signed at {}, {} s ago",
                datetime(signed_at),
                now - signed_at
            );
            match std::str::from_utf8(&payload)
                .ok()
                .and_then(|text| Event::from_json(text).ok())
            {
                Some(e) => println!("verified: {} {} ({signed})", e.id, e.kind),
                None => println!("verified, but the payload is not a Scrip event ({signed})"),
            }
            Ok(())
        }
        Err(e) => {
            let hint = if e == VerifyError::NoMatch && payload.ends_with(b"\n") {
                " (the payload ends with a line break, which the signed body usually does not have: pass the body byte for byte, e.g. with printf '%s' or --payload-file)"
            } else {
                ""
            };
            bail!("the signature does not verify: {e}{hint}")
        }
    }
}

/// `whsec_` and 32 random letters and digits, like the server's.
fn local_signing_secret() -> String {
    use rand::distributions::Alphanumeric;
    use rand::Rng;
    let random: String = rand::rngs::OsRng
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    format!("whsec_{random}")
}

/// How far back (seconds) each poll looks before the newest event seen, so
/// an event committed a little out of order is still caught.
const LISTEN_LOOKBACK_SECS: i64 = 5;
/// The page size `webhooks listen` polls with.
const LISTEN_PAGE: u32 = 100;

/// The state of `webhooks listen`: which events were seen (id → created),
/// and the newest `created` among them.
struct Listener {
    api: Client,
    seen: HashMap<String, i64>,
    newest: Option<i64>,
}

impl Listener {
    fn filter(&self) -> EventListParams {
        EventListParams {
            created_gte: self.newest.map(|t| t.saturating_sub(LISTEN_LOOKBACK_SECS)),
            limit: Some(LISTEN_PAGE),
            ..EventListParams::default()
        }
    }

    /// Marks what exists now as seen: only later events are forwarded.
    async fn start(&mut self) -> Result<(), scrip_client::Error> {
        let newest = self
            .api
            .list_events(&EventListParams {
                limit: Some(1),
                ..EventListParams::default()
            })
            .await?;
        if let Some(e) = newest.data.first() {
            self.newest = Some(e.created);
            // Everything in the look-back window counts as already there.
            for e in self.fetch_unseen().await? {
                self.seen.insert(e.id.clone(), e.created);
            }
        }
        Ok(())
    }

    /// Events not seen yet, oldest first. Pages down from the newest until
    /// a page reaches an event already seen (or the look-back window ends).
    async fn fetch_unseen(&self) -> Result<Vec<Event>, scrip_client::Error> {
        let mut fresh: Vec<Event> = Vec::new();
        let mut params = self.filter();
        loop {
            let page = self.api.list_events(&params).await?;
            let last = page.data.last().map(|e| e.id.clone());
            let mut reached_seen = false;
            for e in page.data {
                if self.seen.contains_key(&e.id) {
                    reached_seen = true;
                } else if !fresh.iter().any(|f| f.id == e.id) {
                    fresh.push(e);
                }
            }
            match last {
                Some(last) if page.has_more && !reached_seen => params.starting_after = Some(last),
                _ => break,
            }
        }
        fresh.reverse();
        Ok(fresh)
    }

    /// Records an event as seen and forgets those older than the window.
    fn mark_seen(&mut self, e: &Event) {
        self.seen.insert(e.id.clone(), e.created);
        if self.newest.is_none_or(|n| e.created > n) {
            self.newest = Some(e.created);
        }
    }

    fn prune(&mut self) {
        if let Some(newest) = self.newest {
            let floor = newest.saturating_sub(LISTEN_LOOKBACK_SECS);
            self.seen.retain(|_, created| *created >= floor);
        }
    }
}

/// The message of an error with its causes (reqwest's `Display` leaves
/// them out).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// POSTs one event's raw JSON to `url`, signed now with `secret`; returns
/// the HTTP status, or why there was none.
async fn forward_event(
    http: &reqwest::Client,
    url: &str,
    secret: &str,
    e: &Event,
) -> Result<u16, String> {
    let body = e.raw_json().as_bytes().to_vec();
    let signature = webhook::sign(&body, secret, unix_now());
    http.post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(webhook::SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|err| error_chain(&err))
}

/// `webhooks listen`: polls the caller's events and forwards each new one,
/// signed with a local secret, until Ctrl-C.
async fn listen(
    conn: Conn,
    forward_to: String,
    events: Vec<String>,
    poll_ms: u64,
) -> anyhow::Result<()> {
    let target = reqwest::Url::parse(&forward_to)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .with_context(|| {
            format!("--forward-to must be an http or https URL, such as http://127.0.0.1:8000/webhooks; got {forward_to}")
        })?;
    for e in &events {
        if e != "*" && !EVENT_TYPES.contains(&e.as_str()) {
            bail!(
                "--events: unknown event type {e}; use * or some of: {}",
                EVENT_TYPES.join(", ")
            );
        }
    }
    let wants = |kind: &str| events.iter().any(|e| e == "*" || e == kind);
    let secret = conn
        .api_key
        .as_deref()
        .filter(|k| !k.is_empty())
        .context("no API secret: pass --api-key or set SCRIP_API_KEY")?;
    let mut listener = Listener {
        api: Client::new(&conn.url).with_secret(secret),
        seen: HashMap::new(),
        newest: None,
    };
    listener
        .start()
        .await
        .context("cannot read events to start listening")?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(
            scrip_core::webhook::DELIVERY_TIMEOUT_SECS,
        ))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .context("cannot build the HTTP client")?;
    let signing_secret = local_signing_secret();
    if conn.json {
        println!(
            "{}",
            serde_json::json!({"object": "listen", "secret": signing_secret, "forward_to": target.as_str()})
        );
    } else {
        println!("Ready! Your webhook signing secret is {signing_secret} (Ctrl-C to quit)");
        println!(
            "Forwarding new events from {} to {target}",
            listener.api.base_url()
        );
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut poll_failing = false;
    loop {
        let step = async {
            match listener.fetch_unseen().await {
                Ok(fresh) => {
                    if poll_failing {
                        eprintln!("polling events works again");
                        poll_failing = false;
                    }
                    for e in fresh {
                        listener.mark_seen(&e);
                        if !wants(&e.kind) {
                            continue;
                        }
                        let outcome =
                            forward_event(&http, target.as_str(), &signing_secret, &e).await;
                        print_forwarded(&conn, &e, &outcome);
                    }
                    listener.prune();
                }
                Err(err) => {
                    if !poll_failing {
                        eprintln!("cannot poll events (retrying every {poll_ms} ms): {err}");
                        poll_failing = true;
                    }
                }
            }
        };
        tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("cannot listen for Ctrl-C")?;
                break;
            }
            () = step => {}
        }
        tokio::select! {
            signal = &mut ctrl_c => {
                signal.context("cannot listen for Ctrl-C")?;
                break;
            }
            () = tokio::time::sleep(Duration::from_millis(poll_ms)) => {}
        }
    }
    if !conn.json {
        println!("stopped");
    }
    Ok(())
}

fn print_forwarded(conn: &Conn, e: &Event, outcome: &Result<u16, String>) {
    if conn.json {
        let line = match outcome {
            Ok(status) => serde_json::json!({"event": e.id, "type": e.kind, "status": status}),
            Err(why) => serde_json::json!({"event": e.id, "type": e.kind, "error": why}),
        };
        println!("{line}");
        return;
    }
    match outcome {
        Ok(status) => println!("{} {} -> {status}", e.id, e.kind),
        Err(why) => println!("{} {} -> error: {why}", e.id, e.kind),
    }
}

// --- input -------------------------------------------------------------------

/// The card number and CVC: from a hidden prompt on a terminal, otherwise
/// from the first two lines of standard input. Never from argv.
fn read_card_secrets() -> anyhow::Result<(Zeroizing<String>, Zeroizing<String>)> {
    if std::io::stdin().is_terminal() {
        let number = Zeroizing::new(rpassword::prompt_password("Card number (hidden): ")?);
        let cvc = Zeroizing::new(rpassword::prompt_password("CVC (hidden): ")?);
        return Ok((number, cvc));
    }
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    let mut read = |what: &str| -> anyhow::Result<Zeroizing<String>> {
        let mut line = Zeroizing::new(String::new());
        let n = lock
            .read_line(&mut line)
            .with_context(|| format!("cannot read the {what} from standard input"))?;
        if n == 0 {
            bail!("expected the card number on the first line of standard input and the CVC on the second; the {what} is missing");
        }
        let trimmed = Zeroizing::new(line.trim().to_owned());
        Ok(trimmed)
    };
    let number = read("card number")?;
    let cvc = read("CVC")?;
    Ok((number, cvc))
}

// --- output ------------------------------------------------------------------

/// With `--json`, prints the JSON object exactly as the server sent it
/// (indented, fields in the server's order); otherwise calls `render`.
fn emit<T: Serialize>(conn: &Conn, value: &T, render: impl FnOnce(&T)) -> anyhow::Result<()> {
    if conn.json {
        let raw = std::mem::take(
            &mut *LAST_BODY
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        let text = if raw.is_empty() {
            serde_json::to_string_pretty(value)?
        } else {
            indent_json(&String::from_utf8_lossy(&raw))
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")?;
    } else {
        render(value);
    }
    Ok(())
}

/// Re-indents compact JSON text two spaces per level without reordering
/// or reparsing anything: strings are copied byte for byte.
fn indent_json(compact: &str) -> String {
    let mut out = String::with_capacity(compact.len() * 2);
    let mut depth: usize = 0;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = compact.trim().chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    out.push(close);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// The note that goes with a secret in a response.
fn once_note(conn: &Conn, shown: bool) {
    secret_note(
        conn,
        shown,
        "note: the secret above is shown only once; Scrip keeps only its hash. Store it now.",
    );
}

/// A note that goes with a secret in a response.
fn secret_note(conn: &Conn, shown: bool, note: &str) {
    if !shown {
        return;
    }
    if conn.json {
        eprintln!("{note}");
    } else {
        println!("\n{note}");
    }
}

fn more_note<T>(list: &List<T>) {
    if list.has_more {
        println!("(more available: raise --limit)");
    }
}

/// Prints `key  value` lines with the values aligned.
pub(crate) fn kv(rows: &[(&str, String)]) {
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}

/// Prints a table with aligned columns.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = widths.get(i).copied().unwrap_or(0);
                format!("{c:<w$}")
            })
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.iter().map(|h| (*h).to_owned()).collect());
    if rows.is_empty() {
        println!("(none)");
    }
    for row in rows {
        line(row);
    }
}

/// `12.34 USD`, `1200 JPY`; an unknown currency in plain minor units.
pub(crate) fn money(amount: i64, currency: &str) -> String {
    match currency.parse::<Currency>() {
        Ok(c) => c.display(amount),
        Err(_) => format!("{amount} {} (minor units)", currency.to_ascii_uppercase()),
    }
}

/// `100.00 USD per month`, or `… in total` for a lifetime cap.
pub(crate) fn cap_label(amount: i64, period: &str, currency: &str) -> String {
    match period {
        "none" => format!("{} in total", money(amount, currency)),
        p => format!("{} per {p}", money(amount, currency)),
    }
}

pub(crate) fn card_label(brand: &str, last4: &str) -> String {
    format!("{brand} ending {last4}")
}

/// Unix seconds as `2026-05-01 12:00:00 UTC`.
pub(crate) fn datetime(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

fn opt(value: Option<&str>) -> String {
    value.unwrap_or("-").to_owned()
}

fn show_customer(c: &Customer) {
    kv(&[
        ("id", c.id.clone()),
        ("email", opt(c.email.as_deref())),
        ("name", opt(c.name.as_deref())),
        ("created", datetime(c.created)),
    ]);
}

fn show_credential(c: &Credential) {
    let mut rows = vec![
        ("id", c.id.clone()),
        ("customer", c.customer.clone()),
        ("name", opt(c.name.as_deref())),
        ("status", c.status.clone()),
        ("created", datetime(c.created)),
    ];
    if let Some(at) = c.revoked_at {
        rows.push(("revoked at", datetime(at)));
    }
    if let Some(secret) = &c.secret {
        rows.push(("secret", secret.clone()));
    }
    kv(&rows);
}

fn show_provider(p: &Provider) {
    let mut rows = vec![
        ("id", p.id.clone()),
        ("name", p.name.clone()),
        ("created", datetime(p.created)),
    ];
    if let Some(secret) = &p.secret {
        rows.push(("secret", secret.clone()));
    }
    kv(&rows);
}

fn show_payment_method(m: &PaymentMethod) {
    kv(&[
        ("id", m.id.clone()),
        ("customer", m.customer.clone()),
        ("status", m.status.clone()),
        ("card", card_label(&m.card.brand, &m.card.last4)),
        (
            "expires",
            format!("{:02}/{}", m.card.exp_month, m.card.exp_year),
        ),
        ("fingerprint", m.card.fingerprint.clone()),
        ("created", datetime(m.created)),
    ]);
}

fn spend_rows(spend: &Spend, currency: &str, rows: &mut Vec<(&'static str, String)>) {
    let window = match spend.period_end {
        Some(end) => format!("{} to {}", datetime(spend.period_start), datetime(end)),
        None => format!("since {}", datetime(spend.period_start)),
    };
    rows.push(("period", window));
    rows.push(("captured", money(spend.captured, currency)));
    rows.push(("pending", money(spend.pending, currency)));
    rows.push(("remaining", money(spend.remaining, currency)));
}

fn show_token(t: &PaymentToken) {
    let mut rows = vec![
        ("id", t.id.clone()),
        ("status", t.status.clone()),
        ("provider", t.provider.clone()),
        ("payment method", t.payment_method.clone()),
        ("customer", t.customer.clone()),
        ("credential", t.credential.clone()),
        ("cap", cap_label(t.cap.amount, &t.cap.period, &t.currency)),
        ("usage", t.usage.clone()),
        (
            "max per charge",
            t.max_per_charge
                .map_or_else(|| "-".to_owned(), |m| money(m, &t.currency)),
        ),
        ("expires", datetime(t.expires_at)),
        ("parent", opt(t.parent.as_deref())),
        ("created", datetime(t.created)),
    ];
    spend_rows(&t.spend, &t.currency, &mut rows);
    if let Some(token) = &t.token {
        rows.push(("token", token.clone()));
    }
    kv(&rows);
}

fn show_token_self(t: &TokenSelf) {
    let mut rows = vec![
        ("id", t.id.clone()),
        ("status", t.status.clone()),
        (
            "provider",
            format!("{} ({})", t.provider.name, t.provider.id),
        ),
        ("cap", cap_label(t.cap.amount, &t.cap.period, &t.currency)),
        ("usage", t.usage.clone()),
        (
            "max per charge",
            t.max_per_charge
                .map_or_else(|| "-".to_owned(), |m| money(m, &t.currency)),
        ),
        ("expires", datetime(t.expires_at)),
    ];
    spend_rows(&t.spend, &t.currency, &mut rows);
    kv(&rows);
}

fn show_charge(c: &Charge) {
    let mut rows = vec![
        ("id", c.id.clone()),
        ("status", c.status.clone()),
        ("amount", money(c.amount, &c.currency)),
        ("captured", money(c.amount_captured, &c.currency)),
        ("refunded", money(c.amount_refunded, &c.currency)),
        ("fee", money(c.fee, &c.currency)),
        ("payment token", c.payment_token.clone()),
        ("provider", c.provider.clone()),
        (
            "card",
            card_label(
                &c.payment_method_details.card.brand,
                &c.payment_method_details.card.last4,
            ),
        ),
        ("description", opt(c.description.as_deref())),
        ("created", datetime(c.created)),
    ];
    if let Some(before) = c.capture_before {
        if c.status == "requires_capture" {
            rows.push(("capture before", datetime(before)));
        }
    }
    kv(&rows);
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn show_balance(b: &Balance) {
    // One row per currency, in the order the server lists them.
    let mut currencies: Vec<&str> = Vec::new();
    for a in b.available.iter().chain(&b.pending) {
        if !currencies.contains(&a.currency.as_str()) {
            currencies.push(&a.currency);
        }
    }
    let sum = |list: &[scrip_client::Amount], currency: &str| -> i64 {
        list.iter()
            .filter(|a| a.currency == currency)
            .map(|a| a.amount)
            .sum()
    };
    let rows = currencies
        .iter()
        .map(|c| {
            vec![
                c.to_ascii_uppercase(),
                money(sum(&b.available, c), c),
                money(sum(&b.pending, c), c),
            ]
        })
        .collect();
    table(&["CURRENCY", "AVAILABLE", "PENDING"], rows);
}

fn show_payout(p: &Payout) {
    kv(&[
        ("id", p.id.clone()),
        ("status", p.status.clone()),
        ("amount", money(p.amount, &p.currency)),
        ("provider", p.provider.clone()),
        ("arrival", datetime(p.arrival_date)),
        ("automatic", yes_no(p.automatic).to_owned()),
        ("created", datetime(p.created)),
    ]);
}

fn verification_problems(v: &LedgerVerification) -> usize {
    v.unbalanced_transactions.len()
        + v.balance_mismatches.len()
        + v.spend_mismatches.len()
        + v.charge_mismatches.len()
}

fn show_verification(v: &LedgerVerification) {
    kv(&[
        ("balanced", yes_no(v.balanced).to_owned()),
        ("transactions", v.transactions.to_string()),
        ("entries", v.entries.to_string()),
        ("accounts", v.accounts.to_string()),
        ("problems", verification_problems(v).to_string()),
    ]);
    if !v.unbalanced_transactions.is_empty() {
        println!("\nunbalanced transactions (entries do not sum to zero):");
        for id in &v.unbalanced_transactions {
            println!("  {id}");
        }
    }
    if !v.balance_mismatches.is_empty() {
        println!("\naccount balances that disagree with their entries:");
        let rows = v
            .balance_mismatches
            .iter()
            .map(|m| {
                vec![
                    m.account.clone(),
                    m.currency.to_ascii_uppercase(),
                    format!(
                        "{} / {}",
                        money(m.stored_posted, &m.currency),
                        money(m.computed_posted, &m.currency)
                    ),
                    format!(
                        "{} / {}",
                        money(m.stored_pending, &m.currency),
                        money(m.computed_pending, &m.currency)
                    ),
                ]
            })
            .collect();
        table(
            &[
                "ACCOUNT",
                "CURRENCY",
                "POSTED (STORED / COMPUTED)",
                "PENDING (STORED / COMPUTED)",
            ],
            rows,
        );
    }
    if !v.spend_mismatches.is_empty() {
        println!("\ntoken spend that disagrees with its charges (minor units):");
        let rows = v
            .spend_mismatches
            .iter()
            .map(|m| {
                vec![
                    m.payment_token.clone(),
                    datetime(m.period_start),
                    format!("{} / {}", m.stored.captured, m.computed.captured),
                    format!("{} / {}", m.stored.pending, m.computed.pending),
                ]
            })
            .collect();
        table(
            &[
                "PAYMENT TOKEN",
                "PERIOD START",
                "CAPTURED (STORED / COMPUTED)",
                "PENDING (STORED / COMPUTED)",
            ],
            rows,
        );
    }
    if !v.charge_mismatches.is_empty() {
        println!("\ncharges that disagree with the ledger:");
        for m in &v.charge_mismatches {
            println!("  {m}");
        }
    }
}

fn show_report(r: &LedgerReport) {
    let bound = |t: Option<i64>, none: &str| t.map_or_else(|| none.to_owned(), datetime);
    kv(&[
        ("from", bound(r.from, "the beginning")),
        ("to", bound(r.to, "(no end)")),
    ]);
    println!();
    let rows = r
        .data
        .iter()
        .map(|l| {
            vec![
                l.provider.clone(),
                l.currency.to_ascii_uppercase(),
                money(l.gross, &l.currency),
                money(l.fees, &l.currency),
                money(l.refunds, &l.currency),
                money(l.net, &l.currency),
                money(l.paid_out, &l.currency),
            ]
        })
        .collect();
    table(
        &[
            "PROVIDER", "CURRENCY", "GROSS", "FEES", "REFUNDS", "NET", "PAID OUT",
        ],
        rows,
    );
}

/// The report as RFC 4180 CSV: a header row, CRLF line ends, amounts in
/// minor units.
fn report_csv(r: &LedgerReport) -> String {
    let mut out = String::from("provider,currency,gross,fees,refunds,net,paid_out\r\n");
    for l in &r.data {
        let fields = [
            csv_field(&l.provider),
            csv_field(&l.currency),
            l.gross.to_string(),
            l.fees.to_string(),
            l.refunds.to_string(),
            l.net.to_string(),
            l.paid_out.to_string(),
        ];
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

/// A CSV field, quoted (with inner quotes doubled) when it holds a comma,
/// a quote or a line break.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// `charge ch_…`: what an event's `data.object` is.
fn event_object_label(e: &Event) -> String {
    let o = &e.data.object;
    let field = |name: &str| o.get(name).and_then(|v| v.as_str());
    match (field("object"), field("id")) {
        (Some(kind), Some(id)) => format!("{kind} {id}"),
        (None, Some(id)) => id.to_owned(),
        (Some(kind), None) => kind.to_owned(),
        (None, None) => "-".to_owned(),
    }
}

fn show_event(e: &Event) {
    kv(&[
        ("id", e.id.clone()),
        ("type", e.kind.clone()),
        ("object", event_object_label(e)),
        ("created", datetime(e.created)),
    ]);
    println!("\ndata.object:");
    // Indented from the raw text, so fields keep the server's order.
    let raw: Option<String> = serde_json::from_str::<RawEventData<'_>>(e.raw_json())
        .ok()
        .map(|d| indent_json(d.data.object.get()));
    let text = raw.unwrap_or_else(|| {
        serde_json::to_string_pretty(&e.data.object).unwrap_or_else(|_| "null".to_owned())
    });
    for line in text.lines() {
        println!("  {line}");
    }
}

#[derive(serde::Deserialize)]
struct RawEventData<'a> {
    #[serde(borrow)]
    data: RawEventObject<'a>,
}

#[derive(serde::Deserialize)]
struct RawEventObject<'a> {
    #[serde(borrow)]
    object: &'a serde_json::value::RawValue,
}

fn show_endpoint(e: &WebhookEndpoint) {
    let mut rows = vec![
        ("id", e.id.clone()),
        ("url", e.url.clone()),
        ("events", e.enabled_events.join(", ")),
        ("description", opt(e.description.as_deref())),
        ("status", e.status.clone()),
        ("created", datetime(e.created)),
    ];
    if let Some(secret) = &e.secret {
        rows.push(("secret", secret.clone()));
    }
    kv(&rows);
}

/// `HTTP 200`, or the error, of a delivery's latest attempt.
fn last_attempt_label(d: &Delivery) -> String {
    match d.attempts.iter().max_by_key(|a| a.attempted_at) {
        None => "-".to_owned(),
        Some(a) => match (a.status_code, a.error.as_deref()) {
            (Some(code), Some(error)) => format!("HTTP {code}: {error}"),
            (Some(code), None) => format!("HTTP {code}"),
            (None, Some(error)) => error.to_owned(),
            (None, None) => "-".to_owned(),
        },
    }
}

fn audit_outcome(a: &AuditEvent) -> String {
    match &a.code {
        Some(code) => format!("{} ({code})", a.outcome),
        None => a.outcome.clone(),
    }
}

fn show_audit_verification(v: &AuditVerification) {
    kv(&[
        ("valid", yes_no(v.valid).to_owned()),
        ("records", v.records.to_string()),
        (
            "first broken seq",
            v.first_broken_seq
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
        ),
        ("head hash", opt(v.head_hash.as_deref())),
    ]);
}

fn show_refund(r: &Refund) {
    kv(&[
        ("id", r.id.clone()),
        ("charge", r.charge.clone()),
        ("amount", money(r.amount, &r.currency)),
        ("status", r.status.clone()),
        ("created", datetime(r.created)),
    ]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_follows_the_currency_exponent() {
        assert_eq!(money(1234, "usd"), "12.34 USD");
        assert_eq!(money(1200, "jpy"), "1200 JPY");
        assert_eq!(money(5, "eur"), "0.05 EUR");
        assert_eq!(cap_label(10_000, "month", "usd"), "100.00 USD per month");
        assert_eq!(cap_label(500, "none", "gbp"), "5.00 GBP in total");
    }

    #[test]
    fn indents_json_keeping_order_and_strings() {
        let raw = r#"{"b":1,"a":[],"s":"x, {y}: \"z\"","o":{"k":[1,2]},"e":{}}"#;
        let expected = "{\n  \"b\": 1,\n  \"a\": [],\n  \"s\": \"x, {y}: \\\"z\\\"\",\n  \"o\": {\n    \"k\": [\n      1,\n      2\n    ]\n  },\n  \"e\": {}\n}";
        assert_eq!(indent_json(raw), expected);
        let reparsed: serde_json::Value =
            serde_json::from_str(&indent_json(raw)).unwrap_or_default();
        let original: serde_json::Value = serde_json::from_str(raw).unwrap_or_default();
        assert_eq!(reparsed, original);
    }

    #[test]
    fn report_csv_has_a_header_and_quotes_when_needed() {
        let r = LedgerReport {
            object: "ledger_report".into(),
            from: None,
            to: None,
            data: vec![
                scrip_client::ReportLine {
                    provider: "prov_1".into(),
                    currency: "usd".into(),
                    gross: 10_000,
                    fees: 320,
                    refunds: 500,
                    net: 9_180,
                    paid_out: 9_180,
                },
                scrip_client::ReportLine {
                    provider: "odd, \"name\"".into(),
                    currency: "jpy".into(),
                    gross: 1,
                    fees: 0,
                    refunds: 0,
                    net: 1,
                    paid_out: 0,
                },
            ],
        };
        assert_eq!(
            report_csv(&r),
            "provider,currency,gross,fees,refunds,net,paid_out\r\n\
             prov_1,usd,10000,320,500,9180,9180\r\n\
             \"odd, \"\"name\"\"\",jpy,1,0,0,1,0\r\n"
        );
    }

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::{CommandFactory, Parser};
        #[derive(Parser)]
        struct Cli {
            #[command(subcommand)]
            command: ClientCommand,
        }
        Cli::command().debug_assert();
        let parsed = Cli::try_parse_from([
            "scrip",
            "webhooks",
            "create",
            "--url",
            "https://example.com/hook",
            "--server-url",
            "http://127.0.0.1:1",
            "--events",
            "charge.succeeded,charge.refunded",
        ]);
        let Ok(Cli {
            command:
                ClientCommand::Webhooks(WebhooksCommand::Create {
                    url, events, conn, ..
                }),
        }) = parsed
        else {
            unreachable!("webhooks create did not parse")
        };
        assert_eq!(url, "https://example.com/hook");
        assert_eq!(events, ["charge.succeeded", "charge.refunded"]);
        assert_eq!(Conn::from(conn).url, "http://127.0.0.1:1");
    }

    #[test]
    fn datetime_is_utc() {
        assert_eq!(datetime(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(datetime(1_767_225_600), "2026-01-01 00:00:00 UTC");
    }
}

#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Scan files and directories for Scrip secrets (recognized by prefix
    /// and checksum) and Luhn-valid card numbers; exits 1 if any is found.
    /// Findings are reported by place and kind, never repeated.
    Scan {
        /// Files or directories (searched recursively); `-` reads standard
        /// input line by line (for a log stream).
        #[arg(required = true)]
        paths: Vec<std::path::PathBuf>,
    },
}

/// Largest file `secrets scan` reads; bigger ones are reported and skipped.
const SCAN_FILE_BYTES_MAX: u64 = 256 * 1024 * 1024;

/// Scans standard input a line at a time (so a log stream of any length
/// can be piped through); returns the number of findings.
fn scan_stdin() -> anyhow::Result<usize> {
    use std::io::BufRead;
    let mut found = 0;
    let mut line = Vec::new();
    let mut number = 0usize;
    let mut input = std::io::stdin().lock();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(found);
        }
        number += 1;
        for f in scrip_server::scan::scan_text(&String::from_utf8_lossy(&line)) {
            found += 1;
            println!("<stdin>:{number}:{}: {}", f.column, f.describe());
        }
    }
}

fn scan_paths(paths: &[std::path::PathBuf]) -> anyhow::Result<()> {
    let mut stack: Vec<std::path::PathBuf> = paths.to_vec();
    let mut files = 0usize;
    let mut found = 0usize;
    while let Some(path) = stack.pop() {
        if path.as_os_str() == "-" {
            files += 1;
            found += scan_stdin()?;
            continue;
        }
        let meta = std::fs::symlink_metadata(&path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if meta.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(&path)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect();
            entries.sort();
            stack.extend(entries.into_iter().rev());
            continue;
        }
        if !meta.is_file() {
            continue;
        }
        if meta.len() > SCAN_FILE_BYTES_MAX {
            eprintln!(
                "{}: skipped, larger than {SCAN_FILE_BYTES_MAX} bytes",
                path.display()
            );
            continue;
        }
        let bytes = std::fs::read(&path)?;
        let text = String::from_utf8_lossy(&bytes);
        files += 1;
        for f in scrip_server::scan::scan_text(&text) {
            found += 1;
            println!(
                "{}:{}:{}: {}",
                path.display(),
                f.line,
                f.column,
                f.describe()
            );
        }
    }
    if found > 0 {
        anyhow::bail!("found {found} secret(s) or card number(s) in {files} file(s)");
    }
    eprintln!("no Scrip secrets or card numbers in {files} file(s)");
    Ok(())
}
