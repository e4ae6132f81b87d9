//! No card number, CVC or secret in clear in the database files or the
//! server's log output — only hashes, ciphertexts and last4.

use reqwest::Method;
use serde_json::json;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_card_number_or_secret_at_rest_or_in_logs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("server.log");
    // No SCRIP_ADMIN_KEY: the server generates one and prints it once.
    let p = Proc::spawn(&data, None, &log).await;
    let admin = p
        .stdout_head
        .lines()
        .find_map(|l| l.split_whitespace().find(|w| w.starts_with("sk_admin_")))
        .expect("the generated admin secret is printed once")
        .to_owned();

    let amex = "378282246310005";
    let cvc = "7391";
    let cus = p
        .send(Method::POST, "/v1/customers", &admin, Some(json!({})))
        .await
        .ok();
    let cred = p
        .send(
            Method::POST,
            &format!("/v1/customers/{}/credentials", cus["id"].as_str().unwrap()),
            &admin,
            Some(json!({})),
        )
        .await
        .ok();
    let orch = cred["secret"].as_str().unwrap().to_owned();
    let prov = p
        .send(
            Method::POST,
            "/v1/providers",
            &admin,
            Some(json!({ "name": "P" })),
        )
        .await
        .ok();
    let prov_secret = prov["secret"].as_str().unwrap().to_owned();
    let pm = p
        .send(
            Method::POST,
            "/v1/payment_methods",
            &orch,
            Some(
                json!({ "card": { "number": amex, "exp_month": 1, "exp_year": 2040, "cvc": cvc } }),
            ),
        )
        .await
        .ok();
    assert!(!pm.to_string().contains(amex));
    // Hostile inputs that carry card numbers: refused, never echoed.
    for body in [
        json!({ "card": { "number": VISA, "exp_month": 1, "exp_year": 2040, "cvc": cvc, "pin": VISA } }),
        json!({ "card": { "number": "4242424242424241", "exp_month": 1, "exp_year": 2040, "cvc": "123" } }),
        json!({ VISA: 1 }),
    ] {
        let r = p
            .send(Method::POST, "/v1/payment_methods", &orch, Some(body))
            .await;
        assert!(r.status >= 400 && r.status < 500);
        assert!(
            !r.body.to_string().contains(VISA) && !r.body.to_string().contains("4242424242424241"),
            "{}",
            r.body
        );
    }
    let r = p
        .send(
            Method::GET,
            &format!("/v1/payment_methods/{VISA}"),
            &orch,
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    assert!(!r.body.to_string().contains(VISA));
    // A token created under an idempotency key: its stored response must be sealed.
    let body = json!({ "payment_method": pm["id"], "provider": prov["id"], "currency": "usd", "cap": { "amount": 1000, "period": "month" } });
    let r = p
        .client()
        .with_secret(orch.clone())
        .send(Method::POST, "/v1/tokens", Some(&body), Some("idem-token"))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let token = r.body["token"].as_str().unwrap().to_owned();
    p.send(
        Method::POST,
        "/v1/charges",
        &prov_secret,
        Some(json!({ "token": token, "amount": 100, "currency": "usd" })),
    )
    .await
    .ok();
    let status = p.terminate().await;
    assert!(status.success());

    let secrets = [
        amex,
        cvc,
        VISA,
        "4242424242424241",
        admin.as_str(),
        orch.as_str(),
        prov_secret.as_str(),
        token.as_str(),
    ];
    let files = stored_bytes(&data).await;
    assert!(
        files.iter().any(|(p, _)| is_database(p)),
        "the database is there to scan"
    );
    for (path, bytes) in &files {
        for s in secrets {
            assert!(!contains(bytes, s), "{} holds {s} in clear", path.display());
        }
        if is_database(path) {
            // As a word: a random object id may hold the letters by chance.
            assert!(!mentions(bytes, "cvc"), "{} mentions a cvc", path.display());
        }
    }
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("request"),
        "the log was written at debug level"
    );
    for s in secrets {
        assert!(!log_text.contains(s), "the log holds {s}");
    }
}

#[test]
fn a_cvc_field_is_found_but_not_the_letters_inside_an_id() {
    for stored in [
        &b"{\"cvc\":\"123\"}"[..],
        b"CREATE TABLE t (cvc TEXT)",
        b"card_cvc",
        b"cvc",
    ] {
        assert!(
            mentions(stored, "cvc"),
            "{}",
            String::from_utf8_lossy(stored)
        );
    }
    for stored in [
        &b"req_0VcoKfV1qnVGcvc8YGssvQ2h"[..],
        b"aud_0Vco9Qcvc",
        b"xcvcx",
    ] {
        assert!(
            !mentions(stored, "cvc"),
            "{}",
            String::from_utf8_lossy(stored)
        );
    }
}
