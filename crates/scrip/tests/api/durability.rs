//! Every acknowledged write survives `kill -9`; SIGTERM drains and exits 0.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    let p = Proc::spawn(&data, Some(ADMIN), &log).await;

    let cus = p
        .send(
            Method::POST,
            "/v1/customers",
            ADMIN,
            Some(json!({ "name": "Ada" })),
        )
        .await
        .ok();
    let cus = cus["id"].as_str().unwrap().to_owned();
    let cred = p
        .send(
            Method::POST,
            &format!("/v1/customers/{cus}/credentials"),
            ADMIN,
            Some(json!({})),
        )
        .await
        .ok();
    let orch = cred["secret"].as_str().unwrap().to_owned();
    let prov = p
        .send(
            Method::POST,
            "/v1/providers",
            ADMIN,
            Some(json!({ "name": "P" })),
        )
        .await
        .ok();
    let (prov_id, prov_secret) = (
        prov["id"].as_str().unwrap().to_owned(),
        prov["secret"].as_str().unwrap().to_owned(),
    );
    let pm = p
        .send(Method::POST, "/v1/payment_methods", &orch, Some(json!({ "card": { "number": VISA, "exp_month": 1, "exp_year": 2040, "cvc": "123" } })))
        .await
        .ok();
    let pm = pm["id"].as_str().unwrap().to_owned();
    let t = p
        .send(Method::POST, "/v1/tokens", &orch, Some(json!({ "payment_method": pm, "provider": prov_id, "currency": "usd", "cap": { "amount": 100000, "period": "month" } })))
        .await
        .ok();
    let (token_id, token) = (
        t["id"].as_str().unwrap().to_owned(),
        t["token"].as_str().unwrap().to_owned(),
    );
    // Concurrent charges, then the last acknowledged write is a revoke.
    let mut tasks = Vec::new();
    for i in 0..30 {
        let client = p.client().with_secret(prov_secret.clone());
        let token = token.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({ "token": token, "amount": 100 + i, "currency": "usd" });
            client
                .send(Method::POST, "/v1/charges", Some(&body), None)
                .await
                .unwrap()
        }));
    }
    let mut acknowledged = Vec::new();
    let mut total = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        acknowledged.push(r.body["id"].as_str().unwrap().to_owned());
        total += 100 + i as i64;
    }
    let (second_id, _) = {
        let t = p
            .send(Method::POST, "/v1/tokens", &orch, Some(json!({ "payment_method": pm, "provider": prov_id, "currency": "usd", "cap": { "amount": 5, "period": "day" } })))
            .await
            .ok();
        (t["id"].as_str().unwrap().to_owned(), ())
    };
    p.send(
        Method::POST,
        &format!("/v1/tokens/{second_id}/revoke"),
        &orch,
        Some(json!({})),
    )
    .await
    .ok();

    // kill -9 right after the responses.
    let mut child = p.child;
    child.kill().await.unwrap();

    let p = Proc::spawn(&data, Some(ADMIN), &log).await;
    for id in &acknowledged {
        p.send(
            Method::GET,
            &format!("/v1/charges/{id}"),
            &prov_secret,
            None,
        )
        .await
        .ok();
    }
    let t = p
        .send(Method::GET, &format!("/v1/tokens/{token_id}"), &orch, None)
        .await
        .ok();
    assert_eq!(t["spend"]["captured"], total);
    let t = p
        .send(Method::GET, &format!("/v1/tokens/{second_id}"), &orch, None)
        .await
        .ok();
    assert_eq!(t["status"], "revoked");
    // The vaulted card still decrypts and charges after the restart.
    p.send(
        Method::POST,
        "/v1/charges",
        &prov_secret,
        Some(json!({ "token": token, "amount": 1, "currency": "usd" })),
    )
    .await
    .ok();

    let status = p.terminate().await;
    assert!(status.success(), "SIGTERM exits cleanly: {status:?}");
}

#[tokio::test]
async fn graceful_in_process_shutdown_keeps_data() {
    let w = World::new().await;
    let (id, token) = w.token(json!({})).await;
    w.charge(&token, 1234).await.ok();
    let orch = w.orch.clone();
    let dir = w.app.stop().await;
    let app = TestApp::spawn_in(dir).await;
    let t = app.get(&format!("/v1/tokens/{id}"), &orch).await.ok();
    assert_eq!(t["spend"]["captured"], 1234);
}
