//! The gateway's Prometheus metrics, with `model` and `node` labels and
//! buckets that suit LLM latencies (milliseconds to minutes). Built once and
//! passed in; no global registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use cortex_core::metrics as names;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub node: String,
    /// `openai`, `anthropic` or `count_tokens`.
    pub api: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelNode {
    pub model: String,
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadLabels {
    pub model: String,
    pub node: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    pub model: String,
    pub node: String,
    /// `room` (made room for a load), `idle`, `poisoned`, `defrag`, `admin`.
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    pub model: String,
    /// `cached_prefix`, `load` or `least_loaded` (`router::affinity`).
    pub reason: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    Histogram::new(names::LATENCY_BUCKETS.iter().copied())
}
fn inter_token() -> Histogram {
    Histogram::new(names::INTER_TOKEN_BUCKETS.iter().copied())
}
fn tok_per_s() -> Histogram {
    Histogram::new(names::TOKENS_PER_SECOND_BUCKETS.iter().copied())
}

/// Every gateway metric. Cheap to clone.
#[derive(Clone)]
pub struct GatewayMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histograms<ModelNode>,
    pub ttft: Histograms<ModelNode>,
    pub inter_token: Histograms<ModelNode>,
    pub prompt_tokens: Family<ModelNode, Counter>,
    pub completion_tokens: Family<ModelNode, Counter>,
    pub tokens_per_second: Histograms<ModelNode>,
    pub loads: Family<LoadLabels, Counter>,
    pub load_duration: Histograms<ModelNode>,
    pub evictions: Family<EvictionLabels, Counter>,
    pub neuron_up: Family<NodeLabel, Gauge>,
    pub in_flight: Family<ModelLabel, Gauge>,
    pub queue_wait: Histograms<ModelLabel>,
    pub retries: Family<ModelLabel, Counter>,
    pub routing: Family<DecisionLabels, Counter>,
}

impl std::fmt::Debug for GatewayMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewayMetrics")
    }
}

impl GatewayMetrics {
    pub fn new(r: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency),
            ttft: Family::new_with_constructor(latency),
            inter_token: Family::new_with_constructor(inter_token),
            prompt_tokens: Family::default(),
            completion_tokens: Family::default(),
            tokens_per_second: Family::new_with_constructor(tok_per_s),
            loads: Family::default(),
            load_duration: Family::new_with_constructor(latency),
            evictions: Family::default(),
            neuron_up: Family::default(),
            in_flight: Family::default(),
            queue_wait: Family::new_with_constructor(latency),
            retries: Family::default(),
            routing: Family::default(),
        };
        r.register(
            names::GW_REQUESTS,
            "Requests by model, node, API and status",
            m.requests.clone(),
        );
        r.register(
            names::GW_REQUEST_DURATION,
            "Request duration in seconds (to the last byte)",
            m.request_duration.clone(),
        );
        r.register(
            names::GW_TTFT,
            "Time to first token in seconds",
            m.ttft.clone(),
        );
        r.register(
            names::GW_INTER_TOKEN,
            "Time between streamed tokens in seconds",
            m.inter_token.clone(),
        );
        r.register(
            names::GW_PROMPT_TOKENS,
            "Prompt tokens",
            m.prompt_tokens.clone(),
        );
        r.register(
            names::GW_COMPLETION_TOKENS,
            "Completion tokens",
            m.completion_tokens.clone(),
        );
        r.register(
            names::GW_TOKENS_PER_SECOND,
            "Completion tokens per second after the first token, per request",
            m.tokens_per_second.clone(),
        );
        r.register(
            names::GW_MODEL_LOADS,
            "Model loads by result",
            m.loads.clone(),
        );
        r.register(
            names::GW_LOAD_DURATION,
            "Model load duration in seconds",
            m.load_duration.clone(),
        );
        r.register(
            names::GW_EVICTIONS,
            "Model unloads by reason",
            m.evictions.clone(),
        );
        r.register(
            names::GW_NEURON_UP,
            "1 when the neuron answers its status polls",
            m.neuron_up.clone(),
        );
        r.register(
            names::GW_IN_FLIGHT,
            "Requests in flight",
            m.in_flight.clone(),
        );
        r.register(
            names::GW_QUEUE_WAIT,
            "Time a request waited for a slot or a load, in seconds",
            m.queue_wait.clone(),
        );
        r.register(
            names::GW_RETRIES,
            "Requests retried on another neuron",
            m.retries.clone(),
        );
        r.register(
            names::GW_ROUTING_DECISIONS,
            "Chat requests routed between several ready replicas, by reason",
            m.routing.clone(),
        );
        m
    }

    /// The handles of one (model, node) pair, looked up once.
    pub fn replica(&self, model: &str, node: &str) -> ReplicaMetrics {
        let mn = Self::model_node(model, node);
        ReplicaMetrics {
            model: model.to_string(),
            node: node.to_string(),
            requests: self.requests.clone(),
            request_duration: self.request_duration.get_or_create(&mn).clone(),
            ttft: self.ttft.get_or_create(&mn).clone(),
            inter_token: self.inter_token.get_or_create(&mn).clone(),
            prompt_tokens: self.prompt_tokens.get_or_create(&mn).clone(),
            completion_tokens: self.completion_tokens.get_or_create(&mn).clone(),
            tokens_per_second: self.tokens_per_second.get_or_create(&mn).clone(),
            in_flight: self
                .in_flight
                .get_or_create(&ModelLabel {
                    model: model.to_string(),
                })
                .clone(),
        }
    }

    pub fn model_node(model: &str, node: &str) -> ModelNode {
        ModelNode {
            model: model.to_string(),
            node: node.to_string(),
        }
    }
}

/// Which API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    OpenAi,
    Anthropic,
    CountTokens,
    Responses,
    Ollama,
    Embeddings,
}

impl Api {
    /// The `api` label value.
    pub fn label(self) -> &'static str {
        match self {
            Api::OpenAi => "openai",
            Api::Anthropic => "anthropic",
            Api::CountTokens => "count_tokens",
            Api::Responses => "responses",
            Api::Ollama => "ollama",
            Api::Embeddings => "embeddings",
        }
    }
}

/// Metric handles of one (model, node) pair, so that the request path does
/// no label lookups but for its final status.
#[derive(Clone)]
pub struct ReplicaMetrics {
    model: String,
    node: String,
    requests: Family<RequestLabels, Counter>,
    pub request_duration: Histogram,
    pub ttft: Histogram,
    pub inter_token: Histogram,
    pub prompt_tokens: Counter,
    pub completion_tokens: Counter,
    pub tokens_per_second: Histogram,
    /// `requests_in_flight{model}` (shared by the model's replicas).
    pub in_flight: Gauge,
}

impl ReplicaMetrics {
    /// Count one request with its final status.
    pub fn request(&self, api: Api, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                model: self.model.clone(),
                node: self.node.clone(),
                api: api.label(),
                status,
            })
            .inc();
    }
}
