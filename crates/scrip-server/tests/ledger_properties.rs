//! Property test of the money path on the real embedded store: random
//! sequences of token issues (roots and derived children), charges, holds,
//! captures, cancels, refunds, payouts and clock jumps over several tokens
//! and providers. Afterwards the ledger balances,
//! no token's spend exceeds its cap in any period, balances equal the sum of
//! their entries, and each provider's money adds up to captured − refunds −
//! fees.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use scrip_core::money::{CapAmount, ChargeAmount, Currency};
use scrip_core::period::Period;
use scrip_core::token::{StoredStatus, Usage};
use scrip_server::secrets::{hash_secret, new_id};
use scrip_server::store::model::*;
use scrip_server::store::sqlite::SqliteStore;
use scrip_server::store::{LedgerConfig, Store, StoreError};
use scrip_server::vault::Sealed;

#[derive(Clone, Debug)]
enum Op {
    Charge {
        token: usize,
        amount: i64,
        capture: bool,
    },
    Capture {
        hold: usize,
        percent: i64,
    },
    Cancel {
        hold: usize,
    },
    Refund {
        charge: usize,
        amount: Option<i64>,
    },
    Payout {
        provider: usize,
        amount: Option<i64>,
    },
    Advance {
        secs: i64,
    },
    /// A new token: a root for one provider, or a child of an existing one
    /// (narrower cap, its own period), which spends against both.
    Issue {
        parent: Option<usize>,
        provider: usize,
        cap: i64,
        period: usize,
    },
}

const PERIODS: [Period; 5] = [
    Period::Day,
    Period::Week,
    Period::Month,
    Period::Year,
    Period::None,
];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0usize..12, 1i64..2_500, any::<bool>()).prop_map(|(token, amount, capture)| Op::Charge { token, amount, capture }),
        2 => (0usize..8, 1i64..=100).prop_map(|(hold, percent)| Op::Capture { hold, percent }),
        1 => (0usize..8).prop_map(|hold| Op::Cancel { hold }),
        2 => (0usize..16, proptest::option::of(1i64..1_500)).prop_map(|(charge, amount)| Op::Refund { charge, amount }),
        1 => (0usize..2, proptest::option::of(1i64..4_000)).prop_map(|(provider, amount)| Op::Payout { provider, amount }),
        2 => (0i64..4 * 86_400).prop_map(|secs| Op::Advance { secs }),
        1 => (proptest::option::of(0usize..8), 0usize..2, 100i64..6_000, 0usize..5)
            .prop_map(|(parent, provider, cap, period)| Op::Issue { parent, provider, cap, period }),
    ]
}

struct Setup {
    store: SqliteStore,
    tokens: Vec<(String, String)>, // (token id, provider id)
    providers: Vec<String>,
    /// A token to copy the customer, credential and card from.
    template: scrip_server::store::model::Token,
}

async fn setup(dir: &std::path::Path, now: i64) -> Setup {
    let store = SqliteStore::open(&dir.join("db"), LedgerConfig::default()).unwrap();
    let customer = store
        .create_customer(
            Customer {
                id: new_id("cus"),
                email: None,
                name: None,
                metadata: Metadata::new(),
                created: now,
            },
            None,
        )
        .await
        .unwrap();
    let credential = store
        .create_credential(
            Credential {
                id: new_id("oc"),
                customer_id: customer.id.clone(),
                name: None,
                active: true,
                created: now,
                revoked_at: None,
            },
            hash_secret(&new_id("sk_orch")),
            None,
        )
        .await
        .unwrap();
    let mut providers = Vec::new();
    for name in ["a", "b"] {
        let p = store
            .create_provider(
                Provider {
                    id: new_id("prov"),
                    name: name.into(),
                    metadata: Metadata::new(),
                    created: now,
                },
                hash_secret(&new_id("sk_prov")),
                None,
            )
            .await
            .unwrap();
        providers.push(p.id);
    }
    let pm = store
        .create_payment_method(
            NewPaymentMethod {
                method: PaymentMethod {
                    id: new_id("pm"),
                    customer_id: customer.id.clone(),
                    active: true,
                    brand: "visa".into(),
                    last4: "4242".into(),
                    exp_month: 12,
                    exp_year: 2040,
                    fingerprint: "f".into(),
                    created: now,
                },
                sealed_number: Sealed {
                    key_id: "dk_x".into(),
                    nonce: vec![0; 12],
                    ciphertext: vec![1; 32],
                },
            },
            None,
        )
        .await
        .unwrap();
    let mut tokens = Vec::new();
    let mut template = None;
    for (i, (period, cap)) in [
        (Period::Day, 4_000),
        (Period::Week, 6_000),
        (Period::Month, 9_000),
        (Period::None, 5_000),
    ]
    .into_iter()
    .enumerate()
    {
        let provider = providers[i % 2].clone();
        let t = store
            .create_token(
                NewToken {
                    token: scrip_server::store::model::Token {
                        id: new_id("pt"),
                        customer_id: customer.id.clone(),
                        credential_id: credential.id.clone(),
                        payment_method_id: pm.id.clone(),
                        provider_id: provider.clone(),
                        currency: Currency::Usd,
                        cap: CapAmount::new(cap).unwrap(),
                        period,
                        usage: Usage::MultiUse,
                        max_per_charge: None,
                        expires_at: now + 300 * 86_400,
                        parent_id: None,
                        stored_status: StoredStatus::Active,
                        metadata: Metadata::new(),
                        created: now,
                    },
                    secret_hash: hash_secret(&new_id("scrip_pt")),
                },
                now,
                None,
            )
            .await
            .unwrap();
        tokens.push((t.token.id.clone(), provider));
        template = Some(t.token);
    }
    Setup {
        store,
        tokens,
        providers,
        template: template.unwrap(),
    }
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().unwrap();
    let mut now = 1_800_000_000;
    let mut s = setup(dir.path(), now).await;
    let mut holds: Vec<String> = Vec::new();
    let mut captured: Vec<String> = Vec::new();
    for op in ops {
        match op {
            Op::Charge {
                token,
                amount,
                capture,
            } => {
                let (token_id, provider_id) = &s.tokens[token % s.tokens.len()];
                let new = NewCharge {
                    id: new_id("ch"),
                    token_id: token_id.clone(),
                    provider_id: provider_id.clone(),
                    amount: ChargeAmount::new(amount).unwrap(),
                    currency: Currency::Usd,
                    capture,
                    description: None,
                    metadata: Metadata::new(),
                    network_reference: "auth".into(),
                    decided_on: None,
                };
                match s.store.create_charge(new, now, None).await {
                    Ok(c) if capture => captured.push(c.id),
                    Ok(c) => holds.push(c.id),
                    Err(StoreError::Refused(_)) => {}
                    Err(e) => panic!("charge: {e}"),
                }
            }
            Op::Capture { hold, percent } => {
                if let Some(id) = holds.get(hold % holds.len().max(1)).cloned() {
                    let c = s.store.charge(&id, None).await.unwrap();
                    let amount = (c.amount * percent / 100).max(1);
                    match s
                        .store
                        .capture_charge(&id, None, Some(amount), now, None)
                        .await
                    {
                        Ok(_) => captured.push(id),
                        Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("capture: {e}"),
                    }
                }
            }
            Op::Cancel { hold } => {
                if let Some(id) = holds.get(hold % holds.len().max(1)) {
                    match s.store.cancel_charge(id, None, now, None).await {
                        Ok(_) | Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("cancel: {e}"),
                    }
                }
            }
            Op::Refund { charge, amount } => {
                if let Some(id) = captured.get(charge % captured.len().max(1)) {
                    let new = NewRefund {
                        id: new_id("re"),
                        charge_id: id.clone(),
                        amount,
                        metadata: Metadata::new(),
                    };
                    match s.store.create_refund(new, None, now, None).await {
                        Ok(_) | Err(StoreError::Conflict { .. }) => {}
                        Err(e) => panic!("refund: {e}"),
                    }
                }
            }
            Op::Payout { provider, amount } => {
                let new = NewPayout {
                    id: new_id("po"),
                    provider_id: s.providers[provider].clone(),
                    currency: Currency::Usd,
                    amount,
                };
                match s.store.create_payout(new, now, None).await {
                    Ok(_) | Err(StoreError::Conflict { .. }) => {}
                    Err(e) => panic!("payout: {e}"),
                }
            }
            Op::Advance { secs } => {
                now += secs;
                s.store.upkeep(now, false).await.unwrap();
            }
            Op::Issue {
                parent,
                provider,
                cap,
                period,
            } => {
                let parent = parent.map(|p| s.tokens[p % s.tokens.len()].clone());
                let provider_id = match &parent {
                    Some((_, provider_id)) => provider_id.clone(),
                    None => s.providers[provider].clone(),
                };
                let token = scrip_server::store::model::Token {
                    id: new_id("pt"),
                    provider_id: provider_id.clone(),
                    cap: CapAmount::new(cap).unwrap(),
                    period: PERIODS[period],
                    parent_id: parent.map(|(id, _)| id),
                    created: now,
                    expires_at: now + 300 * 86_400,
                    ..s.template.clone()
                };
                let t = s
                    .store
                    .create_token(
                        NewToken {
                            token,
                            secret_hash: hash_secret(&new_id("scrip_pt")),
                        },
                        now,
                        None,
                    )
                    .await
                    .unwrap();
                s.tokens.push((t.token.id, provider_id));
            }
        }
    }
    // The ledger balances and agrees with the charges and spends.
    let v = s.store.verify_ledger().await.unwrap();
    assert!(v.balanced(), "{v:?}");
    // No token's spend exceeds its cap in any period.
    let conn = rusqlite::Connection::open(dir.path().join("db")).unwrap();
    let over: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM token_spend s JOIN tokens t ON t.id = s.token_id
             WHERE s.captured + s.pending > t.cap_amount OR s.captured < 0 OR s.pending < 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(over, 0, "a spend row exceeds its cap");
    // Each provider: balance + paid out = captured − refunded − fees.
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut stmt = conn
        .prepare("SELECT provider_id, SUM(amount_captured - amount_refunded - fee) FROM charges GROUP BY provider_id")
        .unwrap();
    for row in stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .unwrap()
    {
        let (p, n) = row.unwrap();
        expected.insert(p, n);
    }
    let report = s.store.ledger_report(None, None).await.unwrap();
    for provider in &s.providers {
        let lines = s.store.balance(provider).await.unwrap();
        let held: i64 = lines.iter().map(|l| l.available + l.pending).sum();
        // Settlements only move what captures put in pending.
        assert!(
            lines.iter().all(|l| l.pending >= 0),
            "negative pending: {lines:?}"
        );
        let paid_out: i64 = conn
            .query_row(
                "SELECT COALESCE(SUM(amount), 0) FROM payouts WHERE provider_id = ?1",
                [provider],
                |r| r.get(0),
            )
            .unwrap();
        let want = expected.get(provider).copied().unwrap_or(0);
        assert_eq!(
            held + paid_out,
            want,
            "provider {provider}: balance {held} + paid out {paid_out}"
        );
        let line = report.iter().find(|l| &l.provider_id == provider);
        let net = line.map(|l| l.net).unwrap_or(0);
        assert_eq!(net, want, "the report's net for {provider}");
        assert_eq!(line.map(|l| l.paid_out).unwrap_or(0), paid_out);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]
    #[test]
    fn money_adds_up_after_any_sequence(ops in proptest::collection::vec(op(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops));
    }
}
