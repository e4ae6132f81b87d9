//! `POST /v1/tokens/self/derive`: an agent hands a sub-agent a narrower
//! budget with nothing but its own token.

use serde_json::json;

use crate::helpers::*;

const DERIVE: &str = "/v1/tokens/self/derive";

#[tokio::test]
async fn a_child_is_narrower_and_spends_against_every_ancestor() {
    let w = World::new().await;
    let (parent_id, parent) = w.token(json!({ "max_per_charge": 4000 })).await;
    let parent_view = w
        .app
        .get(&format!("/v1/tokens/{parent_id}"), &w.orch)
        .await
        .ok();
    let child = w
        .app
        .post(
            DERIVE,
            &parent,
            json!({ "cap": { "amount": 3000, "period": "day" } }),
        )
        .await
        .ok();
    let child_token = child["token"].as_str().unwrap().to_owned();
    let child_id = child["id"].as_str().unwrap().to_owned();
    assert!(child_token.starts_with("scrip_pt_"));
    assert_ne!(child_token, parent);
    assert_eq!(child["parent"], parent_id.as_str());
    for same in [
        "provider",
        "payment_method",
        "currency",
        "customer",
        "credential",
    ] {
        assert_eq!(child[same], parent_view[same], "{same}");
    }
    assert_eq!(child["cap"], json!({ "amount": 3000, "period": "day" }));
    assert_eq!(child["usage"], "multi_use", "the parent's usage by default");
    assert_eq!(
        child["max_per_charge"], 3000,
        "the parent's limit, within the child's cap"
    );
    assert_eq!(
        child["expires_at"], parent_view["expires_at"],
        "the parent's expiry by default"
    );

    // The provider redeems the child; both child and parent spend.
    w.charge(&child_token, 2500).await.ok();
    assert_eq!(w.spend(&child_id).await["remaining"], 500);
    assert_eq!(w.spend(&parent_id).await["remaining"], 7500);
    w.charge(&child_token, 600)
        .await
        .err(402, "token_error", "cap_exceeded");
    // The child's own view, as its agent sees it.
    let own = w.app.get("/v1/tokens/self", &child_token).await.ok();
    assert_eq!(own["id"], child_id.as_str());
    assert_eq!(own["spend"]["captured"], 2500);

    // A grandchild counts against all three.
    let grandchild = w
        .app
        .post(
            DERIVE,
            &child_token,
            json!({ "cap": { "amount": 400, "period": "none" }, "usage": "single_use" }),
        )
        .await
        .ok();
    let grandchild_token = grandchild["token"].as_str().unwrap();
    w.charge(grandchild_token, 400).await.ok();
    assert_eq!(w.spend(&child_id).await["remaining"], 100);
    assert_eq!(w.spend(&parent_id).await["remaining"], 7100);

    // Revoking the parent revokes its descendants.
    w.app
        .post(
            &format!("/v1/tokens/{parent_id}/revoke"),
            &w.orch,
            json!({}),
        )
        .await
        .ok();
    let child_now = w
        .app
        .get(&format!("/v1/tokens/{child_id}"), &w.orch)
        .await
        .ok();
    assert_eq!(child_now["status"], "revoked");
    w.charge(&child_token, 1)
        .await
        .err(402, "token_error", "token_revoked");
}

#[tokio::test]
async fn a_child_can_never_be_wider_than_its_parent() {
    let w = World::new().await;
    let (_, parent) = w.token(json!({ "max_per_charge": 4000 })).await;
    let parent_expiry = w.app.get("/v1/tokens/self", &parent).await.ok()["expires_at"]
        .as_i64()
        .unwrap();
    for (body, param) in [
        (
            json!({ "cap": { "amount": 10001, "period": "month" } }),
            "cap.amount",
        ),
        (
            json!({ "cap": { "amount": 100, "period": "month" }, "expires_at": parent_expiry + 1 }),
            "expires_at",
        ),
        (
            json!({ "cap": { "amount": 5000, "period": "month" }, "max_per_charge": 4001 }),
            "max_per_charge",
        ),
    ] {
        let r = w.app.post(DERIVE, &parent, body.clone()).await;
        r.err(400, "invalid_request_error", "parameter_invalid");
        assert_eq!(r.body["error"]["param"], param, "{body}");
    }
    // Bad input gets the usual errors.
    w.app.post(DERIVE, &parent, json!({})).await.err(
        400,
        "invalid_request_error",
        "parameter_missing",
    );
    w.app
        .post(
            DERIVE,
            &parent,
            json!({ "cap": { "amount": 100, "period": "month" }, "provider": "prov_x" }),
        )
        .await
        .err(400, "invalid_request_error", "parameter_unknown");
    w.app
        .post(
            DERIVE,
            &parent,
            json!({ "cap": { "amount": 0, "period": "month" } }),
        )
        .await
        .err(400, "invalid_request_error", "amount_invalid");

    // A single-use parent has single-use children only.
    let (_, single) = w.token(json!({ "usage": "single_use" })).await;
    let r = w
        .app
        .post(
            DERIVE,
            &single,
            json!({ "cap": { "amount": 100, "period": "month" }, "usage": "multi_use" }),
        )
        .await;
    r.err(400, "invalid_request_error", "parameter_invalid");
    assert_eq!(r.body["error"]["param"], "usage");
    let child = w
        .app
        .post(
            DERIVE,
            &single,
            json!({ "cap": { "amount": 100, "period": "month" } }),
        )
        .await
        .ok();
    assert_eq!(child["usage"], "single_use");

    // Only a token derives: other secrets are refused, and nothing was made.
    w.app
        .post(
            DERIVE,
            &w.orch,
            json!({ "cap": { "amount": 100, "period": "month" } }),
        )
        .await
        .err(403, "permission_error", "forbidden");
    w.app
        .post(
            DERIVE,
            &w.provider_secret,
            json!({ "cap": { "amount": 100, "period": "month" } }),
        )
        .await
        .err(403, "permission_error", "forbidden");
    let tokens = w.app.get("/v1/tokens?limit=100", &w.orch).await.ok();
    assert_eq!(tokens["data"].as_array().unwrap().len(), 3, "{tokens}");
}

#[tokio::test]
async fn unusable_parents_and_deep_chains_derive_nothing() {
    let w = World::new().await;
    let (parent_id, parent) = w.token(json!({})).await;
    let cap = json!({ "cap": { "amount": 100, "period": "month" } });
    w.app
        .post(
            &format!("/v1/tokens/{parent_id}/suspend"),
            &w.orch,
            json!({}),
        )
        .await
        .ok();
    w.app
        .post(DERIVE, &parent, cap.clone())
        .await
        .err(402, "token_error", "token_suspended");
    w.app
        .post(
            &format!("/v1/tokens/{parent_id}/resume"),
            &w.orch,
            json!({}),
        )
        .await
        .ok();

    // A chain is at most TOKEN_CHAIN_DEPTH_MAX (8) tokens long.
    let mut current = parent;
    for _ in 1..8 {
        let child = w.app.post(DERIVE, &current, cap.clone()).await.ok();
        current = child["token"].as_str().unwrap().to_owned();
    }
    let r = w.app.post(DERIVE, &current, cap.clone()).await;
    r.err(400, "invalid_request_error", "parameter_invalid");
    // The deepest token still pays, against all eight.
    w.charge(&current, 100).await.ok();
    assert_eq!(w.spend(&parent_id).await["remaining"], 9900);

    // Replaying a derive with its idempotency key gives the same child.
    let (_, other) = w.token(json!({})).await;
    let first = w
        .app
        .post_idem(DERIVE, &other, cap.clone(), "derive-1")
        .await
        .ok();
    let again = w.app.post_idem(DERIVE, &other, cap, "derive-1").await;
    assert_eq!(
        again
            .headers
            .get("idempotent-replayed")
            .map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    assert_eq!(again.ok(), first, "the same child, token included");
}
