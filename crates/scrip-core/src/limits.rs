//! Every bound Scrip enforces, in one place. Units come last in each name.

/// Largest request body accepted (API.md: bodies over 64 KiB are 413).
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Smallest and largest single charge, in minor units (API.md).
pub const CHARGE_AMOUNT_MIN: i64 = 1;
pub const CHARGE_AMOUNT_MAX: i64 = 99_999_999;
/// Largest cap a token may carry, in minor units. A year's budget of many
/// maximal charges still fits, and sums of caps stay far from `i64::MAX`.
pub const CAP_AMOUNT_MAX: i64 = 1_000_000_000_000;
/// Token lifetime: default and maximum (API.md: 30 days, at most 366 days).
pub const TOKEN_TTL_SECS_DEFAULT: i64 = 30 * 86_400;
pub const TOKEN_TTL_SECS_MAX: i64 = 366 * 86_400;
/// An authorization hold not captured within this long is released.
pub const HOLD_TTL_SECS: i64 = 7 * 86_400;
/// How long an idempotency key is remembered.
pub const IDEMPOTENCY_TTL_SECS: i64 = 86_400;
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 255;
/// List pages.
pub const LIST_LIMIT_DEFAULT: u32 = 10;
pub const LIST_LIMIT_MAX: u32 = 100;
/// Free-text fields.
pub const NAME_LEN_MAX: usize = 200;
pub const EMAIL_LEN_MAX: usize = 320;
pub const DESCRIPTION_LEN_MAX: usize = 1_000;
/// Object ids presented by clients (anything longer cannot be ours).
pub const ID_LEN_MAX: usize = 64;
/// Secrets presented by clients (anything longer cannot be ours).
pub const SECRET_LEN_MAX: usize = 128;
/// Metadata: a flat string→string map (Stripe's bounds).
pub const METADATA_KEYS_MAX: usize = 50;
pub const METADATA_KEY_LEN_MAX: usize = 40;
pub const METADATA_VALUE_LEN_MAX: usize = 500;
/// Card expiry years accepted ahead of today.
pub const CARD_EXPIRY_YEARS_AHEAD_MAX: i32 = 50;
/// Test clock: one advance moves at most this far.
pub const CLOCK_ADVANCE_SECS_MAX: i64 = 10 * 366 * 86_400;
/// Most tokens in a chain (a root and its derived descendants): a charge
/// locks and checks every one of them.
pub const TOKEN_CHAIN_DEPTH_MAX: usize = 8;
/// Group commit: most operations in one transaction, and the queue in front.
pub const WRITER_BATCH_MAX: usize = 512;
pub const WRITER_QUEUE_MAX: usize = 16_384;
/// PostgreSQL: charges one transaction decides at most.
pub const PG_CHARGE_BATCH_MAX: usize = 64;
/// PostgreSQL: charge batches running at once on one node, each on its own
/// connection. One makes the batches largest and the statements per charge
/// fewest; the charges' lookups and refusals run beside it, and other
/// nodes' batches beside this node's (spread on a 2-core machine,
/// BENCHMARKS.md, with the lookups coalesced: 1 batch 4.2k–4.6k charges/s,
/// 2 batches 3.6k–4.3k; before the lookups were: 2 batches best, 1.5k–2.5k).
pub const PG_CHARGE_BATCHES_IN_FLIGHT: usize = 1;
/// PostgreSQL: small operations of one kind (secret and charge-context
/// lookups, refusal records) run together at most, and such runs of one
/// kind at once on one node (spread: 1 run 4.1k–4.7k charges/s, 2 runs
/// 4.0k–4.4k, 4 runs 3.6k–3.8k).
pub const PG_COALESCED_MAX: usize = 64;
pub const PG_COALESCED_IN_FLIGHT: usize = 1;
/// Page cache of each embedded-database connection, in KiB.
pub const SQLITE_CACHE_KIB: i64 = 8 * 1024;
/// The embedded database's WAL is checkpointed by a thread of its own this
/// often; the writer checkpoints itself only once the WAL holds this many
/// pages (4 KiB each), should that thread fall behind.
pub const SQLITE_CHECKPOINT_INTERVAL_MS: u64 = 100;
pub const SQLITE_WAL_BACKSTOP_PAGES: i64 = 65_536;
/// A charge pre-check of the embedded store reads on a snapshot kept open
/// at most this long (its read connection's page cache stays warm
/// meanwhile), and keeps none while the WAL holds this many pages (a
/// snapshot held keeps the writer from starting the log over).
pub const SQLITE_PRECHECK_SNAPSHOT_MAX_MS: u64 = 20;
pub const SQLITE_WAL_LONG_PAGES: i64 = 49_152;
/// Read connections to the embedded database.
pub const READ_CONNECTIONS_MAX: usize = 8;
/// Charge contexts the embedded store keeps in memory for the charge
/// pre-check (a few hundred bytes each) before it starts over, and tokens
/// whose latest spend it keeps.
pub const CHARGE_CONTEXTS_KEPT_MAX: usize = 50_000;
pub const SPEND_BOARD_TOKENS_MAX: usize = 100_000;
/// Requests served concurrently before new ones wait.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 4_096;
/// How long a graceful shutdown waits for in-flight requests.
pub const SHUTDOWN_GRACE_SECS: u64 = 30;
/// From capture until a provider's funds are available (default; `--settlement-delay-days`).
pub const SETTLEMENT_DELAY_SECS_DEFAULT: i64 = 2 * 86_400;
pub const SETTLEMENT_DELAY_DAYS_MAX: i64 = 30;
/// From a payout until it arrives at the provider's bank.
pub const PAYOUT_TRANSIT_SECS: i64 = 86_400;
/// A payout's amount, in minor units.
pub const PAYOUT_AMOUNT_MAX: i64 = 1_000_000_000_000;
/// Rows handled by one round of upkeep per kind (holds, settlements, payouts).
pub const UPKEEP_BATCH_MAX: usize = 1_000;
/// Mismatches of each kind a ledger verification lists.
pub const VERIFICATION_MISMATCHES_SHOWN: usize = 100;
/// A webhook endpoint's URL.
pub const WEBHOOK_URL_LEN_MAX: usize = 2_048;
/// Webhook deliveries in flight at once, and per endpoint.
pub const WEBHOOK_IN_FLIGHT_MAX: usize = 64;
pub const WEBHOOK_IN_FLIGHT_PER_ENDPOINT_MAX: usize = 4;
/// Requests per second per secret, by default (API.md); burst twice that.
pub const RATE_LIMIT_PER_SECOND_DEFAULT: u32 = 1_000;
