//! Client errors: the API's own error object, a transport failure, or a
//! response that could not be decoded.

use serde_json::Value;

/// Anything a client call can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The server answered with a non-2xx status.
    #[error(transparent)]
    Api(ApiError),
    /// The request never got an HTTP answer (connection refused, reset…).
    #[error("cannot reach Scrip: {0}")]
    Transport(String),
    /// A 2xx answer whose body is not what the API promises.
    #[error("unexpected response from Scrip: {0}")]
    Decode(String),
}

impl Error {
    /// The API error, when the server answered with one.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            Error::Api(e) => Some(e),
            _ => None,
        }
    }

    /// The API error `code` (`token_revoked`, `cap_exceeded`, …), if any.
    pub fn code(&self) -> Option<&str> {
        self.api().map(|e| e.code.as_str())
    }

    /// The HTTP status of an API error, if any.
    pub fn status(&self) -> Option<u16> {
        self.api().map(|e| e.status)
    }
}

impl From<ApiError> for Error {
    fn from(e: ApiError) -> Error {
        Error::Api(e)
    }
}

/// The API's error object (`{"error":{…}}`) with the HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({kind}/{code})")]
pub struct ApiError {
    pub status: u16,
    /// The error's `type`: `invalid_request_error`, `token_error`, …
    pub kind: String,
    pub code: String,
    pub message: String,
    pub param: Option<String>,
    pub decline_code: Option<String>,
}

impl ApiError {
    /// Reads the error object from a non-2xx body; a body without one (a
    /// proxy's HTML page, say) still gives a usable error.
    pub fn from_response(status: u16, body: &Value) -> ApiError {
        let error = body.get("error");
        let field = |name: &str| {
            error
                .and_then(|e| e.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        match (field("type"), field("code")) {
            (Some(kind), Some(code)) => ApiError {
                status,
                kind,
                code,
                message: field("message").unwrap_or_else(|| format!("HTTP status {status}.")),
                param: field("param"),
                decline_code: field("decline_code"),
            },
            (kind, code) => ApiError {
                status,
                kind: kind.unwrap_or_else(|| {
                    if status >= 500 {
                        "api_error"
                    } else {
                        "http_error"
                    }
                    .to_owned()
                }),
                code: code.unwrap_or_else(|| format!("http_{status}")),
                message: field("message").unwrap_or_else(|| {
                    format!("The server answered HTTP {status} without an error object.")
                }),
                param: None,
                decline_code: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_error_object() {
        let body = json!({"error": {"type": "token_error", "code": "token_revoked", "message": "Revoked.", "param": "token"}});
        let e = ApiError::from_response(402, &body);
        assert_eq!(e.kind, "token_error");
        assert_eq!(e.code, "token_revoked");
        assert_eq!(e.param.as_deref(), Some("token"));
        assert_eq!(e.decline_code, None);
        assert_eq!(
            Error::Api(e).to_string(),
            "Revoked. (token_error/token_revoked)"
        );
    }

    #[test]
    fn survives_a_body_without_an_error_object() {
        let e = ApiError::from_response(502, &Value::Null);
        assert_eq!(e.kind, "api_error");
        assert_eq!(e.code, "http_502");
    }
}
