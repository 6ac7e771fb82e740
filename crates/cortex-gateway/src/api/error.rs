//! Errors as HTTP answers, once per dialect (OpenAI, Anthropic, Ollama): the status and envelope of
//! [`crate::error`], with `retry-after` and `retry-after-ms` on 429/503/529.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::error::{
    anthropic_body, anthropic_status, openai_body, openai_status, retry_after, GatewayError,
};

fn with_retry(mut resp: Response, retry_after: Option<u64>) -> Response {
    if let Some(s) = retry_after {
        let h = resp.headers_mut();
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        h.insert(
            HeaderName::from_static("retry-after-ms"),
            HeaderValue::from(s.saturating_mul(1000)),
        );
    }
    resp
}

/// An error answered in the OpenAI dialect.
#[derive(Debug)]
pub struct OpenAi(pub GatewayError);

impl IntoResponse for OpenAi {
    fn into_response(self) -> Response {
        with_retry(
            (openai_status(&self.0), axum::Json(openai_body(&self.0))).into_response(),
            retry_after(&self.0),
        )
    }
}

/// An error answered in the Anthropic dialect.
#[derive(Debug)]
pub struct Anthropic(pub GatewayError);

impl IntoResponse for Anthropic {
    fn into_response(self) -> Response {
        with_retry(
            (
                anthropic_status(&self.0),
                axum::Json(anthropic_body(&self.0)),
            )
                .into_response(),
            retry_after(&self.0),
        )
    }
}

/// An error answered in Ollama's dialect: `{"error": message}` with the
/// status the OpenAI dialect uses (404 for an unknown model, 400 for bad
/// input, …).
#[derive(Debug)]
pub struct Ollama(pub GatewayError);

impl IntoResponse for Ollama {
    fn into_response(self) -> Response {
        let body = cortex_core::ollama::ErrorResponse {
            error: self.0.message(),
        };
        with_retry(
            (openai_status(&self.0), axum::Json(body)).into_response(),
            retry_after(&self.0),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
