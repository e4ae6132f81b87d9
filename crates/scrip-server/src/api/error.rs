//! The one API error shape, and the one table that maps every lower layer's
//! error onto it. Only this layer knows status codes.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use scrip_core::card::CardError;
use scrip_core::token::Refusal;
use serde::Serialize;
use utoipa::ToSchema;

use crate::network::Decline;
use crate::store::StoreError;
use crate::vault::VaultError;

/// An error as the client receives it: a status, a stable machine-readable
/// `type` and `code`, and a sentence a person can act on.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub code: &'static str,
    pub message: String,
    pub param: Option<String>,
    pub decline_code: Option<&'static str>,
    pub retry_after_secs: Option<u64>,
}

/// The body of every non-2xx response.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize, ToSchema)]
#[schema(as = ErrorDetail)]
pub struct Inner<'a> {
    /// The error family, e.g. `invalid_request_error`, `token_error`.
    #[serde(rename = "type")]
    #[schema(schema_with = super::openapi::error_type)]
    kind: &'a str,
    /// A stable machine-readable code, e.g. `parameter_missing`, `cap_exceeded`.
    #[schema(example = "parameter_missing")]
    code: &'a str,
    /// A sentence a person can act on; never echoes a card number, CVC or secret.
    message: &'a str,
    /// The parameter at fault, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    param: Option<&'a str>,
    /// The card network's reason, on a `card_declined` error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    decline_code: Option<&'a str>,
}

pub const INVALID_REQUEST: &str = "invalid_request_error";

impl ApiError {
    pub fn new(
        status: StatusCode,
        kind: &'static str,
        code: &'static str,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            status,
            kind,
            code,
            message: message.into(),
            param: None,
            decline_code: None,
            retry_after_secs: None,
        }
    }

    pub fn with_param(mut self, param: impl Into<String>) -> ApiError {
        self.param = Some(redact_digits(&param.into()));
        self
    }

    /// 400 for a parameter: `code` is one of API.md's parameter codes.
    pub fn invalid(code: &'static str, param: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            INVALID_REQUEST,
            code,
            redact_digits(&message.into()),
        )
        .with_param(param)
    }

    pub fn missing(param: &str) -> ApiError {
        ApiError::invalid(
            "parameter_missing",
            param,
            format!("Missing required parameter: {param}."),
        )
    }

    pub fn unauthenticated(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "secret_invalid",
            message,
        )
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "forbidden",
            message,
        )
    }

    pub fn not_found(resource: &str, id: &str) -> ApiError {
        let shown: String = id.chars().take(64).filter(|c| !c.is_control()).collect();
        let shown = redact_digits(&shown);
        ApiError::new(
            StatusCode::NOT_FOUND,
            INVALID_REQUEST,
            "resource_missing",
            format!("No such {resource}: '{shown}'."),
        )
    }

    pub fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "internal_error",
            "Something went wrong on Scrip's side; nothing was changed. Retry with the same Idempotency-Key.",
        )
    }

    pub fn unavailable() -> ApiError {
        let mut e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_error",
            "service_unavailable",
            "Scrip is overloaded; nothing was changed. Retry shortly with the same Idempotency-Key.",
        );
        e.retry_after_secs = Some(1);
        e
    }

    pub fn token(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::PAYMENT_REQUIRED, "token_error", code, message)
    }

    pub fn card(error: CardError) -> ApiError {
        let param = match error {
            CardError::IncorrectNumber => "card.number",
            CardError::InvalidExpiry | CardError::ExpiredCard => "card.exp_year",
            CardError::IncorrectCvc => "card.cvc",
        };
        ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "card_error",
            error.code(),
            error.to_string(),
        )
        .with_param(param)
    }

    pub fn declined(decline: Decline) -> ApiError {
        let mut e = ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "card_error",
            "card_declined",
            decline.message(),
        );
        e.decline_code = Some(decline.code());
        e
    }

    pub fn refusal(refusal: &Refusal, currency_display: impl Fn(i64) -> String) -> ApiError {
        let code = refusal.code();
        match refusal {
            Refusal::Revoked => ApiError::token(code, "This payment token has been revoked and can no longer be charged."),
            Refusal::Expired => ApiError::token(code, "This payment token has expired; ask the orchestrator for a new one."),
            Refusal::Exhausted => ApiError::token(code, "This single-use payment token has already been used."),
            Refusal::Suspended => ApiError::token(code, "This payment token is suspended by its orchestrator."),
            Refusal::PaymentMethodUnavailable => ApiError::token(
                code,
                "The payment method behind this token is no longer available.",
            ),
            Refusal::ScopeMismatch => ApiError::new(
                StatusCode::FORBIDDEN,
                "permission_error",
                code,
                "This payment token is not scoped to your provider account. It has been revoked because it was presented to the wrong provider.",
            )
            .with_param("token"),
            Refusal::CurrencyMismatch { token } => ApiError::token(
                code,
                format!("This payment token is denominated in {token}; charge it in {token}."),
            )
            .with_param("currency"),
            Refusal::MaxPerChargeExceeded { max } => ApiError::token(
                code,
                format!("The amount exceeds this token's limit per charge of {}.", currency_display(*max)),
            )
            .with_param("amount"),
            Refusal::CapExceeded { remaining } => ApiError::token(
                code,
                format!(
                    "The amount exceeds what remains under this token's cap for the current period: {} remaining.",
                    currency_display(*remaining)
                ),
            )
            .with_param("amount"),
        }
    }

    /// Marks a request that lost an idempotency race after doing its work;
    /// the handler replays the winner's response instead.
    pub fn is_idempotency_race(&self) -> bool {
        self.code == "idempotency_race"
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { resource, id } => ApiError::not_found(resource, &id),
            StoreError::Refused(refusal) => ApiError::refusal(&refusal, |n| n.to_string()),
            StoreError::Conflict { code, message } => {
                ApiError::new(StatusCode::CONFLICT, INVALID_REQUEST, code, message)
            }
            StoreError::Invalid {
                code,
                param,
                message,
            } => ApiError::new(StatusCode::BAD_REQUEST, INVALID_REQUEST, code, message)
                .with_param(param),
            StoreError::IdempotencyRace => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_error",
                "idempotency_race",
                "Another request with this Idempotency-Key completed first.",
            ),
            StoreError::Overloaded => ApiError::unavailable(),
            StoreError::Database(detail) => {
                tracing::error!(error = %detail, "store failure");
                ApiError::internal()
            }
        }
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> ApiError {
        tracing::error!(error = %e, "vault failure");
        ApiError::internal()
    }
}

impl ApiError {
    /// The response body: `{"error":{…}}`.
    pub fn body_bytes(&self) -> Vec<u8> {
        let body = Body {
            error: Inner {
                kind: self.kind,
                code: self.code,
                message: &self.message,
                param: self.param.as_deref(),
                decline_code: self.decline_code,
            },
        };
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":{\"type\":\"api_error\",\"code\":\"internal_error\",\"message\":\"error\"}}".to_vec())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let bytes = self.body_bytes();
        let mut response = (self.status, bytes).into_response();
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(secs) = self.retry_after_secs {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response
                    .headers_mut()
                    .insert(axum::http::header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// Replaces every run of 12 or more digits (a possible card number) with
/// `[redacted]`, so no error message or log line can echo one.
pub fn redact_digits(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().filter(char::is_ascii_digit).count() >= 12 {
            out.push_str("[redacted]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for ch in text.chars() {
        // Separators people type inside card numbers stay in the run.
        if ch.is_ascii_digit() || (!run.is_empty() && (ch == ' ' || ch == '-')) {
            run.push(ch);
        } else {
            flush(&mut run, &mut out);
            out.push(ch);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_digits;

    #[test]
    fn redacts_card_like_digit_runs_only() {
        assert_eq!(redact_digits("pm_4242424242424242"), "pm_[redacted]");
        assert_eq!(redact_digits("x 4242 4242 4242 4242 y"), "x [redacted]y");
        assert_eq!(redact_digits("ch_123 amount 5000"), "ch_123 amount 5000");
        assert_eq!(redact_digits("12345678901"), "12345678901");
    }
}
