//! Request extractors that turn every malformed input into the API's error
//! shape: the caller's principal, JSON bodies (bounded, unknown fields
//! refused), the Idempotency-Key, path ids and list queries.

use std::collections::HashMap;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use scrip_core::limits;
use serde::de::DeserializeOwned;

use super::error::{ApiError, INVALID_REQUEST};
use super::AppState;
use crate::secrets::{hash_secret, PREFIX_ADMIN};
use crate::store::model::{PageRequest, Principal};

/// The authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller(pub Principal);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthenticated(
                "No API secret provided. Send it as `Authorization: Bearer <secret>`.",
            ));
        };
        let secret = value
            .to_str()
            .ok()
            .and_then(|v| {
                // The scheme name is case-insensitive (RFC 9110 §11.1).
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then_some(rest)
            })
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= limits::SECRET_LEN_MAX)
            .ok_or_else(|| {
                ApiError::unauthenticated("The Authorization header must be `Bearer <secret>`.")
            })?;
        let hash = hash_secret(secret);
        let principal = if secret.starts_with(PREFIX_ADMIN) {
            hash.ct_eq(&state.admin_hash).then_some(Principal::Admin)
        } else {
            state.store.resolve_secret(hash).await?
        };
        let Some(principal) = principal else {
            // Someone guessing secrets gets slower answers, not faster ones.
            let ip = parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip());
            if let Some(delay) = state.limiter.auth_failure(ip) {
                tokio::time::sleep(delay).await;
            }
            return Err(ApiError::unauthenticated("Invalid API secret provided."));
        };
        // A limited request is refused before it can have any effect.
        if let Err(retry_after_secs) = state.limiter.check(principal.actor_id()) {
            let mut e = ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "rate_limited",
                "Too many requests with this secret; slow down and retry after the time in Retry-After.",
            );
            e.retry_after_secs = Some(retry_after_secs.max(1));
            return Err(e);
        }
        if let Some(ctx) = crate::context::current() {
            ctx.set_actor(principal.actor_id());
        }
        Ok(Caller(principal))
    }
}

/// A JSON body, read (bounded) but parsed only when the handler asks, so
/// that a caller outside its role hears 403 before any parameter error;
/// plus what idempotency needs: the key, if sent, and a hash of the request.
#[derive(Debug)]
pub struct JsonBody<T> {
    bytes: axum::body::Bytes,
    pub idempotency_key: Option<String>,
    pub request_hash: [u8; 32],
    parsed: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> JsonBody<T> {
    /// Parses the body (an empty body is `{}`), naming the offending
    /// parameter on failure.
    pub fn value(&self) -> Result<T, ApiError> {
        let text: &[u8] = if self.bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.bytes
        };
        parse_json(text)
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<JsonBody<T>, ApiError> {
        let idempotency_key = idempotency_key(req.headers())?;
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let bytes = axum::body::to_bytes(req.into_body(), limits::BODY_BYTES_MAX)
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    INVALID_REQUEST,
                    "body_too_large",
                    format!("The request body exceeds {} bytes.", limits::BODY_BYTES_MAX),
                )
            })?;
        let request_hash =
            state
                .vault
                .request_digest(&[method.as_bytes(), path.as_bytes(), &bytes])?;
        Ok(JsonBody {
            bytes,
            idempotency_key,
            request_hash,
            parsed: std::marker::PhantomData,
        })
    }
}

/// The request's Idempotency-Key, if sent: 1 to 255 printable ASCII
/// characters (spaces included; a header value holds nothing else that
/// every client can send).
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v
        .to_str()
        .ok()
        .filter(|k| {
            !k.is_empty()
                && k.len() <= limits::IDEMPOTENCY_KEY_LEN_MAX
                && k.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
        })
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "parameter_invalid",
                format!(
                    "The Idempotency-Key header must be 1 to {} printable ASCII characters.",
                    limits::IDEMPOTENCY_KEY_LEN_MAX
                ),
            )
            .with_param("Idempotency-Key")
        })?;
    Ok(Some(key.to_owned()))
}

/// Parses JSON into `T`, naming the offending parameter on failure. The
/// body must be a JSON object (see [`object`]).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Object(value): Object<T> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        json_error(&path, &inner)
    })?;
    de.end().map_err(|e| json_error(".", &e))?;
    Ok(value)
}

/// A `T` that was sent as a JSON object.
struct Object<T>(T);

impl<'de, T: serde::Deserialize<'de>> serde::Deserialize<'de> for Object<T> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Object<T>, D::Error> {
        object(deserializer).map(Object)
    }
}

/// Deserializes a struct only from a JSON object. serde's derived structs
/// also accept an array of their fields in order, which would let a request
/// skip the field names (and `deny_unknown_fields`); use this for every
/// body and, with `#[serde(deserialize_with = "…")]`, every nested object.
pub fn object<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    struct ObjectVisitor<T>(std::marker::PhantomData<T>);

    impl<'de, T: serde::Deserialize<'de>> serde::de::Visitor<'de> for ObjectVisitor<T> {
        type Value = T;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
        }
    }

    deserializer.deserialize_map(ObjectVisitor(std::marker::PhantomData))
}

fn backticked(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}

fn join_path(path: &str, field: &str) -> String {
    if path == "." || path.is_empty() {
        field.to_owned()
    } else {
        format!("{path}.{field}")
    }
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let message = e.to_string();
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => ApiError::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            "parameter_invalid",
            format!(
                "The request body is not valid JSON (line {}, column {}). Send a JSON object.",
                e.line(),
                e.column()
            ),
        ),
        Category::Data => {
            if message.starts_with("unknown field") {
                // serde_path_to_error's path already ends at the unknown key.
                let field = backticked(&message).unwrap_or("?");
                let param = if path.ends_with(field) {
                    path.to_owned()
                } else {
                    join_path(path, field)
                };
                let param: String = param.chars().take(100).collect();
                ApiError::invalid(
                    "parameter_unknown",
                    &param,
                    format!("Received unknown parameter: {param}."),
                )
            } else if message.starts_with("missing field") {
                let field = backticked(&message).unwrap_or("?");
                ApiError::missing(&join_path(path, field))
            } else {
                let param = if path == "." {
                    "body".to_owned()
                } else {
                    path.to_owned()
                };
                let param: String = param.chars().take(100).collect();
                let code =
                    if param == "amount" || param.ends_with(".amount") || param == "max_per_charge"
                    {
                        "amount_invalid"
                    } else {
                        "parameter_invalid"
                    };
                // serde's message can quote the value sent (a card number
                // in the wrong type, say): keep only what was expected.
                let head = message.split(" at line ").next().unwrap_or("");
                let sentence = match head.find("expected ") {
                    Some(i) => format!(
                        "Invalid value for {param}: {}.",
                        plain_type_names(&head[i..])
                    ),
                    None => format!("Invalid value for {param}."),
                };
                let sentence: String = sentence.chars().take(200).collect();
                ApiError::invalid(code, &param, sentence)
            }
        }
    }
}

/// serde names Rust types ("expected i64"); clients deserve JSON words.
fn plain_type_names(text: &str) -> String {
    [
        ("i64", "a whole number"),
        ("u64", "a whole number"),
        ("u32", "a whole number"),
        ("a boolean", "true or false"),
        ("a map", "an object"),
        ("a sequence", "an array"),
        ("struct ", "an object "),
    ]
    .iter()
    .fold(text.to_owned(), |acc, (from, to)| acc.replace(from, to))
}

/// An object id from the path: anything that cannot be one of ours is a
/// plain 404, never a 500.
#[derive(Debug, Clone)]
pub struct Id(pub String);

impl FromRequestParts<AppState> for Id {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Id, ApiError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::not_found("object", "?"))?;
        if id.len() > limits::ID_LEN_MAX {
            return Err(ApiError::not_found("object", &id));
        }
        Ok(Id(id))
    }
}

/// A list query: `limit`, `starting_after` and the filters a route allows.
#[derive(Debug, Default)]
pub struct ListQuery {
    pub page: PageRequest,
    pub filters: HashMap<String, String>,
}

impl ListQuery {
    /// Parses `query`, refusing any key outside `limit`, `starting_after`
    /// and `allowed_filters`.
    pub fn parse(query: Option<&str>, allowed_filters: &[&str]) -> Result<ListQuery, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|_| {
                ApiError::invalid(
                    "parameter_invalid",
                    "query",
                    "The query string is malformed.",
                )
            })?;
        let mut out = ListQuery {
            page: PageRequest {
                limit: limits::LIST_LIMIT_DEFAULT,
                starting_after: None,
            },
            filters: HashMap::new(),
        };
        for (key, value) in pairs {
            match key.as_str() {
                "limit" => {
                    out.page.limit = value
                        .parse::<u32>()
                        .ok()
                        .filter(|l| (1..=limits::LIST_LIMIT_MAX).contains(l))
                        .ok_or_else(|| {
                            ApiError::invalid(
                                "parameter_invalid",
                                "limit",
                                format!(
                                    "limit must be an integer from 1 to {}.",
                                    limits::LIST_LIMIT_MAX
                                ),
                            )
                        })?;
                }
                "starting_after" => {
                    if value.is_empty() || value.len() > limits::ID_LEN_MAX {
                        return Err(ApiError::invalid(
                            "parameter_invalid",
                            "starting_after",
                            "starting_after must be the id of an object from a previous page.",
                        ));
                    }
                    out.page.starting_after = Some(value);
                }
                k if allowed_filters.contains(&k) => {
                    if value.len() > limits::ID_LEN_MAX {
                        return Err(ApiError::invalid(
                            "parameter_invalid",
                            k,
                            format!("{k} is too long."),
                        ));
                    }
                    out.filters.insert(key, value);
                }
                _ => {
                    let shown: String = key.chars().take(40).collect();
                    return Err(ApiError::invalid(
                        "parameter_unknown",
                        &shown,
                        format!("Received unknown query parameter: {shown}."),
                    ));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_json;
    use crate::api::{admin, tokens};

    #[test]
    fn bodies_must_be_json_objects_not_arrays_of_fields() {
        let e = parse_json::<admin::CreateCustomer>(br#"["ada@example.com", "Ada", {}]"#)
            .err()
            .expect("an array is not a body");
        assert_eq!((e.status.as_u16(), e.code), (400, "parameter_invalid"));
        assert_eq!(e.param.as_deref(), Some("body"));
        assert!(e.message.contains("a JSON object"), "{}", e.message);
        assert!(parse_json::<admin::Empty>(b"[]").is_err());
        assert!(parse_json::<admin::Empty>(b"null").is_err());
        assert!(parse_json::<admin::Empty>(b"{}").is_ok());
    }

    #[test]
    fn nested_objects_must_be_json_objects_too() {
        let body = br#"{"payment_method":"pm_1","provider":"prov_1","currency":"usd","cap":[100,"month"]}"#;
        let e = parse_json::<tokens::CreateToken>(body)
            .err()
            .expect("an array is not a cap");
        assert_eq!(e.param.as_deref(), Some("cap"));
        let body = br#"{"payment_method":"pm_1","provider":"prov_1","currency":"usd","cap":{"amount":100,"period":"month"}}"#;
        assert!(parse_json::<tokens::CreateToken>(body).is_ok());
        let body = br#"{"payment_method":"pm_1","provider":"prov_1","currency":"usd","cap":{"amount":100,"period":"month","x":1}}"#;
        let e = parse_json::<tokens::CreateToken>(body)
            .err()
            .expect("unknown fields are refused inside nested objects");
        assert_eq!(
            (e.code, e.param.as_deref()),
            ("parameter_unknown", Some("cap.x"))
        );
    }
}
