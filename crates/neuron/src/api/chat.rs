//! `POST /v1/chat/completions`: validation, the prompt (see
//! [`super::prompt`]), and the non-streamed answer over one [`Answer`]; the
//! streamed shape is in [`super::stream`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use cortex_core::openai::{AssistantMessage, ChatCompletion, ChatCompletionRequest, Choice, Role};

use super::answer::{Answer, AnswerEvent, GenStats, Piece};
use super::error::ApiError;
use super::extract::ApiJson;
use super::prompt::{self, PromptError, PromptInput};
use super::{Acquired, AppState};
use crate::device_worker::Injection;
use crate::engine::sampling::SamplingParams;
use crate::engine::Assets;
use crate::fault::Site;
use crate::generate::{GenEvent, GenParams, Generation};
use crate::metrics::{NeuronMetrics, RequestLabels};

/// The header that injects a test fault, when fault injection is enabled.
pub const INJECT_HEADER: &str = "x-neuron-inject-fault";

/// Stop sequences per request. OpenAI allows 4 (the gateway enforces that
/// on its OpenAI route); Anthropic has no documented cap.
pub const MAX_STOPS: usize = 16;

/// Checked request values.
struct Checked {
    sampling: SamplingParams,
    max_tokens: Option<usize>,
    stops: Vec<String>,
}

fn check(req: &ChatCompletionRequest) -> Result<Checked, ApiError> {
    if req.messages.is_empty() {
        return Err(ApiError::bad_param(
            "messages",
            "`messages` must contain at least one message",
        ));
    }
    super::checks::request(req)?;
    let max_tokens = match req.max_tokens() {
        Some(n) if n <= 0 => {
            return Err(ApiError::bad_param(
                if req.max_completion_tokens.is_some() {
                    "max_completion_tokens"
                } else {
                    "max_tokens"
                },
                format!("max_tokens must be at least 1, got {n}"),
            ))
        }
        Some(n) => Some(usize::try_from(n).unwrap_or(usize::MAX)),
        None => None,
    };
    let temperature = req.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) || temperature.is_nan() {
        return Err(ApiError::bad_param(
            "temperature",
            format!("temperature must be between 0 and 2, got {temperature}"),
        ));
    }
    let top_p = req.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::bad_param(
            "top_p",
            format!("top_p must be in (0, 1], got {top_p}"),
        ));
    }
    let top_k = match req.top_k {
        Some(k) if k < 0 => {
            return Err(ApiError::bad_param(
                "top_k",
                format!("top_k must be >= 0, got {k}"),
            ))
        }
        Some(0) | None => None,
        Some(k) => Some(k as usize),
    };
    if let Some(n) = req.n {
        if n != 1 {
            return Err(ApiError::bad_param(
                "n",
                format!("only n = 1 is supported, got {n}"),
            ));
        }
    }
    let stops = req.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    if stops.len() > MAX_STOPS {
        return Err(ApiError::bad_param(
            "stop",
            format!("at most {MAX_STOPS} stop sequences are allowed"),
        ));
    }
    Ok(Checked {
        sampling: SamplingParams {
            temperature,
            top_p: (top_p < 1.0).then_some(top_p),
            top_k,
            seed: req.seed.unwrap_or_else(rand::random),
        },
        max_tokens,
        stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
    })
}

pub(super) fn injection(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Injection>, ApiError> {
    if !state.fault_injection {
        return Ok(None);
    }
    match headers.get(INJECT_HEADER).and_then(|v| v.to_str().ok()) {
        None => Ok(None),
        Some(v) => Injection::parse(v)
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("bad {INJECT_HEADER} value {v:?}"))),
    }
}

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let checked = check(&req)?;
    let inject = injection(&state, &headers)?;
    let Acquired {
        guard,
        model,
        assets,
    } = super::acquire(&state, &req.model, Assets::chat)?;
    let stream = req.is_stream();

    let input = PromptInput {
        messages: &req.messages,
        tools: req.tools.as_deref(),
        tool_choice: req.tool_choice.as_ref(),
        parallel_tool_calls: req.parallel_tool_calls,
    };
    let prompt = match inject.filter(|i| i.site == Site::Tokenize) {
        Some(i) => Err(i.message()),
        None => match prompt::build(&assets, input, state.prompt) {
            Ok(p) => Ok(p),
            Err(PromptError::Request(e)) => return Err(e),
            Err(PromptError::Engine(e)) => Err(e.chain()),
        },
    };
    let prompt = match prompt {
        Ok(p) => p,
        Err(chain) => {
            return Err(ApiError::tokenize_failed(
                &model.health,
                stream,
                &chain,
                || {
                    ApiError::bad_request(format!("cannot build the prompt: {chain}"))
                        .code("invalid_prompt")
                },
            ));
        }
    };
    let prompt_len = prompt.ids.len();
    let ctx = assets.meta.max_positions();
    if prompt_len >= ctx {
        return Err(ApiError::bad_param(
            "messages",
            format!(
                "This model's maximum context length is {ctx} tokens, but the prompt is {prompt_len} tokens."
            ),
        )
        .code("context_length_exceeded"));
    }
    let room = ctx - prompt_len;
    let max_new_tokens = match checked.max_tokens {
        Some(n) if n > room && req.clamp_max_tokens == Some(true) => room,
        Some(n) if n > room => {
            return Err(ApiError::bad_param(
                "max_tokens",
                format!(
                    "This model's maximum context length is {ctx} tokens. However, you requested {} tokens ({prompt_len} in the messages, {n} in the completion).",
                    prompt_len + n,
                ),
            )
            .code("context_length_exceeded"))
        }
        Some(n) => n,
        None => room,
    };
    // A forced call start is part of the completion: it uses its budget.
    let max_new_tokens = max_new_tokens.saturating_sub(prompt.forced).max(1);
    let mut stops = checked.stops;
    stops.extend(prompt.stops);
    let gen = Generation::start(
        guard,
        prompt.ids,
        GenParams {
            sampling: checked.sampling,
            max_new_tokens,
            stops,
            stream,
            inject,
            conversation: cortex_core::prefix::conversation_hashes(&req)
                .last()
                .copied(),
            keep_special: prompt.keep_special,
        },
    )
    .map_err(|e| gen_error(&e))?;
    let answer = Answer::new(gen, prompt.tools.as_ref(), prompt.forced);
    let recorder = Recorder::new(state.metrics.clone(), &req.model, stream, started);
    let meta = Meta {
        id: format!(
            "chatcmpl-{:016x}{:08x}",
            rand::random::<u64>(),
            rand::random::<u32>()
        ),
        created: cortex_core::now_unix_ms() / 1000,
        model: req.model.clone(),
    };
    if stream {
        Ok(super::stream::response(
            answer,
            meta,
            req.include_usage(),
            recorder,
        ))
    } else {
        complete(answer, meta, recorder).await
    }
}

/// The fields shared by every chunk of one answer.
pub(super) struct Meta {
    pub id: String,
    pub created: u64,
    pub model: String,
}

/// Records a request's metrics when it ends, however it ends.
pub(super) struct Recorder {
    metrics: NeuronMetrics,
    model: String,
    stream: bool,
    started: Instant,
    status: u16,
}

impl Recorder {
    pub(super) fn new(metrics: NeuronMetrics, model: &str, stream: bool, started: Instant) -> Self {
        Self {
            metrics,
            model: model.to_string(),
            stream,
            started,
            // Until the answer ends one way or the other: a request dropped
            // before that is a client that went away (nginx's 499).
            status: 499,
        }
    }

    /// The status the request is counted under (without token counts).
    pub(super) fn set_status(&mut self, status: u16) {
        self.status = status;
    }

    pub(super) fn finish(&mut self, gen: &GenStats, status: u16) {
        self.status = status;
        let label = NeuronMetrics::model(&self.model);
        self.metrics
            .prompt_tokens
            .get_or_create(&label)
            .inc_by(gen.prompt_tokens);
        self.metrics
            .completion_tokens
            .get_or_create(&label)
            .inc_by(gen.completion_tokens);
        self.metrics
            .prefix_hit_tokens
            .get_or_create(&label)
            .inc_by(gen.cached_tokens);
        self.metrics
            .prefix_miss_tokens
            .get_or_create(&label)
            .inc_by(gen.prompt_tokens - gen.cached_tokens);
        if let Some(first) = gen.first_token_at {
            self.metrics
                .ttft
                .get_or_create(&label)
                .observe(first.duration_since(gen.started).as_secs_f64());
            let gen_secs = first.elapsed().as_secs_f64();
            if gen.completion_tokens > 1 && gen_secs > 0.0 {
                self.metrics
                    .tokens_per_second
                    .get_or_create(&label)
                    .observe((gen.completion_tokens - 1) as f64 / gen_secs);
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let label = NeuronMetrics::model(&self.model);
        self.metrics
            .request_duration
            .get_or_create(&label)
            .observe(self.started.elapsed().as_secs_f64());
        self.metrics
            .requests
            .get_or_create(&RequestLabels {
                model: self.model.clone(),
                status: self.status,
                stream: self.stream,
            })
            .inc();
    }
}

pub(super) fn gen_error(ev: &GenEvent) -> ApiError {
    match ev {
        GenEvent::Failed {
            site,
            chain,
            device_fault: true,
        } => ApiError::internal(format!(
            "inference failed at {} with a device fault; the model is marked poisoned and must be reloaded: {chain}",
            site.as_str()
        ))
        .code("device_fault"),
        GenEvent::Failed { site, chain, .. } => {
            ApiError::internal(format!("inference failed at {}: {chain}", site.as_str())).code("inference_error")
        }
        _ => ApiError::internal("unexpected generation event"),
    }
}

async fn complete(mut answer: Answer, meta: Meta, mut rec: Recorder) -> Result<Response, ApiError> {
    let mut text = String::new();
    let mut calls = Vec::new();
    while let Some(ev) = answer.next().await {
        match ev {
            AnswerEvent::Piece(Piece::Text(t)) => text.push_str(&t),
            AnswerEvent::Piece(Piece::Call(_, call)) => calls.push(call),
            AnswerEvent::Done {
                finish,
                stop,
                usage,
            } => {
                rec.finish(&answer.stats(), 200);
                // With calls, `content` is the text before them, or null.
                let content = (calls.is_empty() || !text.is_empty()).then_some(text);
                let body = ChatCompletion {
                    id: meta.id,
                    object: "chat.completion".into(),
                    created: meta.created,
                    model: meta.model,
                    choices: vec![Choice {
                        index: 0,
                        message: AssistantMessage {
                            role: Role::Assistant,
                            content,
                            tool_calls: (!calls.is_empty()).then_some(calls),
                        },
                        finish_reason: Some(finish),
                        logprobs: None,
                        stop_reason: stop,
                    }],
                    usage,
                    system_fingerprint: None,
                };
                return Ok((StatusCode::OK, axum::Json(body)).into_response());
            }
            AnswerEvent::Failed(failed) => {
                rec.finish(&answer.stats(), 500);
                return Err(gen_error(&failed));
            }
        }
    }
    Err(ApiError::internal("generation ended without an answer"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn validation() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
        assert!(check(&req(base.clone())).is_ok());
        let with = |k: &str, v: serde_json::Value| {
            let mut b = base.clone();
            b[k] = v;
            check(&req(b))
        };
        for (k, v, param) in [
            ("messages", json!([]), "messages"),
            ("max_tokens", json!(0), "max_tokens"),
            ("max_tokens", json!(-3), "max_tokens"),
            ("max_completion_tokens", json!(0), "max_completion_tokens"),
            ("temperature", json!(2.5), "temperature"),
            ("temperature", json!(-0.1), "temperature"),
            ("top_p", json!(0), "top_p"),
            ("top_p", json!(1.5), "top_p"),
            ("top_k", json!(-1), "top_k"),
            ("n", json!(2), "n"),
            ("stop", json!(vec!["s"; MAX_STOPS + 1]), "stop"),
        ] {
            let e = with(k, v.clone())
                .err()
                .unwrap_or_else(|| panic!("{k}={v} accepted"));
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            assert_eq!(e.param, Some(param), "{k}={v}");
        }
        let c = with("temperature", json!(0)).ok().unwrap();
        assert_eq!(c.sampling.temperature, 0.0);
        let c = with("stop", json!(["", "x"])).ok().unwrap();
        assert_eq!(c.stops, vec!["x"]);
    }
}
