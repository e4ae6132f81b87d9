//! The store: Scrip's persistence, behind a trait whose methods are domain
//! operations (authorize a charge against a token's cap, capture, refund,
//! revoke…), never CRUD. Each write method is atomic: all of its effect, and
//! the idempotency record that remembers its response, or none of it.
//!
//! [`sqlite::SqliteStore`] is the embedded backend (one writer thread with
//! group commit, many readers). A PostgreSQL backend implements the same
//! trait; `tests/api` drives both through the HTTP layer.

mod common;
pub mod model;
pub mod postgres;
pub mod sqlite;

use async_trait::async_trait;
use scrip_core::ledger::Fees;
use scrip_core::token::Refusal;
use scrip_core::UnixSecs;

use crate::secrets::SecretHash;
use crate::vault::{Sealed, WrappedKey};
use model::*;

/// Operating errors of the store, mapped to API errors by `api::error`.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// No such object, or not one the caller may see.
    #[error("no such {resource}: {id}")]
    NotFound { resource: &'static str, id: String },
    /// The charge decision said no.
    #[error("refused: {}", .0.code())]
    Refused(Refusal),
    /// The object is in a state that forbids the operation.
    #[error("{code}: {message}")]
    Conflict { code: &'static str, message: String },
    /// A parameter is valid in shape but not against what is stored.
    #[error("{code} ({param}): {message}")]
    Invalid {
        code: &'static str,
        param: &'static str,
        message: String,
    },
    /// Another request with the same idempotency key committed first; this
    /// one's effect was rolled back.
    #[error("idempotency key already used by a committed request")]
    IdempotencyRace,
    /// Overloaded: the write queue is full. Nothing was written.
    #[error("the store is overloaded")]
    Overloaded,
    /// The database failed. Nothing was acknowledged.
    #[error("database failure: {0}")]
    Database(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Renders an operation's result into the response that the idempotency
/// record remembers (already sealed by the vault).
pub type Render<T> = Box<dyn Fn(&T) -> StoreResult<(u16, Sealed)> + Send>;

/// Asks a write to remember its response under an idempotency key, in the
/// same transaction as its effect.
pub struct IdemWrite<T> {
    pub actor: String,
    pub key: String,
    pub request_hash: [u8; 32],
    /// The server clock's time of the request (the test clock in test mode).
    pub now: UnixSecs,
    pub render: Render<T>,
}

/// What a token's status change asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenChange {
    Revoke,
    Suspend,
    Resume,
}

/// How money moves after a capture.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LedgerConfig {
    pub fees: Fees,
    /// From capture until the provider's funds are available.
    pub settlement_delay_secs: i64,
    /// From a payout until it arrives at the provider's bank.
    pub payout_transit_secs: i64,
}

impl Default for LedgerConfig {
    fn default() -> LedgerConfig {
        LedgerConfig {
            fees: Fees::default(),
            settlement_delay_secs: scrip_core::limits::SETTLEMENT_DELAY_SECS_DEFAULT,
            payout_transit_secs: scrip_core::limits::PAYOUT_TRANSIT_SECS,
        }
    }
}

/// Counters of the write path, for `/metrics` and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed.
    pub groups: u64,
    /// Operations committed inside them.
    pub operations: u64,
    /// Times the log was flushed to disk (one flush can cover several
    /// groups).
    pub log_syncs: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- boot and operations -------------------------------------------
    async fn health(&self) -> StoreResult<()>;
    fn write_stats(&self) -> WriteStats;
    async fn data_keys(&self) -> StoreResult<Vec<WrappedKey>>;
    async fn insert_data_keys(&self, keys: Vec<WrappedKey>) -> StoreResult<()>;
    /// Stores data keys re-wrapped under another master key (rotation), in
    /// one atomic write; each key keeps its id.
    async fn update_data_keys(&self, keys: Vec<WrappedKey>) -> StoreResult<()>;
    async fn admin_key_hash(&self) -> StoreResult<Option<SecretHash>>;
    async fn set_admin_key_hash(&self, hash: SecretHash) -> StoreResult<()>;
    async fn clock_offset(&self) -> StoreResult<i64>;
    /// Moves the test clock's offset forward by `seconds`, atomically (two
    /// nodes advancing at once both count), and returns the new offset.
    async fn advance_clock_offset(&self, seconds: i64) -> StoreResult<i64>;

    // --- authentication and idempotency -----------------------------------
    /// The principal a secret belongs to, if it is known and usable.
    async fn resolve_secret(&self, hash: SecretHash) -> StoreResult<Option<Principal>>;
    /// The response remembered under `(actor, key)` if younger than 24 h.
    async fn idempotent_response(
        &self,
        actor: &str,
        key: &str,
        now: UnixSecs,
    ) -> StoreResult<Option<StoredResponse>>;
    /// Forgets idempotency records older than `before`.
    async fn purge_idempotency(&self, before: UnixSecs) -> StoreResult<usize>;

    // --- customers, credentials, providers (admin) --------------------------
    async fn create_customer(
        &self,
        customer: Customer,
        idem: Option<IdemWrite<Customer>>,
    ) -> StoreResult<Customer>;
    async fn customer(&self, id: &str) -> StoreResult<Customer>;
    async fn customers(&self, page: PageRequest) -> StoreResult<Page<Customer>>;
    async fn create_credential(
        &self,
        credential: Credential,
        secret: SecretHash,
        idem: Option<IdemWrite<Credential>>,
    ) -> StoreResult<Credential>;
    async fn credential(&self, id: &str) -> StoreResult<Credential>;
    async fn credentials(
        &self,
        customer_id: &str,
        page: PageRequest,
    ) -> StoreResult<Page<Credential>>;
    /// Revokes a credential and, through it, every token it issued, in O(1).
    async fn revoke_credential(
        &self,
        id: &str,
        now: UnixSecs,
        idem: Option<IdemWrite<Credential>>,
    ) -> StoreResult<Credential>;
    async fn create_provider(
        &self,
        provider: Provider,
        secret: SecretHash,
        idem: Option<IdemWrite<Provider>>,
    ) -> StoreResult<Provider>;
    async fn provider(&self, id: &str) -> StoreResult<Provider>;
    async fn providers(&self, page: PageRequest) -> StoreResult<Page<Provider>>;
    /// Replaces a provider's secret; the old one stops working at once.
    async fn roll_provider_secret(
        &self,
        id: &str,
        secret: SecretHash,
        idem: Option<IdemWrite<Provider>>,
    ) -> StoreResult<Provider>;

    // --- vault --------------------------------------------------------------
    async fn create_payment_method(
        &self,
        new: NewPaymentMethod,
        idem: Option<IdemWrite<PaymentMethod>>,
    ) -> StoreResult<PaymentMethod>;
    /// `customer_id` limits the lookup to one customer's methods.
    async fn payment_method(
        &self,
        id: &str,
        customer_id: Option<&str>,
    ) -> StoreResult<PaymentMethod>;
    async fn payment_methods(
        &self,
        customer_id: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<PaymentMethod>>;
    /// Detaches a payment method; every token on it stops at once.
    async fn detach_payment_method(
        &self,
        id: &str,
        customer_id: Option<&str>,
        now: UnixSecs,
        idem: Option<IdemWrite<PaymentMethod>>,
    ) -> StoreResult<PaymentMethod>;

    // --- tokens -------------------------------------------------------------
    /// Issues a token after checking its payment method (the customer's,
    /// active) and provider (exists).
    async fn create_token(
        &self,
        new: NewToken,
        now: UnixSecs,
        idem: Option<IdemWrite<TokenDetails>>,
    ) -> StoreResult<TokenDetails>;
    async fn token(
        &self,
        id: &str,
        customer_id: Option<&str>,
        now: UnixSecs,
    ) -> StoreResult<TokenDetails>;
    async fn tokens(
        &self,
        filter: TokenFilter,
        page: PageRequest,
        now: UnixSecs,
    ) -> StoreResult<Page<TokenDetails>>;
    /// Revokes (with every descendant), suspends or resumes a token.
    async fn change_token(
        &self,
        id: &str,
        customer_id: Option<&str>,
        change: TokenChange,
        now: UnixSecs,
        idem: Option<IdemWrite<TokenDetails>>,
    ) -> StoreResult<TokenDetails>;

    // --- charges and refunds --------------------------------------------------
    /// What the charge path needs before asking the network, or `None` for
    /// an unknown token.
    async fn charge_context(
        &self,
        token: SecretHash,
        now: UnixSecs,
    ) -> StoreResult<Option<ChargeContext>>;

    /// `charge_context` read from the database, never from memory.
    async fn charge_context_uncached(
        &self,
        token: SecretHash,
        now: UnixSecs,
    ) -> StoreResult<Option<ChargeContext>> {
        self.charge_context(token, now).await
    }
    /// Revokes a token presented by the wrong provider (it has leaked), with
    /// a `payment_token.misuse_attempt` event and an audit record naming
    /// the presenting provider.
    async fn revoke_token_for_misuse(
        &self,
        token_id: &str,
        presented_by: &str,
        now: UnixSecs,
    ) -> StoreResult<()>;
    /// Records a refused charge attempt in the audit log.
    async fn record_refusal(&self, attempt: ChargeAttempt, now: UnixSecs) -> StoreResult<()>;
    /// Records a charge the card network declined: a `failed` charge that
    /// spends nothing, a `charge.failed` event and an audit record (and,
    /// with `idem`, the decline as the key's remembered response).
    async fn record_decline(
        &self,
        new: NewCharge,
        decline_code: &str,
        now: UnixSecs,
        idem: Option<IdemWrite<Charge>>,
    ) -> StoreResult<Charge>;
    /// Decides the charge again against the current spend of the token and
    /// every ancestor and, if it passes, records it: one atomic step.
    async fn create_charge(
        &self,
        new: NewCharge,
        now: UnixSecs,
        idem: Option<IdemWrite<Charge>>,
    ) -> StoreResult<Charge>;
    /// `provider_id` limits the lookup to one provider's charges.
    async fn charge(&self, id: &str, provider_id: Option<&str>) -> StoreResult<Charge>;
    async fn charges(&self, filter: ChargeFilter, page: PageRequest) -> StoreResult<Page<Charge>>;
    async fn capture_charge(
        &self,
        id: &str,
        provider_id: Option<&str>,
        amount: Option<i64>,
        now: UnixSecs,
        idem: Option<IdemWrite<Charge>>,
    ) -> StoreResult<Charge>;
    async fn cancel_charge(
        &self,
        id: &str,
        provider_id: Option<&str>,
        now: UnixSecs,
        idem: Option<IdemWrite<Charge>>,
    ) -> StoreResult<Charge>;
    async fn create_refund(
        &self,
        new: NewRefund,
        provider_id: Option<&str>,
        now: UnixSecs,
        idem: Option<IdemWrite<Refund>>,
    ) -> StoreResult<Refund>;
    async fn refund(&self, id: &str, provider_id: Option<&str>) -> StoreResult<Refund>;
    async fn refunds(
        &self,
        provider_id: Option<&str>,
        charge_id: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<Refund>>;

    // --- ledger, balances, payouts -----------------------------------------
    /// Time-driven work: releases holds past their deadline, settles captured
    /// funds whose delay has passed, marks arrived payouts paid, and (with
    /// `auto_payout`) pays out every available balance once a UTC day.
    async fn upkeep(&self, now: UnixSecs, auto_payout: bool) -> StoreResult<Upkeep>;
    async fn balance(&self, provider_id: &str) -> StoreResult<Vec<BalanceLine>>;
    async fn create_payout(
        &self,
        new: NewPayout,
        now: UnixSecs,
        idem: Option<IdemWrite<Payout>>,
    ) -> StoreResult<Payout>;
    async fn payout(&self, id: &str, provider_id: Option<&str>) -> StoreResult<Payout>;
    async fn payouts(
        &self,
        provider_id: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Page<Payout>>;
    /// Recomputes every balance from the entries and checks every
    /// transaction, every token's spend and the charges against the ledger.
    async fn verify_ledger(&self) -> StoreResult<LedgerVerification>;
    /// Per provider and currency: gross, fees, refunds, net, paid out, for
    /// transactions created in `[from, to)`.
    async fn ledger_report(
        &self,
        from: Option<UnixSecs>,
        to: Option<UnixSecs>,
    ) -> StoreResult<Vec<ReportLine>>;

    // --- events and webhooks ------------------------------------------------
    async fn events(&self, filter: EventFilter, page: PageRequest) -> StoreResult<Page<Event>>;
    /// One event, if the filter's party may see it.
    async fn event(&self, id: &str, filter: EventFilter) -> StoreResult<Event>;
    /// Queues the event again to the owner's endpoints that want it.
    async fn resend_event(
        &self,
        id: &str,
        filter: EventFilter,
        owner: Option<Owner>,
        idem: Option<IdemWrite<usize>>,
    ) -> StoreResult<usize>;
    async fn create_webhook_endpoint(
        &self,
        new: NewWebhookEndpoint,
        idem: Option<IdemWrite<WebhookEndpoint>>,
    ) -> StoreResult<WebhookEndpoint>;
    /// `owner` limits the lookup to one owner's endpoints.
    async fn webhook_endpoint(
        &self,
        id: &str,
        owner: Option<Owner>,
    ) -> StoreResult<WebhookEndpoint>;
    async fn webhook_endpoints(
        &self,
        owner: Option<Owner>,
        page: PageRequest,
    ) -> StoreResult<Page<WebhookEndpoint>>;
    async fn update_webhook_endpoint(
        &self,
        id: &str,
        owner: Option<Owner>,
        update: EndpointUpdate,
        now: UnixSecs,
        idem: Option<IdemWrite<WebhookEndpoint>>,
    ) -> StoreResult<WebhookEndpoint>;
    async fn delete_webhook_endpoint(
        &self,
        id: &str,
        owner: Option<Owner>,
        now: UnixSecs,
    ) -> StoreResult<WebhookEndpoint>;
    /// An endpoint's deliveries, newest first, each with its last attempts.
    async fn deliveries(
        &self,
        endpoint_id: &str,
        owner: Option<Owner>,
        page: PageRequest,
    ) -> StoreResult<Page<Delivery>>;
    /// Claims due deliveries for the dispatcher (real time, not the test clock).
    /// Claims due deliveries for the dispatcher (real time, not the test
    /// clock): at most `limit`, and per endpoint no more than
    /// `limits::WEBHOOK_IN_FLIGHT_PER_ENDPOINT_MAX` counting `in_flight`.
    async fn claim_deliveries(
        &self,
        real_now: UnixSecs,
        limit: usize,
        in_flight: std::collections::HashMap<String, usize>,
    ) -> StoreResult<Vec<DeliveryJob>>;
    async fn record_delivery_attempt(
        &self,
        delivery_id: &str,
        outcome: AttemptOutcome,
        real_now: UnixSecs,
    ) -> StoreResult<()>;

    // --- audit ----------------------------------------------------------------
    async fn audit_events(&self, page: PageRequest) -> StoreResult<Page<AuditRecord>>;
    async fn verify_audit(&self) -> StoreResult<AuditVerification>;
}
