//! Forwarding a request to a neuron, and the gateway's one retry policy:
//! pick a ready replica (or wait, bounded, for a load), send, and try
//! another neuron only when the request was not processed — nothing
//! reached the neuron (the connection was refused, or found closed before
//! the request was written), or the neuron refused it before running
//! anything (the model is not loaded there, is being unloaded, or is
//! poisoned). Never after generation may have started: a request that was
//! written is never sent again. One deadline covers all attempts.
//!
//! - [`upstream`]: reading a neuron's event stream under the stream limits;
//! - [`stream`]: the streams the client gets (OpenAI passed through, or
//!   translated to Anthropic events);
//! - [`stats`]: the metrics tapped from each request.

pub mod stats;
pub mod stream;
pub mod upstream;

use std::time::{Duration, Instant};

use bytes::Bytes;
use cortex_core::config::LimitsConfig;
use http::StatusCode;

use cortex_core::openai::ChatCompletionRequest;

use crate::error::GatewayError;
use crate::fleet::{FleetError, InFlightGuard, Replica};
use crate::metrics::{DecisionLabels, ModelLabel};
use crate::neuron_client::{error_of, Answer, NeuronRequest, UpstreamError};
use crate::state::AppState;
use upstream::UpstreamSse;

/// A request that reached a neuron and got an answer's head.
#[derive(Debug)]
pub struct Dispatched {
    pub resp: Answer,
    pub replica: Replica,
    pub guard: InFlightGuard,
}

impl Dispatched {
    /// The whole answer (one not streamed, or an error), read within
    /// `first_byte_timeout`.
    pub async fn read_all(self, state: &AppState) -> Result<Bytes, GatewayError> {
        let bytes = state
            .neurons
            .read_body(
                &self.replica.node,
                self.resp.into_body(),
                state.limits.first_byte_timeout.get(),
            )
            .await?;
        Ok(bytes)
    }

    /// The whole answer of a request that is not streamed, as a chat
    /// completion for a translating route; `stats` get its status and
    /// usage. An error answer becomes its error.
    pub async fn completion(
        self,
        state: &AppState,
        stats: &mut stats::Stats,
    ) -> Result<cortex_core::openai::ChatCompletion, GatewayError> {
        let status = self.resp.status();
        let bytes = self.read_all(state).await?;
        if status != StatusCode::OK {
            stats.finish(status.as_u16());
            return Err(GatewayError::from_answer(status.as_u16(), &bytes));
        }
        let answer = serde_json::from_slice::<cortex_core::openai::ChatCompletion>(&bytes);
        // Usage first: `finish` records the token counts.
        if let Ok(a) = &answer {
            stats.usage = Some(a.usage);
        }
        stats.finish(status.as_u16());
        answer.map_err(GatewayError::InvalidAnswer)
    }

    /// The prompt's token count the neuron sent in its answer's head
    /// (`PROMPT_TOKENS_HEADER`), or 0; translated streams report it when
    /// upstream sends no usage.
    pub fn prompt_tokens_hint(&self) -> u64 {
        self.resp
            .headers()
            .get(cortex_core::neuron_api::PROMPT_TOKENS_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
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

/// The neuron's chat route: the requests that carry a conversation.
pub const CHAT_PATH: &str = "/v1/chat/completions";

/// What a neuron's refusal says about the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The model is not (or no longer) loaded there.
    NotLoaded,
    /// The model is poisoned there.
    Poisoned,
    /// The model is loading or unloading there.
    Busy,
}

impl Refusal {
    /// The neuron's error code, if it means "not processed here".
    pub fn of(code: Option<&str>) -> Option<Self> {
        match code? {
            "model_not_found" => Some(Refusal::NotLoaded),
            "model_poisoned" => Some(Refusal::Poisoned),
            "model_loading" | "model_unloading" => Some(Refusal::Busy),
            _ => None,
        }
    }
}

/// The outcome of one attempt, as far as retrying goes.
enum Attempt {
    /// An answer to pass on (whatever its status).
    Answered(Answer),
    /// The neuron refused it before running anything.
    Refused { refusal: Refusal, message: String },
    /// An error answer that was read to see whether it was a refusal.
    Failed { status: u16, body: Bytes },
}

/// Send `body` to `path` on a neuron serving `model`.
pub async fn dispatch(
    state: &AppState,
    model: &str,
    path: &'static str,
    body: Bytes,
    deadline: Instant,
) -> Result<Dispatched, GatewayError> {
    let limits = &state.limits;
    let mut avoid: Vec<String> = Vec::new();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let last = attempt >= limits.max_attempts;
        let replica = match pick(state, model, path, &body, &avoid) {
            Some(r) => r,
            None => {
                let until = Instant::now() + limits.load_wait.get();
                ready_replica(state, model, &avoid, until.min(deadline)).await?
            }
        };
        let guard = replica.begin();
        let ttfb = deadline
            .saturating_duration_since(Instant::now())
            .min(limits.first_byte_timeout.get())
            .max(Duration::from_millis(1));
        let node = replica.node.name.as_str();
        match send(state, &replica, path, body.clone(), ttfb).await {
            Ok(Attempt::Answered(resp)) => {
                return Ok(Dispatched {
                    resp,
                    replica,
                    guard,
                })
            }
            Ok(Attempt::Failed { status, body }) => {
                return Err(GatewayError::from_answer(status, &body))
            }
            Ok(Attempt::Refused { refusal, message }) => {
                match refusal {
                    Refusal::Poisoned => state.fleet.poisoned(model, node),
                    // Lost since the last poll (the neuron restarted, or an
                    // unload raced this request): forget it there, so that
                    // the retry loads it again.
                    Refusal::NotLoaded => state.fleet.gone(model, node),
                    Refusal::Busy => {}
                }
                if last {
                    // Not the client's fault, and the model exists: never
                    // pass a neuron's 404 on as "no such model".
                    return Err(GatewayError::Unavailable {
                        message: format!("`{model}` could not be served right now: {message}"),
                        retry_after_s: 1,
                    });
                }
                tracing::info!(%model, %node, ?refusal, "neuron did not process the request; trying another");
            }
            Err(e) if e.nothing_sent() => {
                state.fleet.node_failed(node);
                if last {
                    return Err(e.into());
                }
                tracing::warn!(%model, %node, error = %crate::error::chain(&e), "neuron unreachable; trying another");
            }
            Err(e) => return Err(e.into()),
        }
        state
            .metrics
            .retries
            .get_or_create(&ModelLabel {
                model: model.to_string(),
            })
            .inc();
        avoid.push(node.to_string());
        if Instant::now() >= deadline {
            return Err(GatewayError::Timeout(format!(
                "no neuron answered for `{model}` before the deadline"
            )));
        }
    }
}

/// Rule 2: the ready replica for this request, if any. A chat request
/// with a choice of replicas goes by its conversation's cached prefix
/// (`router::affinity`); the decision is counted by reason.
fn pick(
    state: &AppState,
    model: &str,
    path: &str,
    body: &[u8],
    avoid: &[String],
) -> Option<Replica> {
    let table = state.fleet.table();
    let several = table.ready.get(model).is_some_and(|r| r.len() > 1);
    if !(several && state.routing.prefix_affinity && path == CHAT_PATH) {
        return table.pick(model, avoid);
    }
    // Parsed only here: with one replica there is nothing to choose.
    let hashes = serde_json::from_slice::<ChatCompletionRequest>(body)
        .map(|req| cortex_core::prefix::conversation_hashes(&req))
        .unwrap_or_default();
    let ttl = state.routing.affinity_ttl.get().as_millis() as u64;
    let since = cortex_core::now_unix_ms().saturating_sub(ttl);
    let (replica, reason) =
        table.pick_chat(model, avoid, &hashes, since, state.routing.affinity_slack)?;
    state
        .metrics
        .routing
        .get_or_create(&DecisionLabels {
            model: model.to_string(),
            reason: reason.as_str(),
        })
        .inc();
    tracing::debug!(%model, node = %replica.node.name, reason = reason.as_str(), "routed");
    Some(replica)
}

/// How often a request that waits for busy models to make room asks again.
const BUSY_RECHECK: Duration = Duration::from_millis(200);

/// A replica of `model` once it is loaded (a cold load waited for), by
/// `until`. A load the swap-thrashing guard holds back is asked for again
/// when the guard would let it happen, as llama-swap queues a swap: the
/// request waits instead of failing, and gets 503 only when `until` comes
/// first. So does a load with no room but what busy models hold (the
/// other model of a node that holds one of two): their requests end, and
/// then it can evict them, as Ollama waits for a runner to go idle before
/// a swap; meanwhile the model may also turn up ready elsewhere (a
/// restarted neuron).
async fn ready_replica(
    state: &AppState,
    model: &str,
    avoid: &[String],
    until: Instant,
) -> Result<Replica, GatewayError> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let outcome =
            tokio::time::timeout(left, state.fleet.ensure_ready(model, avoid.to_vec(), None)).await;
        match outcome {
            Err(_) => {
                return Err(GatewayError::Unavailable {
                    message: format!("`{model}` is still loading; try again shortly"),
                    retry_after_s: 5,
                })
            }
            Ok(Err(FleetError::Guarded { retry_after_ms, .. }))
                if Instant::now() + Duration::from_millis(retry_after_ms) < until =>
            {
                tracing::info!(%model, retry_after_ms, "waiting for the swap-thrashing guard");
                // A little past the moment the guard names, so that the
                // next plan sees the resident old enough.
                tokio::time::sleep(Duration::from_millis(retry_after_ms + 10)).await;
            }
            Ok(Err(FleetError::Busy { reason, .. })) if Instant::now() + BUSY_RECHECK < until => {
                tracing::debug!(%model, %reason, "waiting for busy models to make room");
                tokio::time::sleep(BUSY_RECHECK).await;
            }
            Ok(r) => return Ok(r?.replica),
        }
    }
}

/// One attempt on `replica`. A 404 or 503 is read (it is small) to see
/// whether the neuron ran anything.
async fn send(
    state: &AppState,
    replica: &Replica,
    path: &'static str,
    body: Bytes,
    ttfb: Duration,
) -> Result<Attempt, UpstreamError> {
    let resp = state
        .neurons
        .send(&replica.node, NeuronRequest::post(path, body, ttfb))
        .await?;
    if !matches!(
        resp.status(),
        StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE
    ) {
        return Ok(Attempt::Answered(resp));
    }
    let status = resp.status().as_u16();
    let body = state
        .neurons
        .read_body(&replica.node, resp.into_body(), ttfb)
        .await?;
    let (message, code) = error_of(&body);
    Ok(match Refusal::of(code.as_deref()) {
        Some(refusal) => Attempt::Refused { refusal, message },
        None => Attempt::Failed { status, body },
    })
}

#[cfg(test)]
mod tests;
