//! Events, signed webhook deliveries with durable retries, and the
//! hash-chained audit log — with a real HTTP receiver on loopback.

use serde_json::{json, Value};

use crate::helpers::*;

async fn endpoint(app: &TestApp, secret: &str, url: &str, events: Value) -> (String, String) {
    let e = app
        .post(
            "/v1/webhook_endpoints",
            secret,
            json!({ "url": url, "enabled_events": events }),
        )
        .await
        .ok();
    assert_eq!(e["object"], "webhook_endpoint");
    assert_eq!(e["status"], "enabled");
    let s = e["secret"].as_str().unwrap().to_owned();
    assert!(s.starts_with("whsec_"));
    (e["id"].as_str().unwrap().to_owned(), s)
}

fn verified(delivery: &Received, secret: &str) -> Value {
    let header = delivery
        .0
        .get("scrip-signature")
        .expect("signed")
        .to_str()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    scrip_client::webhook::verify(
        &delivery.1,
        header,
        secret,
        now,
        scrip_client::webhook::TOLERANCE_SECS,
    )
    .expect("the signature verifies");
    // A different secret does not verify.
    assert!(scrip_client::webhook::verify(&delivery.1, header, "whsec_wrong", now, 300).is_err());
    serde_json::from_slice(&delivery.1).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_deliveries_reach_the_receiver() {
    let w = World::new().await;
    let rx = Receiver::start(vec![]).await;
    let (_, secret) = endpoint(
        &w.app,
        &w.provider_secret,
        &rx.url,
        json!(["charge.succeeded", "charge.refunded"]),
    )
    .await;
    let (_, token) = w.token(json!({})).await;
    let c = w.charge(&token, 1_500).await.ok();
    let got = rx.wait_for(1).await;
    let event = verified(&got[0], &secret);
    assert_eq!(event["object"], "event");
    assert_eq!(event["type"], "charge.succeeded");
    assert_eq!(event["data"]["object"]["id"], c["id"]);
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    w.app
        .post(
            "/v1/refunds",
            &w.provider_secret,
            json!({ "charge": c["id"] }),
        )
        .await
        .ok();
    let got = rx.wait_for(2).await;
    let event = verified(&got[1], &secret);
    assert_eq!(event["type"], "charge.refunded");
    assert_eq!(event["data"]["object"]["amount_refunded"], 1_500);
    // Payloads never hold card numbers or secrets.
    for (_, body) in &got {
        let text = String::from_utf8_lossy(body);
        assert!(
            !text.contains(VISA) && !text.contains(&token) && !text.contains(&w.provider_secret)
        );
    }
    // The event can be read back, and resent by hand.
    let id = event["id"].as_str().unwrap();
    let e = w
        .app
        .get(&format!("/v1/events/{id}"), &w.provider_secret)
        .await
        .ok();
    assert_eq!(e, event);
    let resend = format!("/v1/events/{id}/resend");
    let r = w
        .app
        .post_idem(&resend, &w.provider_secret, json!({}), "resend-1")
        .await
        .ok();
    assert_eq!(r["deliveries_queued"], 1);
    // The same key again is a replay, not a second resend.
    let again = w
        .app
        .post_idem(&resend, &w.provider_secret, json!({}), "resend-1")
        .await;
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(again.ok(), r);
    let got = rx.wait_for(3).await;
    assert_eq!(verified(&got[2], &secret)["id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_after_500s_and_timeouts() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(dir, |c| {
        c.webhook_timeout = std::time::Duration::from_secs(2)
    })
    .await;
    let (customer, _, orch) = app.orchestrator().await;
    let _ = customer;
    let rx = Receiver::start(vec![
        Reply::Status(500),
        Reply::Slow(std::time::Duration::from_secs(5), 200),
    ])
    .await;
    let (endpoint_id, secret) = endpoint(&app, &orch, &rx.url, json!(["*"])).await;
    let pm = app.card(&orch, VISA).await;
    let (provider, _) = app.provider("P").await;
    app.token(&orch, &pm, &provider, json!({})).await;
    // 500, then a timeout, then 200: three attempts of one delivery.
    let got = rx.wait_for(3).await;
    for d in &got {
        assert_eq!(verified(d, &secret)["type"], "payment_token.created");
    }
    let mut delivered = None;
    for _ in 0..100 {
        let list = app
            .get(
                &format!("/v1/webhook_endpoints/{endpoint_id}/deliveries"),
                &orch,
            )
            .await
            .ok();
        if list["data"][0]["status"] == "succeeded" {
            delivered = Some(list["data"][0].clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let d = delivered.expect("the delivery succeeds in the end");
    assert_eq!(d["attempt_count"], 3);
    let attempts = d["attempts"].as_array().unwrap();
    // Newest first: 200, timeout, 500.
    assert_eq!(attempts[0]["status_code"], 200);
    assert_eq!(attempts[1]["status_code"], Value::Null);
    assert!(attempts[1]["error"].as_str().unwrap().contains("no answer"));
    assert_eq!(attempts[2]["status_code"], 500);
    assert!(attempts
        .iter()
        .all(|a| a["latency_ms"].as_i64().unwrap() >= 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_deliveries_resume_after_a_restart() {
    // A port with nothing listening yet: bound (so that nothing else takes
    // it meanwhile) but not listening, so connections to it are refused.
    let placeholder = tokio::net::TcpSocket::new_v4().unwrap();
    placeholder.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = placeholder.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let w = World::new().await;
    let (endpoint_id, secret) = endpoint(
        &w.app,
        &w.provider_secret,
        &url,
        json!(["charge.succeeded"]),
    )
    .await;
    let (_, token) = w.token(json!({})).await;
    w.charge(&token, 900).await.ok();
    // Wait for one failed attempt (connection refused), then stop.
    for _ in 0..100 {
        let list = w
            .app
            .get(
                &format!("/v1/webhook_endpoints/{endpoint_id}/deliveries"),
                &w.provider_secret,
            )
            .await
            .ok();
        if list["data"][0]["attempt_count"].as_i64().unwrap_or(0) >= 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let provider_secret = w.provider_secret.clone();
    let dir = w.app.stop().await;
    // The receiver comes up; then Scrip restarts on the same data.
    let rx = Receiver::on(placeholder.listen(1024).unwrap(), vec![]);
    let app = TestApp::spawn_in(dir).await;
    let got = rx.wait_for(1).await;
    assert_eq!(verified(&got[0], &secret)["type"], "charge.succeeded");
    let mut status = Value::Null;
    for _ in 0..50 {
        let list = app
            .get(
                &format!("/v1/webhook_endpoints/{endpoint_id}/deliveries"),
                &provider_secret,
            )
            .await
            .ok();
        status = list["data"][0]["status"].clone();
        if status == "succeeded" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(status, "succeeded");
}

#[tokio::test]
async fn each_party_sees_only_its_own_events() {
    let w = World::new().await;
    let (_, token) = w.token(json!({})).await;
    w.charge(&token, 100).await.ok();
    let (_, _, other_orch) = w.app.orchestrator().await;
    let (_, other_provider) = w.app.provider("Other").await;
    let types = |v: &Value| -> Vec<String> {
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap().to_owned())
            .collect()
    };
    let orch = w.app.get("/v1/events", &w.orch).await.ok();
    assert_eq!(
        types(&orch),
        vec!["charge.succeeded", "payment_token.created"]
    );
    let prov = w.app.get("/v1/events", &w.provider_secret).await.ok();
    assert_eq!(
        types(&prov),
        vec!["charge.succeeded"],
        "providers see charges, not tokens"
    );
    assert!(types(&w.app.get("/v1/events", &other_orch).await.ok()).is_empty());
    assert!(types(&w.app.get("/v1/events", &other_provider).await.ok()).is_empty());
    let token_event = orch["data"][1]["id"].as_str().unwrap();
    w.app
        .get(&format!("/v1/events/{token_event}"), &w.provider_secret)
        .await
        .err(404, "invalid_request_error", "resource_missing");
    w.app
        .get(&format!("/v1/events/{token_event}"), &other_orch)
        .await
        .err(404, "invalid_request_error", "resource_missing");
    assert_eq!(types(&w.app.get("/v1/events", ADMIN).await.ok()).len(), 2);
    // Filters.
    let only = w
        .app
        .get("/v1/events?type=payment_token.created", &w.orch)
        .await
        .ok();
    assert_eq!(types(&only), vec!["payment_token.created"]);
    // The oldest event's second: the two events may fall in different seconds.
    let created = orch["data"][1]["created"].as_i64().unwrap();
    let none = w
        .app
        .get(&format!("/v1/events?created[lt]={created}"), &w.orch)
        .await
        .ok();
    assert!(types(&none).is_empty());
    let all = w
        .app
        .get(&format!("/v1/events?created[gte]={created}"), &w.orch)
        .await
        .ok();
    assert_eq!(types(&all).len(), 2);
    w.app
        .get("/v1/events?type=charge.exploded", &w.orch)
        .await
        .err(400, "invalid_request_error", "parameter_invalid");
    w.app
        .get("/v1/events", &token)
        .await
        .err(403, "permission_error", "forbidden");
    // A provider's endpoint never receives another party's events.
    let list = w
        .app
        .get("/v1/webhook_endpoints", &other_provider)
        .await
        .ok();
    assert!(list["data"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn webhook_endpoint_validation_and_management() {
    let w = World::new().await;
    let p = &w.provider_secret;
    for url in [
        "ftp://example.com/x",
        "not a url",
        "http://",
        "https://user:pw@example.com/x",
        "javascript:alert(1)",
        "/relative",
    ] {
        let r = w
            .app
            .post(
                "/v1/webhook_endpoints",
                p,
                json!({ "url": url, "enabled_events": ["*"] }),
            )
            .await;
        r.err(400, "invalid_request_error", "parameter_invalid");
        assert_eq!(r.body["error"]["param"], "url");
    }
    let r = w
        .app
        .post(
            "/v1/webhook_endpoints",
            p,
            json!({ "url": "https://example.com/h", "enabled_events": ["charge.exploded"] }),
        )
        .await;
    r.err(400, "invalid_request_error", "parameter_invalid");
    assert_eq!(r.body["error"]["param"], "enabled_events");
    w.app
        .post(
            "/v1/webhook_endpoints",
            p,
            json!({ "url": "https://example.com/h", "enabled_events": [] }),
        )
        .await
        .err(400, "invalid_request_error", "parameter_invalid");
    w.app
        .post(
            "/v1/webhook_endpoints",
            ADMIN,
            json!({ "url": "https://example.com/h", "enabled_events": ["*"] }),
        )
        .await
        .err(403, "permission_error", "forbidden");
    let (id, _) = endpoint(
        &w.app,
        p,
        "https://example.com/h",
        json!(["charge.succeeded"]),
    )
    .await;
    let listed = w.app.get("/v1/webhook_endpoints", p).await.ok();
    assert!(
        listed["data"][0].get("secret").is_none(),
        "the secret is shown once"
    );
    let updated = w
        .app
        .post(
            &format!("/v1/webhook_endpoints/{id}"),
            p,
            json!({ "enabled_events": ["*"], "url": "https://example.org/x" }),
        )
        .await
        .ok();
    assert_eq!(updated["enabled_events"], json!(["*"]));
    assert_eq!(updated["url"], "https://example.org/x");
    let (_, other) = w.app.provider("Other").await;
    w.app
        .get(&format!("/v1/webhook_endpoints/{id}"), &other)
        .await
        .err(404, "invalid_request_error", "resource_missing");
    let r = w
        .app
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/webhook_endpoints/{id}"),
            &other,
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    let d = w
        .app
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/webhook_endpoints/{id}"),
            p,
            None,
            None,
        )
        .await
        .ok();
    assert_eq!(d["deleted"], true);
    w.app
        .get(&format!("/v1/webhook_endpoints/{id}"), p)
        .await
        .err(404, "invalid_request_error", "resource_missing");
}

#[tokio::test]
async fn the_audit_log_is_a_verifiable_chain_that_detects_tampering() {
    let w = World::new().await;
    let (token_id, token) = w
        .token(json!({ "cap": { "amount": 100, "period": "day" } }))
        .await;
    w.charge(&token, 100).await.ok();
    w.charge(&token, 1)
        .await
        .err(402, "token_error", "cap_exceeded");
    let list = w.app.get("/v1/audit_events?limit=100", ADMIN).await.ok();
    let records = list["data"].as_array().unwrap();
    let refused = records
        .iter()
        .find(|r| r["action"] == "charge.refused")
        .expect("the refused authorization is recorded");
    assert_eq!(refused["code"], "cap_exceeded");
    assert_eq!(refused["outcome"], "refused");
    assert_eq!(refused["object_id"], token_id.as_str());
    assert_eq!(refused["actor"], w.provider.as_str());
    assert!(refused["request_id"].as_str().unwrap().starts_with("req_"));
    let issued = records
        .iter()
        .find(|r| r["action"] == "payment_token.created")
        .unwrap();
    assert_eq!(
        issued["actor"],
        w.credential.as_str(),
        "who: the secret's id, never the secret"
    );
    let text = list.to_string();
    for secret in [
        w.orch.as_str(),
        w.provider_secret.as_str(),
        token.as_str(),
        ADMIN,
    ] {
        assert!(!text.contains(secret));
    }
    let v = w.app.get("/v1/audit_events/verify", ADMIN).await.ok();
    assert_eq!(v["valid"], true);
    assert_eq!(v["records"].as_u64().unwrap() as usize, records.len());
    w.app
        .get("/v1/audit_events", &w.orch)
        .await
        .err(403, "permission_error", "forbidden");

    // Alter one record in the database: the chain breaks right there.
    let seq = refused["seq"].as_i64().unwrap();
    w.app
        .execute_sql(&format!(
            "UPDATE audit_events SET outcome = 'succeeded' WHERE seq = {seq}"
        ))
        .await;
    let v = w.app.get("/v1/audit_events/verify", ADMIN).await.ok();
    assert_eq!(v["valid"], false);
    assert_eq!(v["first_broken_seq"], seq);
    // Restoring it and deleting an earlier one is caught too.
    w.app
        .execute_sql(&format!(
            "UPDATE audit_events SET outcome = 'refused' WHERE seq = {seq}"
        ))
        .await;
    assert_eq!(
        w.app.get("/v1/audit_events/verify", ADMIN).await.ok()["valid"],
        true
    );
    w.app
        .execute_sql("DELETE FROM audit_events WHERE seq = 2")
        .await;
    let v = w.app.get("/v1/audit_events/verify", ADMIN).await.ok();
    assert_eq!(v["valid"], false);
    assert_eq!(v["first_broken_seq"], 3);
}
