//! Several nodes on one PostgreSQL database: two `scrip serve` processes
//! on one fresh schema, with the same master and admin keys. The cap,
//! revocation, idempotency and webhook delivery hold across nodes, because
//! they hold in the database. These run when `SCRIP_TEST_POSTGRES_URL` is
//! set (CI sets it) and say that they were skipped otherwise.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::sync::Arc;

use base64::Engine;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::*;

/// Two nodes sharing one schema; dropped: both killed, the schema dropped.
struct Cluster {
    nodes: [Proc; 2],
    base: String,
    schema: String,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.start_kill();
        }
        drop_schema_now(self.base.clone(), self.schema.clone());
    }
}

/// The world every test starts from, made through node 0.
struct Fixture {
    cluster: Cluster,
    customer: String,
    credential: String,
    orch: String,
    provider: String,
    provider_secret: String,
    pm: String,
}

/// Starts two nodes at once on a fresh schema (both migrate and create the
/// first data keys concurrently), or `None` with a note when no PostgreSQL
/// is configured.
async fn cluster(test: &str) -> Option<Cluster> {
    let Some(base) = postgres_base() else {
        let _ = writeln!(
            std::io::stderr(),
            "multinode {test}: skipped (SCRIP_TEST_POSTGRES_URL is not set)"
        );
        return None;
    };
    let schema = fresh_schema(&base).await;
    let url = scrip_server::store::postgres::url_with_search_path(&base, &schema);
    let master = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>());
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let (la, lb) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let (node_a, node_b) = tokio::join!(
        Proc::spawn_with(&a, Some(ADMIN), &la, Some(&url), Some(&master)),
        Proc::spawn_with(&b, Some(ADMIN), &lb, Some(&url), Some(&master)),
    );
    Some(Cluster {
        nodes: [node_a, node_b],
        base,
        schema,
        _dir: dir,
    })
}

async fn send(
    node: &Proc,
    method: Method,
    path: &str,
    secret: &str,
    body: Option<Value>,
    key: Option<&str>,
) -> Resp {
    let r = node
        .client()
        .with_secret(secret.to_owned())
        .send(method, path, body.as_ref(), key)
        .await
        .expect("transport");
    Resp {
        status: r.status,
        headers: r.headers,
        body: r.body,
    }
}

async fn post(node: &Proc, path: &str, secret: &str, body: Value) -> Resp {
    send(node, Method::POST, path, secret, Some(body), None).await
}

async fn fixture(test: &str) -> Option<Fixture> {
    let cluster = cluster(test).await?;
    let n = &cluster.nodes[0];
    let customer = post(n, "/v1/customers", ADMIN, json!({ "name": "Ada" }))
        .await
        .ok();
    let customer = customer["id"].as_str().unwrap().to_owned();
    let cred = post(
        n,
        &format!("/v1/customers/{customer}/credentials"),
        ADMIN,
        json!({}),
    )
    .await
    .ok();
    let provider = post(n, "/v1/providers", ADMIN, json!({ "name": "P" }))
        .await
        .ok();
    let orch = cred["secret"].as_str().unwrap().to_owned();
    // The card is vaulted on node 1 and used on node 0: both nodes share
    // the data keys.
    let pm = post(
        &cluster.nodes[1],
        "/v1/payment_methods",
        &orch,
        json!({ "card": { "number": VISA, "exp_month": 12, "exp_year": 2040, "cvc": "123" } }),
    )
    .await
    .ok();
    Some(Fixture {
        customer,
        credential: cred["id"].as_str().unwrap().to_owned(),
        orch,
        provider: provider["id"].as_str().unwrap().to_owned(),
        provider_secret: provider["secret"].as_str().unwrap().to_owned(),
        pm: pm["id"].as_str().unwrap().to_owned(),
        cluster,
    })
}

impl Fixture {
    fn node(&self, i: usize) -> &Proc {
        &self.cluster.nodes[i % 2]
    }

    /// Issues a token on node 0: (id, secret).
    async fn token(&self, cap: i64) -> (String, String) {
        let t = post(
            self.node(0),
            "/v1/tokens",
            &self.orch,
            json!({ "payment_method": self.pm, "provider": self.provider, "currency": "usd",
                    "cap": { "amount": cap, "period": "month" } }),
        )
        .await
        .ok();
        (
            t["id"].as_str().unwrap().to_owned(),
            t["token"].as_str().unwrap().to_owned(),
        )
    }

    async fn charge(&self, node: usize, token: &str, amount: i64, key: Option<&str>) -> Resp {
        send(
            self.node(node),
            Method::POST,
            "/v1/charges",
            &self.provider_secret,
            Some(json!({ "token": token, "amount": amount, "currency": "usd" })),
            key,
        )
        .await
    }

    async fn verify_ledger(&self) {
        for node in &self.cluster.nodes {
            let v = send(node, Method::GET, "/v1/ledger/verify", ADMIN, None, None)
                .await
                .ok();
            assert_eq!(v["balanced"], true, "{v}");
            let a = send(
                node,
                Method::GET,
                "/v1/audit_events/verify",
                ADMIN,
                None,
                None,
            )
            .await
            .ok();
            assert_eq!(a["valid"], true, "{a}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_charges_through_two_nodes_never_exceed_the_cap() {
    let Some(f) = fixture("concurrent_charges").await else {
        return;
    };
    let f = Arc::new(f);
    // Cap 10,000 and 400 a charge: exactly 25 of 60 fit, whichever node.
    let (id, token) = f.token(10_000).await;
    let mut tasks = Vec::new();
    for i in 0..60 {
        let (f, token) = (f.clone(), token.clone());
        tasks.push(tokio::spawn(
            async move { f.charge(i, &token, 400, None).await },
        ));
    }
    let mut succeeded = [0; 2];
    for (i, t) in tasks.into_iter().enumerate() {
        let r = t.await.unwrap();
        match r.status {
            200 => succeeded[i % 2] += 1,
            402 => assert_eq!(r.code(), "cap_exceeded", "{}", r.body),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(succeeded[0] + succeeded[1], 25, "{succeeded:?}");
    for node in 0..2 {
        let t = send(
            f.node(node),
            Method::GET,
            &format!("/v1/tokens/{id}"),
            &f.orch,
            None,
            None,
        )
        .await
        .ok();
        assert_eq!(t["spend"]["captured"], 10_000);
        assert_eq!(t["spend"]["remaining"], 0);
    }
    f.verify_ledger().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_credential_revoked_on_one_node_is_refused_on_the_other_at_once() {
    let Some(f) = fixture("revocation").await else {
        return;
    };
    let (_, token) = f.token(10_000).await;
    f.charge(1, &token, 100, None).await.ok();
    post(
        f.node(0),
        &format!("/v1/credentials/{}/revoke", f.credential),
        ADMIN,
        json!({}),
    )
    .await
    .ok();
    // The very next request, on the other node.
    f.charge(1, &token, 100, None)
        .await
        .err(402, "token_error", "token_revoked");
    let r = send(
        f.node(1),
        Method::GET,
        "/v1/payment_methods",
        &f.orch,
        None,
        None,
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let t = send(
        f.node(1),
        Method::GET,
        &format!("/v1/customers/{}", f.customer),
        ADMIN,
        None,
        None,
    )
    .await;
    assert_eq!(t.status, 200);
    f.verify_ledger().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_idempotency_key_sent_to_both_nodes_has_one_effect() {
    let Some(f) = fixture("idempotency").await else {
        return;
    };
    let f = Arc::new(f);
    let (id, token) = f.token(1_000_000).await;
    for round in 0..5 {
        let key = format!("order-{round}");
        let mut tasks = Vec::new();
        for i in 0..6 {
            let (f, token, key) = (f.clone(), token.clone(), key.clone());
            tasks.push(tokio::spawn(async move {
                f.charge(i, &token, 1_000, Some(&key)).await
            }));
        }
        let mut ids = HashSet::new();
        for t in tasks {
            let r = t.await.unwrap();
            match r.status {
                200 => {
                    ids.insert(r.id());
                }
                409 => assert_eq!(r.code(), "idempotency_in_progress", "{}", r.body),
                other => panic!("unexpected {other}: {}", r.body),
            }
        }
        assert_eq!(ids.len(), 1, "every answer names the one charge: {ids:?}");
    }
    let charges = send(
        f.node(1),
        Method::GET,
        "/v1/charges?limit=100",
        &f.provider_secret,
        None,
        None,
    )
    .await
    .ok();
    assert_eq!(
        charges["data"].as_array().unwrap().len(),
        5,
        "one charge per key"
    );
    let t = send(
        f.node(0),
        Method::GET,
        &format!("/v1/tokens/{id}"),
        &f.orch,
        None,
        None,
    )
    .await
    .ok();
    assert_eq!(t["spend"]["captured"], 5_000);
    f.verify_ledger().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_dispatchers_never_deliver_one_event_twice() {
    let Some(f) = fixture("webhooks").await else {
        return;
    };
    let rx = Receiver::start(vec![]).await;
    post(
        f.node(1),
        "/v1/webhook_endpoints",
        &f.provider_secret,
        json!({ "url": rx.url, "enabled_events": ["charge.succeeded"] }),
    )
    .await
    .ok();
    let (_, token) = f.token(1_000_000).await;
    let f = Arc::new(f);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (f, token) = (f.clone(), token.clone());
        tasks.push(tokio::spawn(
            async move { f.charge(i, &token, 10, None).await },
        ));
    }
    for t in tasks {
        t.await.unwrap().ok();
    }
    rx.wait_for(40).await;
    // Both dispatchers keep polling; nothing arrives twice.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let received = rx.received.lock().unwrap().clone();
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for (_, body) in &received {
        let event: Value = serde_json::from_slice(body).unwrap();
        *per_event
            .entry(event["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_event.len(), 40);
    assert!(
        per_event.values().all(|n| *n == 1),
        "an event was delivered twice: {per_event:?}"
    );
    assert_eq!(received.len(), 40);
    f.verify_ledger().await;
}
