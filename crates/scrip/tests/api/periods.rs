//! Calendar periods, refunds across periods, and hold expiry, driven by the
//! test clock.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn a_daily_cap_resets_at_utc_midnight() {
    let w = World::new().await;
    let (id, token) = w
        .token(json!({ "cap": { "amount": 1000, "period": "day" } }))
        .await;
    w.charge(&token, 1000).await.ok();
    w.charge(&token, 1)
        .await
        .err(402, "token_error", "cap_exceeded");
    let spend = w.spend(&id).await;
    let end = spend["period_end"].as_i64().unwrap();
    assert_eq!(end - spend["period_start"].as_i64().unwrap(), 86_400);
    let now = w.app.advance(1).await;
    w.app.advance(end - now).await;
    let spend = w.spend(&id).await;
    assert_eq!(spend["period_start"], end);
    assert_eq!(spend["remaining"], 1000);
    w.charge(&token, 1000).await.ok();
}

#[tokio::test]
async fn a_lifetime_cap_never_resets() {
    let w = World::new().await;
    let (id, token) = w.token(json!({ "cap": { "amount": 500, "period": "none" }, "expires_at": w.app.advance(1).await + 300 * 86_400 })).await;
    w.charge(&token, 500).await.ok();
    w.app.advance(200 * 86_400).await;
    w.charge(&token, 1)
        .await
        .err(402, "token_error", "cap_exceeded");
    assert_eq!(w.spend(&id).await["period_end"], serde_json::Value::Null);
}

#[tokio::test]
async fn refunds_restore_headroom_only_in_their_own_period() {
    let w = World::new().await;
    let (id, token) = w
        .token(json!({ "cap": { "amount": 1000, "period": "day" } }))
        .await;
    let old = w.charge(&token, 800).await.ok();
    let end = w.spend(&id).await["period_end"].as_i64().unwrap();
    let now = w.app.advance(1).await;
    w.app.advance(end - now + 10).await;
    let today = w.charge(&token, 900).await.ok();
    // Refunding yesterday's charge does not raise today's headroom.
    w.app
        .post(
            "/v1/refunds",
            &w.provider_secret,
            json!({ "charge": old["id"] }),
        )
        .await
        .ok();
    assert_eq!(w.spend(&id).await["remaining"], 100);
    // Refunding today's does.
    w.app
        .post(
            "/v1/refunds",
            &w.provider_secret,
            json!({ "charge": today["id"], "amount": 400 }),
        )
        .await
        .ok();
    let spend = w.spend(&id).await;
    assert_eq!(
        (spend["captured"].as_i64(), spend["remaining"].as_i64()),
        (Some(500), Some(500))
    );
}

#[tokio::test]
async fn holds_expire_after_seven_days() {
    let w = World::new().await;
    let (id, token) = w.token(json!({ "cap": { "amount": 1000, "period": "year" }, "expires_at": w.app.advance(1).await + 60 * 86_400 })).await;
    let hold = w
        .app
        .post(
            "/v1/charges",
            &w.provider_secret,
            json!({ "token": token, "amount": 1000, "currency": "usd", "capture": false }),
        )
        .await
        .ok();
    assert_eq!(
        hold["capture_before"].as_i64().unwrap() - hold["created"].as_i64().unwrap(),
        7 * 86_400
    );
    w.charge(&token, 1)
        .await
        .err(402, "token_error", "cap_exceeded");
    w.app.advance(7 * 86_400).await;
    let charge = w
        .app
        .get(
            &format!("/v1/charges/{}", hold["id"].as_str().unwrap()),
            &w.provider_secret,
        )
        .await
        .ok();
    assert_eq!(charge["status"], "canceled");
    assert_eq!(w.spend(&id).await["pending"], 0);
    w.app
        .post(
            &format!("/v1/charges/{}/capture", hold["id"].as_str().unwrap()),
            &w.provider_secret,
            json!({}),
        )
        .await
        .err(409, "invalid_request_error", "charge_not_capturable");
    w.charge(&token, 1000).await.ok();
}

#[tokio::test]
async fn a_hold_captured_next_month_counts_in_the_month_it_was_authorized() {
    let w = World::new().await;
    let (id, token) = w.token(json!({ "cap": { "amount": 1000, "period": "month" }, "expires_at": w.app.advance(1).await + 90 * 86_400 })).await;
    let end = w.spend(&id).await["period_end"].as_i64().unwrap();
    // Authorize one minute before the month ends, capture after it.
    let now = w.app.advance(1).await;
    w.app.advance(end - now - 60).await;
    let hold = w
        .app
        .post(
            "/v1/charges",
            &w.provider_secret,
            json!({ "token": token, "amount": 700, "currency": "usd", "capture": false }),
        )
        .await
        .ok();
    w.app.advance(120).await;
    w.app
        .post(
            &format!("/v1/charges/{}/capture", hold["id"].as_str().unwrap()),
            &w.provider_secret,
            json!({}),
        )
        .await
        .ok();
    let spend = w.spend(&id).await;
    assert_eq!(spend["period_start"], end);
    assert_eq!(spend["remaining"], 1000, "the new month starts empty");
}
