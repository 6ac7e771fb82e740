//! The gateway's error type: every way a client request can fail, with its
//! cause kept as a source, and what it means in each dialect: the status,
//! the envelope (OpenAI `{"error":{"message","type","param","code"}}`,
//! Anthropic `{"type":"error","error":{"type","message"}}`) and
//! `Retry-After`. [`crate::api::error`] turns it into an HTTP answer.

use cortex_core::{anthropic, openai};
use http::StatusCode;

use crate::fleet::FleetError;
use crate::neuron_client::UpstreamError;
use crate::translate::TranslateError;

/// A failed request, before it is put in a dialect.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<String>,
    },
    /// The body is not the JSON expected.
    #[error("invalid JSON body")]
    Json(#[source] serde_json::Error),
    #[error("missing or invalid API key (send Authorization: Bearer KEY or x-api-key: KEY)")]
    Unauthorized,
    /// A valid API key on the admin API when admin keys are configured.
    #[error("this key may not use the admin API (it needs one of gateway.admin_keys)")]
    Forbidden,
    #[error("The model `{0}` does not exist.")]
    ModelNotFound(String),
    #[error("no such route")]
    RouteNotFound,
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    #[error("request body is larger than the limit")]
    PayloadTooLarge,
    /// Admission is full: reject at once (429 / Anthropic 529).
    #[error("{message}")]
    Overloaded { message: String, retry_after_s: u64 },
    /// Nothing can serve it now (503 / Anthropic 529).
    #[error("{message}")]
    Unavailable { message: String, retry_after_s: u64 },
    /// A neuron's own error answer, passed on.
    #[error("{message}")]
    Upstream {
        status: u16,
        message: String,
        code: Option<String>,
    },
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Neuron(#[from] UpstreamError),
    #[error(transparent)]
    Translate(#[from] TranslateError),
    /// A neuron's answer that is not the JSON it should be.
    #[error("the neuron sent an invalid answer")]
    InvalidAnswer(#[source] serde_json::Error),
    /// A request for a neuron that cannot be encoded.
    #[error("cannot encode the request for the neuron")]
    Encode(#[source] serde_json::Error),
    #[error("{0}")]
    Timeout(String),
    /// A neuron's stream that failed after it started (told to the client
    /// as an event of its dialect).
    #[error("{0}")]
    Stream(String),
}

impl GatewayError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        GatewayError::BadRequest {
            message: message.into(),
            param: None,
        }
    }

    /// A neuron's error answer (`status`, its body), passed on.
    pub fn from_answer(status: u16, body: &[u8]) -> Self {
        let (message, code) = crate::neuron_client::error_of(body);
        GatewayError::Upstream {
            status,
            message,
            code,
        }
    }

    /// What the client is told: this error and its causes, each after a
    /// colon.
    pub fn message(&self) -> String {
        chain(self)
    }
}

/// `e` and its causes, each after a colon (for clients and logs).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// What an error means to a client, whatever caused it.
#[derive(Debug, Clone, PartialEq)]
enum Class {
    BadRequest(Option<String>),
    Unauthorized,
    Forbidden,
    ModelNotFound,
    RouteNotFound,
    MethodNotAllowed,
    TooLarge,
    Overloaded(u64),
    Unavailable(u64),
    Conflict,
    Upstream(u16, Option<String>),
    BadGateway,
    Timeout,
    Internal,
}

fn class(e: &GatewayError) -> Class {
    match e {
        GatewayError::BadRequest { param, .. } => Class::BadRequest(param.clone()),
        GatewayError::Json(_) => Class::BadRequest(None),
        GatewayError::Translate(TranslateError::Invalid { param, .. }) => {
            Class::BadRequest(param.clone())
        }
        GatewayError::Unauthorized => Class::Unauthorized,
        GatewayError::Forbidden => Class::Forbidden,
        GatewayError::ModelNotFound(_) => Class::ModelNotFound,
        GatewayError::RouteNotFound => Class::RouteNotFound,
        GatewayError::MethodNotAllowed => Class::MethodNotAllowed,
        GatewayError::PayloadTooLarge => Class::TooLarge,
        GatewayError::Overloaded { retry_after_s, .. } => Class::Overloaded(*retry_after_s),
        GatewayError::Unavailable { retry_after_s, .. } => Class::Unavailable(*retry_after_s),
        GatewayError::Upstream { status, code, .. } => Class::Upstream(*status, code.clone()),
        GatewayError::Fleet(f) => fleet_class(f),
        GatewayError::Neuron(u) => upstream_class(u),
        GatewayError::InvalidAnswer(_) => Class::BadGateway,
        GatewayError::Encode(_) => Class::Internal,
        GatewayError::Timeout(_) => Class::Timeout,
        GatewayError::Stream(_) => Class::BadGateway,
    }
}

fn fleet_class(e: &FleetError) -> Class {
    match e {
        FleetError::UnknownModel(_) => Class::ModelNotFound,
        FleetError::UnknownNode(_) => Class::BadRequest(Some("node".into())),
        FleetError::NotServable(_) => Class::Unavailable(5),
        FleetError::NoCapacity { .. } => Class::Unavailable(30),
        FleetError::Busy { retry_after_ms, .. } | FleetError::Guarded { retry_after_ms, .. } => {
            Class::Unavailable(retry_after_ms.div_ceil(1000).max(1))
        }
        FleetError::Load { source, .. } => upstream_class(source),
        FleetError::Pinned(_) => Class::Conflict,
        FleetError::Stopped | FleetError::PinNotSaved { .. } => Class::Internal,
    }
}

fn upstream_class(e: &UpstreamError) -> Class {
    match e {
        UpstreamError::Connect { .. } => Class::Unavailable(2),
        UpstreamError::Timeout { .. } => Class::Timeout,
        UpstreamError::Status { status, code, .. } => Class::Upstream(*status, code.clone()),
        UpstreamError::Transport { .. } | UpstreamError::Invalid { .. } => Class::BadGateway,
    }
}

impl Class {
    fn retry_after(&self) -> Option<u64> {
        match self {
            Class::Overloaded(s) | Class::Unavailable(s) => Some(*s),
            Class::Upstream(503, _) => Some(1),
            _ => None,
        }
    }

    /// Status, `type` and `code` in the OpenAI dialect.
    fn openai(&self) -> (StatusCode, &'static str, Option<String>) {
        let code = |c: &str| Some(c.to_string());
        match self {
            Class::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request_error", None),
            Class::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                code("invalid_api_key"),
            ),
            Class::Forbidden => (
                StatusCode::FORBIDDEN,
                "invalid_request_error",
                code("permission_denied"),
            ),
            Class::ModelNotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                code("model_not_found"),
            ),
            Class::RouteNotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                code("not_found"),
            ),
            Class::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                None,
            ),
            Class::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                code("request_too_large"),
            ),
            Class::Overloaded(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                code("overloaded"),
            ),
            Class::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                code("unavailable"),
            ),
            Class::Conflict => (
                StatusCode::CONFLICT,
                "invalid_request_error",
                code("conflict"),
            ),
            Class::Upstream(status, c) => {
                let s = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
                let kind = if s.is_client_error() {
                    "invalid_request_error"
                } else {
                    "server_error"
                };
                (s, kind, c.clone())
            }
            Class::BadGateway => (StatusCode::BAD_GATEWAY, "server_error", code("bad_gateway")),
            Class::Timeout => (StatusCode::GATEWAY_TIMEOUT, "server_error", code("timeout")),
            Class::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        }
    }

    /// Status and error `type` in the Anthropic dialect.
    fn anthropic(&self) -> (StatusCode, &'static str) {
        let overloaded = StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        match self {
            Class::BadRequest(_) | Class::Conflict => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            Class::Unauthorized => (StatusCode::UNAUTHORIZED, "authentication_error"),
            Class::Forbidden => (StatusCode::FORBIDDEN, "permission_error"),
            Class::ModelNotFound | Class::RouteNotFound => {
                (StatusCode::NOT_FOUND, "not_found_error")
            }
            Class::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error"),
            Class::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
            Class::Overloaded(_) | Class::Unavailable(_) => (overloaded, "overloaded_error"),
            Class::Upstream(status, _) => match *status {
                400 | 422 => (StatusCode::BAD_REQUEST, "invalid_request_error"),
                401 => (StatusCode::UNAUTHORIZED, "authentication_error"),
                403 => (StatusCode::FORBIDDEN, "permission_error"),
                404 => (StatusCode::NOT_FOUND, "not_found_error"),
                413 => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
                429 | 503 => (overloaded, "overloaded_error"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
            },
            Class::BadGateway => (StatusCode::BAD_GATEWAY, "api_error"),
            Class::Timeout => (StatusCode::GATEWAY_TIMEOUT, "api_error"),
            Class::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
        }
    }
}

/// The OpenAI envelope of `e` (also used for mid-stream `data: {"error":…}`).
pub fn openai_body(e: &GatewayError) -> openai::ErrorResponse {
    let c = class(e);
    let (_, kind, code) = c.openai();
    let param = match &c {
        Class::BadRequest(param) => param.as_deref(),
        Class::ModelNotFound => Some("model"),
        _ => None,
    };
    openai::ErrorResponse::new(kind, e.message(), param, code.as_deref())
}

/// The Anthropic envelope of `e` (also used for a mid-stream `error` event).
pub fn anthropic_body(e: &GatewayError) -> anthropic::ErrorResponse {
    anthropic::ErrorResponse::new(class(e).anthropic().1, e.message())
}

/// The status of `e` in the OpenAI dialect.
pub fn openai_status(e: &GatewayError) -> StatusCode {
    class(e).openai().0
}

/// The status of `e` in the Anthropic dialect.
pub fn anthropic_status(e: &GatewayError) -> StatusCode {
    class(e).anthropic().0
}

/// The `Retry-After` (seconds) a client gets with `e`.
pub fn retry_after(e: &GatewayError) -> Option<u64> {
    class(e).retry_after()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dialect_statuses() {
        let cases = [
            (
                GatewayError::bad_request("x"),
                400,
                400,
                "invalid_request_error",
            ),
            (GatewayError::Unauthorized, 401, 401, "authentication_error"),
            (GatewayError::Forbidden, 403, 403, "permission_error"),
            (
                GatewayError::ModelNotFound("m".into()),
                404,
                404,
                "not_found_error",
            ),
            (GatewayError::PayloadTooLarge, 413, 413, "request_too_large"),
            (
                GatewayError::Overloaded {
                    message: "full".into(),
                    retry_after_s: 1,
                },
                429,
                529,
                "overloaded_error",
            ),
            (
                GatewayError::Unavailable {
                    message: "none".into(),
                    retry_after_s: 5,
                },
                503,
                529,
                "overloaded_error",
            ),
            (
                GatewayError::Encode(serde_json::from_str::<u8>("x").unwrap_err()),
                500,
                500,
                "api_error",
            ),
        ];
        for (e, oa, an, an_type) in cases {
            assert_eq!(openai_status(&e).as_u16(), oa, "{e:?}");
            let (s, t) = class(&e).anthropic();
            assert_eq!((s.as_u16(), t), (an, an_type), "{e:?}");
        }
    }

    #[test]
    fn causes_are_kept_and_told() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = GatewayError::Fleet(FleetError::Load {
            model: "m".into(),
            source: UpstreamError::Connect {
                node: "a".into(),
                cause: crate::neuron_client::cause(io),
            },
        });
        assert_eq!(
            e.message(),
            "loading `m` failed: cannot connect to neuron a: refused"
        );
        assert_eq!(openai_status(&e), StatusCode::SERVICE_UNAVAILABLE);
        let mut chain = 0;
        let mut next = std::error::Error::source(&e);
        while let Some(s) = next {
            chain += 1;
            next = s.source();
        }
        assert_eq!(chain, 2, "the fleet error's source and its cause");
    }
}
