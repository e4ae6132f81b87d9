//! Criterion micro-benchmarks of the server's per-request work on the
//! charge path: hashing a presented secret (every request's authentication
//! and the token lookup), sealing and opening a card number in the vault,
//! the idempotency request digest, and the JSON that goes over the wire
//! (encoding a charge view, decoding a charge request body).
//!
//! Run with `cargo bench -p scrip-server` (add `-- --measurement-time 2
//! --warm-up-time 1` for a quick pass).

// Benchmark set-up builds fixed, known-valid inputs; if one were invalid the
// measurement would be meaningless, so it aborts loudly instead.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use scrip_core::card::CardNumber;
use scrip_core::money::Currency;
use scrip_server::api::views;
use scrip_server::secrets::{hash_secret, Secret, PREFIX_PROVIDER, PREFIX_TOKEN};
use scrip_server::store::model::{Charge, ChargeStatus};
use scrip_server::vault::{MasterKey, Vault};
use serde::Deserialize;

/// 2026-12-03T19:00:00Z.
const NOW: i64 = 1_796_324_400;

fn bench_secrets(c: &mut Criterion) {
    let token = Secret::generate(PREFIX_TOKEN);
    let provider = Secret::generate(PREFIX_PROVIDER);
    let mut group = c.benchmark_group("secrets");
    group.bench_function("hash_secret token", |b| {
        b.iter(|| hash_secret(black_box(token.expose())))
    });
    group.bench_function("hash_secret provider", |b| {
        b.iter(|| hash_secret(black_box(provider.expose())))
    });
    let stored = token.hash();
    group.bench_function("hash_secret + constant-time compare", |b| {
        b.iter(|| hash_secret(black_box(token.expose())).ct_eq(black_box(&stored)))
    });
    group.finish();
}

fn bench_vault(c: &mut Criterion) {
    let (vault, _new_keys) =
        Vault::open(vec![MasterKey::generate()], &[], NOW).expect("a vault over fresh data keys");
    let number = CardNumber::parse("4242424242424242").expect("a valid test card");
    let sealed = vault
        .seal_card(&number, "pm_bench")
        .expect("sealing the test card");
    let body = br#"{"token":"scrip_pt_0123456789abcdefghijklmnopqrstuvwxyzABCD","amount":2500,"currency":"usd"}"#;
    let mut group = c.benchmark_group("vault");
    group.bench_function("seal_card", |b| {
        b.iter(|| vault.seal_card(black_box(&number), black_box("pm_bench")))
    });
    group.bench_function("open_card", |b| {
        b.iter(|| vault.open_card(black_box(&sealed), black_box("pm_bench")))
    });
    group.bench_function("request_digest of a charge body", |b| {
        b.iter(|| {
            vault.request_digest(black_box(&[
                b"prov_bench".as_slice(),
                b"POST /v1/charges".as_slice(),
                body.as_slice(),
            ]))
        })
    });
    group.finish();
}

/// The charge request body as the server reads it (`api::charges::CreateCharge`
/// keeps its fields private, so this mirrors it field for field).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // the fields are what is decoded; nothing reads them back
struct CreateCharge {
    token: String,
    amount: i64,
    currency: String,
    capture: Option<bool>,
    description: Option<String>,
    metadata: Option<BTreeMap<String, String>>,
}

fn charge() -> Charge {
    Charge {
        id: "ch_3Fq9ZkLmN0pQrStUvWxYz012".into(),
        token_id: "pt_8HjKlMnOpQrStUvWxYz01234".into(),
        provider_id: "prov_AbCdEfGhIjKlMnOpQrStUvWx".into(),
        customer_id: "cus_ZyXwVuTsRqPoNmLkJiHgFeDc".into(),
        payment_method_id: "pm_0123456789abcdefghijklmn".into(),
        amount: 2_500,
        amount_captured: 2_500,
        amount_refunded: 0,
        currency: Currency::Usd,
        status: ChargeStatus::Succeeded,
        description: Some("Pro plan, December".into()),
        metadata: BTreeMap::from([("order".to_owned(), "42".to_owned())]),
        brand: "visa".into(),
        last4: "4242".into(),
        created: NOW,
        capture_before: None,
        network_reference: "sim_0123456789abcdef".into(),
        fee: 103,
        failure_code: None,
        decline_code: None,
    }
}

fn bench_json(c: &mut Criterion) {
    let charge = charge();
    let encoded = serde_json::to_vec(&views::charge(&charge)).expect("a charge view encodes");
    let minimal = br#"{"token":"scrip_pt_0123456789abcdefghijklmnopqrstuvwxyzABCD","amount":1,"currency":"usd"}"#;
    let full = br#"{"token":"scrip_pt_0123456789abcdefghijklmnopqrstuvwxyzABCD","amount":2500,"currency":"usd","capture":false,"description":"Pro plan, December","metadata":{"order":"42","agent":"research-bot"}}"#;
    let mut group = c.benchmark_group("json");
    group.throughput(Throughput::Bytes(encoded.len() as u64));
    group.bench_function("encode charge view", |b| {
        b.iter(|| serde_json::to_vec(&views::charge(black_box(&charge))))
    });
    group.throughput(Throughput::Bytes(minimal.len() as u64));
    group.bench_function("decode charge request (token, amount, currency)", |b| {
        b.iter(|| serde_json::from_slice::<CreateCharge>(black_box(minimal)))
    });
    group.throughput(Throughput::Bytes(full.len() as u64));
    group.bench_function("decode charge request (all fields)", |b| {
        b.iter(|| serde_json::from_slice::<CreateCharge>(black_box(full)))
    });
    group.finish();
}

criterion_group!(benches, bench_secrets, bench_vault, bench_json);
criterion_main!(benches);
