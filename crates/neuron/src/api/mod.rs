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

use crate::engine::Assets;
use crate::lifecycle::{InFlight, Model, Registry};
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

/// A model taken for one request: the guard that counts it in flight (drop
/// it when the request is done), the model, and its assets of the kind the
/// route serves.
pub(crate) struct Acquired<A> {
    pub guard: InFlight,
    pub model: Arc<Model>,
    pub assets: Arc<A>,
}

/// Takes model `id` for one request of the kind `pick` selects
/// ([`Assets::chat`] or [`Assets::embedding`]): an id that cannot name a
/// model is a 404 without touching the registry, a model that is not
/// ready is the registry's error, a model of the other kind a 400
/// `model_kind_mismatch`.
pub(crate) fn acquire<A>(
    state: &AppState,
    id: &str,
    pick: fn(&Assets) -> Option<&Arc<A>>,
) -> Result<Acquired<A>, error::ApiError> {
    if !cortex_core::model_id::is_valid_model_id(id) {
        return Err(error::ApiError::model_not_found(id));
    }
    let guard = state.registry.acquire(id)?;
    let model = guard.model().clone();
    let assets = pick(&model.assets)
        .cloned()
        .ok_or_else(|| error::ApiError::wrong_kind(id, model.assets.kind()))?;
    Ok(Acquired {
        guard,
        model,
        assets,
    })
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
