//! The neuron HTTP API (see DESIGN.md, "Neuron HTTP API"). One small
//! [`AppState`]; handlers in [`chat`], [`embeddings`] and [`admin`]; a request's prompt in
//! [`prompt`], its answer (text and tool calls) in [`answer`], streamed by
//! [`stream`]; errors become responses only in [`error`].

pub mod admin;
pub mod answer;
pub mod chat;
mod checks;
pub mod embeddings;
pub mod error;
pub mod extract;
pub mod prompt;
pub mod stream;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;

use crate::lifecycle::Registry;
use crate::metrics::NeuronMetrics;

/// What every handler shares.
pub struct AppState {
    pub node_name: String,
    pub registry: Arc<Registry>,
    pub metrics: NeuronMetrics,
    pub prometheus: prometheus_client::registry::Registry,
    pub admin_token: Option<String>,
    /// Honour the `x-neuron-inject-fault` header (tests only).
    pub fault_injection: bool,
    pub max_body: usize,
    /// How prompts are normalised.
    pub prompt: prompt::PromptOptions,
}

/// The neuron's routes.
pub fn app(state: Arc<AppState>) -> Router {
    let lifecycle = Router::new()
        .route("/models/load", post(admin::load))
        .route("/models/unload", post(admin::unload))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::require_admin,
        ));
    Router::new()
        .route("/health", get(admin::health))
        .route("/status", get(admin::status))
        .route("/v1/models", get(admin::models))
        .route("/v1/chat/completions", post(chat::chat_completions))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/tokenize", post(admin::tokenize))
        .route("/metrics", get(admin::metrics))
        .merge(lifecycle)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.max_body))
        .with_state(state)
}

async fn not_found() -> impl IntoResponse {
    error::ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "no such route",
    )
    .code("not_found")
}
