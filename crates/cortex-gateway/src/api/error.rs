//! The one place where gateway errors become HTTP responses, once per
//! dialect: OpenAI `{"error":{"message","type","param","code"}}` and
//! Anthropic `{"type":"error","error":{"type","message"}}`, each with the
//! status codes its SDK expects, and `retry-after` on 429/503/529.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cortex_core::{anthropic, openai};

use crate::fleet::FleetError;
use crate::neuron_client::UpstreamError;
use crate::translate::TranslateError;

/// A failed request, before it is put in a dialect.
#[derive(Debug, Clone, PartialEq)]
pub enum GatewayError {
    BadRequest {
        message: String,
        param: Option<String>,
    },
    Unauthorized,
    ModelNotFound(String),
    RouteNotFound,
    PayloadTooLarge,
    /// Admission is full: reject at once (429 / Anthropic 529).
    Overloaded {
        message: String,
        retry_after_s: u64,
    },
    /// Nothing can serve it now (503 / Anthropic 529).
    Unavailable {
        message: String,
        retry_after_s: u64,
    },
    Conflict(String),
    /// A neuron's own error answer, passed on.
    Upstream {
        status: u16,
        message: String,
        code: Option<String>,
    },
    BadGateway(String),
    Timeout(String),
    Internal(String),
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

    fn retry_after(&self) -> Option<u64> {
        match self {
            GatewayError::Overloaded { retry_after_s, .. }
            | GatewayError::Unavailable { retry_after_s, .. } => Some(*retry_after_s),
            GatewayError::Upstream { status: 503, .. } => Some(1),
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        match self {
            GatewayError::BadRequest { message, .. }
            | GatewayError::Overloaded { message, .. }
            | GatewayError::Unavailable { message, .. }
            | GatewayError::Upstream { message, .. } => message.clone(),
            GatewayError::Unauthorized => {
                "missing or invalid API key (send Authorization: Bearer KEY or x-api-key: KEY)"
                    .into()
            }
            GatewayError::ModelNotFound(m) => format!("The model `{m}` does not exist."),
            GatewayError::RouteNotFound => "no such route".into(),
            GatewayError::PayloadTooLarge => "request body is larger than the limit".into(),
            GatewayError::Conflict(m)
            | GatewayError::BadGateway(m)
            | GatewayError::Timeout(m)
            | GatewayError::Internal(m) => m.clone(),
        }
    }

    /// Status, `type` and `code` in the OpenAI dialect.
    fn openai_parts(&self) -> (StatusCode, &'static str, Option<String>) {
        match self {
            GatewayError::BadRequest { .. } => {
                (StatusCode::BAD_REQUEST, "invalid_request_error", None)
            }
            GatewayError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                Some("invalid_api_key".into()),
            ),
            GatewayError::ModelNotFound(_) => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("model_not_found".into()),
            ),
            GatewayError::RouteNotFound => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                Some("not_found".into()),
            ),
            GatewayError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                Some("request_too_large".into()),
            ),
            GatewayError::Overloaded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                Some("overloaded".into()),
            ),
            GatewayError::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                Some("unavailable".into()),
            ),
            GatewayError::Conflict(_) => (
                StatusCode::CONFLICT,
                "invalid_request_error",
                Some("conflict".into()),
            ),
            GatewayError::Upstream { status, code, .. } => {
                let s = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
                let kind = if s.is_client_error() {
                    "invalid_request_error"
                } else {
                    "server_error"
                };
                (s, kind, code.clone())
            }
            GatewayError::BadGateway(_) => (
                StatusCode::BAD_GATEWAY,
                "server_error",
                Some("bad_gateway".into()),
            ),
            GatewayError::Timeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                Some("timeout".into()),
            ),
            GatewayError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None),
        }
    }

    /// Status and error `type` in the Anthropic dialect.
    fn anthropic_parts(&self) -> (StatusCode, &'static str) {
        let overloaded = StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        match self {
            GatewayError::BadRequest { .. } | GatewayError::Conflict(_) => {
                (StatusCode::BAD_REQUEST, "invalid_request_error")
            }
            GatewayError::Unauthorized => (StatusCode::UNAUTHORIZED, "authentication_error"),
            GatewayError::ModelNotFound(_) | GatewayError::RouteNotFound => {
                (StatusCode::NOT_FOUND, "not_found_error")
            }
            GatewayError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
            GatewayError::Overloaded { .. } | GatewayError::Unavailable { .. } => {
                (overloaded, "overloaded_error")
            }
            GatewayError::Upstream { status, .. } => match *status {
                400 | 422 => (StatusCode::BAD_REQUEST, "invalid_request_error"),
                401 => (StatusCode::UNAUTHORIZED, "authentication_error"),
                403 => (StatusCode::FORBIDDEN, "permission_error"),
                404 => (StatusCode::NOT_FOUND, "not_found_error"),
                413 => (StatusCode::PAYLOAD_TOO_LARGE, "request_too_large"),
                429 | 503 => (overloaded, "overloaded_error"),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
            },
            GatewayError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "api_error"),
            GatewayError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "api_error"),
            GatewayError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "api_error"),
        }
    }

    /// The OpenAI envelope (also used for mid-stream `data: {"error":…}`).
    pub fn openai_body(&self) -> openai::ErrorResponse {
        let (_, kind, code) = self.openai_parts();
        let param = match self {
            GatewayError::BadRequest { param, .. } => param.as_deref(),
            GatewayError::ModelNotFound(_) => Some("model"),
            _ => None,
        };
        openai::ErrorResponse::new(kind, self.message(), param, code.as_deref())
    }

    /// The Anthropic envelope (also used for a mid-stream `error` event).
    pub fn anthropic_body(&self) -> anthropic::ErrorResponse {
        anthropic::ErrorResponse::new(self.anthropic_parts().1, self.message())
    }

    pub fn openai_status(&self) -> StatusCode {
        self.openai_parts().0
    }
}

fn with_retry(mut resp: Response, retry_after: Option<u64>) -> Response {
    if let Some(s) = retry_after {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
            h.insert(header::RETRY_AFTER, v);
        }
        if let Ok(v) = HeaderValue::from_str(&(s * 1000).to_string()) {
            h.insert(HeaderName::from_static("retry-after-ms"), v);
        }
    }
    resp
}

/// An error answered in the OpenAI dialect.
#[derive(Debug)]
pub struct OpenAi(pub GatewayError);

impl IntoResponse for OpenAi {
    fn into_response(self) -> Response {
        let status = self.0.openai_status();
        with_retry(
            (status, axum::Json(self.0.openai_body())).into_response(),
            self.0.retry_after(),
        )
    }
}

/// An error answered in the Anthropic dialect.
#[derive(Debug)]
pub struct Anthropic(pub GatewayError);

impl IntoResponse for Anthropic {
    fn into_response(self) -> Response {
        let (status, _) = self.0.anthropic_parts();
        with_retry(
            (status, axum::Json(self.0.anthropic_body())).into_response(),
            self.0.retry_after(),
        )
    }
}

impl From<FleetError> for GatewayError {
    fn from(e: FleetError) -> Self {
        let message = e.to_string();
        match e {
            FleetError::UnknownModel(m) => GatewayError::ModelNotFound(m),
            FleetError::UnknownNode(_) => GatewayError::BadRequest {
                message,
                param: Some("node".into()),
            },
            FleetError::NotServable(_) => GatewayError::Unavailable {
                message,
                retry_after_s: 5,
            },
            FleetError::NoCapacity { .. } => GatewayError::Unavailable {
                message,
                retry_after_s: 30,
            },
            FleetError::Busy { retry_after_ms, .. } => GatewayError::Unavailable {
                message,
                retry_after_s: retry_after_ms.div_ceil(1000).max(1),
            },
            FleetError::Load { source, .. } => upstream(source, Some(message)),
            FleetError::Pinned(_) => GatewayError::Conflict(message),
            FleetError::Stopped => GatewayError::Internal(message),
        }
    }
}

impl From<UpstreamError> for GatewayError {
    fn from(e: UpstreamError) -> Self {
        upstream(e, None)
    }
}

fn upstream(e: UpstreamError, context: Option<String>) -> GatewayError {
    let message = context.unwrap_or_else(|| e.to_string());
    match e {
        UpstreamError::Connect { .. } => GatewayError::Unavailable {
            message,
            retry_after_s: 2,
        },
        UpstreamError::Timeout { .. } => GatewayError::Timeout(message),
        UpstreamError::Status { status, code, .. } => GatewayError::Upstream {
            status,
            message,
            code,
        },
        UpstreamError::Transport { .. } | UpstreamError::Invalid { .. } => {
            GatewayError::BadGateway(message)
        }
    }
}

impl From<TranslateError> for GatewayError {
    fn from(e: TranslateError) -> Self {
        match e {
            TranslateError::Invalid { message, param } => {
                GatewayError::BadRequest { message, param }
            }
        }
    }
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
            (GatewayError::Internal("x".into()), 500, 500, "api_error"),
        ];
        for (e, oa, an, an_type) in cases {
            assert_eq!(e.openai_status().as_u16(), oa, "{e:?}");
            let (s, t) = e.anthropic_parts();
            assert_eq!((s.as_u16(), t), (an, an_type), "{e:?}");
        }
    }

    #[test]
    fn retry_after_headers_on_overload() {
        let r = Anthropic(GatewayError::Unavailable {
            message: "x".into(),
            retry_after_s: 5,
        })
        .into_response();
        assert_eq!(r.status().as_u16(), 529);
        assert_eq!(r.headers()["retry-after"], "5");
        assert_eq!(r.headers()["retry-after-ms"], "5000");
        let r = OpenAi(GatewayError::bad_request("x")).into_response();
        assert!(r.headers().get("retry-after").is_none());
    }
}
