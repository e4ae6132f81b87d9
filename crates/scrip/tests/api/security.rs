//! Hardening through the real server: hostile inputs on every write
//! endpoint, per-secret rate limits, HTTPS, and a whole demo at debug level
//! whose output holds no card number or secret.

use serde_json::{json, Value};

use crate::helpers::*;

/// Bodies no endpoint should ever answer with a 5xx.
fn hostile_bodies() -> Vec<String> {
    let deep = format!("{}1{}", "[".repeat(5_000), "]".repeat(5_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(5_000), "}".repeat(5_000));
    let long_id = "x".repeat(5_000);
    vec![
        String::new(),
        "null".into(),
        "[]".into(),
        "\"string\"".into(),
        "{".into(),
        "{}".into(),
        deep,
        deep_object,
        r#"{"amount":9223372036854775807,"currency":"usd","token":"scrip_pt_x"}"#.into(),
        r#"{"amount":-9223372036854775808,"currency":"usd","token":"scrip_pt_x"}"#.into(),
        r#"{"amount":1e309,"currency":"usd","token":"scrip_pt_x"}"#.into(),
        r#"{"amount":null,"currency":null,"token":null}"#.into(),
        r#"{"amount":"100","currency":7,"token":[]}"#.into(),
        "{\"name\":\"a\\u0000b\",\"email\":\"x@y.z\"}".into(),
        "{\"name\":\"\u{202e}evil\u{202c}\",\"url\":\"http://\u{202e}moc.elpmaxe\"}".into(),
        format!(r#"{{"charge":"{long_id}","payment_method":"{long_id}","provider":"{long_id}"}}"#),
        r#"{"charge":"ch_' OR 1=1 --","token":"scrip_pt_'; DROP TABLE charges; --","amount":1,"currency":"usd"}"#.into(),
        r#"{"card":{"number":4242424242424242,"exp_month":1e3,"exp_year":-1,"cvc":null}}"#.into(),
        r#"{"cap":{"amount":1.5,"period":"month"},"currency":"usd","payment_method":"pm_x","provider":"prov_x"}"#.into(),
        r#"{"url":"http://example.com","enabled_events":"*"}"#.into(),
    ]
}

#[tokio::test]
async fn hostile_inputs_get_4xx_in_the_error_shape() {
    let w = World::new().await;
    let (_, token) = w.token(json!({})).await;
    let endpoints: Vec<(&str, &str)> = vec![
        ("/v1/customers", ADMIN),
        ("/v1/providers", ADMIN),
        ("/v1/payment_methods", &w.orch),
        ("/v1/tokens", &w.orch),
        ("/v1/charges", &w.provider_secret),
        ("/v1/refunds", &w.provider_secret),
        ("/v1/payouts", &w.provider_secret),
        ("/v1/webhook_endpoints", &w.provider_secret),
        ("/v1/test_helpers/advance_clock", ADMIN),
        ("/v1/tokens/self/derive", &token),
        ("/v1/customers/cus_missing/credentials", ADMIN),
        ("/v1/charges/ch_missing/capture", &w.provider_secret),
    ];
    let raw = reqwest::Client::new();
    for (path, secret) in &endpoints {
        for body in hostile_bodies() {
            let r = raw
                .post(format!("{}{path}", w.app.url))
                .bearer_auth(secret)
                .body(body.clone())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let json: Value = r.json().await.unwrap_or(Value::Null);
            let shown: String = body.chars().take(60).collect();
            // Only `{}` (or no body at all) is a valid request here: it
            // creates a customer. Every other one is a 4xx in the error
            // shape, never a 5xx.
            if *path == "/v1/customers" && (body == "{}" || body.is_empty()) {
                assert_eq!(status, 200, "{path} {shown}: {json}");
                continue;
            }
            assert!(
                (400..500).contains(&status),
                "{path} {shown}: {status} {json}"
            );
            assert!(
                json["error"]["type"].is_string()
                    && json["error"]["code"].is_string()
                    && json["error"]["message"].is_string(),
                "{path} {shown}: {json}"
            );
            assert!(!json.to_string().contains("4242424242424242"));
        }
    }
    // Absurd ids, cursors and limits on reads.
    for path in [
        format!("/v1/charges/{}", "c".repeat(5_000)),
        "/v1/charges/ch_'%20OR%201=1%20--".into(),
        "/v1/charges?limit=-1".into(),
        "/v1/charges?limit=1e3".into(),
        "/v1/charges?limit=18446744073709551616".into(),
        format!("/v1/charges?starting_after={}", "s".repeat(5_000)),
        "/v1/charges?starting_after=%00".into(),
        "/v1/charges?limit=10&limit=11&limit=x".into(),
        "/v1/events?created[gte]=99999999999999999999".into(),
    ] {
        let r = w.app.get(&path, &w.provider_secret).await;
        assert!(
            (400..500).contains(&r.status),
            "{path}: {} {}",
            r.status,
            r.body
        );
        assert!(r.body["error"]["code"].is_string(), "{path}: {}", r.body);
    }
    // A secret that is absurd, and one with a NUL, are plain 401s.
    let r = raw
        .get(format!("{}/v1/charges", w.app.url))
        .header("authorization", format!("Bearer {}", "k".repeat(5_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // No charge came out of any of it.
    let charges = w.app.get("/v1/charges", &w.provider_secret).await.ok();
    assert!(charges["data"].as_array().unwrap().is_empty());
    w.charge(&token, 100).await.ok();
}

#[tokio::test]
async fn rate_limits_refuse_before_any_effect() {
    let dir = tempfile::tempdir().unwrap();
    let app = TestApp::spawn_with(dir, |c| c.rate_limit_per_second = 2).await;
    // One admin request for the provider, then a burst of customers: the
    // bucket holds twice the rate, so three more fit, and the next is 429.
    let started = std::time::Instant::now();
    let (_, provider_secret) = app.provider("P").await;
    let mut created = 0;
    let mut limited = None;
    for _ in 0..100 {
        let r = app.post("/v1/customers", ADMIN, json!({})).await;
        match r.status {
            200 => created += 1,
            429 => {
                limited = Some(r);
                break;
            }
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    // Three fit in the burst; on a slow machine the bucket may also have
    // refilled (two a second) while the requests ran.
    let refilled = (started.elapsed().as_secs_f64() * 2.0).floor() as usize;
    assert!(
        (3..=3 + refilled).contains(&created),
        "{created} created with {refilled} refilled"
    );
    let r = limited.expect("a request past the burst is limited");
    r.err(429, "rate_limit_error", "rate_limited");
    let retry: u64 = r
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    // Another secret has its own bucket.
    assert_eq!(app.get("/v1/balance", &provider_secret).await.status, 200);
    // After the wait, the admin is served again, and the limited request
    // created nothing.
    tokio::time::sleep(std::time::Duration::from_secs(retry)).await;
    let list = app.get("/v1/customers?limit=100", ADMIN).await.ok();
    assert_eq!(list["data"].as_array().unwrap().len(), created);
}

#[tokio::test]
async fn serves_https_with_a_given_certificate() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let data = tempfile::tempdir().unwrap();
    let running = scrip_server::server::start(scrip_server::server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.path().to_owned(),
        admin_key: Some(ADMIN.to_owned()),
        tls: Some((cert_path, key_path)),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let port = running.addr.port();
    let r = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("https://localhost:{port}/v1/customers"))
        .bearer_auth(ADMIN)
        .json(&json!({ "name": "over TLS" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    running.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_demo_at_debug_level_prints_no_card_number_or_secret() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrip"))
        .arg("demo")
        .env("SCRIP_LOG", "debug")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("Demo complete"));
    assert!(
        stderr.contains("DEBUG") || stderr.contains("request"),
        "logging ran at debug level"
    );
    for (name, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        let found = scrip_server::scan::scan_text(text);
        assert!(
            found.is_empty(),
            "{name} holds {:?}",
            found.iter().map(|f| f.describe()).collect::<Vec<_>>()
        );
        assert!(
            !text.contains("4242424242424242") && !text.contains("4242 4242 4242 4242"),
            "{name}"
        );
        assert!(!text.contains("\"cvc\""), "{name}");
    }
}

#[tokio::test]
async fn master_key_rotation_keeps_vaulted_cards_charging_across_restarts() {
    let w = World::new().await;
    let (_, token) = w.token(json!({})).await;
    w.charge(&token, 100).await.ok();
    let before = w.app.get("/v1/keys", ADMIN).await.ok();
    let old = before["active_master_key"].as_str().unwrap().to_owned();
    assert_eq!(before["data_keys"].as_array().unwrap().len(), 2);
    assert!(
        !before.to_string().contains("wrapped"),
        "ids only, no key material"
    );

    let r = w.app.post("/v1/keys/rotate", ADMIN, json!({})).await.ok();
    assert_eq!(r["object"], "key_rotation");
    let new = r["active_master_key"].as_str().unwrap().to_owned();
    assert_ne!(new, old);
    assert_eq!(r["rewrapped_data_keys"], 2);
    assert_eq!(r["retired_master_keys"], json!([old]));
    // The card vaulted under the old master key still charges…
    w.charge(&token, 100).await.ok();
    let after = w.app.get("/v1/keys", ADMIN).await.ok();
    assert_eq!(after["master_keys"], json!([new]));
    assert!(after["data_keys"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k["master_key"] == new.as_str()));
    // …and after a restart, with only the new key in the keyring.
    let key_file = std::fs::read_to_string(w.app.dir.path().join("master.key")).unwrap();
    assert_eq!(key_file.lines().count(), 1);
    let provider_secret = w.provider_secret.clone();
    let dir = w.app.stop().await;
    let app = TestApp::spawn_in(dir).await;
    app.charge(&provider_secret, &token, 100).await.ok();
    app.post("/v1/keys/rotate", &provider_secret, json!({}))
        .await
        .err(403, "permission_error", "forbidden");
    // The rotation is in the audit log.
    let audit = app.get("/v1/audit_events?limit=100", ADMIN).await.ok();
    assert!(audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["action"] == "data_key.rewrapped"));
}

#[tokio::test]
async fn offline_rotation_against_a_data_directory() {
    if postgres_mode().is_some() {
        // `scrip keys rotate --data-dir` works on the SQLite file of a data
        // directory; with PostgreSQL, rotation runs online (the test above).
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"security offline_rotation_against_a_data_directory: SQLite only, skipped on postgres\n",
        );
        return;
    }
    let w = World::new().await;
    let (_, token) = w.token(json!({})).await;
    let provider_secret = w.provider_secret.clone();
    let dir = w.app.stop().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrip"))
        .args(["keys", "rotate", "--data-dir"])
        .arg(dir.path())
        .env_remove("SCRIP_MASTER_KEY")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-wrapped 2 data key(s)"));
    let app = TestApp::spawn_in(dir).await;
    app.charge(&provider_secret, &token, 100).await.ok();
}

#[tokio::test]
async fn secrets_scan_finds_cards_and_secrets_in_files_and_streams() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let (_, provider_secret) = TestApp::spawn().await.provider("P").await;
    let clean = dir.path().join("clean.log");
    std::fs::write(&clean, "GET /v1/charges 200 3ms\nts=1796323739 id=ch_123\n").unwrap();
    let dirty = dir.path().join("nested");
    std::fs::create_dir(&dirty).unwrap();
    std::fs::write(
        dirty.join("app.log"),
        format!("ok\ncard 4242 4242 4242 4242 12/30\nauth: Bearer {provider_secret}\n"),
    )
    .unwrap();
    let scan = |args: Vec<std::path::PathBuf>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_scrip"));
        cmd.arg("secrets").arg("scan").args(args);
        cmd
    };
    let out = scan(vec![clean.clone()]).output().await.unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = scan(vec![clean, dir.path().to_path_buf()])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "findings fail the command");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("app.log:2:6: card number ending 4242"),
        "{stdout}"
    );
    assert!(stdout.contains("app.log:3:"), "{stdout}");
    assert!(
        !stdout.contains("4242 4242") && !stdout.contains(&provider_secret[8..]),
        "findings never repeat what they found: {stdout}"
    );
    // A stream on standard input, line by line.
    let mut child = scan(vec!["-".into()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"line one\n{\"number\":\"5555555555554444\"}\n")
        .await
        .unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("<stdin>:2:12: card number ending 4444"),
        "{stdout}"
    );
}
