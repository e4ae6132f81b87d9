//! The store conformance suite: one list of cases, each driving the
//! `Store` trait directly, run against every backend — SQLite (a fresh
//! file) always, and PostgreSQL (a fresh schema, dropped afterwards) when
//! `SCRIP_TEST_POSTGRES_URL` is set. With the variable set, an unreachable
//! server fails the suite; it is never skipped silently.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;

use scrip_core::limits;
use scrip_core::money::{CapAmount, ChargeAmount, Currency};
use scrip_core::period::Period;
use scrip_core::token::{Status, StoredStatus, Usage};
use scrip_server::secrets::{hash_secret, new_id, SecretHash};
use scrip_server::store::model::*;
use scrip_server::store::postgres::{url_with_search_path, PgStore};
use scrip_server::store::sqlite::SqliteStore;
use scrip_server::store::{IdemWrite, LedgerConfig, Store, StoreError, TokenChange};
use scrip_server::vault::{Sealed, WrappedKey};

type Shared = Arc<dyn Store>;
type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// 2027-01-15, a Friday: every case's clock.
const NOW: i64 = 1_800_000_000;
const DAY: i64 = 86_400;

// --- the backends ---------------------------------------------------------------

/// Writes past the test harness's capture, so the list of backends that
/// ran shows in every run.
fn report(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn postgres_url() -> Option<String> {
    std::env::var("SCRIP_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Runs one case on a fresh SQLite store, then (when configured) on a
/// fresh PostgreSQL schema.
async fn run(name: &str, case: fn(Shared) -> CaseFuture) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Shared =
        Arc::new(SqliteStore::open(&dir.path().join("scrip.db"), LedgerConfig::default()).unwrap());
    case(sqlite).await;
    let mut ran = vec!["sqlite"];
    if let Some(base) = postgres_url() {
        in_fresh_schema(&base, move |store| case(Arc::new(store))).await;
        ran.push("postgres");
    }
    report(&format!(
        "conformance {name}: passed on {}",
        ran.join(" and ")
    ));
}

/// Runs `case` on a store in a fresh PostgreSQL schema at `base` (on a task
/// of its own), then drops the schema, whether the case passed or not.
async fn in_fresh_schema<F>(base: &str, case: impl FnOnce(PgStore) -> F + Send + 'static)
where
    F: Future<Output = ()> + Send + 'static,
{
    let schema = format!("scrip_test_{}", hex::encode(rand::random::<[u8; 6]>()));
    PgStore::create_schema(base, &schema)
        .await
        .unwrap_or_else(|e| {
            panic!("SCRIP_TEST_POSTGRES_URL is set but PostgreSQL is not usable: {e}")
        });
    let url = url_with_search_path(base, &schema);
    let outcome = tokio::spawn(async move {
        let store = PgStore::connect(&url, LedgerConfig::default())
            .await
            .unwrap();
        case(store).await;
    })
    .await;
    PgStore::drop_schema(base, &schema).await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                run(stringify!($name), |store| Box::pin(cases::$name(store))).await;
            }
        )*
    };
}

// The one list of cases.
cases![
    customers_credentials_and_providers,
    boot_data_meta_and_clock,
    tokens_lifecycle,
    derived_tokens_and_revocation_cascade,
    charges_holds_capture_cancel_refund,
    cap_holds_under_concurrency,
    single_use_under_concurrency,
    idempotency_race_has_one_effect,
    idempotent_responses_and_purge,
    revocation_is_seen_at_once,
    charge_contexts_follow_every_change,
    a_charge_is_decided_on_the_store_not_on_its_pre_check,
    misuse_and_refusals,
    declines_spend_nothing,
    holds_expire_through_upkeep,
    settlement_and_payouts_through_upkeep,
    events_and_deliveries,
    endpoints_see_the_events_after_each_change,
    concurrent_claims_never_share_a_delivery,
    a_long_backlog_does_not_starve_other_endpoints,
    audit_chain_stays_linear_under_concurrency,
    concurrent_refusals_keep_each_callers_identity,
];

// --- fixtures ---------------------------------------------------------------------

struct Fx {
    customer: String,
    credential: String,
    provider: String,
    pm: String,
}

async fn fixture(s: &dyn Store) -> Fx {
    let customer = s
        .create_customer(
            Customer {
                id: new_id("cus"),
                email: Some("ada@example.com".into()),
                name: Some("Ada".into()),
                metadata: Metadata::new(),
                created: NOW,
            },
            None,
        )
        .await
        .unwrap();
    let credential = s
        .create_credential(
            Credential {
                id: new_id("oc"),
                customer_id: customer.id.clone(),
                name: Some("laptop".into()),
                active: true,
                created: NOW,
                revoked_at: None,
            },
            hash_secret(&new_id("sk_orch")),
            None,
        )
        .await
        .unwrap();
    let provider = s
        .create_provider(
            Provider {
                id: new_id("prov"),
                name: "Cloudflare".into(),
                metadata: Metadata::new(),
                created: NOW,
            },
            hash_secret(&new_id("sk_prov")),
            None,
        )
        .await
        .unwrap();
    let pm = payment_method(s, &customer.id).await;
    Fx {
        customer: customer.id,
        credential: credential.id,
        provider: provider.id,
        pm,
    }
}

async fn payment_method(s: &dyn Store, customer: &str) -> String {
    s.create_payment_method(
        NewPaymentMethod {
            method: PaymentMethod {
                id: new_id("pm"),
                customer_id: customer.to_owned(),
                active: true,
                brand: "visa".into(),
                last4: "4242".into(),
                exp_month: 12,
                exp_year: 2040,
                fingerprint: "fp".into(),
                created: NOW,
            },
            sealed_number: Sealed {
                key_id: "dk_test".into(),
                nonce: vec![1; 12],
                ciphertext: vec![2; 32],
            },
        },
        None,
    )
    .await
    .unwrap()
    .id
}

struct Issue {
    cap: i64,
    period: Period,
    usage: Usage,
    max_per_charge: Option<i64>,
    parent: Option<String>,
}

impl Default for Issue {
    fn default() -> Issue {
        Issue {
            cap: 10_000,
            period: Period::Month,
            usage: Usage::MultiUse,
            max_per_charge: None,
            parent: None,
        }
    }
}

/// Issues a token: (id, the hash of its secret).
async fn issue(s: &dyn Store, fx: &Fx, how: Issue) -> (String, SecretHash) {
    let secret = hash_secret(&new_id("scrip_pt"));
    let d = s
        .create_token(
            NewToken {
                token: Token {
                    id: new_id("pt"),
                    customer_id: fx.customer.clone(),
                    credential_id: fx.credential.clone(),
                    payment_method_id: fx.pm.clone(),
                    provider_id: fx.provider.clone(),
                    currency: Currency::Usd,
                    cap: CapAmount::new(how.cap).unwrap(),
                    period: how.period,
                    usage: how.usage,
                    max_per_charge: how.max_per_charge,
                    expires_at: NOW + 30 * DAY,
                    parent_id: how.parent,
                    stored_status: StoredStatus::Active,
                    metadata: Metadata::new(),
                    created: NOW,
                },
                secret_hash: secret,
            },
            NOW,
            None,
        )
        .await
        .unwrap();
    (d.token.id, secret)
}

fn new_charge(fx: &Fx, token: &str, amount: i64, capture: bool) -> NewCharge {
    NewCharge {
        id: new_id("ch"),
        token_id: token.to_owned(),
        provider_id: fx.provider.clone(),
        amount: ChargeAmount::new(amount).unwrap(),
        currency: Currency::Usd,
        capture,
        description: None,
        metadata: Metadata::new(),
        network_reference: new_id("net"),
        decided_on: None,
    }
}

async fn charge(s: &dyn Store, fx: &Fx, token: &str, amount: i64, capture: bool) -> Charge {
    s.create_charge(new_charge(fx, token, amount, capture), NOW, None)
        .await
        .unwrap()
}

async fn spend(s: &dyn Store, token: &str, now: i64) -> (i64, i64) {
    let d = s.token(token, None, now).await.unwrap();
    (d.spend.captured, d.spend.pending)
}

fn page(limit: u32) -> PageRequest {
    PageRequest {
        limit,
        starting_after: None,
    }
}

/// An idempotency record asking to remember `body`.
fn idem<T>(actor: &str, key: &str, body: &'static [u8]) -> IdemWrite<T> {
    IdemWrite {
        actor: actor.to_owned(),
        key: key.to_owned(),
        request_hash: [7; 32],
        now: NOW,
        render: Box::new(move |_| {
            Ok((
                200,
                Sealed {
                    key_id: "dk_test".into(),
                    nonce: vec![3; 12],
                    ciphertext: body.to_vec(),
                },
            ))
        }),
    }
}

#[track_caller]
fn assert_refused<T: std::fmt::Debug>(r: Result<T, StoreError>, code: &str) {
    match r {
        Err(StoreError::Refused(refusal)) => assert_eq!(refusal.code(), code),
        other => panic!("expected a {code} refusal, got {other:?}"),
    }
}

#[track_caller]
fn assert_conflict<T: std::fmt::Debug>(r: Result<T, StoreError>, code: &str) {
    match r {
        Err(StoreError::Conflict { code: c, .. }) => assert_eq!(c, code),
        other => panic!("expected a {code} conflict, got {other:?}"),
    }
}

#[track_caller]
fn assert_not_found<T: std::fmt::Debug>(r: Result<T, StoreError>, resource: &str) {
    match r {
        Err(StoreError::NotFound { resource: r, .. }) => assert_eq!(r, resource),
        other => panic!("expected {resource} not found, got {other:?}"),
    }
}

async fn assert_ledger_balanced(s: &dyn Store) {
    let v = s.verify_ledger().await.unwrap();
    assert!(v.balanced(), "{v:?}");
}

async fn assert_audit_valid(s: &dyn Store) -> AuditVerification {
    let v = s.verify_audit().await.unwrap();
    assert_eq!(v.first_broken, None, "{v:?}");
    v
}

mod cases {
    use super::*;

    pub async fn customers_credentials_and_providers(s: Shared) {
        let s = s.as_ref();
        let fx = fixture(s).await;
        let c = s.customer(&fx.customer).await.unwrap();
        assert_eq!(c.email.as_deref(), Some("ada@example.com"));
        assert_not_found(s.customer("cus_missing").await, "customer");
        // Pages: newest first, with a cursor.
        for _ in 0..3 {
            fixture(s).await;
        }
        let first = s.customers(page(2)).await.unwrap();
        assert_eq!(first.data.len(), 2);
        assert!(first.has_more);
        let rest = s
            .customers(PageRequest {
                limit: 10,
                starting_after: first.data.last().map(|c| c.id.clone()),
            })
            .await
            .unwrap();
        assert_eq!(rest.data.len(), 2);
        assert!(!rest.has_more);
        assert_eq!(rest.data.last().unwrap().id, fx.customer);
        assert_not_found(
            s.customers(PageRequest {
                limit: 10,
                starting_after: Some("cus_nope".into()),
            })
            .await,
            "customer",
        );
        // Credentials: the secret resolves until revoked.
        let secret = hash_secret("sk_orch_conformance");
        let cred = s
            .create_credential(
                Credential {
                    id: new_id("oc"),
                    customer_id: fx.customer.clone(),
                    name: None,
                    active: true,
                    created: NOW,
                    revoked_at: None,
                },
                secret,
                None,
            )
            .await
            .unwrap();
        assert_eq!(
            s.resolve_secret(secret).await.unwrap(),
            Some(Principal::Orchestrator {
                credential_id: cred.id.clone(),
                customer_id: fx.customer.clone()
            })
        );
        assert_not_found(
            s.create_credential(
                Credential {
                    id: new_id("oc"),
                    customer_id: "cus_missing".into(),
                    name: None,
                    active: true,
                    created: NOW,
                    revoked_at: None,
                },
                hash_secret("sk_orch_other"),
                None,
            )
            .await,
            "customer",
        );
        let listed = s.credentials(&fx.customer, page(10)).await.unwrap();
        assert_eq!(listed.data.len(), 2);
        let revoked = s.revoke_credential(&cred.id, NOW + 5, None).await.unwrap();
        assert!(!revoked.active);
        assert_eq!(revoked.revoked_at, Some(NOW + 5));
        assert_eq!(s.resolve_secret(secret).await.unwrap(), None);
        // Revoking again changes nothing and says the same.
        let again = s.revoke_credential(&cred.id, NOW + 9, None).await.unwrap();
        assert_eq!(again.revoked_at, Some(NOW + 5));
        assert_not_found(
            s.revoke_credential("oc_missing", NOW, None).await,
            "credential",
        );
        // Providers: rolling the secret retires the old one at once.
        let old = hash_secret("sk_prov_old");
        let p = s
            .create_provider(
                Provider {
                    id: new_id("prov"),
                    name: "P".into(),
                    metadata: [("k".to_owned(), "v".to_owned())].into(),
                    created: NOW,
                },
                old,
                None,
            )
            .await
            .unwrap();
        assert_eq!(s.provider(&p.id).await.unwrap(), p);
        let new = hash_secret("sk_prov_new");
        s.roll_provider_secret(&p.id, new, None).await.unwrap();
        assert_eq!(s.resolve_secret(old).await.unwrap(), None);
        assert_eq!(
            s.resolve_secret(new).await.unwrap(),
            Some(Principal::Provider {
                provider_id: p.id.clone()
            })
        );
        assert_not_found(
            s.roll_provider_secret("prov_missing", hash_secret("x"), None)
                .await,
            "provider",
        );
        assert_eq!(s.providers(page(100)).await.unwrap().data.len(), 5);
        assert_eq!(
            s.resolve_secret(hash_secret("unknown")).await.unwrap(),
            None
        );
        assert_audit_valid(s).await;
    }

    pub async fn boot_data_meta_and_clock(s: Shared) {
        let s = s.as_ref();
        s.health().await.unwrap();
        assert!(s.data_keys().await.unwrap().is_empty());
        let keys: Vec<WrappedKey> = ["seal", "fingerprint"]
            .iter()
            .map(|purpose| WrappedKey {
                id: new_id("dk"),
                purpose: (*purpose).to_owned(),
                master_key_id: "mk_1".into(),
                wrapped: vec![9; 60],
                created: NOW,
            })
            .collect();
        s.insert_data_keys(keys.clone()).await.unwrap();
        let flat = |keys: Vec<WrappedKey>| -> Vec<(String, String, String, Vec<u8>, i64)> {
            keys.into_iter()
                .map(|k| (k.id, k.purpose, k.master_key_id, k.wrapped, k.created))
                .collect()
        };
        assert_eq!(flat(s.data_keys().await.unwrap()), flat(keys.clone()));
        let rewrapped: Vec<WrappedKey> = keys
            .iter()
            .map(|k| WrappedKey {
                master_key_id: "mk_2".into(),
                wrapped: vec![8; 60],
                ..k.clone()
            })
            .collect();
        s.update_data_keys(rewrapped.clone()).await.unwrap();
        assert_eq!(flat(s.data_keys().await.unwrap()), flat(rewrapped.clone()));
        assert_not_found(
            s.update_data_keys(vec![WrappedKey {
                id: "dk_missing".into(),
                ..rewrapped[0].clone()
            }])
            .await,
            "data_key",
        );
        assert_eq!(s.admin_key_hash().await.unwrap(), None);
        s.set_admin_key_hash(hash_secret("sk_admin_x"))
            .await
            .unwrap();
        assert_eq!(
            s.admin_key_hash().await.unwrap(),
            Some(hash_secret("sk_admin_x"))
        );
        assert_eq!(s.clock_offset().await.unwrap(), 0);
        assert_eq!(s.advance_clock_offset(3 * DAY).await.unwrap(), 3 * DAY);
        assert_eq!(s.clock_offset().await.unwrap(), 3 * DAY);
        // Two advances at once both count (nodes share one clock).
        let (a, b) = tokio::join!(s.advance_clock_offset(10), s.advance_clock_offset(10));
        let mut seen = [a.unwrap(), b.unwrap()];
        seen.sort_unstable();
        assert_eq!(seen, [3 * DAY + 10, 3 * DAY + 20]);
        assert_eq!(s.clock_offset().await.unwrap(), 3 * DAY + 20);
        let w = s.write_stats();
        assert!(w.groups >= 1 && w.operations >= w.groups, "{w:?}");
        let v = assert_audit_valid(s).await;
        assert_eq!(
            v.records, 8,
            "two keys created, two re-wrapped, admin key, three clock advances"
        );
    }

    pub async fn tokens_lifecycle(s: Shared) {
        let s = s.as_ref();
        let fx = fixture(s).await;
        let (id, secret) = issue(s, &fx, Issue::default()).await;
        assert_eq!(
            s.resolve_secret(secret).await.unwrap(),
            Some(Principal::Token {
                token_id: id.clone()
            })
        );
        let d = s.token(&id, Some(&fx.customer), NOW).await.unwrap();
        assert_eq!(d.status, Status::Active);
        assert_eq!(d.provider_name, "Cloudflare");
        assert_eq!((d.spend.captured, d.spend.pending), (0, 0));
        assert_not_found(s.token(&id, Some("cus_other"), NOW).await, "payment_token");
        assert_eq!(
            s.token(&id, None, NOW + 31 * DAY).await.unwrap().status,
            Status::Expired
        );
        // Suspend and resume, each only from the right state.
        let t = s
            .change_token(&id, None, TokenChange::Suspend, NOW, None)
            .await
            .unwrap();
        assert_eq!(t.status, Status::Suspended);
        assert_conflict(
            s.change_token(&id, None, TokenChange::Suspend, NOW, None)
                .await,
            "token_not_active",
        );
        let t = s
            .change_token(&id, None, TokenChange::Resume, NOW, None)
            .await
            .unwrap();
        assert_eq!(t.status, Status::Active);
        assert_conflict(
            s.change_token(&id, None, TokenChange::Resume, NOW, None)
                .await,
            "token_not_suspended",
        );
        // Issuing against another customer's card, or a detached one.
        let other = fixture(s).await;
        let foreign = s
            .create_token(
                NewToken {
                    token: Token {
                        payment_method_id: other.pm.clone(),
                        ..s.token(&id, None, NOW).await.unwrap().token
                    },
                    secret_hash: hash_secret("scrip_pt_foreign"),
                },
                NOW,
                None,
            )
            .await;
        assert_not_found(foreign, "payment_method");
        s.detach_payment_method(&other.pm, Some(&other.customer), NOW, None)
            .await
            .unwrap();
        let detached = s
            .create_token(
                NewToken {
                    token: Token {
                        id: new_id("pt"),
                        customer_id: other.customer.clone(),
                        payment_method_id: other.pm.clone(),
                        ..s.token(&id, None, NOW).await.unwrap().token
                    },
                    secret_hash: hash_secret("scrip_pt_detached"),
                },
                NOW,
                None,
            )
            .await;
        match detached {
            Err(StoreError::Invalid { code, param, .. }) => {
                assert_eq!(
                    (code, param),
                    ("payment_method_unavailable", "payment_method")
                )
            }
            other => panic!("expected payment_method_unavailable, got {other:?}"),
        }
        assert!(
            !s.payment_method(&other.pm, None).await.unwrap().active,
            "detached"
        );
        assert_not_found(
            s.payment_method(&other.pm, Some(&fx.customer)).await,
            "payment_method",
        );
        // Lists by status, with the same precedence as the decision.
        let (revoked, _) = issue(s, &fx, Issue::default()).await;
        s.change_token(&revoked, None, TokenChange::Revoke, NOW, None)
            .await
            .unwrap();
        let by = |status| TokenFilter {
            customer_id: Some(fx.customer.clone()),
            provider_id: None,
            status: Some(status),
        };
        let active = s.tokens(by(Status::Active), page(10), NOW).await.unwrap();
        assert_eq!(
            active
                .data
                .iter()
                .map(|d| d.token.id.clone())
                .collect::<Vec<_>>(),
            vec![id.clone()]
        );
        let gone = s.tokens(by(Status::Revoked), page(10), NOW).await.unwrap();
        assert_eq!(gone.data.len(), 1);
        assert_eq!(gone.data[0].token.id, revoked);
        let expired = s
            .tokens(by(Status::Expired), page(10), NOW + 31 * DAY)
            .await
            .unwrap();
        assert_eq!(expired.data.len(), 1);
        let all = s
            .tokens(TokenFilter::default(), page(1), NOW)
            .await
            .unwrap();
        assert!(all.has_more);
        assert_audit_valid(s).await;
    }

    pub async fn derived_tokens_and_revocation_cascade(s: Shared) {
        let s = s.as_ref();
        let fx = fixture(s).await;
        let (root, _) = issue(
            s,
            &fx,
            Issue {
                cap: 6_000,
                ..Default::default()
            },
        )
        .await;
        let (child, _) = issue(
            s,
            &fx,
            Issue {
                cap: 10_000,
                parent: Some(root.clone()),
                ..Default::default()
            },
        )
        .await;
        let (grandchild, _) = issue(
            s,
            &fx,
            Issue {
                cap: 10_000,
                parent: Some(child.clone()),
                ..Default::default()
            },
        )
        .await;
        // Every charge counts against every ancestor: the root's cap binds.
        charge(s, &fx, &grandchild, 4_000, true).await;
        assert_refused(
            s.create_charge(new_charge(&fx, &child, 2_001, true), NOW, None)
                .await,
            "cap_exceeded",
        );
        charge(s, &fx, &child, 2_000, false).await;
        assert_eq!(spend(s, &root, NOW).await, (4_000, 2_000));
        assert_eq!(spend(s, &child, NOW).await, (4_000, 2_000));
        assert_eq!(spend(s, &grandchild, NOW).await, (4_000, 0));
        let ctx = s.charge_context(hash_secret("nobody"), NOW).await.unwrap();
        assert!(ctx.is_none());
        // Revoking the middle revokes it and its descendant, not its parent.
        s.change_token(&child, None, TokenChange::Revoke, NOW, None)
            .await
            .unwrap();
        assert_eq!(
            s.token(&child, None, NOW).await.unwrap().status,
            Status::Revoked
        );
        assert_eq!(
            s.token(&grandchild, None, NOW).await.unwrap().status,
            Status::Revoked
        );
        assert_eq!(
            s.token(&root, None, NOW).await.unwrap().status,
            Status::Active
        );
        assert_refused(
            s.create_charge(new_charge(&fx, &grandchild, 1, true), NOW, None)
                .await,
            "token_revoked",
        );
        let events = s
            .events(
                EventFilter {
                    kind: Some("payment_token.revoked".into()),
                    ..Default::default()
                },
                page(10),
            )
            .await
            .unwrap();
        assert_eq!(events.data.len(), 2);
        assert_ledger_balanced(s).await;
        assert_audit_valid(s).await;
    }

    pub async fn charges_holds_capture_cancel_refund(s: Shared) {
        let s = s.as_ref();
        let fx = fixture(s).await;
        let (token, _) = issue(s, &fx, Issue::default()).await;
        let captured = charge(s, &fx, &token, 2_500, true).await;
        assert_eq!(captured.status, ChargeStatus::Succeeded);
        assert_eq!(captured.amount_captured, 2_500);
        assert_eq!(
            captured.fee,
            LedgerConfig::default().fees.fee(2_500, Currency::Usd)
        );
        assert_eq!(captured.last4, "4242");
        assert_eq!(
            s.charge(&captured.id, Some(&fx.provider)).await.unwrap(),
            captured
        );
        assert_not_found(s.charge(&captured.id, Some("prov_other")).await, "charge");
        let hold = charge(s, &fx, &token, 4_000, false).await;
        assert_eq!(hold.status, ChargeStatus::RequiresCapture);
        assert_eq!(hold.capture_before, Some(NOW + limits::HOLD_TTL_SECS));
        assert_eq!(spend(s, &token, NOW).await, (2_500, 4_000));
        // Capture part of the hold: the rest goes back to the cap.
        match s
            .capture_charge(&hold.id, None, Some(4_001), NOW, None)
            .await
        {
            Err(StoreError::Invalid { code, .. }) => assert_eq!(code, "amount_invalid"),
            other => panic!("expected amount_invalid, got {other:?}"),
        }
        let c = s
            .capture_charge(&hold.id, Some(&fx.provider), Some(3_000), NOW + 60, None)
            .await
            .unwrap();
        assert_eq!(
            (c.status, c.amount_captured),
            (ChargeStatus::Succeeded, 3_000)
        );
        assert_eq!(spend(s, &token, NOW).await, (5_500, 0));
        assert_conflict(
            s.capture_charge(&hold.id, None, None, NOW, None).await,
            "charge_already_captured",
        );
        assert_conflict(
            s.cancel_charge(&hold.id, None, NOW, None).await,
            "charge_already_captured",
        );
        // Cancel a second hold.
        let hold2 = charge(s, &fx, &token, 1_000, false).await;
        let canceled = s.cancel_charge(&hold2.id, None, NOW, None).await.unwrap();
        assert_eq!(canceled.status, ChargeStatus::Canceled);
        assert_conflict(
            s.cancel_charge(&hold2.id, None, NOW, None).await,
            "charge_not_capturable",
        );
        assert_conflict(
            s.capture_charge(&hold2.id, None, None, NOW, None).await,
            "charge_not_capturable",
        );
        assert_eq!(spend(s, &token, NOW).await, (5_500, 0));
        // Refunds: in parts, never past what was captured.
        let refund = |amount: Option<i64>, charge: &str| NewRefund {
            id: new_id("re"),
            charge_id: charge.to_owned(),
            amount,
            metadata: Metadata::new(),
        };
        assert_conflict(
            s.create_refund(refund(None, &hold2.id), None, NOW, None)
                .await,
            "charge_not_captured",
        );
        let r1 = s
            .create_refund(
                refund(Some(1_000), &captured.id),
                Some(&fx.provider),
                NOW,
                None,
            )
            .await
            .unwrap();
        assert_eq!((r1.amount, r1.currency), (1_000, Currency::Usd));
        assert_conflict(
            s.create_refund(refund(Some(1_501), &captured.id), None, NOW, None)
                .await,
            "charge_already_refunded",
        );
        let r2 = s
            .create_refund(refund(None, &captured.id), None, NOW, None)
            .await
            .unwrap();
        assert_eq!(r2.amount, 1_500);
        assert_conflict(
            s.create_refund(refund(None, &captured.id), None, NOW, None)
                .await,
            "charge_already_refunded",
        );
        assert_not_found(
            s.create_refund(refund(None, &captured.id), Some("prov_other"), NOW, None)
                .await,
            "charge",
        );
        assert_eq!(s.refund(&r1.id, Some(&fx.provider)).await.unwrap(), r1);
        assert_eq!(
            s.refunds(None, Some(&captured.id), page(10))
                .await
                .unwrap()
                .data
                .len(),
            2
        );
        assert_eq!(spend(s, &token, NOW).await, (3_000, 0));
        assert_eq!(
            s.charge(&captured.id, None).await.unwrap().amount_refunded,
            2_500
        );
        let listed = s
            .charges(
                ChargeFilter {
                    token_id: Some(token.clone()),
                    ..Default::default()
                },
                page(10),
            )
            .await
            .unwrap();
        assert_eq!(listed.data.len(), 3);
        let balance = s.balance(&fx.provider).await.unwrap();
        assert_eq!(balance.len(), 1);
        // Refunds beyond what will still settle come out of `available`.
        assert!(balance[0].available < 0, "{balance:?}");
        assert_ledger_balanced(s).await;
        let report = s.ledger_report(None, None).await.unwrap();
        assert_eq!(report.len(), 1);
        assert_eq!((report[0].gross, report[0].refunds), (5_500, 2_500));
        assert_eq!(
            report[0].net,
            report[0].gross - report[0].fees - report[0].refunds
        );
        assert_audit_valid(s).await;
    }

    pub async fn cap_holds_under_concurrency(s: Shared) {
        let fx = Arc::new(fixture(s.as_ref()).await);
        let (token, _) = issue(s.as_ref(), &fx, Issue::default()).await;
        // Cap 10,000 and 400 a charge: exactly 25 of 60 fit.
        let mut tasks = Vec::new();
        for i in 0..60 {
            let (s, fx, token) = (s.clone(), fx.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                s.create_charge(new_charge(&fx, &token, 400, i % 4 != 0), NOW, None)
                    .await
            }));
        }
        let mut succeeded = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => succeeded += 1,
                Err(e) => assert_refused::<()>(Err(e), "cap_exceeded"),
            }
        }
        assert_eq!(succeeded, 25);
        let (captured, pending) = spend(s.as_ref(), &token, NOW).await;
        assert_eq!(captured + pending, 10_000);
        assert_ledger_balanced(s.as_ref()).await;
        assert_audit_valid(s.as_ref()).await;
    }

    pub async fn single_use_under_concurrency(s: Shared) {
        let fx = Arc::new(fixture(s.as_ref()).await);
        let (token, _) = issue(
            s.as_ref(),
            &fx,
            Issue {
                usage: Usage::SingleUse,
                ..Default::default()
            },
        )
        .await;
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let (s, fx, token) = (s.clone(), fx.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                s.create_charge(new_charge(&fx, &token, 100, true), NOW, None)
                    .await
            }));
        }
        let mut succeeded = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => succeeded += 1,
                Err(e) => assert_refused::<()>(Err(e), "token_exhausted"),
            }
        }
        assert_eq!(succeeded, 1);
        assert_eq!(
            s.token(&token, None, NOW).await.unwrap().status,
            Status::Exhausted
        );
        let exhausted = s
            .events(
                EventFilter {
                    kind: Some("payment_token.exhausted".into()),
                    ..Default::default()
                },
                page(10),
            )
            .await
            .unwrap();
        assert_eq!(exhausted.data.len(), 1);
        assert!(exhausted.data[0].json.contains("\"exhausted\""));
        assert_ledger_balanced(s.as_ref()).await;
    }

    pub async fn idempotency_race_has_one_effect(s: Shared) {
        let fx = Arc::new(fixture(s.as_ref()).await);
        let (token, _) = issue(
            s.as_ref(),
            &fx,
            Issue {
                cap: 1_000_000,
                ..Default::default()
            },
        )
        .await;
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (s, fx, token) = (s.clone(), fx.clone(), token.clone());
            tasks.push(tokio::spawn(async move {
                s.create_charge(
                    new_charge(&fx, &token, 700, true),
                    NOW,
                    Some(idem(&fx.provider, "order-42", b"{\"id\":\"first\"}")),
                )
                .await
            }));
        }
        let mut won = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Ok(c) => won.push(c.id),
                Err(StoreError::IdempotencyRace) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(won.len(), 1, "one effect");
        let charges = s
            .charges(
                ChargeFilter {
                    token_id: Some(token.clone()),
                    ..Default::default()
                },
                page(100),
            )
            .await
            .unwrap();
        assert_eq!(charges.data.len(), 1);
        assert_eq!(charges.data[0].id, won[0]);
        assert_eq!(spend(s.as_ref(), &token, NOW).await, (700, 0));
        let stored = s
            .idempotent_response(&fx.provider, "order-42", NOW + 10)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.status, 200);
        assert_eq!(stored.request_hash, [7; 32]);
        assert_eq!(stored.sealed_body.ciphertext, b"{\"id\":\"first\"}");
        assert_audit_valid(s.as_ref()).await;
    }

    pub async fn idempotent_responses_and_purge(s: Shared) {
        let s = s.as_ref();
        let c = Customer {
            id: new_id("cus"),
            email: None,
            name: None,
            metadata: Metadata::new(),
            created: NOW,
        };
        s.create_customer(c.clone(), Some(idem("admin", "k1", b"one")))
            .await
            .unwrap();
        // A failed effect remembers nothing.
        let dup = s
            .create_customer(c.clone(), Some(idem("admin", "k2", b"two")))
            .await;
        assert!(matches!(dup, Err(StoreError::Database(_))), "{dup:?}");
        assert!(s
            .idempotent_response("admin", "k2", NOW)
            .await
            .unwrap()
            .is_none());
        // A live key cannot be taken again; another actor's can.
        let again = s
            .create_customer(
                Customer {
                    id: new_id("cus"),
                    ..c.clone()
                },
                Some(idem("admin", "k1", b"again")),
            )
            .await;
        assert!(
            matches!(again, Err(StoreError::IdempotencyRace)),
            "{again:?}"
        );
        s.create_customer(
            Customer {
                id: new_id("cus"),
                ..c.clone()
            },
            Some(idem("oc_other", "k1", b"other")),
        )
        .await
        .unwrap();
        let r = s
            .idempotent_response("admin", "k1", NOW + 60)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((r.status, r.created), (200, NOW));
        assert_eq!(r.sealed_body.ciphertext, b"one");
        // Past the TTL the record is gone for readers, and can be replaced.
        let later = NOW + limits::IDEMPOTENCY_TTL_SECS;
        assert!(s
            .idempotent_response("admin", "k1", later)
            .await
            .unwrap()
            .is_none());
        let mut fresh = idem("admin", "k1", b"renewed");
        fresh.now = later;
        s.create_customer(
            Customer {
                id: new_id("cus"),
                ..c.clone()
            },
            Some(fresh),
        )
        .await
        .unwrap();
        let r = s
            .idempotent_response("admin", "k1", later)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.sealed_body.ciphertext, b"renewed");
        assert_eq!(
            s.purge_idempotency(NOW).await.unwrap(),
            1,
            "only oc_other's"
        );
        assert_eq!(s.purge_idempotency(later).await.unwrap(), 1);
        assert!(s
            .idempotent_response("admin", "k1", later)
            .await
            .unwrap()
            .is_none());
    }

    /// The charge pre-check's view of a token (which the embedded store
    /// keeps in memory) follows every change to its spend and standing.
    pub async fn charge_contexts_follow_every_change(s: Shared) {
        let s = s.as_ref();
        let fx = fixture(s).await;
        let (parent, parent_secret) = issue(s, &fx, Issue::default()).await;
        let (token, secret) = issue(
            s,
            &fx,
            Issue {
                parent: Some(parent.clone()),
                ..Issue::default()
            },
        )
        .await;
        let seen = |secret: SecretHash| async move {
            let ctx = s.charge_context(secret, NOW).await.unwrap().unwrap();
            let fresh = s
                .charge_context_uncached(secret, NOW)
                .await
                .unwrap()
                .unwrap();
            let view = |c: &ChargeContext| {
                c.chain
                    .iter()
                    .map(|l| (l.spend.captured, l.spend.pending, l.standing))
                    .collect::<Vec<_>>()
            };
            assert_eq!(view(&ctx), view(&fresh), "kept and fresh contexts differ");
            assert!(!fresh.cached);
            view(&ctx)
        };
        let spends = |secret| async move {
            seen(secret)
                .await
                .into_iter()
                .map(|(c, p, _)| (c, p))
                .collect::<Vec<_>>()
        };
        assert_eq!(spends(secret).await, [(0, 0), (0, 0)]);
        let captured = charge(s, &fx, &token, 700, true).await;
        assert_eq!(spends(secret).await, [(700, 0), (700, 0)]);
        assert_eq!(spends(parent_secret).await, [(700, 0)]);
        let hold = charge(s, &fx, &token, 200, false).await;
        assert_eq!(spends(secret).await, [(700, 200), (700, 200)]);
        s.cancel_charge(&hold.id, None, NOW, None).await.unwrap();
        assert_eq!(spends(secret).await, [(700, 0), (700, 0)]);
        s.create_refund(
            NewRefund {
                id: new_id("re"),
                charge_id: captured.id.clone(),
                amount: Some(300),
                metadata: Metadata::new(),
            },
            None,
            NOW,
            None,
        )
        .await
        .unwrap();
        assert_eq!(spends(secret).await, [(400, 0), (400, 0)]);
        let hold = charge(s, &fx, &token, 100, false).await;
        s.capture_charge(&hold.id, None, Some(60), NOW, None)
            .await
            .unwrap();
        assert_eq!(spends(secret).await, [(460, 0), (460, 0)]);
        // Standing: suspended and resumed, the parent revoked.
        let stored = |secret| async move {
            seen(secret)
                .await
                .into_iter()
                .map(|(_, _, standing)| standing.stored)
                .collect::<Vec<_>>()
        };
        s.change_token(&token, None, TokenChange::Suspend, NOW, None)
            .await
            .unwrap();
        assert_eq!(
            stored(secret).await,
            [StoredStatus::Suspended, StoredStatus::Active]
        );
        s.change_token(&token, None, TokenChange::Resume, NOW, None)
            .await
            .unwrap();
        assert_eq!(
            stored(secret).await,
            [StoredStatus::Active, StoredStatus::Active]
        );
        s.change_token(&parent, None, TokenChange::Revoke, NOW, None)
            .await
            .unwrap();
        assert_eq!(
            stored(secret).await,
            [StoredStatus::Revoked, StoredStatus::Revoked]
        );
        // The card detached, the credential revoked: every token's standing.
        let (other, other_secret) = issue(s, &fx, Issue::default()).await;
        charge(s, &fx, &other, 1, true).await;
        assert!(seen(other_secret).await[0].2.payment_method_active);
        s.detach_payment_method(&fx.pm, None, NOW, None)
            .await
            .unwrap();
        assert!(!seen(other_secret).await[0].2.payment_method_active);
        let fx2 = fixture(s).await;
        let (t2, secret2) = issue(s, &fx2, Issue::default()).await;
        charge(s, &fx2, &t2, 1, true).await;
        assert!(seen(secret2).await[0].2.credential_active);
        s.revoke_credential(&fx2.credential, NOW, None)
            .await
            .unwrap();
        assert!(!seen(secret2).await[0].2.credential_active);
        // A token presented by the wrong provider is revoked.
        let fx3 = fixture(s).await;
        let (t3, secret3) = issue(s, &fx3, Issue::default()).await;
        charge(s, &fx3, &t3, 1, true).await;
        assert_eq!(stored(secret3).await, [StoredStatus::Active]);
        s.revoke_token_for_misuse(&t3, "prov_other", NOW)
            .await
            .unwrap();
        assert_eq!(stored(secret3).await, [StoredStatus::Revoked]);
    }

    /// A charge carries the context its pre-check allowed it on (the
    /// embedded store's writer decides on that chain when nothing that
    /// could change it has been written since). Whatever did change since,
    /// the spend, a standing, a single-use token's one charge, decides.
    pub async fn a_charge_is_decided_on_the_store_not_on_its_pre_check(s: Shared) {
        let s = s.as_ref();
        let fx = fixture(s).await;
        let decided = |token: &str, amount: i64, ctx: &ChargeContext| NewCharge {
            decided_on: Some(ctx.clone()),
            ..new_charge(&fx, token, amount, true)
        };
        // Decided on a current context: the charge is what it would be
        // without one.
        let (token, secret) = issue(
            s,
            &fx,
            Issue {
                cap: 1_000,
                ..Issue::default()
            },
        )
        .await;
        let ctx = s.charge_context(secret, NOW).await.unwrap().unwrap();
        // A token issued right after a pre-check is found by the next one
        // (the embedded store's pre-check may read a snapshot a few
        // milliseconds old, and looks again for what it does not find).
        let (_, newer) = issue(s, &fx, Issue::default()).await;
        assert!(s.charge_context(newer, NOW).await.unwrap().is_some());
        let c = s
            .create_charge(decided(&token, 600, &ctx), NOW, None)
            .await
            .unwrap();
        assert_eq!(
            (&c.token_id, &c.customer_id, &c.payment_method_id),
            (&token, &fx.customer, &fx.pm)
        );
        assert_eq!((c.brand.as_str(), c.last4.as_str()), ("visa", "4242"));
        // The same context again says nothing is spent; the store says 600
        // of 1,000.
        assert_eq!(ctx.chain[0].spend.captured, 0);
        assert_refused(
            s.create_charge(decided(&token, 600, &ctx), NOW, None).await,
            "cap_exceeded",
        );
        s.create_charge(decided(&token, 400, &ctx), NOW, None)
            .await
            .unwrap();
        assert_eq!(spend(s, &token, NOW).await, (1_000, 0));
        // A context of another token decides nothing for this one.
        let (roomy, roomy_secret) = issue(s, &fx, Issue::default()).await;
        s.create_charge(decided(&roomy, 500, &ctx), NOW, None)
            .await
            .unwrap();
        assert_eq!(spend(s, &roomy, NOW).await, (500, 0));
        // Suspended after its context was read: refused.
        let roomy_ctx = s.charge_context(roomy_secret, NOW).await.unwrap().unwrap();
        s.change_token(&roomy, None, TokenChange::Suspend, NOW, None)
            .await
            .unwrap();
        assert_refused(
            s.create_charge(decided(&roomy, 1, &roomy_ctx), NOW, None)
                .await,
            "token_suspended",
        );
        // Single use: its one charge exhausts it, however current the
        // context it is decided on looked.
        let (once, once_secret) = issue(
            s,
            &fx,
            Issue {
                usage: Usage::SingleUse,
                ..Issue::default()
            },
        )
        .await;
        let once_ctx = s.charge_context(once_secret, NOW).await.unwrap().unwrap();
        s.create_charge(decided(&once, 5, &once_ctx), NOW, None)
            .await
            .unwrap();
        assert_refused(
            s.create_charge(decided(&once, 5, &once_ctx), NOW, None)
                .await,
            "token_exhausted",
        );
        // The card detached, then the credential revoked, after the
        // contexts were read: every token under them refused.
        let (late, late_secret) = issue(s, &fx, Issue::default()).await;
        let late_ctx = s.charge_context(late_secret, NOW).await.unwrap().unwrap();
        s.detach_payment_method(&fx.pm, None, NOW, None)
            .await
            .unwrap();
        assert_refused(
            s.create_charge(decided(&late, 1, &late_ctx), NOW, None)
                .await,
            "payment_method_unavailable",
        );
        let fx2 = fixture(s).await;
        let (other, other_secret) = issue(s, &fx2, Issue::default()).await;
        let other_ctx = s.charge_context(other_secret, NOW).await.unwrap().unwrap();
        s.revoke_credential(&fx2.credential, NOW, None)
            .await
            .unwrap();
        let mut after_revocation = decided(&other, 1, &other_ctx);
        after_revocation.provider_id = fx2.provider.clone();
        assert_refused(
            s.create_charge(after_revocation, NOW, None).await,
            "token_revoked",
        );
        assert_ledger_balanced(s).await;
    }

    pub async fn revocation_is_seen_at_once(s: Shared) {
        let s = s.as_ref();
        let fx = fixture(s).await;
        let (token, secret) = issue(s, &fx, Issue::default()).await;
        let ctx = s.charge_context(secret, NOW).await.unwrap().unwrap();
        assert_eq!(ctx.token_id, token);
        assert_eq!(ctx.payment_method_id, fx.pm);
        assert_eq!(ctx.chain.len(), 1);
        assert!(ctx.chain[0].standing.credential_active);
        charge(s, &fx, &token, 100, true).await;
        let ctx = s.charge_context(secret, NOW).await.unwrap().unwrap();
        assert_eq!(ctx.chain[0].spend.captured, 100);
        // Suspended: refused; resumed: allowed.
        s.change_token(&token, None, TokenChange::Suspend, NOW, None)
            .await
            .unwrap();
        assert_refused(
            s.create_charge(new_charge(&fx, &token, 1, true), NOW, None)
                .await,
            "token_suspended",
        );
        s.change_token(&token, None, TokenChange::Resume, NOW, None)
            .await
            .unwrap();
        charge(s, &fx, &token, 1, true).await;
        // Detaching the card stops every token on it.
        let (_, _) = issue(s, &fx, Issue::default()).await;
        s.detach_payment_method(&fx.pm, None, NOW, None)
            .await
            .unwrap();
        assert_refused(
            s.create_charge(new_charge(&fx, &token, 1, true), NOW, None)
                .await,
            "payment_method_unavailable",
        );
        // Revoking the credential revokes every token under it, in one row.
        let fx2 = fixture(s).await;
        let (t2, _) = issue(s, &fx2, Issue::default()).await;
        s.revoke_credential(&fx2.credential, NOW, None)
            .await
            .unwrap();
        assert_eq!(
            s.token(&t2, None, NOW).await.unwrap().status,
            Status::Revoked
        );
        assert_refused(
            s.create_charge(new_charge(&fx2, &t2, 1, true), NOW, None)
                .await,
            "token_revoked",
        );
        assert_refused(
            s.create_charge(new_charge(&fx2, &t2, 1, true), NOW + 40 * DAY, None)
                .await,
            "token_revoked",
        );
        let detached = s
            .events(
                EventFilter {
                    customer_id: Some(fx.customer.clone()),
                    kind: Some("payment_method.detached".into()),
                    ..Default::default()
                },
                page(10),
            )
            .await
            .unwrap();
        assert_eq!(detached.data.len(), 1);
        assert_ledger_balanced(s).await;
    }

    pub async fn misuse_and_refusals(s: Shared) {
        let s = s.as_ref();
        let fx = fixture(s).await;
        let (token, _) = issue(
            s,
            &fx,
            Issue {
                max_per_charge: Some(500),
                ..Default::default()
            },
        )
        .await;
        assert_refused(
            s.create_charge(new_charge(&fx, &token, 501, true), NOW, None)
                .await,
            "max_per_charge_exceeded",
        );
        let mut eur = new_charge(&fx, &token, 10, true);
        eur.currency = Currency::Eur;
        assert_refused(s.create_charge(eur, NOW, None).await, "currency_mismatch");
        let mut foreign = new_charge(&fx, &token, 10, true);
        foreign.provider_id = "prov_thief".into();
        assert_refused(
            s.create_charge(foreign, NOW, None).await,
            "token_scope_mismatch",
        );
        s.record_refusal(
            ChargeAttempt {
                token_id: Some(token.clone()),
                provider_id: "prov_thief".into(),
                code: "token_scope_mismatch".into(),
            },
            NOW,
        )
        .await
        .unwrap();
        s.revoke_token_for_misuse(&token, "prov_thief", NOW)
            .await
            .unwrap();
        assert_eq!(
            s.token(&token, None, NOW).await.unwrap().status,
            Status::Revoked
        );
        let records = s.audit_events(page(100)).await.unwrap().data;
        let misuse = records
            .iter()
            .find(|r| r.action == "payment_token.misuse_attempt")
            .unwrap();
        assert_eq!(misuse.outcome, "refused");
        assert_eq!(
            misuse.code.as_deref(),
            Some("token_scope_mismatch (presented by prov_thief)")
        );
        assert!(records.iter().any(|r| r.action == "charge.refused"));
        let kinds: Vec<String> = s
            .events(
                EventFilter {
                    customer_id: Some(fx.customer.clone()),
                    ..Default::default()
                },
                page(100),
            )
            .await
            .unwrap()
            .data
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            &kinds[..2],
            &["payment_token.revoked", "payment_token.misuse_attempt"]
        );
        // A misuse of an unknown token is a miss.
        assert_not_found(
            s.revoke_token_for_misuse("pt_missing", "prov_thief", NOW)
                .await,
            "payment_token",
        );
        assert_audit_valid(s).await;
    }

    pub async fn declines_spend_nothing(s: Shared) {
        let s = s.as_ref();
        let fx = fixture(s).await;
        let (token, _) = issue(s, &fx, Issue::default()).await;
        let failed = s
            .record_decline(
                new_charge(&fx, &token, 900, true),
                "insufficient_funds",
                NOW,
                None,
            )
            .await
            .unwrap();
        assert_eq!(failed.status, ChargeStatus::Failed);
        assert_eq!(failed.failure_code.as_deref(), Some("card_declined"));
        assert_eq!(failed.decline_code.as_deref(), Some("insufficient_funds"));
        assert_eq!(s.charge(&failed.id, None).await.unwrap(), failed);
        assert_eq!(spend(s, &token, NOW).await, (0, 0));
        let events = s
            .events(
                EventFilter {
                    provider_id: Some(fx.provider.clone()),
                    kind: Some("charge.failed".into()),
                    ..Default::default()
                },
                page(10),
            )
            .await
            .unwrap();
        assert_eq!(events.data.len(), 1);
        assert_ledger_balanced(s).await;
    }

    pub async fn holds_expire_through_upkeep(s: Shared) {
        let s = s.as_ref();
        let fx = fixture(s).await;
        let (token, _) = issue(
            s,
            &fx,
            Issue {
                period: Period::None,
                ..Default::default()
            },
        )
        .await;
        let hold = charge(s, &fx, &token, 3_000, false).await;
        let early = s
            .upkeep(NOW + limits::HOLD_TTL_SECS - 1, false)
            .await
            .unwrap();
        assert_eq!(early.holds_released, 0);
        let later = NOW + limits::HOLD_TTL_SECS;
        let done = s.upkeep(later, false).await.unwrap();
        assert_eq!(done.holds_released, 1);
        assert_eq!(
            s.charge(&hold.id, None).await.unwrap().status,
            ChargeStatus::Canceled
        );
        assert_eq!(spend(s, &token, later).await, (0, 0));
        assert_conflict(
            s.capture_charge(&hold.id, None, None, later, None).await,
            "charge_not_capturable",
        );
        // A charge releases its token's expired holds itself.
        let hold2 = s
            .create_charge(new_charge(&fx, &token, 9_000, false), later, None)
            .await
            .unwrap();
        let after = later + limits::HOLD_TTL_SECS;
        s.create_charge(new_charge(&fx, &token, 9_500, true), after, None)
            .await
            .unwrap();
        assert_eq!(
            s.charge(&hold2.id, None).await.unwrap().status,
            ChargeStatus::Canceled
        );
        assert_eq!(spend(s, &token, after).await, (9_500, 0));
        assert_eq!(s.upkeep(after, false).await.unwrap(), Upkeep::default());
        assert_ledger_balanced(s).await;
        assert_audit_valid(s).await;
    }

    pub async fn settlement_and_payouts_through_upkeep(s: Shared) {
        let s = s.as_ref();
        let config = LedgerConfig::default();
        let fx = fixture(s).await;
        let (token, _) = issue(
            s,
            &fx,
            Issue {
                cap: 1_000_000,
                period: Period::None,
                ..Default::default()
            },
        )
        .await;
        let c = charge(s, &fx, &token, 10_000, true).await;
        let net = 10_000 - c.fee;
        let b = s.balance(&fx.provider).await.unwrap();
        assert_eq!((b[0].available, b[0].pending), (0, net));
        let payout = |amount| NewPayout {
            id: new_id("po"),
            provider_id: fx.provider.clone(),
            currency: Currency::Usd,
            amount,
        };
        assert_conflict(
            s.create_payout(payout(None), NOW, None).await,
            "insufficient_available_balance",
        );
        let settle_at = NOW + config.settlement_delay_secs;
        assert_eq!(s.upkeep(settle_at - 1, false).await.unwrap().settlements, 0);
        assert_eq!(s.upkeep(settle_at, false).await.unwrap().settlements, 1);
        let b = s.balance(&fx.provider).await.unwrap();
        assert_eq!((b[0].available, b[0].pending), (net, 0));
        assert_conflict(
            s.create_payout(payout(Some(net + 1)), settle_at, None)
                .await,
            "insufficient_available_balance",
        );
        assert_not_found(
            s.create_payout(
                NewPayout {
                    provider_id: "prov_missing".into(),
                    ..payout(None)
                },
                settle_at,
                None,
            )
            .await,
            "provider",
        );
        let p = s
            .create_payout(payout(Some(1_000)), settle_at, None)
            .await
            .unwrap();
        assert_eq!(
            (p.status, p.amount, p.automatic),
            (PayoutStatus::InTransit, 1_000, false)
        );
        let arrived = p.arrival_date;
        assert_eq!(s.upkeep(arrived, false).await.unwrap().payouts_paid, 1);
        assert_eq!(
            s.payout(&p.id, Some(&fx.provider)).await.unwrap().status,
            PayoutStatus::Paid
        );
        assert_not_found(s.payout(&p.id, Some("prov_other")).await, "payout");
        // Automatic payouts: everything available, once a UTC day.
        let auto = s.upkeep(arrived, true).await.unwrap();
        assert_eq!(auto.payouts_created, 1);
        assert_eq!(
            s.upkeep(arrived + 60, true).await.unwrap().payouts_created,
            0
        );
        let b = s.balance(&fx.provider).await.unwrap();
        assert_eq!(b[0].available, 0);
        let listed = s.payouts(Some(&fx.provider), page(10)).await.unwrap();
        assert_eq!(listed.data.len(), 2);
        assert!(listed.data[0].automatic);
        assert_eq!(listed.data[0].amount, net - 1_000);
        // A refund after settlement comes out of the available balance.
        s.create_refund(
            NewRefund {
                id: new_id("re"),
                charge_id: c.id.clone(),
                amount: Some(500),
                metadata: Metadata::new(),
            },
            None,
            arrived,
            None,
        )
        .await
        .unwrap();
        let b = s.balance(&fx.provider).await.unwrap();
        assert_eq!(b[0].available, -500);
        let report = s.ledger_report(Some(NOW), Some(arrived + 1)).await.unwrap();
        assert_eq!(report[0].paid_out, net);
        assert_eq!(report[0].refunds, 500);
        assert!(s
            .ledger_report(Some(arrived + 10), None)
            .await
            .unwrap()
            .is_empty());
        let v = s.verify_ledger().await.unwrap();
        assert!(v.balanced(), "{v:?}");
        assert!(
            v.transactions >= 6 && v.entries >= 12 && v.accounts >= 5,
            "{v:?}"
        );
        assert_audit_valid(s).await;
    }

    /// An endpoint added, changed or deleted is what the very next event
    /// goes to (the embedded store's writer keeps each party's endpoints).
    pub async fn endpoints_see_the_events_after_each_change(s: Shared) {
        let s = s.as_ref();
        let fx = fixture(s).await;
        let owner = Owner::Provider(fx.provider.clone());
        let (token, _) = issue(s, &fx, Issue::default()).await;
        charge(s, &fx, &token, 100, true).await;
        let endpoint = WebhookEndpoint {
            id: new_id("we"),
            owner: owner.clone(),
            url: "http://127.0.0.1:9/hook".into(),
            enabled_events: vec!["charge.succeeded".into()],
            description: None,
            status: "enabled".into(),
            created: NOW,
        };
        let sealed_secret = Sealed {
            key_id: "dk_test".into(),
            nonce: vec![4; 12],
            ciphertext: vec![5; 40],
        };
        s.create_webhook_endpoint(
            NewWebhookEndpoint {
                endpoint: endpoint.clone(),
                sealed_secret,
            },
            None,
        )
        .await
        .unwrap();
        let delivered = || async {
            s.deliveries(&endpoint.id, Some(owner.clone()), page(100))
                .await
                .unwrap()
                .data
                .len()
        };
        assert_eq!(delivered().await, 0, "events before it are not sent");
        charge(s, &fx, &token, 100, true).await;
        assert_eq!(delivered().await, 1, "added: the next charge goes to it");
        s.update_webhook_endpoint(
            &endpoint.id,
            Some(owner.clone()),
            EndpointUpdate {
                enabled_events: Some(vec!["charge.refunded".into()]),
                ..EndpointUpdate::default()
            },
            NOW,
            None,
        )
        .await
        .unwrap();
        charge(s, &fx, &token, 100, true).await;
        assert_eq!(delivered().await, 1, "changed: it no longer wants charges");
        s.update_webhook_endpoint(
            &endpoint.id,
            Some(owner.clone()),
            EndpointUpdate {
                enabled_events: Some(vec!["*".into()]),
                ..EndpointUpdate::default()
            },
            NOW,
            None,
        )
        .await
        .unwrap();
        charge(s, &fx, &token, 100, true).await;
        assert_eq!(delivered().await, 2, "changed back");
    }

    pub async fn events_and_deliveries(s: Shared) {
        let s = s.as_ref();
        let fx = fixture(s).await;
        let owner = Owner::Provider(fx.provider.clone());
        let endpoint = WebhookEndpoint {
            id: new_id("we"),
            owner: owner.clone(),
            url: "http://127.0.0.1:9/hook".into(),
            enabled_events: vec!["charge.succeeded".into()],
            description: None,
            status: "enabled".into(),
            created: NOW,
        };
        s.create_webhook_endpoint(
            NewWebhookEndpoint {
                endpoint: endpoint.clone(),
                sealed_secret: Sealed {
                    key_id: "dk_test".into(),
                    nonce: vec![4; 12],
                    ciphertext: vec![5; 40],
                },
            },
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            s.webhook_endpoint(&endpoint.id, Some(owner.clone()))
                .await
                .unwrap(),
            endpoint
        );
        assert_not_found(
            s.webhook_endpoint(&endpoint.id, Some(Owner::Customer(fx.customer.clone())))
                .await,
            "webhook_endpoint",
        );
        let (token, _) = issue(s, &fx, Issue::default()).await;
        let c = charge(s, &fx, &token, 300, true).await;
        // The event carries the charge as rendered when it happened.
        let events = s
            .events(
                EventFilter {
                    provider_id: Some(fx.provider.clone()),
                    ..Default::default()
                },
                page(10),
            )
            .await
            .unwrap();
        assert_eq!(events.data.len(), 1, "providers see charges, not tokens");
        let e = &events.data[0];
        assert_eq!((e.kind.as_str(), e.created), ("charge.succeeded", NOW));
        let body: serde_json::Value = serde_json::from_str(&e.json).unwrap();
        assert_eq!(body["id"], e.id.as_str());
        assert_eq!(body["object"], "event");
        assert_eq!(body["data"]["object"]["id"], c.id.as_str());
        assert_not_found(
            s.event(
                &e.id,
                EventFilter {
                    customer_id: Some("cus_other".into()),
                    ..Default::default()
                },
            )
            .await,
            "event",
        );
        assert_eq!(
            s.event(
                &e.id,
                EventFilter {
                    customer_id: Some(fx.customer.clone()),
                    ..Default::default()
                }
            )
            .await
            .unwrap(),
            *e
        );
        // One delivery, claimed once, leased while it is out.
        let real_now = scrip_server::clock::system_now();
        let jobs = s
            .claim_deliveries(real_now, 10, HashMap::new())
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].body, e.json);
        assert_eq!(jobs[0].url, endpoint.url);
        assert!(s
            .claim_deliveries(real_now, 10, HashMap::new())
            .await
            .unwrap()
            .is_empty());
        s.record_delivery_attempt(
            &jobs[0].delivery_id,
            AttemptOutcome {
                succeeded: false,
                attempt: DeliveryAttempt {
                    attempted_at: real_now,
                    status_code: Some(500),
                    latency_ms: 12,
                    error: None,
                },
                retry_at: Some(real_now),
            },
            real_now,
        )
        .await
        .unwrap();
        let again = s
            .claim_deliveries(real_now, 10, HashMap::new())
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempt_count, 1);
        assert_eq!(again[0].first_attempt_at, Some(real_now));
        s.record_delivery_attempt(
            &again[0].delivery_id,
            AttemptOutcome {
                succeeded: true,
                attempt: DeliveryAttempt {
                    attempted_at: real_now + 1,
                    status_code: Some(200),
                    latency_ms: 3,
                    error: None,
                },
                retry_at: None,
            },
            real_now + 1,
        )
        .await
        .unwrap();
        let deliveries = s
            .deliveries(&endpoint.id, Some(owner.clone()), page(10))
            .await
            .unwrap();
        let d = &deliveries.data[0];
        assert_eq!((d.status.as_str(), d.attempt_count), ("succeeded", 2));
        assert_eq!(
            d.attempts.iter().map(|a| a.status_code).collect::<Vec<_>>(),
            vec![Some(200), Some(500)],
            "newest first"
        );
        // A resend re-arms it; an in-flight cap of the endpoint holds.
        assert_eq!(
            s.resend_event(&e.id, EventFilter::default(), Some(owner.clone()), None)
                .await
                .unwrap(),
            1
        );
        // The resend arms it at the real time it ran: claim after that.
        let later = scrip_server::clock::system_now() + 1;
        let full: HashMap<String, usize> = [(
            endpoint.id.clone(),
            limits::WEBHOOK_IN_FLIGHT_PER_ENDPOINT_MAX,
        )]
        .into();
        assert!(s
            .claim_deliveries(later, 10, full)
            .await
            .unwrap()
            .is_empty());
        let out = s.claim_deliveries(later, 10, HashMap::new()).await.unwrap();
        assert_eq!(out.len(), 1);
        // A resend while that attempt is out is not undone when the
        // attempt's outcome is recorded: the delivery goes out once more.
        assert_eq!(
            s.resend_event(&e.id, EventFilter::default(), Some(owner.clone()), None)
                .await
                .unwrap(),
            1
        );
        let delivered = |at: i64| AttemptOutcome {
            succeeded: true,
            attempt: DeliveryAttempt {
                attempted_at: at,
                status_code: Some(200),
                latency_ms: 3,
                error: None,
            },
            retry_at: None,
        };
        s.record_delivery_attempt(&out[0].delivery_id, delivered(later), later)
            .await
            .unwrap();
        let later = scrip_server::clock::system_now() + 1;
        let rearmed = s.claim_deliveries(later, 10, HashMap::new()).await.unwrap();
        assert_eq!(
            rearmed.len(),
            1,
            "the resend outlives the attempt that was out"
        );
        assert_eq!(rearmed[0].attempt_count, 3);
        s.record_delivery_attempt(&rearmed[0].delivery_id, delivered(later), later)
            .await
            .unwrap();
        assert!(s
            .claim_deliveries(later, 10, HashMap::new())
            .await
            .unwrap()
            .is_empty());
        let deliveries = s.deliveries(&endpoint.id, None, page(10)).await.unwrap();
        assert_eq!(
            (
                deliveries.data[0].status.as_str(),
                deliveries.data[0].attempt_count
            ),
            ("succeeded", 4)
        );
        assert_eq!(deliveries.data.len(), 1, "re-armed, not added");
        // Update, list, delete: a deleted endpoint gets nothing more.
        let updated = s
            .update_webhook_endpoint(
                &endpoint.id,
                Some(owner.clone()),
                EndpointUpdate {
                    enabled_events: Some(vec!["*".into()]),
                    description: Some("all".into()),
                    ..Default::default()
                },
                NOW,
                None,
            )
            .await
            .unwrap();
        assert_eq!(updated.enabled_events, vec!["*".to_owned()]);
        assert_eq!(
            s.webhook_endpoints(Some(owner.clone()), page(10))
                .await
                .unwrap()
                .data,
            vec![updated.clone()]
        );
        s.delete_webhook_endpoint(&endpoint.id, Some(owner.clone()), NOW)
            .await
            .unwrap();
        assert_not_found(
            s.webhook_endpoint(&endpoint.id, None).await,
            "webhook_endpoint",
        );
        assert!(s
            .webhook_endpoints(None, page(10))
            .await
            .unwrap()
            .data
            .is_empty());
        charge(s, &fx, &token, 300, true).await;
        assert!(s
            .claim_deliveries(real_now + 120, 10, HashMap::new())
            .await
            .unwrap()
            .is_empty());
        assert_audit_valid(s).await;
    }

    pub async fn concurrent_claims_never_share_a_delivery(s: Shared) {
        let fx = Arc::new(fixture(s.as_ref()).await);
        // Twelve endpoints with every event: 12 deliveries per event.
        for i in 0..12 {
            s.create_webhook_endpoint(
                NewWebhookEndpoint {
                    endpoint: WebhookEndpoint {
                        id: new_id("we"),
                        owner: Owner::Provider(fx.provider.clone()),
                        url: format!("http://127.0.0.1:9/hook/{i}"),
                        enabled_events: vec!["*".into()],
                        description: None,
                        status: "enabled".into(),
                        created: NOW,
                    },
                    sealed_secret: Sealed {
                        key_id: "dk_test".into(),
                        nonce: vec![4; 12],
                        ciphertext: vec![5; 40],
                    },
                },
                None,
            )
            .await
            .unwrap();
        }
        let (token, _) = issue(
            s.as_ref(),
            &fx,
            Issue {
                cap: 1_000_000,
                ..Default::default()
            },
        )
        .await;
        for _ in 0..5 {
            charge(s.as_ref(), &fx, &token, 100, true).await;
        }
        let real_now = scrip_server::clock::system_now();
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let jobs = s
                        .claim_deliveries(real_now, 7, HashMap::new())
                        .await
                        .unwrap();
                    if jobs.is_empty() {
                        return mine;
                    }
                    mine.extend(jobs.into_iter().map(|j| j.delivery_id));
                }
            }));
        }
        let mut seen = HashSet::new();
        let mut total = 0;
        for t in tasks {
            for id in t.await.unwrap() {
                total += 1;
                assert!(seen.insert(id), "a delivery was claimed twice");
            }
        }
        assert_eq!(total, 60, "every delivery claimed exactly once");
    }

    pub async fn a_long_backlog_does_not_starve_other_endpoints(s: Shared) {
        let fx = fixture(s.as_ref()).await;
        let endpoint = |url: &str| NewWebhookEndpoint {
            endpoint: WebhookEndpoint {
                id: new_id("we"),
                owner: Owner::Provider(fx.provider.clone()),
                url: url.to_owned(),
                enabled_events: vec!["*".into()],
                description: None,
                status: "enabled".into(),
                created: NOW,
            },
            sealed_secret: Sealed {
                key_id: "dk_test".into(),
                nonce: vec![4; 12],
                ciphertext: vec![5; 40],
            },
        };
        let busy = s
            .create_webhook_endpoint(endpoint("http://127.0.0.1:9/busy"), None)
            .await
            .unwrap();
        let (token, _) = issue(
            s.as_ref(),
            &fx,
            Issue {
                cap: 1_000_000,
                ..Default::default()
            },
        )
        .await;
        // A backlog longer than a claim looks at, all due before the other
        // endpoint's one delivery.
        for _ in 0..80 {
            charge(s.as_ref(), &fx, &token, 100, true).await;
        }
        let quiet = s
            .create_webhook_endpoint(endpoint("http://127.0.0.1:9/quiet"), None)
            .await
            .unwrap();
        charge(s.as_ref(), &fx, &token, 100, true).await;
        let real_now = scrip_server::clock::system_now() + 1;
        let jobs = s
            .claim_deliveries(real_now, 7, HashMap::new())
            .await
            .unwrap();
        let per = |id: &str| jobs.iter().filter(|j| j.endpoint_id == id).count();
        assert_eq!(
            per(&busy.id),
            limits::WEBHOOK_IN_FLIGHT_PER_ENDPOINT_MAX,
            "the busy endpoint gets its share"
        );
        assert_eq!(per(&quiet.id), 1, "and the other one is not crowded out");
    }

    /// Refusals recorded at once (on PostgreSQL, several to a transaction)
    /// each keep the caller and request they came from.
    pub async fn concurrent_refusals_keep_each_callers_identity(s: Shared) {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let s = s.clone();
            let ctx = scrip_server::context::RequestContext::new(format!("req_{i}"));
            ctx.set_actor(&format!("prov_{i}"));
            tasks.push(tokio::spawn(scrip_server::context::scope(
                ctx,
                async move {
                    s.record_refusal(
                        ChargeAttempt {
                            token_id: Some(format!("pt_{i}")),
                            provider_id: format!("prov_{i}"),
                            code: "cap_exceeded".into(),
                        },
                        NOW + i,
                    )
                    .await
                    .unwrap();
                },
            )));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_audit_valid(s.as_ref()).await;
        let records = s.audit_events(page(100)).await.unwrap();
        assert_eq!(records.data.len(), 40);
        for r in &records.data {
            let i = r.object_id.strip_prefix("pt_").unwrap();
            assert_eq!(r.action, "charge.refused");
            assert_eq!(r.actor, format!("prov_{i}"));
            assert_eq!(r.request_id.as_deref(), Some(format!("req_{i}").as_str()));
            assert_eq!(r.created, NOW + i.parse::<i64>().unwrap());
            assert_eq!(r.code.as_deref(), Some("cap_exceeded"));
        }
    }

    pub async fn audit_chain_stays_linear_under_concurrency(s: Shared) {
        let before = s.verify_audit().await.unwrap();
        assert_eq!((before.records, before.head_hash), (0, None));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                s.create_customer(
                    Customer {
                        id: new_id("cus"),
                        email: None,
                        name: Some(format!("c{i}")),
                        metadata: Metadata::new(),
                        created: NOW + i,
                    },
                    None,
                )
                .await
                .unwrap();
                s.record_refusal(
                    ChargeAttempt {
                        token_id: None,
                        provider_id: "prov_x".into(),
                        code: "token_invalid".into(),
                    },
                    NOW + i,
                )
                .await
                .unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let v = assert_audit_valid(s.as_ref()).await;
        assert_eq!(v.records, 80);
        let records = s.audit_events(page(100)).await.unwrap();
        assert_eq!(records.data.len(), 80);
        assert_eq!(records.data[0].seq, 80, "newest first");
        assert_eq!(v.head_hash, Some(records.data[0].hash));
        for pair in records.data.windows(2) {
            assert_eq!(pair[0].prev_hash, pair[1].hash);
            assert_eq!(pair[0].seq, pair[1].seq + 1);
        }
        let refused = records
            .data
            .iter()
            .filter(|r| r.action == "charge.refused")
            .count();
        assert_eq!(refused, 40);
        assert!(records
            .data
            .iter()
            .all(|r| r.actor == "system" && r.request_id.is_none()));
    }
}

// --- PostgreSQL only: starting nodes ------------------------------------------------

/// Several nodes may start at once on an empty schema; a schema newer than
/// the binary, or an unreachable server, is a clear error at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_start_migrates_once_and_refuses_what_it_cannot_use() {
    let Some(base) = postgres_url() else {
        report("conformance postgres_start: skipped (SCRIP_TEST_POSTGRES_URL is not set)");
        return;
    };
    let schema = format!("scrip_test_{}", hex::encode(rand::random::<[u8; 6]>()));
    PgStore::create_schema(&base, &schema).await.unwrap();
    let url = url_with_search_path(&base, &schema);
    let outcome = tokio::spawn({
        let url = url.clone();
        async move {
            let starts: Vec<_> = (0..4)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(
                        async move { PgStore::connect(&url, LedgerConfig::default()).await },
                    )
                })
                .collect();
            let mut stores = Vec::new();
            for s in starts {
                stores.push(s.await.unwrap().expect("every node starts"));
            }
            stores[0].health().await.unwrap();
            drop(stores);
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            let driver = tokio::spawn(connection);
            let applied: i64 = client
                .query_one("SELECT COUNT(*) FROM schema_migrations", &[])
                .await
                .unwrap()
                .get(0);
            assert_eq!(applied, 6, "each migration applied once");
            let other: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM information_schema.columns col
                     JOIN information_schema.tables t
                       ON t.table_schema = col.table_schema AND t.table_name = col.table_name
                     WHERE col.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
                       AND col.data_type = 'text' AND col.collation_name IS DISTINCT FROM 'C'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(other, 0, "every text column compares bytewise");
            client
                .execute(
                    "INSERT INTO schema_migrations (version, applied) VALUES (999, 0)",
                    &[],
                )
                .await
                .unwrap();
            drop(client);
            let _ = driver.await;
            let err = PgStore::connect(&url, LedgerConfig::default())
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("newer than this binary"), "{err}");
            let err = PgStore::connect(
                "postgres://postgres@127.0.0.1:1/test",
                LedgerConfig::default(),
            )
            .await
            .unwrap_err()
            .to_string();
            assert!(
                err.contains("cannot connect to PostgreSQL at postgres@127.0.0.1:1/test"),
                "{err}"
            );
        }
    })
    .await;
    PgStore::drop_schema(&base, &schema).await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    report("conformance postgres_start: passed on postgres");
}

// --- PostgreSQL only: charges decided together ------------------------------------

/// Concurrent charges on PostgreSQL share a transaction (a batch). This
/// runs one batch, whose size is otherwise up to timing, and checks that
/// each charge gets the answer it would get alone at its place in line:
/// later charges see the spend of earlier ones, on the token and on a
/// shared ancestor; a refusal, an unknown token or a second use of a
/// single-use token touches nothing else; a repeated idempotency key has
/// one effect; a refused charge lets its key go.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_batch_decides_each_charge_in_its_place() {
    let Some(base) = postgres_url() else {
        report("postgres_batch_decides_each_charge_in_its_place: PostgreSQL not configured");
        return;
    };
    in_fresh_schema(&base, |store| async move { batch_case(&store).await }).await;
    report("postgres_batch_decides_each_charge_in_its_place: passed on postgres");
}

async fn batch_case(store: &PgStore) {
    let s: &dyn Store = store;
    let fx = fixture(s).await;
    let issue_with = |cap: i64, usage: Usage, parent: Option<String>| Issue {
        cap,
        usage,
        parent,
        ..Default::default()
    };
    let (t1, _) = issue(s, &fx, issue_with(1_000, Usage::MultiUse, None)).await;
    let (parent, _) = issue(s, &fx, issue_with(500, Usage::MultiUse, None)).await;
    let (c1, _) = issue(
        s,
        &fx,
        issue_with(1_000, Usage::MultiUse, Some(parent.clone())),
    )
    .await;
    let (c2, _) = issue(
        s,
        &fx,
        issue_with(1_000, Usage::MultiUse, Some(parent.clone())),
    )
    .await;
    let (single, _) = issue(s, &fx, issue_with(1_000, Usage::SingleUse, None)).await;
    let (t2, _) = issue(s, &fx, issue_with(1_000, Usage::MultiUse, None)).await;
    let before = s.write_stats();

    let plain = |token: &str, amount: i64, capture: bool| {
        (new_charge(&fx, token, amount, capture), NOW, None)
    };
    let keyed = |token: &str, amount: i64, key: &str| {
        (
            new_charge(&fx, token, amount, true),
            NOW,
            Some(idem::<Charge>(&fx.provider, key, b"{\"remembered\":true}")),
        )
    };
    let mut answers = store
        .create_charges_together(vec![
            plain(&t1, 600, true),          // 0: allowed
            plain(&t1, 600, true),          // 1: 400 left: refused
            plain(&t1, 300, false),         // 2: a hold in what is left
            plain("pt_missing", 100, true), // 3: no such token
            plain(&c1, 400, true),          // 4: allowed, the parent now at 400
            plain(&c2, 400, true),          // 5: the parent has 100 left: refused
            plain(&single, 100, true),      // 6: allowed, exhausts the token
            plain(&single, 100, true),      // 7: exhausted
            keyed(&t2, 100, "order-1"),     // 8: allowed
            keyed(&t2, 100, "order-1"),     // 9: the same key: one effect
            keyed(&t1, 5_000, "order-2"),   // 10: refused, the key let go
        ])
        .await
        .into_iter();
    let mut next = || answers.next().unwrap();
    let first = next().unwrap();
    assert_eq!((first.token_id.as_str(), first.amount), (t1.as_str(), 600));
    assert_refused(next(), "cap_exceeded");
    assert_eq!(next().unwrap().status, ChargeStatus::RequiresCapture);
    assert_not_found(next(), "payment_token");
    next().unwrap();
    assert_refused(next(), "cap_exceeded");
    next().unwrap();
    assert_refused(next(), "token_exhausted");
    let keyed_charge = next().unwrap();
    assert!(matches!(next(), Err(StoreError::IdempotencyRace)));
    assert_refused(next(), "cap_exceeded");

    // What the store holds agrees.
    assert_eq!(spend(s, &t1, NOW).await, (600, 300));
    assert_eq!(spend(s, &parent, NOW).await, (400, 0));
    assert_eq!(spend(s, &c1, NOW).await, (400, 0));
    assert_eq!(spend(s, &c2, NOW).await, (0, 0));
    assert_eq!(spend(s, &t2, NOW).await, (100, 0));
    assert_eq!(
        s.token(&single, None, NOW).await.unwrap().status,
        Status::Exhausted
    );
    let on_t2 = s
        .charges(
            ChargeFilter {
                token_id: Some(t2.clone()),
                ..Default::default()
            },
            page(10),
        )
        .await
        .unwrap();
    assert_eq!(on_t2.data.len(), 1);
    assert_eq!(on_t2.data[0].id, keyed_charge.id);
    let remembered = s
        .idempotent_response(&fx.provider, "order-1", NOW + 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(remembered.sealed_body.ciphertext, b"{\"remembered\":true}");
    assert!(s
        .idempotent_response(&fx.provider, "order-2", NOW + 1)
        .await
        .unwrap()
        .is_none());
    // One transaction decided the eleven; the repeated key ran alone after.
    let after = s.write_stats();
    assert_eq!(after.groups - before.groups, 2);
    assert_eq!(after.operations - before.operations, 12);

    // The refused charge's key is free for the next request.
    s.create_charge(
        new_charge(&fx, &t2, 100, true),
        NOW,
        Some(idem(&fx.provider, "order-2", b"{}")),
    )
    .await
    .unwrap();
    assert_eq!(spend(s, &t2, NOW).await, (200, 0));
    let succeeded = s
        .events(
            EventFilter {
                kind: Some("charge.succeeded".into()),
                ..Default::default()
            },
            page(100),
        )
        .await
        .unwrap();
    assert_eq!(succeeded.data.len(), 6);

    // A charge the database refuses (PostgreSQL text cannot hold NUL) fails
    // the batch's transaction: every charge of it runs again alone, and
    // only that one fails.
    let (t3, _) = issue(s, &fx, issue_with(1_000, Usage::MultiUse, None)).await;
    let mut poisoned = new_charge(&fx, &t3, 50, true);
    poisoned.description = Some("nul \u{0} inside".into());
    let before = s.write_stats();
    let answers = store
        .create_charges_together(vec![
            plain(&t3, 100, true),
            (poisoned, NOW, None),
            plain(&t3, 200, true),
        ])
        .await;
    assert_eq!(answers[0].as_ref().unwrap().amount, 100);
    assert!(
        matches!(&answers[1], Err(StoreError::Invalid { param: "text", .. })),
        "{:?}",
        answers[1]
    );
    assert_eq!(answers[2].as_ref().unwrap().amount, 200);
    let after = s.write_stats();
    assert_eq!(
        after.groups - before.groups,
        2,
        "the two good charges, each alone"
    );
    assert_eq!(spend(s, &t3, NOW).await, (300, 0));
    assert_ledger_balanced(s).await;
    assert_audit_valid(s).await;
}

/// PostgreSQL answers concurrent lookups of secrets and charge contexts
/// several to a statement. One such statement, over keys that exercise
/// every case, gives each key what a lookup of it alone gives: the right
/// principal or none, a derived token's whole chain, the spend of the
/// window asked for (the exact read when the clock was set back), the
/// same answer twice for a key asked twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_lookups_answer_each_key_in_its_place() {
    let Some(base) = postgres_url() else {
        report("postgres_lookups_answer_each_key_in_its_place: PostgreSQL not configured");
        return;
    };
    in_fresh_schema(&base, |store| async move { lookups_case(&store).await }).await;
    report("postgres_lookups_answer_each_key_in_its_place: passed on postgres");
}

async fn lookups_case(store: &PgStore) {
    let s: &dyn Store = store;
    let fx = fixture(s).await;
    let credential = || Credential {
        id: new_id("oc"),
        customer_id: fx.customer.clone(),
        name: None,
        active: true,
        created: NOW,
        revoked_at: None,
    };
    let orch = hash_secret(&new_id("sk_orch"));
    let live = s.create_credential(credential(), orch, None).await.unwrap();
    let gone = hash_secret(&new_id("sk_orch"));
    let revoked = s.create_credential(credential(), gone, None).await.unwrap();
    s.revoke_credential(&revoked.id, NOW, None).await.unwrap();
    let prov = hash_secret(&new_id("sk_prov"));
    let provider = s
        .create_provider(
            Provider {
                id: new_id("prov"),
                name: "Fly".into(),
                metadata: Metadata::new(),
                created: NOW,
            },
            prov,
            None,
        )
        .await
        .unwrap();
    let (leaf, leaf_secret) = issue(s, &fx, Issue::default()).await;
    let (parent, parent_secret) = issue(s, &fx, Issue::default()).await;
    let (child, child_secret) = issue(
        s,
        &fx,
        Issue {
            parent: Some(parent.clone()),
            ..Default::default()
        },
    )
    .await;
    charge(s, &fx, &leaf, 700, true).await;
    charge(s, &fx, &child, 300, false).await;
    let unknown = hash_secret(&new_id("scrip_pt"));

    // Secrets.
    let secrets = vec![orch, unknown, prov, leaf_secret, gone, orch];
    let together = store.resolve_secrets_together(secrets.clone()).await;
    let expected = [
        Some(Principal::Orchestrator {
            credential_id: live.id.clone(),
            customer_id: fx.customer.clone(),
        }),
        None,
        Some(Principal::Provider {
            provider_id: provider.id.clone(),
        }),
        Some(Principal::Token {
            token_id: leaf.clone(),
        }),
        None,
        Some(Principal::Orchestrator {
            credential_id: live.id.clone(),
            customer_id: fx.customer.clone(),
        }),
    ];
    for ((hash, got), want) in secrets.iter().zip(together).zip(&expected) {
        assert_eq!(&got.unwrap(), want);
        assert_eq!(&s.resolve_secret(*hash).await.unwrap(), want, "alone");
    }

    // Charge contexts. Forty days back is before the spend rows' month:
    // the newest row is newer than that window, so it is read exactly.
    let back = NOW - 40 * DAY;
    let keys = vec![
        (leaf_secret, NOW),
        (unknown, NOW),
        (child_secret, NOW),
        (parent_secret, NOW),
        (leaf_secret, back),
        (prov, NOW),
        (leaf_secret, NOW),
    ];
    let together: Vec<Option<ChargeContext>> = store
        .charge_contexts_together(keys.clone())
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    for ((hash, now), got) in keys.iter().zip(&together) {
        let alone = s.charge_context(*hash, *now).await.unwrap();
        assert_eq!(format!("{got:?}"), format!("{alone:?}"), "alone");
    }
    let spends = |ctx: &Option<ChargeContext>| -> Vec<(i64, i64)> {
        ctx.as_ref()
            .unwrap()
            .chain
            .iter()
            .map(|l| (l.spend.captured, l.spend.pending))
            .collect()
    };
    let id = |ctx: &Option<ChargeContext>| ctx.as_ref().unwrap().token_id.clone();
    assert_eq!(
        (id(&together[0]), spends(&together[0])),
        (leaf.clone(), vec![(700, 0)])
    );
    assert!(together[1].is_none(), "no such token");
    assert_eq!(
        (id(&together[2]), spends(&together[2])),
        (child.clone(), vec![(0, 300), (0, 300)]),
        "the child, then its parent"
    );
    assert_eq!(
        (id(&together[3]), spends(&together[3])),
        (parent, vec![(0, 300)])
    );
    assert_eq!(
        spends(&together[4]),
        vec![(0, 0)],
        "nothing spent 40 days back"
    );
    assert!(together[5].is_none(), "a provider's secret is not a token");
    assert_eq!(spends(&together[6]), vec![(700, 0)]);
}
