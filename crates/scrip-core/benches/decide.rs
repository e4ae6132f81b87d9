//! Criterion micro-benchmarks of the pure pieces on the charge path: the
//! authorization decision over a chain of 1 and 3 links, the period window
//! a spend is counted in, and card number parsing with the Luhn check.
//!
//! Run with `cargo bench -p scrip-core` (add `-- --measurement-time 2
//! --warm-up-time 1` for a quick pass).

// Benchmark set-up builds fixed, known-valid inputs; if one were invalid the
// measurement would be meaningless, so it aborts loudly instead.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use scrip_core::card::{luhn_valid, CardNumber};
use scrip_core::money::{CapAmount, ChargeAmount, Currency};
use scrip_core::period::Period;
use scrip_core::token::{
    authorize, ChargeRequest, Link, Scope, Spend, Standing, StoredStatus, Usage,
};

/// 2026-12-03T19:00:00Z.
const NOW: i64 = 1_796_324_400;

fn link(provider: &str, cap: i64, period: Period, spend: Spend) -> Link {
    Link {
        scope: Scope {
            provider_id: provider.to_owned(),
            currency: Currency::Usd,
            cap: CapAmount::new(cap).expect("a valid cap"),
            period,
            usage: Usage::MultiUse,
            max_per_charge: Some(50_000),
            expires_at: NOW + 30 * 86_400,
            created: NOW - 86_400,
        },
        standing: Standing {
            stored: StoredStatus::Active,
            credential_active: true,
            payment_method_active: true,
        },
        spend,
    }
}

fn bench_authorize(c: &mut Criterion) {
    let spend = Spend {
        captured: 4_000,
        pending: 1_000,
    };
    let one = vec![link("prov_bench", 100_000, Period::Month, spend)];
    let three = vec![
        link("prov_bench", 100_000, Period::Day, spend),
        link("prov_bench", 500_000, Period::Month, spend),
        link("prov_bench", 1_000_000, Period::None, spend),
    ];
    let request = ChargeRequest {
        caller_provider_id: "prov_bench",
        currency: Currency::Usd,
        amount: ChargeAmount::new(2_500).expect("a valid amount"),
    };
    let refused = ChargeRequest {
        amount: ChargeAmount::new(99_000).expect("a valid amount"),
        ..request.clone()
    };
    let mut group = c.benchmark_group("authorize");
    for (name, chain) in [("1 link", &one), ("3 links", &three)] {
        group.bench_with_input(BenchmarkId::new("approved", name), chain, |b, chain| {
            b.iter(|| authorize(black_box(chain), black_box(&request), black_box(NOW)))
        });
        group.bench_with_input(BenchmarkId::new("refused", name), chain, |b, chain| {
            b.iter(|| authorize(black_box(chain), black_box(&refused), black_box(NOW)))
        });
    }
    group.finish();
}

fn bench_window(c: &mut Criterion) {
    let mut group = c.benchmark_group("period window");
    for period in [
        Period::Day,
        Period::Week,
        Period::Month,
        Period::Year,
        Period::None,
    ] {
        group.bench_with_input(
            BenchmarkId::from_parameter(period.name()),
            &period,
            |b, p| b.iter(|| black_box(*p).window(black_box(NOW), black_box(NOW - 86_400))),
        );
    }
    group.finish();
}

fn bench_card(c: &mut Criterion) {
    let mut group = c.benchmark_group("card");
    group.bench_function("parse 16 digits with spaces", |b| {
        b.iter(|| CardNumber::parse(black_box("4242 4242 4242 4242")))
    });
    group.bench_function("parse 15 digits (amex)", |b| {
        b.iter(|| CardNumber::parse(black_box("378282246310005")))
    });
    group.bench_function("luhn 16 digits", |b| {
        b.iter(|| luhn_valid(black_box("4242424242424242")))
    });
    group.bench_function("luhn 19 digits", |b| {
        b.iter(|| luhn_valid(black_box("6011000990139424000")))
    });
    group.finish();
}

criterion_group!(benches, bench_authorize, bench_window, bench_card);
criterion_main!(benches);
