//! The one place where neuron errors become HTTP responses, in OpenAI's
//! error envelope `{"error": {"message", "type", "param", "code"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cortex_core::openai::ErrorResponse;

use crate::lifecycle::LifecycleError;
use crate::paths::PathError;

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    pub code: Option<&'static str>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400 about one request field.
    pub fn bad_param(param: &'static str, message: impl Into<String>) -> Self {
        Self {
            param: Some(param),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    pub fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    pub fn model_not_found(model: &str) -> Self {
        Self {
            param: Some("model"),
            ..Self::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("The model `{model}` does not exist or is not loaded on this neuron."),
            )
        }
        .code("model_not_found")
    }

    /// 400: `model` is of `kind`, which this route does not serve.
    pub fn wrong_kind(model: &str, kind: cortex_core::neuron_api::ModelKind) -> Self {
        Self::bad_param("model", kind.wrong_api_message(model)).code("model_kind_mismatch")
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "missing or invalid admin token (send Authorization: Bearer TOKEN)",
        )
        .code("invalid_api_key")
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// A request's input that the model's tokenizer (or template) failed
    /// on: host-side, yet the decision is the one classifier's (`health`,
    /// which logs it). A device fault is a 500 `device_fault` (the model is
    /// poisoned now); anything else the caller's 400, `otherwise`.
    pub fn tokenize_failed(
        health: &crate::fault::ModelHealth,
        stream: bool,
        chain: &str,
        otherwise: impl FnOnce() -> Self,
    ) -> Self {
        if health.report(crate::fault::Site::Tokenize, stream, chain) {
            Self::internal(format!("inference failed; model marked poisoned: {chain}"))
                .code("device_fault")
        } else {
            otherwise()
        }
    }

    /// The envelope, for mid-stream `data: {"error": …}` lines too.
    pub fn body(&self) -> ErrorResponse {
        ErrorResponse::new(self.kind, self.message.clone(), self.param, self.code)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, axum::Json(self.body())).into_response();
        if let Some(s) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        let msg = e.to_string();
        match e {
            LifecycleError::InvalidId(_) => ApiError::bad_param("model", msg).code("invalid_model"),
            LifecycleError::NotLoaded(m) => ApiError::model_not_found(&m),
            LifecycleError::Unknown(_) => ApiError {
                param: Some("model"),
                ..ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", msg)
            }
            .code("model_not_found"),
            LifecycleError::Loading(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", msg)
                    .code("model_loading")
                    .retry_after(1)
            }
            LifecycleError::Unloading(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", msg)
                    .code("model_unloading")
                    .retry_after(1)
            }
            LifecycleError::Poisoned { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", msg)
                    .code("model_poisoned")
            }
            LifecycleError::Path(PathError::NotFound(_)) => ApiError {
                param: Some("source"),
                ..ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", msg)
            }
            .code("model_file_not_found"),
            LifecycleError::Path(PathError::Refused(..)) | LifecycleError::BadSource(_) => {
                ApiError::bad_param("source", msg).code("invalid_source")
            }
            LifecycleError::NoDevice(_) => {
                ApiError::bad_param("device", msg).code("invalid_device")
            }
            LifecycleError::InsufficientMemory { .. } => {
                ApiError::new(StatusCode::CONFLICT, "insufficient_memory", msg)
                    .code("insufficient_memory")
            }
            LifecycleError::LoadFailed {
                invalid_file: true, ..
            } => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request_error",
                msg,
            )
            .code("invalid_model_file"),
            LifecycleError::LoadFailed { .. } => ApiError::internal(msg).code("load_failed"),
        }
    }
}
