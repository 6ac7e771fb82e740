//! Prometheus metric names shared by the gateway and the neuron, so that
//! dashboards and the README agree with the code.

// Gateway
pub const GW_REQUESTS: &str = "cortex_requests";
pub const GW_REQUEST_DURATION: &str = "cortex_request_duration_seconds";
pub const GW_TTFT: &str = "cortex_time_to_first_token_seconds";
pub const GW_INTER_TOKEN: &str = "cortex_inter_token_latency_seconds";
pub const GW_PROMPT_TOKENS: &str = "cortex_prompt_tokens";
pub const GW_COMPLETION_TOKENS: &str = "cortex_completion_tokens";
pub const GW_TOKENS_PER_SECOND: &str = "cortex_tokens_per_second";
pub const GW_MODEL_LOADS: &str = "cortex_model_loads";
pub const GW_LOAD_DURATION: &str = "cortex_model_load_duration_seconds";
pub const GW_EVICTIONS: &str = "cortex_model_evictions";
pub const GW_NEURON_UP: &str = "cortex_neuron_up";
pub const GW_IN_FLIGHT: &str = "cortex_requests_in_flight";
pub const GW_QUEUE_WAIT: &str = "cortex_queue_wait_seconds";
pub const GW_RETRIES: &str = "cortex_upstream_retries";
/// Chat requests routed between several replicas, by model and reason
/// (`cached_prefix`, `load`, `least_loaded`).
pub const GW_ROUTING_DECISIONS: &str = "cortex_routing_decisions";

// Neuron
pub const N_REQUESTS: &str = "neuron_requests";
pub const N_REQUEST_DURATION: &str = "neuron_request_duration_seconds";
pub const N_TTFT: &str = "neuron_time_to_first_token_seconds";
pub const N_PROMPT_TOKENS: &str = "neuron_prompt_tokens";
pub const N_COMPLETION_TOKENS: &str = "neuron_completion_tokens";
/// Prompt tokens found in the prefix cache, and those computed.
pub const N_PREFIX_HIT_TOKENS: &str = "neuron_prefix_cache_hit_tokens";
pub const N_PREFIX_MISS_TOKENS: &str = "neuron_prefix_cache_miss_tokens";
pub const N_PREFIX_CACHE_TOKENS: &str = "neuron_prefix_cache_tokens";
pub const N_KV_CAPACITY_TOKENS: &str = "neuron_kv_capacity_tokens";
pub const N_KV_USED_TOKENS: &str = "neuron_kv_used_tokens";
pub const N_TOKENS_PER_SECOND: &str = "neuron_tokens_per_second";
pub const N_IN_FLIGHT: &str = "neuron_requests_in_flight";
pub const N_MODEL_LOADS: &str = "neuron_model_loads";
pub const N_LOAD_DURATION: &str = "neuron_model_load_duration_seconds";
pub const N_POISONINGS: &str = "neuron_model_poisonings";
pub const N_DEVICE_MEMORY_TOTAL: &str = "neuron_device_memory_total_bytes";
pub const N_DEVICE_MEMORY_BUDGET: &str = "neuron_device_memory_budget_bytes";
pub const N_DEVICE_MEMORY_USED: &str = "neuron_device_memory_used_bytes";

/// Histogram buckets for LLM latencies, from 1 ms to 10 minutes.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Buckets for inter-token latency, from 0.5 ms to 5 s.
pub const INTER_TOKEN_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Buckets for tokens per second.
pub const TOKENS_PER_SECOND_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0,
];
