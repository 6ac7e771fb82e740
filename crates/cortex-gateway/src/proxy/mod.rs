//! Forwarding a request to a neuron: pick a ready replica (or wait, bounded,
//! for a load), send, and retry on another neuron only when the request was
//! not processed — nothing reached the neuron (connection refused), or the
//! neuron refused it before running anything (the model is not loaded there,
//! is being unloaded, or is poisoned). Never after generation may have
//! started. One deadline covers all attempts.

pub mod stats;
pub mod upstream;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cortex_core::config::LimitsConfig;
use http::{Method, StatusCode};

use crate::api::error::GatewayError;
use crate::api::AppState;
use crate::fleet::{InFlightGuard, Replica};
use crate::metrics::ModelLabel;
use crate::neuron_client::error_of;
use upstream::UpstreamSse;

/// A request that reached a neuron and got an answer's head.
pub struct Dispatched {
    pub resp: crate::h1::Answer,
    pub replica: Replica,
    pub guard: InFlightGuard,
}

impl Dispatched {
    /// The whole answer (one not streamed, or an error), read within
    /// `first_byte_timeout`.
    pub async fn read_all(self, state: &AppState) -> Result<Bytes, GatewayError> {
        let bytes = state
            .client
            .read_body(
                &self.replica.node,
                self.resp.into_body(),
                state.limits.first_byte_timeout.get(),
            )
            .await?;
        Ok(bytes)
    }

    /// The answer as an event stream, under the stream limits; the guard
    /// keeps the request counted until the stream is dropped.
    pub fn into_sse(self, limits: &LimitsConfig) -> (UpstreamSse, InFlightGuard) {
        let up = UpstreamSse::new(
            self.resp.into_body(),
            limits.max_upstream_line.bytes() as usize,
            limits.first_byte_timeout.get(),
            limits.idle_timeout.get(),
        );
        (up, self.guard)
    }
}

/// Neuron error codes that mean "not processed here; try elsewhere".
const NOT_PROCESSED: &[&str] = &[
    "model_not_found",
    "model_unloading",
    "model_loading",
    "model_poisoned",
];

/// Send `body` to `path` on a neuron serving `model`.
pub async fn dispatch(
    state: &AppState,
    model: &str,
    path: &str,
    body: Bytes,
    deadline: Instant,
) -> Result<Dispatched, GatewayError> {
    let limits = &state.limits;
    let mut avoid: Vec<String> = Vec::new();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let last = attempt >= limits.max_attempts;
        let replica = match state.fleet.table().pick(model, &avoid) {
            Some(r) => r,
            None => {
                let wait = deadline
                    .saturating_duration_since(Instant::now())
                    .min(limits.load_wait.get());
                match tokio::time::timeout(
                    wait,
                    state.fleet.ensure_ready(model, avoid.clone(), None),
                )
                .await
                {
                    Err(_) => {
                        return Err(GatewayError::Unavailable {
                            message: format!("`{model}` is still loading; try again shortly"),
                            retry_after_s: 5,
                        })
                    }
                    Ok(r) => r?.replica,
                }
            }
        };
        let guard = replica.begin();
        let ttfb = deadline
            .saturating_duration_since(Instant::now())
            .min(limits.first_byte_timeout.get())
            .max(Duration::from_millis(1));
        let node = replica.node.name.as_str();
        match state
            .client
            .send(&replica.node, Method::POST, path, body.clone(), false, ttfb)
            .await
        {
            Ok(resp)
                if matches!(
                    resp.status(),
                    StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE
                ) =>
            {
                // Read the (small) error to see whether the neuron ran anything.
                let status = resp.status().as_u16();
                let bytes = state
                    .client
                    .read_body(&replica.node, resp.into_body(), ttfb)
                    .await?;
                let (message, code) = error_of(&bytes);
                if code.as_deref().is_some_and(|c| NOT_PROCESSED.contains(&c)) {
                    match code.as_deref() {
                        Some("model_poisoned") => state.fleet.poisoned(model, node),
                        // Lost since the last poll (the neuron restarted, or
                        // an unload raced this request): forget it there, so
                        // that the retry loads it again.
                        Some("model_not_found") => state.fleet.gone(model, node),
                        _ => {}
                    }
                    if last {
                        // Not the client's fault, and the model exists:
                        // never pass a neuron's 404 on as "no such model".
                        return Err(GatewayError::Unavailable {
                            message: format!("`{model}` could not be served right now: {message}"),
                            retry_after_s: 1,
                        });
                    }
                    tracing::info!(%model, %node, code = ?code, "neuron did not process the request; trying another");
                    retry(state, model, &mut avoid, node.to_string());
                    continue;
                }
                return Err(GatewayError::Upstream {
                    status,
                    message,
                    code,
                });
            }
            Ok(resp) => {
                return Ok(Dispatched {
                    resp,
                    replica,
                    guard,
                })
            }
            Err(e) if e.nothing_sent() => {
                state.fleet.node_failed(node);
                if last {
                    return Err(e.into());
                }
                tracing::warn!(%model, %node, error = %e, "neuron unreachable; trying another");
                retry(state, model, &mut avoid, node.to_string());
            }
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= deadline {
            return Err(GatewayError::Timeout(format!(
                "no neuron answered for `{model}` before the deadline"
            )));
        }
    }
}

fn retry(state: &AppState, model: &str, avoid: &mut Vec<String>, node: String) {
    state
        .metrics
        .retries
        .get_or_create(&ModelLabel {
            model: model.to_string(),
        })
        .inc();
    avoid.push(node);
}
