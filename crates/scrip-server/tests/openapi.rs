//! The OpenAPI document (`GET /v1/openapi.json`) describes exactly the
//! router: every `.route(…)` in `src/api/mod.rs` (the router's source of
//! truth) is in the document with the same methods, and the document has no
//! operation the router lacks. A live server (test clock on, so every route
//! exists) serves the same document and answers every documented operation
//! with something other than "unrecognized URL" or "method not allowed".

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};

use scrip_server::api::openapi::ApiDoc;
use scrip_server::server::{self, Config};
use serde_json::Value;
use utoipa::OpenApi;

const ADMIN: &str = "sk_admin_openapi0123456789abcdef0123456789abcdef";
const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

type Route = (String, String);

/// The router's source, without `//` comments.
fn router_source() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/api/mod.rs");
    let text = std::fs::read_to_string(path).expect("read src/api/mod.rs");
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The source with the contents of string literals blanked out (same byte
/// offsets), so that braces and parentheses inside paths do not count.
fn mask_strings(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in src.chars() {
        if in_string {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
                out.push(c);
                continue;
            }
            out.extend(std::iter::repeat_n(' ', c.len_utf8()));
        } else {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The byte range inside the parentheses that open at `open` in `masked`.
fn balanced(masked: &str, open: usize) -> std::ops::Range<usize> {
    let mut depth = 0usize;
    for (i, c) in masked[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return open + 1..open + i;
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses in the router source");
}

fn first_string_literal(text: &str) -> Option<&str> {
    let start = text.find('"')? + 1;
    let len = text[start..].find('"')?;
    Some(&text[start..start + len])
}

fn leading_ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The variable a statement assigns (`let [mut] v1 = …`, `v1 = …`), if any.
fn assigned_variable(statement: &str) -> Option<&str> {
    if let Some(rest) = statement.strip_prefix("let ") {
        let rest = rest.trim_start();
        let rest = rest.strip_prefix("mut ").unwrap_or(rest).trim_start();
        return Some(leading_ident(rest));
    }
    let var = leading_ident(statement);
    let after = statement[var.len()..].trim_start();
    (!var.is_empty() && after.starts_with('=') && !after.starts_with("==")).then_some(var)
}

/// Every `(method, path)` the router in `src/api/mod.rs` serves: each
/// `.route("PATH", get(…).post(…)…)` call, prefixed by the path its router
/// variable is nested under (`.nest("/v1", v1)`).
fn router_routes() -> BTreeSet<Route> {
    let src = router_source();
    let masked = mask_strings(&src);
    // `.nest("/v1", v1)`: variable -> prefix.
    let mut nests = BTreeMap::new();
    for (at, _) in masked.match_indices(".nest(") {
        let args = &src[balanced(&masked, at + ".nest".len())];
        let prefix = first_string_literal(args).expect("nest prefix").to_owned();
        let var = args.rsplit(',').next().unwrap_or("").trim().to_owned();
        nests.insert(var, prefix);
    }
    let mut routes = BTreeSet::new();
    for (at, _) in masked.match_indices(".route(") {
        let range = balanced(&masked, at + ".route".len());
        let args = &src[range.clone()];
        let path = first_string_literal(args).expect("route path");
        // The statement this call belongs to: `let mut v1 = …` or `v1 = v1…`
        // is nested; a bare `Router::new()…` chain is at the root.
        let start = masked[..at].rfind([';', '{', '}']).map_or(0, |i| i + 1);
        let statement = masked[start..at].trim_start();
        let prefix = assigned_variable(statement)
            .and_then(|var| nests.get(var).cloned())
            .unwrap_or_default();
        let masked_args = &masked[range];
        let handlers = &masked_args[masked_args.find(',').expect("route handler") + 1..];
        let mut found = false;
        for method in METHODS {
            let call = format!("{method}(");
            for (i, _) in handlers.match_indices(&call) {
                let before = handlers[..i].chars().next_back();
                if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':')) {
                    routes.insert((method.to_owned(), format!("{prefix}{path}")));
                    found = true;
                }
            }
        }
        assert!(found, "no method router found for route {path}");
    }
    assert!(
        routes.len() > 40,
        "the router parse found too few routes: {routes:?}"
    );
    routes
}

/// Every `(method, path)` operation in an OpenAPI document.
fn documented_routes(doc: &Value) -> BTreeSet<Route> {
    let paths = doc["paths"].as_object().expect("paths");
    let mut routes = BTreeSet::new();
    for (path, item) in paths {
        for method in METHODS {
            if item.get(method).is_some() {
                routes.insert((method.to_owned(), path.clone()));
            }
        }
    }
    routes
}

fn generated() -> Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the document serializes")
}

#[test]
fn every_route_in_the_router_is_documented_and_nothing_else() {
    let router = router_routes();
    let documented = documented_routes(&generated());
    let missing: Vec<_> = router.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&router).collect();
    assert!(
        missing.is_empty(),
        "routes missing from the OpenAPI document (add #[utoipa::path] and list them in api/openapi.rs): {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "documented operations the router does not serve: {extra:?}"
    );
}

#[test]
fn every_operation_is_complete() {
    let doc = generated();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in ["Error", "ErrorDetail", "Customer", "PaymentToken", "Charge"] {
        assert!(schemas.contains_key(name), "schema {name} missing");
    }
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let what = format!("{method} {path}");
            assert!(
                ids.insert(op["operationId"].as_str().unwrap().to_owned()),
                "{what}: duplicate operationId"
            );
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{what}: no tag"
            );
            let responses = op["responses"].as_object().unwrap();
            assert!(responses.contains_key("200"), "{what}: no 200 response");
            assert!(responses.contains_key("500"), "{what}: no error response");
            for (status, response) in responses {
                if status.starts_with('2') {
                    continue;
                }
                let shared = response["$ref"]
                    .as_str()
                    .and_then(|r| r.strip_prefix("#/components/responses/"))
                    .unwrap_or_else(|| panic!("{what} {status}: not a shared error response"));
                let response = &doc["components"]["responses"][shared];
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{what} {status}: not the error shape"
                );
            }
            let public = ["/healthz", "/metrics", "/v1/openapi.json"].contains(&path.as_str());
            let security = op.get("security").and_then(Value::as_array);
            if public {
                assert!(
                    security.is_some_and(|s| s
                        .iter()
                        .all(|r| r.as_object().is_some_and(|o| o.is_empty()))),
                    "{what}: public, so it should need no secret"
                );
            } else {
                assert!(security.is_none(), "{what}: should use the bearer default");
                assert!(responses.contains_key("401"), "{what}: no 401");
            }
            if path.contains("{id}") {
                let params = op["parameters"].as_array().expect("parameters");
                assert!(
                    params
                        .iter()
                        .any(|p| p["name"] == "id" && p["in"] == "path"),
                    "{what}: the id path parameter is not documented"
                );
            }
            if method == "post" && path != "/v1/openapi.json" {
                assert!(op.get("requestBody").is_some(), "{what}: no request body");
            }
        }
    }
}

/// The bounds stated in the request schemas are the ones the handlers
/// enforce.
#[test]
fn request_bounds_match_the_limits() {
    use scrip_core::limits;
    let doc = generated();
    let s = &doc["components"]["schemas"];
    let max = |schema: &str, field: &str| s[schema]["properties"][field]["maximum"].as_i64();
    assert_eq!(
        max("CreateCharge", "amount"),
        Some(limits::CHARGE_AMOUNT_MAX)
    );
    assert_eq!(max("Capture", "amount"), Some(limits::CHARGE_AMOUNT_MAX));
    assert_eq!(
        max("CreateRefund", "amount"),
        Some(limits::CHARGE_AMOUNT_MAX)
    );
    assert_eq!(
        max("CreateToken", "max_per_charge"),
        Some(limits::CHARGE_AMOUNT_MAX)
    );
    assert_eq!(max("CapInput", "amount"), Some(limits::CAP_AMOUNT_MAX));
    assert_eq!(
        max("CreatePayout", "amount"),
        Some(limits::PAYOUT_AMOUNT_MAX)
    );
    assert_eq!(
        max("AdvanceClock", "seconds"),
        Some(limits::CLOCK_ADVANCE_SECS_MAX)
    );
    let list_limit = doc["paths"]["/v1/customers"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .cloned()
        .unwrap();
    assert_eq!(
        list_limit["schema"]["maximum"].as_u64(),
        Some(u64::from(limits::LIST_LIMIT_MAX))
    );
}

#[tokio::test]
async fn the_live_server_serves_the_document_and_every_documented_route() {
    let dir = tempfile::tempdir().unwrap();
    let running = server::start(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_owned(),
        test_clock: true,
        admin_key: Some(ADMIN.to_owned()),
        ..Default::default()
    })
    .await
    .expect("server starts");
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::new();

    // Served without a secret, and the same document the code generates.
    let r = http
        .get(format!("{base}/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let served: Value = r.json().await.unwrap();
    assert_eq!(served, generated());

    for (method, path) in documented_routes(&served) {
        let url = format!("{base}{}", path.replace("{id}", "obj_openapi_probe"));
        let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        for secret in [None, Some(ADMIN)] {
            let mut req = http.request(m.clone(), &url);
            if let Some(s) = secret {
                req = req.bearer_auth(s);
            }
            if method == "post" {
                req = req.header("content-type", "application/json").body("{}");
            }
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            let message = body["error"]["message"].as_str().unwrap_or("");
            assert!(
                !(status == 404 && message.starts_with("Unrecognized request URL")),
                "{method} {path}: the router does not serve it ({body})"
            );
            assert_ne!(status, 405, "{method} {path}: method not allowed ({body})");
            assert!(status < 500, "{method} {path}: {status} {body}");
            if status >= 400 {
                assert!(
                    body["error"]["type"].is_string() && body["error"]["code"].is_string(),
                    "{method} {path}: {status} is not in the error shape: {body}"
                );
            }
        }
    }
    running.shutdown().await.unwrap();
}
