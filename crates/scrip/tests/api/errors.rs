//! Every error code of API.md that the core reaches, each with the API's
//! error shape and a sentence a person can act on — and never a partial
//! write.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn authentication_and_permission() {
    let w = World::new().await;
    let app = &w.app;
    app.get("/v1/customers", "")
        .await
        .err(401, "authentication_error", "secret_invalid");
    app.get("/v1/customers", "sk_orch_nope").await.err(
        401,
        "authentication_error",
        "secret_invalid",
    );
    app.get(
        "/v1/customers",
        "sk_admin_wrongwrongwrongwrongwrongwrongwrong",
    )
    .await
    .err(401, "authentication_error", "secret_invalid");
    // A known secret outside its role.
    app.post("/v1/customers", &w.provider_secret, json!({}))
        .await
        .err(403, "permission_error", "forbidden");
    app.post("/v1/customers", &w.orch, json!({}))
        .await
        .err(403, "permission_error", "forbidden");
    app.post("/v1/tokens", ADMIN, json!({}))
        .await
        .err(403, "permission_error", "forbidden");
    let (_, token) = w.token(json!({})).await;
    app.get("/v1/tokens", &token)
        .await
        .err(403, "permission_error", "forbidden");
    app.post(
        "/v1/charges",
        &token,
        json!({ "token": token, "amount": 1, "currency": "usd" }),
    )
    .await
    .err(403, "permission_error", "forbidden");
    app.get("/v1/tokens/self", &w.orch)
        .await
        .err(403, "permission_error", "forbidden");
}

#[tokio::test]
async fn objects_of_others_do_not_exist() {
    let w = World::new().await;
    let app = &w.app;
    let (token_id, token) = w.token(json!({})).await;
    let charge = w.charge(&token, 100).await.ok();
    let charge_id = charge["id"].as_str().unwrap();
    // Another customer's orchestrator sees none of it.
    let (_, _, other_orch) = app.orchestrator().await;
    app.get(&format!("/v1/tokens/{token_id}"), &other_orch)
        .await
        .err(404, "invalid_request_error", "resource_missing");
    app.post(
        &format!("/v1/tokens/{token_id}/revoke"),
        &other_orch,
        json!({}),
    )
    .await
    .err(404, "invalid_request_error", "resource_missing");
    app.get(&format!("/v1/payment_methods/{}", w.pm), &other_orch)
        .await
        .err(404, "invalid_request_error", "resource_missing");
    // It cannot issue a token on someone else's card.
    let r = app
        .post("/v1/tokens", &other_orch, json!({ "payment_method": w.pm, "provider": w.provider, "currency": "usd", "cap": { "amount": 100, "period": "day" } }))
        .await;
    r.err(404, "invalid_request_error", "resource_missing");
    // Another provider sees none of the charges.
    let (_, other_provider) = app.provider("Other").await;
    app.get(&format!("/v1/charges/{charge_id}"), &other_provider)
        .await
        .err(404, "invalid_request_error", "resource_missing");
    app.post(
        &format!("/v1/charges/{charge_id}/capture"),
        &other_provider,
        json!({}),
    )
    .await
    .err(404, "invalid_request_error", "resource_missing");
    app.post(
        "/v1/refunds",
        &other_provider,
        json!({ "charge": charge_id }),
    )
    .await
    .err(404, "invalid_request_error", "resource_missing");
    let list = app.get("/v1/charges", &other_provider).await.ok();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // Unknown ids, and absurd ones, are plain 404s.
    app.get("/v1/customers/cus_nope", ADMIN).await.err(
        404,
        "invalid_request_error",
        "resource_missing",
    );
    app.get(&format!("/v1/customers/{}", "x".repeat(5000)), ADMIN)
        .await
        .err(404, "invalid_request_error", "resource_missing");
    app.get("/v1/customers/'%20OR%201=1--", ADMIN).await.err(
        404,
        "invalid_request_error",
        "resource_missing",
    );
    app.get("/v1/nothing_here", ADMIN)
        .await
        .err(404, "invalid_request_error", "resource_missing");
    app.get("/v1/customers?starting_after=cus_nope", ADMIN)
        .await
        .err(404, "invalid_request_error", "resource_missing");
}

#[tokio::test]
async fn parameters() {
    let w = World::new().await;
    let app = &w.app;
    let (_, token) = w.token(json!({})).await;
    let p = &w.provider_secret;
    let r = app
        .post(
            "/v1/charges",
            p,
            json!({ "token": token, "amount": 100, "currency": "usd", "amout": 1 }),
        )
        .await;
    r.err(400, "invalid_request_error", "parameter_unknown");
    assert_eq!(r.body["error"]["param"], "amout");
    let r = app
        .post(
            "/v1/charges",
            p,
            json!({ "token": token, "currency": "usd" }),
        )
        .await;
    r.err(400, "invalid_request_error", "parameter_missing");
    assert_eq!(r.body["error"]["param"], "amount");
    for bad in [
        json!(0),
        json!(-5),
        json!(100_000_000),
        json!(1.5),
        json!("100"),
        json!(null),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(-1e300),
    ] {
        let r = app
            .post(
                "/v1/charges",
                p,
                json!({ "token": token, "amount": bad, "currency": "usd" }),
            )
            .await;
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
        assert!(
            matches!(r.code(), "amount_invalid" | "parameter_missing"),
            "{bad}: {}",
            r.body
        );
    }
    for raw_amount in ["1e309", "-0", "1e2", "99999999999999999999999"] {
        let raw = format!("{{\"token\":\"{token}\",\"amount\":{raw_amount},\"currency\":\"usd\"}}");
        let r = reqwest::Client::new()
            .post(format!("{}/v1/charges", app.url))
            .bearer_auth(p)
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{raw_amount}");
    }
    app.post(
        "/v1/charges",
        p,
        json!({ "token": token, "amount": 100, "currency": "btc" }),
    )
    .await
    .err(400, "invalid_request_error", "currency_unsupported");
    app.post(
        "/v1/charges",
        p,
        json!({ "token": token, "amount": 100, "currency": "USD" }),
    )
    .await
    .err(400, "invalid_request_error", "currency_unsupported");
    // Token creation parameters.
    let base = json!({ "payment_method": w.pm, "provider": w.provider, "currency": "usd", "cap": { "amount": 100, "period": "month" } });
    let with = |k: &str, v: serde_json::Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    for (body, code, param) in [
        (
            with("cap", json!({ "amount": 0, "period": "month" })),
            "amount_invalid",
            "cap.amount",
        ),
        (
            with("cap", json!({ "amount": 100, "period": "fortnight" })),
            "parameter_invalid",
            "cap.period",
        ),
        (
            with("cap", json!({ "amount": 100, "period": "month", "x": 1 })),
            "parameter_unknown",
            "cap.x",
        ),
        (with("usage", json!("twice")), "parameter_invalid", "usage"),
        (
            with("max_per_charge", json!(101)),
            "amount_invalid",
            "max_per_charge",
        ),
        (
            with("expires_at", json!(1)),
            "parameter_invalid",
            "expires_at",
        ),
        (
            with("expires_at", json!(4_102_444_800i64)),
            "parameter_invalid",
            "expires_at",
        ),
        (
            with("currency", json!("xyz")),
            "currency_unsupported",
            "currency",
        ),
        (
            with("metadata", json!({ "k": 1 })),
            "parameter_invalid",
            "metadata.k",
        ),
    ] {
        let r = app.post("/v1/tokens", &w.orch, body.clone()).await;
        assert_eq!((r.status, r.code()), (400, code), "{body}: {}", r.body);
        assert_eq!(r.body["error"]["param"], param, "{body}: {}", r.body);
    }
    let r = app
        .post("/v1/tokens", &w.orch, json!({ "provider": w.provider }))
        .await;
    r.err(400, "invalid_request_error", "parameter_missing");
    // Malformed JSON, wrong shapes, deep nesting, big bodies.
    let raw = reqwest::Client::new();
    let r = raw
        .post(format!("{}/v1/customers", app.url))
        .bearer_auth(ADMIN)
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let r = raw
        .post(format!("{}/v1/customers", app.url))
        .bearer_auth(ADMIN)
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app.post("/v1/customers", ADMIN, json!([1, 2])).await;
    assert_eq!(r.status, 400);
    let big = json!({ "name": "x".repeat(70 * 1024) });
    app.post("/v1/customers", ADMIN, big)
        .await
        .err(413, "invalid_request_error", "body_too_large");
    app.post("/v1/customers", ADMIN, json!({ "name": "a\u{0}b" }))
        .await
        .err(400, "invalid_request_error", "parameter_invalid");
    app.post("/v1/customers", ADMIN, json!({ "email": "not an email" }))
        .await
        .err(400, "invalid_request_error", "parameter_invalid");
    app.get("/v1/customers?limit=0", ADMIN).await.err(
        400,
        "invalid_request_error",
        "parameter_invalid",
    );
    app.get("/v1/customers?limit=101", ADMIN).await.err(
        400,
        "invalid_request_error",
        "parameter_invalid",
    );
    app.get("/v1/customers?limit=99999999999999999999", ADMIN)
        .await
        .err(400, "invalid_request_error", "parameter_invalid");
    app.get("/v1/customers?colour=red", ADMIN).await.err(
        400,
        "invalid_request_error",
        "parameter_unknown",
    );
    app.get("/v1/tokens?status=sleeping", &w.orch).await.err(
        400,
        "invalid_request_error",
        "parameter_invalid",
    );
    // No write happened through any of the refused requests.
    let customers = app.get("/v1/customers", ADMIN).await.ok();
    assert_eq!(customers["data"].as_array().unwrap().len(), 1);
    let tokens = app.get("/v1/tokens", &w.orch).await.ok();
    assert_eq!(tokens["data"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.get("/v1/charges", p).await.ok()["data"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Wrong method is in the same shape.
    let r = app
        .send(Method::DELETE, "/v1/customers", ADMIN, None, None)
        .await;
    assert_eq!((r.status, r.kind()), (405, "invalid_request_error"));
}

#[tokio::test]
async fn card_validation_when_vaulting() {
    let w = World::new().await;
    let add = |number: &str, month: i64, year: i64, cvc: &str| json!({ "card": { "number": number, "exp_month": month, "exp_year": year, "cvc": cvc } });
    let cases = [
        (add("4242424242424241", 12, 2040, "123"), "incorrect_number"),
        (add("4242", 12, 2040, "123"), "incorrect_number"),
        (
            add("4242-4242-4242-424x", 12, 2040, "123"),
            "incorrect_number",
        ),
        (add(VISA, 13, 2040, "123"), "invalid_expiry"),
        (add(VISA, 0, 2040, "123"), "invalid_expiry"),
        (add(VISA, 1, 2020, "123"), "expired_card"),
        (add(VISA, 12, 2040, "12"), "incorrect_cvc"),
        (add(VISA, 12, 2040, "1234"), "incorrect_cvc"),
        (add("378282246310005", 12, 2040, "123"), "incorrect_cvc"),
        (add("4000000000000127", 12, 2040, "123"), "incorrect_cvc"),
    ];
    for (body, code) in cases {
        let r = w
            .app
            .post("/v1/payment_methods", &w.orch, body.clone())
            .await;
        r.err(402, "card_error", code);
        assert!(!r.body.to_string().contains("4242424242424241"));
    }
    // Separators are fine; amex takes 4 digits.
    let ok = w
        .app
        .post(
            "/v1/payment_methods",
            &w.orch,
            add("3782 822463 10005", 12, 2040, "1234"),
        )
        .await
        .ok();
    assert_eq!(ok["card"]["brand"], "amex");
    assert_eq!(ok["card"]["last4"], "0005");
    // The same number gives the same fingerprint for another customer.
    let (_, _, other) = w.app.orchestrator().await;
    let a = w
        .app
        .post("/v1/payment_methods", &other, add(VISA, 1, 2039, "999"))
        .await
        .ok();
    let b = w
        .app
        .get(&format!("/v1/payment_methods/{}", w.pm), &w.orch)
        .await
        .ok();
    assert_eq!(a["card"]["fingerprint"], b["card"]["fingerprint"]);
    // A card number sent as a number is refused without being echoed.
    let r = w
        .app
        .post("/v1/payment_methods", &w.orch, json!({ "card": { "number": 4242424242424242u64, "exp_month": 1, "exp_year": 2040, "cvc": "123" } }))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        !r.body.to_string().contains("4242424242424242"),
        "{}",
        r.body
    );
    // Admin must name the customer.
    w.app
        .post("/v1/payment_methods", ADMIN, add(VISA, 12, 2040, "123"))
        .await
        .err(400, "invalid_request_error", "parameter_missing");
}

#[tokio::test]
async fn network_declines_spend_nothing() {
    let w = World::new().await;
    for (number, decline) in [
        ("4000000000000002", "generic_decline"),
        ("4000000000009995", "insufficient_funds"),
        ("4000000000000069", "expired_card"),
    ] {
        let pm = w.app.card(&w.orch, number).await;
        let (id, token) = w
            .app
            .token(&w.orch, &pm, &w.provider, json!({ "usage": "single_use" }))
            .await;
        let r = w.charge(&token, 500).await;
        r.err(402, "card_error", "card_declined");
        assert_eq!(r.body["error"]["decline_code"], decline);
        let t = w.app.get(&format!("/v1/tokens/{id}"), &w.orch).await.ok();
        assert_eq!(
            t["status"], "active",
            "a decline does not use up a single-use token"
        );
        assert_eq!(t["spend"]["remaining"], 10000);
    }
    // Each decline is kept as a `failed` charge that spent nothing.
    let charges = w.app.get("/v1/charges", &w.provider_secret).await.ok();
    let charges = charges["data"].as_array().unwrap();
    assert_eq!(charges.len(), 3);
    for c in charges {
        assert_eq!(c["status"], "failed");
        assert_eq!(c["failure_code"], "card_declined");
        assert_eq!(c["amount_captured"], 0);
    }
    let v = w.app.get("/v1/ledger/verify", ADMIN).await.ok();
    assert_eq!(v["balanced"], true, "{v}");
}

#[tokio::test]
async fn a_declined_charge_retried_with_its_key_is_replayed_not_declined_again() {
    let w = World::new().await;
    let pm = w.app.card(&w.orch, "4000000000009995").await;
    let (_, token) = w.app.token(&w.orch, &pm, &w.provider, json!({})).await;
    let body = json!({ "token": token, "amount": 700, "currency": "usd" });
    let first = w
        .app
        .post_idem(
            "/v1/charges",
            &w.provider_secret,
            body.clone(),
            "order-declined",
        )
        .await;
    first.err(402, "card_error", "card_declined");
    assert_eq!(first.body["error"]["decline_code"], "insufficient_funds");
    assert!(first.headers.get("idempotent-replayed").is_none());
    let again = w
        .app
        .post_idem("/v1/charges", &w.provider_secret, body, "order-declined")
        .await;
    again.err(402, "card_error", "card_declined");
    assert_eq!(again.body, first.body, "the same answer");
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let charges = w.app.get("/v1/charges", &w.provider_secret).await.ok();
    assert_eq!(
        charges["data"].as_array().map(Vec::len),
        Some(1),
        "one failed charge, not two: {charges}"
    );
    let events = w
        .app
        .get("/v1/events?type=charge.failed", &w.provider_secret)
        .await
        .ok();
    assert_eq!(events["data"].as_array().map(Vec::len), Some(1), "{events}");
}

#[tokio::test]
async fn token_errors() {
    let w = World::new().await;
    let app = &w.app;
    let p = &w.provider_secret;
    w.charge("scrip_pt_doesnotexist", 100)
        .await
        .err(402, "token_error", "token_invalid");
    w.charge("not a token", 100)
        .await
        .err(402, "token_error", "token_invalid");
    let (_, token) = w.token(json!({ "max_per_charge": 3000 })).await;
    app.post(
        "/v1/charges",
        p,
        json!({ "token": token, "amount": 100, "currency": "eur" }),
    )
    .await
    .err(402, "token_error", "currency_mismatch");
    w.charge(&token, 3001)
        .await
        .err(402, "token_error", "max_per_charge_exceeded");
    for _ in 0..3 {
        w.charge(&token, 3000).await.ok();
    }
    let r = w.charge(&token, 1001).await;
    r.err(402, "token_error", "cap_exceeded");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("10.00 USD"),
        "names the remaining amount: {}",
        r.body
    );
    w.charge(&token, 1000).await.ok();
    w.charge(&token, 1)
        .await
        .err(402, "token_error", "cap_exceeded");
    // Expiry.
    let (_, short) = w
        .token(json!({ "expires_at": app.advance(1).await + 60 }))
        .await;
    w.charge(&short, 100).await.ok();
    app.advance(61).await;
    w.charge(&short, 100)
        .await
        .err(402, "token_error", "token_expired");
}

#[tokio::test]
async fn wrong_provider_is_refused_and_the_token_revoked() {
    let w = World::new().await;
    let (id, token) = w.token(json!({})).await;
    let (_, thief) = w.app.provider("Elsewhere").await;
    let r = w.app.charge(&thief, &token, 100).await;
    r.err(403, "permission_error", "token_scope_mismatch");
    let t = w.app.get(&format!("/v1/tokens/{id}"), &w.orch).await.ok();
    assert_eq!(t["status"], "revoked");
    // Even the rightful provider can no longer redeem it.
    w.charge(&token, 100)
        .await
        .err(402, "token_error", "token_revoked");
}

#[tokio::test]
async fn charge_state_conflicts() {
    let w = World::new().await;
    let app = &w.app;
    let p = &w.provider_secret;
    let (_, token) = w.token(json!({})).await;
    let c = w.charge(&token, 1000).await.ok();
    let id = c["id"].as_str().unwrap();
    app.post(&format!("/v1/charges/{id}/capture"), p, json!({}))
        .await
        .err(409, "invalid_request_error", "charge_already_captured");
    app.post(&format!("/v1/charges/{id}/cancel"), p, json!({}))
        .await
        .err(409, "invalid_request_error", "charge_already_captured");
    app.post("/v1/refunds", p, json!({ "charge": id, "amount": 1001 }))
        .await
        .err(409, "invalid_request_error", "charge_already_refunded");
    app.post("/v1/refunds", p, json!({ "charge": id }))
        .await
        .ok();
    app.post("/v1/refunds", p, json!({ "charge": id, "amount": 1 }))
        .await
        .err(409, "invalid_request_error", "charge_already_refunded");
    let hold = app
        .post(
            "/v1/charges",
            p,
            json!({ "token": token, "amount": 500, "currency": "usd", "capture": false }),
        )
        .await
        .ok();
    let hold_id = hold["id"].as_str().unwrap();
    app.post(
        &format!("/v1/charges/{hold_id}/capture"),
        p,
        json!({ "amount": 501 }),
    )
    .await
    .err(400, "invalid_request_error", "amount_invalid");
    app.post(&format!("/v1/charges/{hold_id}/cancel"), p, json!({}))
        .await
        .ok();
    app.post(&format!("/v1/charges/{hold_id}/capture"), p, json!({}))
        .await
        .err(409, "invalid_request_error", "charge_not_capturable");
}

#[tokio::test]
async fn idempotency_replays_and_refuses_reuse() {
    let w = World::new().await;
    let (id, token) = w.token(json!({})).await;
    let body = json!({ "token": token, "amount": 700, "currency": "usd" });
    let first = w
        .app
        .post_idem("/v1/charges", &w.provider_secret, body.clone(), "order-1")
        .await;
    assert_eq!(first.status, 200);
    assert!(first.headers.get("idempotent-replayed").is_none());
    let second = w
        .app
        .post_idem("/v1/charges", &w.provider_secret, body.clone(), "order-1")
        .await;
    assert_eq!(second.status, 200);
    assert_eq!(second.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(first.body, second.body);
    assert_eq!(w.spend(&id).await["captured"], 700, "charged once");
    let other = json!({ "token": token, "amount": 701, "currency": "usd" });
    w.app
        .post_idem("/v1/charges", &w.provider_secret, other, "order-1")
        .await
        .err(409, "idempotency_error", "idempotency_key_reused");
    // Keys are per secret: another caller's same key is its own.
    let c1 = w
        .app
        .post_idem("/v1/customers", ADMIN, json!({}), "order-1")
        .await
        .ok();
    assert!(c1["id"].as_str().unwrap().starts_with("cus_"));
    // A token creation replay returns the same secret (sealed at rest).
    let body = json!({ "payment_method": w.pm, "provider": w.provider, "currency": "usd", "cap": { "amount": 100, "period": "day" } });
    let t1 = w
        .app
        .post_idem("/v1/tokens", &w.orch, body.clone(), "tok-1")
        .await
        .ok();
    let t2 = w
        .app
        .post_idem("/v1/tokens", &w.orch, body, "tok-1")
        .await
        .ok();
    assert_eq!(t1["token"], t2["token"]);
    // Keys expire after 24 hours.
    w.app.advance(86_401).await;
    let body = json!({ "token": token, "amount": 700, "currency": "usd" });
    let again = w
        .app
        .post_idem("/v1/charges", &w.provider_secret, body, "order-1")
        .await
        .ok();
    assert_ne!(again["id"], first.body["id"]);
    let bad = w
        .app
        .send(
            Method::POST,
            "/v1/customers",
            ADMIN,
            Some(json!({})),
            Some(&"k".repeat(256)),
        )
        .await;
    bad.err(400, "invalid_request_error", "parameter_invalid");
}
