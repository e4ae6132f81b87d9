//! The happy paths of every role, end to end, with the fields API.md fixes.

use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn token_issue_charge_hold_capture_refund() {
    let w = World::new().await;
    let app = &w.app;

    let pm = app
        .get(&format!("/v1/payment_methods/{}", w.pm), &w.orch)
        .await
        .ok();
    assert_eq!(pm["object"], "payment_method");
    assert_eq!(pm["status"], "active");
    assert_eq!(pm["card"]["brand"], "visa");
    assert_eq!(pm["card"]["last4"], "4242");
    assert!(pm["card"].get("number").is_none());
    assert!(pm["card"]["fingerprint"].as_str().unwrap().len() >= 16);

    let t = app
        .post(
            "/v1/tokens",
            &w.orch,
            json!({
                "payment_method": w.pm, "provider": w.provider, "currency": "usd",
                "cap": { "amount": 10000, "period": "month" }, "usage": "multi_use",
                "max_per_charge": 5000, "metadata": { "project": "blog" }
            }),
        )
        .await
        .ok();
    assert_eq!(t["object"], "payment_token");
    assert_eq!(t["status"], "active");
    assert_eq!(t["customer"], w.customer.as_str());
    assert_eq!(t["credential"], w.credential.as_str());
    assert_eq!(t["cap"], json!({ "amount": 10000, "period": "month" }));
    assert_eq!(t["max_per_charge"], 5000);
    assert_eq!(t["parent"], serde_json::Value::Null);
    assert_eq!(t["metadata"]["project"], "blog");
    assert_eq!(t["spend"]["remaining"], 10000);
    let token = t["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("scrip_pt_"));
    let token_id = t["id"].as_str().unwrap().to_owned();
    let expires = t["expires_at"].as_i64().unwrap() - t["created"].as_i64().unwrap();
    assert_eq!(expires, 30 * 86_400, "default expiry is 30 days");

    // The secret is shown once: reading the token back never returns it.
    let again = app
        .get(&format!("/v1/tokens/{token_id}"), &w.orch)
        .await
        .ok();
    assert!(again.get("token").is_none());

    // The agent's view: no card, no customer.
    let own = app.get("/v1/tokens/self", &token).await.ok();
    assert_eq!(own["provider"]["id"], w.provider.as_str());
    assert_eq!(own["provider"]["name"], "Cloudflare");
    assert!(own.get("customer").is_none() && own.get("payment_method").is_none());

    // A captured charge.
    let c = w.charge(&token, 3000).await.ok();
    assert_eq!(c["object"], "charge");
    assert_eq!(c["status"], "succeeded");
    assert_eq!(c["captured"], true);
    assert_eq!(c["amount_captured"], 3000);
    assert_eq!(c["payment_token"], token_id.as_str());
    assert_eq!(c["provider"], w.provider.as_str());
    assert_eq!(
        c["payment_method_details"]["card"],
        json!({ "brand": "visa", "last4": "4242" })
    );

    // A hold, partly captured: the rest goes back to the cap.
    let hold = app
        .post(
            "/v1/charges",
            &w.provider_secret,
            json!({ "token": token, "amount": 4000, "currency": "usd", "capture": false }),
        )
        .await
        .ok();
    assert_eq!(hold["status"], "requires_capture");
    assert_eq!(hold["captured"], false);
    let spend = w.spend(&token_id).await;
    assert_eq!(
        (
            spend["captured"].as_i64(),
            spend["pending"].as_i64(),
            spend["remaining"].as_i64()
        ),
        (Some(3000), Some(4000), Some(3000))
    );
    let hold_id = hold["id"].as_str().unwrap();
    let captured = app
        .post(
            &format!("/v1/charges/{hold_id}/capture"),
            &w.provider_secret,
            json!({ "amount": 2500 }),
        )
        .await
        .ok();
    assert_eq!(captured["status"], "succeeded");
    assert_eq!(captured["amount_captured"], 2500);
    let spend = w.spend(&token_id).await;
    assert_eq!(
        (
            spend["captured"].as_i64(),
            spend["pending"].as_i64(),
            spend["remaining"].as_i64()
        ),
        (Some(5500), Some(0), Some(4500))
    );

    // A partial refund gives headroom back in this period.
    let c_id = c["id"].as_str().unwrap();
    let r = app
        .post(
            "/v1/refunds",
            &w.provider_secret,
            json!({ "charge": c_id, "amount": 1000 }),
        )
        .await
        .ok();
    assert_eq!(r["object"], "refund");
    assert_eq!(r["status"], "succeeded");
    assert_eq!(r["amount"], 1000);
    assert_eq!(r["currency"], "usd");
    // The default refunds the rest.
    let r2 = app
        .post("/v1/refunds", &w.provider_secret, json!({ "charge": c_id }))
        .await
        .ok();
    assert_eq!(r2["amount"], 2000);
    let charge = app
        .get(&format!("/v1/charges/{c_id}"), &w.provider_secret)
        .await
        .ok();
    assert_eq!(charge["amount_refunded"], 3000);
    assert_eq!(charge["refunded"], true);
    let spend = w.spend(&token_id).await;
    assert_eq!(spend["captured"], 2500);
    assert_eq!(spend["remaining"], 7500);

    // Lists, newest first.
    let list = app.get("/v1/charges", &w.provider_secret).await.ok();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], hold_id);
    assert_eq!(list["data"][1]["id"], c_id);
    assert_eq!(list["has_more"], false);
    let refunds = app
        .get(&format!("/v1/refunds?charge={c_id}"), &w.provider_secret)
        .await
        .ok();
    assert_eq!(refunds["data"].as_array().unwrap().len(), 2);
    // The orchestrator sees its customer's charges too.
    let list = app.get("/v1/charges", &w.orch).await.ok();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn cancel_releases_the_hold() {
    let w = World::new().await;
    let (id, token) = w.token(json!({})).await;
    let hold = w
        .app
        .post(
            "/v1/charges",
            &w.provider_secret,
            json!({ "token": token, "amount": 6000, "currency": "usd", "capture": false }),
        )
        .await
        .ok();
    assert_eq!(w.spend(&id).await["pending"], 6000);
    let canceled = w
        .app
        .post(
            &format!("/v1/charges/{}/cancel", hold["id"].as_str().unwrap()),
            &w.provider_secret,
            json!({}),
        )
        .await
        .ok();
    assert_eq!(canceled["status"], "canceled");
    let spend = w.spend(&id).await;
    assert_eq!(
        (spend["pending"].as_i64(), spend["remaining"].as_i64()),
        (Some(0), Some(10000))
    );
}

#[tokio::test]
async fn single_use_token_is_exhausted_after_one_charge() {
    let w = World::new().await;
    let (id, token) = w.token(json!({ "usage": "single_use" })).await;
    w.charge(&token, 1200).await.ok();
    let t = w.app.get(&format!("/v1/tokens/{id}"), &w.orch).await.ok();
    assert_eq!(t["status"], "exhausted");
    w.charge(&token, 100)
        .await
        .err(402, "token_error", "token_exhausted");
    // A refund never revives it.
    let list = w.app.get("/v1/charges", &w.provider_secret).await.ok();
    let charge_id = list["data"][0]["id"].as_str().unwrap().to_owned();
    w.app
        .post(
            "/v1/refunds",
            &w.provider_secret,
            json!({ "charge": charge_id }),
        )
        .await
        .ok();
    w.charge(&token, 100)
        .await
        .err(402, "token_error", "token_exhausted");
}

#[tokio::test]
async fn revoking_a_credential_stops_every_token_at_once() {
    let w = World::new().await;
    let (a, token_a) = w.token(json!({})).await;
    let (_, token_b) = w.token(json!({ "usage": "single_use" })).await;
    w.charge(&token_a, 100).await.ok();
    let r = w
        .app
        .post(
            &format!("/v1/credentials/{}/revoke", w.credential),
            ADMIN,
            json!({}),
        )
        .await
        .ok();
    assert_eq!(r["status"], "revoked");
    w.charge(&token_a, 100)
        .await
        .err(402, "token_error", "token_revoked");
    w.charge(&token_b, 100)
        .await
        .err(402, "token_error", "token_revoked");
    // The credential's own secret is now 401.
    w.app
        .get("/v1/tokens", &w.orch)
        .await
        .err(401, "authentication_error", "secret_invalid");
    // And the tokens read as revoked.
    let t = w.app.get(&format!("/v1/tokens/{a}"), ADMIN).await.ok();
    assert_eq!(t["status"], "revoked");
    let own = w.app.get("/v1/tokens/self", &token_a).await.ok();
    assert_eq!(own["status"], "revoked");
}

#[tokio::test]
async fn detaching_the_card_stops_its_tokens() {
    let w = World::new().await;
    let (_, token) = w.token(json!({})).await;
    let d = w
        .app
        .post(
            &format!("/v1/payment_methods/{}/detach", w.pm),
            &w.orch,
            json!({}),
        )
        .await
        .ok();
    assert_eq!(d["status"], "detached");
    w.charge(&token, 100)
        .await
        .err(402, "token_error", "payment_method_unavailable");
    // No new token can be issued on it either.
    let r = w
        .app
        .post(
            "/v1/tokens",
            &w.orch,
            json!({ "payment_method": w.pm, "provider": w.provider, "currency": "usd", "cap": { "amount": 100, "period": "day" } }),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "payment_method_unavailable"));
}

#[tokio::test]
async fn token_revoke_suspend_resume() {
    let w = World::new().await;
    let (id, token) = w.token(json!({})).await;
    let s = w
        .app
        .post(&format!("/v1/tokens/{id}/suspend"), &w.orch, json!({}))
        .await
        .ok();
    assert_eq!(s["status"], "suspended");
    w.charge(&token, 100)
        .await
        .err(402, "token_error", "token_suspended");
    let s = w
        .app
        .post(&format!("/v1/tokens/{id}/resume"), &w.orch, json!({}))
        .await
        .ok();
    assert_eq!(s["status"], "active");
    w.charge(&token, 100).await.ok();
    let s = w
        .app
        .post(&format!("/v1/tokens/{id}/revoke"), &w.orch, json!({}))
        .await
        .ok();
    assert_eq!(s["status"], "revoked");
    w.charge(&token, 100)
        .await
        .err(402, "token_error", "token_revoked");
    let r = w
        .app
        .post(&format!("/v1/tokens/{id}/resume"), &w.orch, json!({}))
        .await;
    assert_eq!((r.status, r.code()), (409, "token_not_suspended"));
}

#[tokio::test]
async fn provider_can_roll_its_secret_and_the_old_one_stops_at_once() {
    let w = World::new().await;
    let (_, token) = w.token(json!({})).await;
    let rolled = w
        .app
        .post(
            &format!("/v1/providers/{}/roll_secret", w.provider),
            ADMIN,
            json!({}),
        )
        .await
        .ok();
    let new_secret = rolled["secret"].as_str().unwrap();
    assert_ne!(new_secret, w.provider_secret);
    w.charge(&token, 100)
        .await
        .err(401, "authentication_error", "secret_invalid");
    w.app.charge(new_secret, &token, 100).await.ok();
}

#[tokio::test]
async fn lists_paginate_newest_first() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            app.post("/v1/customers", ADMIN, json!({ "name": format!("c{i}") }))
                .await
                .ok()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let page1 = app.get("/v1/customers?limit=2", ADMIN).await.ok();
    assert_eq!(page1["has_more"], true);
    assert_eq!(page1["data"][0]["id"], ids[4].as_str());
    assert_eq!(page1["data"][1]["id"], ids[3].as_str());
    let page2 = app
        .get(
            &format!("/v1/customers?limit=2&starting_after={}", ids[3]),
            ADMIN,
        )
        .await
        .ok();
    assert_eq!(page2["data"][0]["id"], ids[2].as_str());
    let page3 = app
        .get(
            &format!("/v1/customers?limit=10&starting_after={}", ids[1]),
            ADMIN,
        )
        .await
        .ok();
    assert_eq!(page3["data"].as_array().unwrap().len(), 1);
    assert_eq!(page3["has_more"], false);
    // Default page size is 10.
    let all = app.get("/v1/customers", ADMIN).await.ok();
    assert_eq!(all["data"].as_array().unwrap().len(), 5);
}

#[tokio::test]
async fn token_list_filters_by_status_and_provider() {
    let w = World::new().await;
    let (other_provider, _) = w.app.provider("Other").await;
    let (a, _) = w.token(json!({})).await;
    let (b, _) = w.token(json!({})).await;
    let (c, _) = w
        .app
        .token(&w.orch, &w.pm, &other_provider, json!({}))
        .await;
    w.app
        .post(&format!("/v1/tokens/{b}/revoke"), &w.orch, json!({}))
        .await
        .ok();
    let active = w.app.get("/v1/tokens?status=active", &w.orch).await.ok();
    let ids: Vec<&str> = active["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![c.as_str(), a.as_str()]);
    let revoked = w.app.get("/v1/tokens?status=revoked", &w.orch).await.ok();
    assert_eq!(revoked["data"][0]["id"], b.as_str());
    let other = w
        .app
        .get(&format!("/v1/tokens?provider={other_provider}"), &w.orch)
        .await
        .ok();
    assert_eq!(other["data"].as_array().unwrap().len(), 1);
    w.app.advance(31 * 86_400).await;
    let expired = w.app.get("/v1/tokens?status=expired", &w.orch).await.ok();
    assert_eq!(expired["data"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn health_and_metrics_answer_without_auth() {
    let w = World::new().await;
    let (_, token) = w.token(json!({})).await;
    w.charge(&token, 100).await.ok();
    let h = w.app.get("/healthz", "").await.ok();
    assert_eq!(h["status"], "ok");
    let m = reqwest::get(format!("{}/metrics", w.app.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("scrip_charges_total{outcome=\"succeeded\"} 1"),
        "{m}"
    );
    assert!(m.contains("scrip_http_requests_total{class=\"2xx\"}"));
}

#[tokio::test]
async fn the_test_clock_exists_only_in_test_mode() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(dir, |c| c.test_clock = false).await;
    let r = app
        .post(
            "/v1/test_helpers/advance_clock",
            ADMIN,
            json!({ "seconds": 60 }),
        )
        .await;
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"]["code"], "resource_missing");
}
