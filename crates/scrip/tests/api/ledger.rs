//! The double-entry ledger through the API: fees at capture, settlement
//! after the delay, balances, payouts, refunds after payouts, and
//! verification.

use std::sync::Arc;

use serde_json::json;

use crate::helpers::*;

async fn balance(w: &World) -> (i64, i64) {
    let b = w.app.get("/v1/balance", &w.provider_secret).await.ok();
    assert_eq!(b["object"], "balance");
    let pick = |side: &str| {
        b[side]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["currency"] == "usd")
            .map(|l| l["amount"].as_i64().unwrap())
            .unwrap_or(0)
    };
    (pick("available"), pick("pending"))
}

async fn verify(app: &TestApp) -> serde_json::Value {
    let v = app.get("/v1/ledger/verify", ADMIN).await.ok();
    assert_eq!(v["balanced"], true, "{v}");
    v
}

#[tokio::test]
async fn capture_fee_settlement_payout() {
    let w = World::new().await;
    let (_, token) = w.token(json!({})).await;
    let c = w.charge(&token, 10_000).await.ok();
    // 2.9% + 30 cents.
    assert_eq!(c["fee"], 320);
    assert_eq!(balance(&w).await, (0, 9_680));
    // Nothing settles before the delay…
    w.app.advance(2 * 86_400 - 10).await;
    assert_eq!(balance(&w).await, (0, 9_680));
    // …and everything after it.
    w.app.advance(10).await;
    assert_eq!(balance(&w).await, (9_680, 0));
    let p = w
        .app
        .post(
            "/v1/payouts",
            &w.provider_secret,
            json!({ "currency": "usd", "amount": 5_000 }),
        )
        .await
        .ok();
    assert_eq!(p["object"], "payout");
    assert_eq!(p["status"], "in_transit");
    assert_eq!(p["amount"], 5_000);
    assert_eq!(balance(&w).await, (4_680, 0));
    // Without an amount: all that is available.
    let all = w
        .app
        .post(
            "/v1/payouts",
            &w.provider_secret,
            json!({ "currency": "usd" }),
        )
        .await
        .ok();
    assert_eq!(all["amount"], 4_680);
    assert_eq!(balance(&w).await, (0, 0));
    w.app.advance(86_400).await;
    let p = w
        .app
        .get(
            &format!("/v1/payouts/{}", p["id"].as_str().unwrap()),
            &w.provider_secret,
        )
        .await
        .ok();
    assert_eq!(p["status"], "paid");
    let list = w.app.get("/v1/payouts", &w.provider_secret).await.ok();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    let v = verify(&w.app).await;
    assert!(v["transactions"].as_i64().unwrap() >= 6);
    // The report agrees: gross − fees − refunds = net; all of it paid out.
    let r = w.app.get("/v1/ledger/report", ADMIN).await.ok();
    let line = &r["data"][0];
    assert_eq!(
        (
            line["gross"].as_i64(),
            line["fees"].as_i64(),
            line["refunds"].as_i64(),
            line["net"].as_i64(),
            line["paid_out"].as_i64()
        ),
        (Some(10_000), Some(320), Some(0), Some(9_680), Some(9_680))
    );
}

#[tokio::test]
async fn holds_are_pending_until_captured_and_fees_follow_the_captured_amount() {
    let w = World::new().await;
    let (_, token) = w.token(json!({})).await;
    let hold = w
        .app
        .post(
            "/v1/charges",
            &w.provider_secret,
            json!({ "token": token, "amount": 5_000, "currency": "usd", "capture": false }),
        )
        .await
        .ok();
    assert_eq!(hold["fee"], 0);
    assert_eq!(balance(&w).await, (0, 0), "a hold is not money yet");
    verify(&w.app).await;
    let captured = w
        .app
        .post(
            &format!("/v1/charges/{}/capture", hold["id"].as_str().unwrap()),
            &w.provider_secret,
            json!({ "amount": 2_000 }),
        )
        .await
        .ok();
    assert_eq!(captured["fee"], 58 + 30);
    assert_eq!(balance(&w).await, (0, 2_000 - 88));
    let other = w
        .app
        .post(
            "/v1/charges",
            &w.provider_secret,
            json!({ "token": token, "amount": 700, "currency": "usd", "capture": false }),
        )
        .await
        .ok();
    w.app
        .post(
            &format!("/v1/charges/{}/cancel", other["id"].as_str().unwrap()),
            &w.provider_secret,
            json!({}),
        )
        .await
        .ok();
    verify(&w.app).await;
}

#[tokio::test]
async fn a_refund_after_a_payout_drives_the_balance_negative_until_later_settlements() {
    let w = World::new().await;
    let (_, token) = w.token(json!({})).await;
    let first = w.charge(&token, 1_000).await.ok();
    w.app.advance(2 * 86_400).await;
    w.app
        .post(
            "/v1/payouts",
            &w.provider_secret,
            json!({ "currency": "usd" }),
        )
        .await
        .ok();
    assert_eq!(balance(&w).await, (0, 0));
    // The provider refunds after the money left: it owes it back.
    w.app
        .post(
            "/v1/refunds",
            &w.provider_secret,
            json!({ "charge": first["id"] }),
        )
        .await
        .ok();
    assert_eq!(balance(&w).await, (-1_000, 0));
    w.app
        .post(
            "/v1/payouts",
            &w.provider_secret,
            json!({ "currency": "usd", "amount": 1 }),
        )
        .await
        .err(
            409,
            "invalid_request_error",
            "insufficient_available_balance",
        );
    // The next settlement recovers it.
    w.charge(&token, 5_000).await.ok();
    w.app.advance(2 * 86_400).await;
    assert_eq!(balance(&w).await, (5_000 - 175 - 1_000, 0));
    verify(&w.app).await;
}

#[tokio::test]
async fn payout_errors() {
    let w = World::new().await;
    let p = &w.provider_secret;
    w.app
        .post("/v1/payouts", p, json!({ "currency": "usd" }))
        .await
        .err(
            409,
            "invalid_request_error",
            "insufficient_available_balance",
        );
    for amount in [json!(0), json!(-1), json!(1_000_000_000_001i64), json!(2.5)] {
        let r = w
            .app
            .post(
                "/v1/payouts",
                p,
                json!({ "currency": "usd", "amount": amount }),
            )
            .await;
        assert_eq!(
            (r.status, r.code()),
            (400, "amount_invalid"),
            "{amount}: {}",
            r.body
        );
    }
    w.app
        .post("/v1/payouts", p, json!({ "currency": "xxx" }))
        .await
        .err(400, "invalid_request_error", "currency_unsupported");
    w.app.post("/v1/payouts", p, json!({})).await.err(
        400,
        "invalid_request_error",
        "parameter_missing",
    );
    w.app
        .post("/v1/payouts", &w.orch, json!({ "currency": "usd" }))
        .await
        .err(403, "permission_error", "forbidden");
    // Another provider's payout does not exist for you.
    let (_, token) = w.token(json!({})).await;
    w.charge(&token, 1_000).await.ok();
    w.app.advance(2 * 86_400).await;
    let po = w
        .app
        .post("/v1/payouts", p, json!({ "currency": "usd" }))
        .await
        .ok();
    let (_, other) = w.app.provider("Other").await;
    w.app
        .get(
            &format!("/v1/payouts/{}", po["id"].as_str().unwrap()),
            &other,
        )
        .await
        .err(404, "invalid_request_error", "resource_missing");
    assert_eq!(
        w.app.get("/v1/payouts", &other).await.ok()["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // The operator sees every payout and the ledger report; providers do not.
    assert_eq!(
        w.app.get("/v1/payouts", ADMIN).await.ok()["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    w.app
        .get("/v1/ledger/verify", p)
        .await
        .err(403, "permission_error", "forbidden");
    w.app.get("/v1/ledger/report?from=abc", ADMIN).await.err(
        400,
        "invalid_request_error",
        "parameter_invalid",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refunds_never_refund_more_than_was_captured() {
    let w = Arc::new(World::new().await);
    let (id, token) = w.token(json!({})).await;
    let c = w.charge(&token, 1_000).await.ok();
    let charge_id = c["id"].as_str().unwrap().to_owned();
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let w = w.clone();
        let charge_id = charge_id.clone();
        tasks.push(tokio::spawn(async move {
            w.app
                .post(
                    "/v1/refunds",
                    &w.provider_secret,
                    json!({ "charge": charge_id, "amount": 70 }),
                )
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            200 => ok += 1,
            409 => assert_eq!(r.code(), "charge_already_refunded"),
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    assert_eq!(ok, 14, "14 × 70 = 980 ≤ 1000 < 15 × 70");
    let charge = w
        .app
        .get(&format!("/v1/charges/{charge_id}"), &w.provider_secret)
        .await
        .ok();
    assert_eq!(charge["amount_refunded"], 980);
    assert_eq!(w.spend(&id).await["captured"], 20);
    verify(&w.app).await;
}

#[tokio::test]
async fn zero_decimal_currencies_take_no_fractional_fixed_fee() {
    let w = World::new().await;
    let (_, token) = w.token(json!({ "currency": "jpy" })).await;
    let c = w
        .app
        .post(
            "/v1/charges",
            &w.provider_secret,
            json!({ "token": token, "amount": 1_000, "currency": "jpy" }),
        )
        .await
        .ok();
    assert_eq!(
        c["fee"], 29,
        "2.9% of 1000 yen; 0.30 of a yen rounds to nothing"
    );
    let b = w.app.get("/v1/balance", &w.provider_secret).await.ok();
    assert_eq!(b["pending"][0], json!({ "amount": 971, "currency": "jpy" }));
    verify(&w.app).await;
}

#[tokio::test]
async fn tampering_with_a_balance_is_detected() {
    let w = World::new().await;
    let (_, token) = w.token(json!({})).await;
    w.charge(&token, 1_000).await.ok();
    verify(&w.app).await;
    w.app
        .execute_sql("UPDATE ledger_balances SET posted = posted + 1 WHERE account = 'fees'")
        .await;
    w.app
        .execute_sql("UPDATE token_spend SET captured = captured - 1")
        .await;
    let v = w.app.get("/v1/ledger/verify", ADMIN).await.ok();
    assert_eq!(v["balanced"], false);
    assert_eq!(v["balance_mismatches"][0]["account"], "fees");
    assert_eq!(v["spend_mismatches"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn verification_counts_a_derived_tokens_charges_for_each_ancestor() {
    let w = World::new().await;
    let (parent_id, parent) = w
        .token(json!({ "cap": { "amount": 100_000, "period": "month" } }))
        .await;
    let (other_id, other) = w.token(json!({})).await;
    let (child_id, child_secret) = derive_daily(&w, &parent).await;
    w.charge(&child_secret, 700).await.ok();
    w.charge(&parent, 300).await.ok();
    w.charge(&other, 50).await.ok();
    assert_eq!(w.spend(&parent_id).await["captured"], 1_000);
    let v = verify(&w.app).await;
    assert_eq!(v["spend_mismatches"], json!([]));

    // Take the child's charge out of the parent's stored spend: the check
    // names the parent alone, with what its charges and its child's add up to.
    w.app
        .execute_sql(&format!(
            "UPDATE token_spend SET captured = captured - 700 WHERE token_id = '{parent_id}'"
        ))
        .await;
    let v = w.app.get("/v1/ledger/verify", ADMIN).await.ok();
    assert_eq!(v["balanced"], false);
    let found = v["spend_mismatches"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["payment_token"], parent_id.as_str());
    assert_eq!(found[0]["stored"]["captured"], 300);
    assert_eq!(found[0]["computed"]["captured"], 1_000);

    // A spend row that no charge accounts for, and a charged token whose
    // spend row is gone, are found too, each under its own token.
    w.app
        .execute_sql(&format!(
            "UPDATE token_spend SET captured = captured + 700 WHERE token_id = '{parent_id}';
             DELETE FROM token_spend WHERE token_id = '{child_id}';
             UPDATE token_spend SET pending = pending + 5 WHERE token_id = '{other_id}'"
        ))
        .await;
    let v = w.app.get("/v1/ledger/verify", ADMIN).await.ok();
    let mut named: Vec<(String, i64, i64)> = v["spend_mismatches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["payment_token"].as_str().unwrap().to_owned(),
                m["stored"]["captured"].as_i64().unwrap()
                    + m["stored"]["pending"].as_i64().unwrap(),
                m["computed"]["captured"].as_i64().unwrap()
                    + m["computed"]["pending"].as_i64().unwrap(),
            )
        })
        .collect();
    named.sort();
    let mut expected = vec![(child_id, 0, 700), (other_id, 55, 50)];
    expected.sort();
    assert_eq!(named, expected, "{v}");
}

#[tokio::test]
async fn verification_finds_the_missing_spend_of_an_ancestor_never_charged_itself() {
    let w = World::new().await;
    let (parent_id, parent) = w
        .token(json!({ "cap": { "amount": 100_000, "period": "month" } }))
        .await;
    let (_, child_secret) = derive_daily(&w, &parent).await;
    w.charge(&child_secret, 400).await.ok();
    assert_eq!(w.spend(&parent_id).await["captured"], 400);
    assert_eq!(verify(&w.app).await["spend_mismatches"], json!([]));

    // The parent's only spend comes from its child's charge: with its row
    // gone, nothing of its own names it, and the check still does.
    w.app
        .execute_sql(&format!(
            "DELETE FROM token_spend WHERE token_id = '{parent_id}'"
        ))
        .await;
    let v = w.app.get("/v1/ledger/verify", ADMIN).await.ok();
    let found = v["spend_mismatches"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{v}");
    assert_eq!(found[0]["payment_token"], parent_id.as_str());
    assert_eq!(found[0]["stored"]["captured"], 0);
    assert_eq!(found[0]["computed"]["captured"], 400);
}

/// A token derived from `parent` with a daily cap of 5,000: (id, secret).
async fn derive_daily(w: &World, parent: &str) -> (String, String) {
    let child = w
        .app
        .post(
            "/v1/tokens/self/derive",
            parent,
            json!({ "cap": { "amount": 5_000, "period": "day" } }),
        )
        .await
        .ok();
    let id = child["id"].as_str().unwrap().to_owned();
    (id, child["token"].as_str().unwrap().to_owned())
}
