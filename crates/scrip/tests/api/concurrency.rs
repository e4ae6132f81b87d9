//! The cap holds under any concurrency: many parallel charges against one
//! token, and one idempotency key raced from many tasks.

use std::sync::Arc;

use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_parallel_charges_exactly_cap_over_amount_succeed() {
    let w = Arc::new(World::new().await);
    // Cap 10,000 and 400 a charge: exactly 25 of 50 fit.
    let (id, token) = w
        .token(json!({ "cap": { "amount": 10000, "period": "month" } }))
        .await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let w = w.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move { w.charge(&token, 400).await }));
    }
    let mut succeeded = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => succeeded += 1,
            402 => assert_eq!(r.code(), "cap_exceeded", "{}", r.body),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(succeeded, 25);
    let spend = w.spend(&id).await;
    assert_eq!(spend["captured"], 10000);
    assert_eq!(spend["remaining"], 0);
    let charges = w
        .app
        .get("/v1/charges?limit=100", &w.provider_secret)
        .await
        .ok();
    assert_eq!(charges["data"].as_array().unwrap().len(), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mixed_amounts_and_holds_never_exceed_the_cap() {
    let w = Arc::new(World::new().await);
    let (id, token) = w
        .token(json!({ "cap": { "amount": 5000, "period": "day" } }))
        .await;
    let mut tasks = Vec::new();
    for i in 0..60i64 {
        let w = w.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let amount = 100 + (i * 37) % 400;
            let body = json!({ "token": token, "amount": amount, "currency": "usd", "capture": i % 3 != 0 });
            let r = w.app.post("/v1/charges", &w.provider_secret, body).await;
            (r.status, amount)
        }));
    }
    let mut total = 0;
    for t in tasks {
        let (status, amount) = t.await.unwrap();
        if status == 200 {
            total += amount;
        } else {
            assert_eq!(status, 402);
        }
    }
    assert!(total <= 5000, "approved {total} over a cap of 5000");
    let spend = w.spend(&id).await;
    let held = spend["captured"].as_i64().unwrap() + spend["pending"].as_i64().unwrap();
    assert_eq!(held, total, "the store agrees with the approvals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_raced_has_one_effect() {
    let w = Arc::new(World::new().await);
    let (id, token) = w.token(json!({})).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let w = w.clone();
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({ "token": token, "amount": 250, "currency": "usd" });
            w.app
                .post_idem("/v1/charges", &w.provider_secret, body, "same-key")
                .await
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => {
                ids.insert(r.id());
            }
            409 => assert_eq!(r.code(), "idempotency_in_progress"),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(ids.len(), 1, "every success is the same charge");
    assert_eq!(w.spend(&id).await["captured"], 250);
}
