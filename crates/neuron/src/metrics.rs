//! The neuron's Prometheus metrics: requests, tokens, latency, loads,
//! poisonings and device memory. The registry is built once and passed in;
//! there is no global.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use cortex_core::metrics as names;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabel {
    pub model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub model: String,
    pub status: u16,
    pub stream: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadLabels {
    pub model: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabel {
    pub device: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency() -> Histogram {
    Histogram::new(names::LATENCY_BUCKETS.iter().copied())
}

fn tok_per_s() -> Histogram {
    Histogram::new(names::TOKENS_PER_SECOND_BUCKETS.iter().copied())
}

/// All neuron metrics. Cheap to clone (every metric is reference-counted).
#[derive(Clone)]
pub struct NeuronMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: HistogramFamily<ModelLabel>,
    pub ttft: HistogramFamily<ModelLabel>,
    pub prompt_tokens: Family<ModelLabel, Counter>,
    pub completion_tokens: Family<ModelLabel, Counter>,
    pub prefix_hit_tokens: Family<ModelLabel, Counter>,
    pub prefix_miss_tokens: Family<ModelLabel, Counter>,
    pub prefix_cache_tokens: Family<ModelLabel, Gauge>,
    pub kv_capacity_tokens: Family<ModelLabel, Gauge>,
    pub kv_used_tokens: Family<ModelLabel, Gauge>,
    pub tokens_per_second: HistogramFamily<ModelLabel>,
    pub in_flight: Family<ModelLabel, Gauge>,
    pub loads: Family<LoadLabels, Counter>,
    pub load_duration: HistogramFamily<ModelLabel>,
    pub poisonings: Family<ModelLabel, Counter>,
    pub memory_total: Family<DeviceLabel, Gauge>,
    pub memory_budget: Family<DeviceLabel, Gauge>,
    pub memory_used: Family<DeviceLabel, Gauge>,
}

impl std::fmt::Debug for NeuronMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NeuronMetrics")
    }
}

impl NeuronMetrics {
    /// Create the metrics and register them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency),
            ttft: Family::new_with_constructor(latency),
            prompt_tokens: Family::default(),
            completion_tokens: Family::default(),
            prefix_hit_tokens: Family::default(),
            prefix_miss_tokens: Family::default(),
            prefix_cache_tokens: Family::default(),
            kv_capacity_tokens: Family::default(),
            kv_used_tokens: Family::default(),
            tokens_per_second: Family::new_with_constructor(tok_per_s),
            in_flight: Family::default(),
            loads: Family::default(),
            load_duration: Family::new_with_constructor(latency),
            poisonings: Family::default(),
            memory_total: Family::default(),
            memory_budget: Family::default(),
            memory_used: Family::default(),
        };
        registry.register(
            names::N_REQUESTS,
            "Chat completion requests by model and status",
            m.requests.clone(),
        );
        registry.register(
            names::N_REQUEST_DURATION,
            "Request duration in seconds",
            m.request_duration.clone(),
        );
        registry.register(
            names::N_TTFT,
            "Time to first token in seconds",
            m.ttft.clone(),
        );
        registry.register(
            names::N_PROMPT_TOKENS,
            "Prompt tokens processed",
            m.prompt_tokens.clone(),
        );
        registry.register(
            names::N_COMPLETION_TOKENS,
            "Completion tokens generated",
            m.completion_tokens.clone(),
        );
        registry.register(
            names::N_PREFIX_HIT_TOKENS,
            "Prompt tokens whose K/V came from the prefix cache",
            m.prefix_hit_tokens.clone(),
        );
        registry.register(
            names::N_PREFIX_MISS_TOKENS,
            "Prompt tokens computed (not found in the prefix cache)",
            m.prefix_miss_tokens.clone(),
        );
        registry.register(
            names::N_PREFIX_CACHE_TOKENS,
            "Token positions in KV blocks the prefix cache holds (in use or idle and reusable)",
            m.prefix_cache_tokens.clone(),
        );
        registry.register(
            names::N_KV_CAPACITY_TOKENS,
            "Token positions the model's KV pool holds",
            m.kv_capacity_tokens.clone(),
        );
        registry.register(
            names::N_KV_USED_TOKENS,
            "Token positions in KV blocks running sequences hold",
            m.kv_used_tokens.clone(),
        );
        registry.register(
            names::N_TOKENS_PER_SECOND,
            "Generation speed per request (completion tokens per second after the first token)",
            m.tokens_per_second.clone(),
        );
        registry.register(
            names::N_IN_FLIGHT,
            "Requests in flight",
            m.in_flight.clone(),
        );
        registry.register(
            names::N_MODEL_LOADS,
            "Model loads by result",
            m.loads.clone(),
        );
        registry.register(
            names::N_LOAD_DURATION,
            "Model load duration in seconds",
            m.load_duration.clone(),
        );
        registry.register(
            names::N_POISONINGS,
            "Models marked poisoned after a device fault",
            m.poisonings.clone(),
        );
        registry.register(
            names::N_DEVICE_MEMORY_TOTAL,
            "Device memory in bytes",
            m.memory_total.clone(),
        );
        registry.register(
            names::N_DEVICE_MEMORY_BUDGET,
            "Device memory budget for models in bytes",
            m.memory_budget.clone(),
        );
        registry.register(
            names::N_DEVICE_MEMORY_USED,
            "Device memory used by models (weights + KV reserve) in bytes",
            m.memory_used.clone(),
        );
        m
    }

    pub fn model(model: &str) -> ModelLabel {
        ModelLabel {
            model: model.to_string(),
        }
    }
}
