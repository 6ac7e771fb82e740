//! `cortex.toml`: the gateway's own settings, eviction, limits and the list
//! of neurons.

use serde::{Deserialize, Serialize};

use super::error::parse_toml;
use super::{check_listen, ConfigError};
use crate::units::{ByteSize, HumanDuration};

/// The whole of `cortex.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub eviction: EvictionConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub routing: RoutingConfig,
    #[serde(default)]
    pub neurons: Vec<NeuronEndpoint>,
}

/// `[routing]`: cache-aware routing of chat requests between replicas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Send a conversation to the replica that holds the longest cached
    /// prefix of it (as the neurons report), within `affinity_slack`.
    pub prefix_affinity: bool,
    /// How many more requests in flight than the least loaded replica a
    /// replica may have and still win on its cached prefix.
    pub affinity_slack: u64,
    /// A conversation's affinity ends when its prefix was last used longer
    /// ago than this.
    pub affinity_ttl: HumanDuration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            prefix_affinity: true,
            affinity_slack: 2,
            affinity_ttl: HumanDuration::from_secs(30 * 60),
        }
    }
}

/// `[gateway]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Where the OpenAI/Anthropic API listens.
    pub listen: String,
    /// Where `GET /metrics` listens.
    pub metrics_listen: String,
    /// The models file, relative to the directory of `cortex.toml`.
    pub models: String,
    /// How often each neuron's `/status` is read.
    pub poll_interval: HumanDuration,
    /// Failed polls in a row after which a neuron is marked down.
    pub down_after_failures: u32,
    /// Timeout of one status poll. Kept separate from load times: a neuron
    /// answers `/status` while it loads.
    pub poll_timeout: HumanDuration,
    /// API keys. When non-empty, every route (admin included) needs one, as
    /// `Authorization: Bearer KEY` or `x-api-key: KEY`.
    pub api_keys: Vec<String>,
    /// Admin keys. When non-empty, the admin API (`/admin/*`) needs one of
    /// them (an API key gets 403 there); they are accepted on every other
    /// route too. When empty, the admin API takes the API keys.
    pub admin_keys: Vec<String>,
    /// Where runtime pins (`cortex pin|unpin`) are kept across restarts,
    /// relative to the directory of `cortex.toml`; empty keeps them in
    /// memory only.
    pub state_file: String,
}

impl Default for GatewaySection {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:31313".into(),
            metrics_listen: "0.0.0.0:31314".into(),
            models: "models.toml".into(),
            poll_interval: HumanDuration::from_secs(2),
            down_after_failures: 3,
            poll_timeout: HumanDuration::from_secs(5),
            api_keys: Vec::new(),
            admin_keys: Vec::new(),
            state_file: "cortex-state.json".into(),
        }
    }
}

/// Which model goes first when room is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvictionStrategy {
    /// Least recently used first.
    Lru,
    /// Lowest `priority` first, then least recently used.
    Priority,
}

/// `[eviction]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvictionConfig {
    /// `lru` or `priority`. Kept as text so that `validate()` can name it.
    pub strategy: String,
    /// Unpinned models idle this long are unloaded. `0` turns this off.
    pub idle_unload_after: HumanDuration,
    /// Every this many evictor cycles, fragmented nodes are consolidated.
    /// `0` turns defragmentation off.
    pub defrag_after_cycles: u32,
    /// How often the evictor wakes.
    pub interval: HumanDuration,
    /// A model loaded less than this long ago is not evicted to make room
    /// for another (the swap-thrashing guard). Idle unloads ignore it.
    pub min_residency: HumanDuration,
}

impl Default for EvictionConfig {
    fn default() -> Self {
        Self {
            strategy: "lru".into(),
            idle_unload_after: HumanDuration::from_secs(30 * 60),
            defrag_after_cycles: 50,
            interval: HumanDuration::from_secs(10),
            min_residency: HumanDuration::from_secs(60),
        }
    }
}

impl EvictionConfig {
    /// The parsed strategy (only meaningful after `validate()`).
    pub fn strategy(&self) -> EvictionStrategy {
        match self.strategy.as_str() {
            "priority" => EvictionStrategy::Priority,
            _ => EvictionStrategy::Lru,
        }
    }
}

/// `[limits]`: admission, timeouts and sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body; larger gets 413.
    pub max_body: ByteSize,
    /// Requests in flight per model across the fleet before new ones wait.
    pub max_in_flight_per_model: usize,
    /// Requests allowed to wait (for a load or a slot) per model; beyond,
    /// 429 (OpenAI) / 529 (Anthropic) at once.
    pub max_queued_per_model: usize,
    /// Requests in flight through the gateway in total; beyond, rejected.
    pub max_in_flight_total: usize,
    /// How long a request waits for a cold load before 503 + Retry-After.
    pub load_wait: HumanDuration,
    /// How long one load may take on a neuron before it is abandoned.
    pub load_timeout: HumanDuration,
    /// Connection timeout to a neuron.
    pub connect_timeout: HumanDuration,
    /// Time to the first byte of a neuron's answer (covers prefill).
    pub first_byte_timeout: HumanDuration,
    /// Longest silence between two chunks of a stream.
    pub idle_timeout: HumanDuration,
    /// One deadline over all attempts of a request, before its answer starts.
    pub request_deadline: HumanDuration,
    /// Attempts per request (the first one included).
    pub max_attempts: u32,
    /// Longest line of a neuron's SSE stream or largest non-streamed answer.
    pub max_upstream_line: ByteSize,
    /// Anthropic `ping` interval while waiting for the first token.
    pub ping_interval: HumanDuration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body: ByteSize::mib(32),
            max_in_flight_per_model: 256,
            max_queued_per_model: 1024,
            max_in_flight_total: 4096,
            load_wait: HumanDuration::from_secs(120),
            load_timeout: HumanDuration::from_secs(600),
            connect_timeout: HumanDuration::from_secs(2),
            first_byte_timeout: HumanDuration::from_secs(300),
            idle_timeout: HumanDuration::from_secs(120),
            request_deadline: HumanDuration::from_secs(600),
            max_attempts: 2,
            max_upstream_line: ByteSize::mib(16),
            ping_interval: HumanDuration::from_secs(10),
        }
    }
}

/// `[[neurons]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeuronEndpoint {
    pub name: String,
    /// `http://host:port` of the neuron API.
    pub endpoint: String,
    /// Sent as `Authorization: Bearer` on lifecycle calls when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<String>,
}

/// The value of `gateway.workers`, which older versions had (API worker
/// threads), if the file still sets it.
fn removed_workers(text: &str) -> Option<String> {
    let t: toml::Table = toml::from_str(text).ok()?;
    Some(t.get("gateway")?.as_table()?.get("workers")?.to_string())
}

impl GatewayConfig {
    /// Parse and validate `cortex.toml`; `file` is used in error messages.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, ConfigError> {
        if let Some(workers) = removed_workers(text) {
            return Err(ConfigError::invalid(
                file,
                "gateway.workers",
                workers,
                "this key was removed: the API is served on the process's runtime, one \
                 thread per core; delete the line",
            ));
        }
        let cfg: Self = parse_toml(text, file)?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    /// Check every value; the first problem is returned.
    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        let g = &self.gateway;
        check_listen(file, "gateway.listen", &g.listen)?;
        check_listen(file, "gateway.metrics_listen", &g.metrics_listen)?;
        // Port 0 (any free port, for tests) may appear twice.
        if g.listen == g.metrics_listen && !g.listen.ends_with(":0") {
            return Err(ConfigError::invalid(
                file,
                "gateway.metrics_listen",
                &g.metrics_listen,
                "must differ from gateway.listen",
            ));
        }
        if g.models.trim().is_empty() {
            return Err(ConfigError::invalid(
                file,
                "gateway.models",
                &g.models,
                "must name a file",
            ));
        }
        if g.poll_interval.get().is_zero() {
            return Err(ConfigError::invalid(
                file,
                "gateway.poll_interval",
                g.poll_interval.to_string(),
                "must be greater than zero",
            ));
        }
        if g.down_after_failures == 0 {
            return Err(ConfigError::invalid(
                file,
                "gateway.down_after_failures",
                0,
                "must be at least 1",
            ));
        }
        let keys = g
            .api_keys
            .iter()
            .enumerate()
            .map(|(i, k)| ("api_keys", i, k));
        let admin = g
            .admin_keys
            .iter()
            .enumerate()
            .map(|(i, k)| ("admin_keys", i, k));
        for (list, i, k) in keys.chain(admin) {
            if k.trim().is_empty() || k.chars().any(|c| c.is_control() || c == ' ') {
                return Err(ConfigError::invalid(
                    file,
                    format!("gateway.{list}[{i}]"),
                    "<redacted>",
                    "a key must be non-empty printable text without spaces",
                ));
            }
        }

        let e = &self.eviction;
        if !matches!(e.strategy.as_str(), "lru" | "priority") {
            return Err(ConfigError::invalid(
                file,
                "eviction.strategy",
                &e.strategy,
                "unknown eviction strategy; expected \"lru\" or \"priority\"",
            ));
        }
        if e.interval.get().is_zero() {
            return Err(ConfigError::invalid(
                file,
                "eviction.interval",
                e.interval.to_string(),
                "must be greater than zero",
            ));
        }

        let l = &self.limits;
        for (key, v) in [
            ("limits.max_in_flight_per_model", l.max_in_flight_per_model),
            ("limits.max_in_flight_total", l.max_in_flight_total),
            ("limits.max_attempts", l.max_attempts as usize),
        ] {
            if v == 0 {
                return Err(ConfigError::invalid(file, key, v, "must be at least 1"));
            }
        }
        if l.max_body.bytes() < 1024 {
            return Err(ConfigError::invalid(
                file,
                "limits.max_body",
                l.max_body.to_string(),
                "must be at least 1KiB",
            ));
        }

        let mut names = std::collections::HashSet::new();
        for (i, n) in self.neurons.iter().enumerate() {
            if !crate::model_id::is_valid_model_id(&n.name) {
                return Err(ConfigError::invalid(
                    file,
                    format!("neurons[{i}].name"),
                    &n.name,
                    "a neuron name uses letters, digits, '.', '_', '-' and ':' only",
                ));
            }
            if !names.insert(n.name.as_str()) {
                return Err(ConfigError::invalid(
                    file,
                    format!("neurons[{i}].name"),
                    &n.name,
                    "duplicate neuron name",
                ));
            }
            check_endpoint(file, &format!("neurons[{i}].endpoint"), &n.endpoint)?;
        }
        Ok(())
    }
}

/// An endpoint is `http://host:port` with nothing after the port but an
/// optional `/`.
fn check_endpoint(file: &str, key: &str, value: &str) -> Result<(), ConfigError> {
    let bad = |why: &str| ConfigError::invalid(file, key, value, why);
    let rest = value.strip_prefix("http://").ok_or_else(|| {
        bad("expected http://HOST:PORT (https is not supported between gateway and neurons)")
    })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad("expected http://HOST:PORT with no path"));
    }
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| bad("missing port; expected http://HOST:PORT"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad("expected http://HOST:PORT with a port from 1 to 65535"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "cortex.toml";

    fn err(text: &str) -> ConfigError {
        match GatewayConfig::from_toml(text, FILE) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e,
        }
    }

    fn assert_invalid(text: &str, key: &str, reason_part: &str) {
        let e = err(text);
        let msg = e.to_string();
        assert_eq!(e.key(), Some(key), "{msg}");
        assert!(msg.starts_with("cortex.toml: "), "{msg}");
        assert!(
            msg.contains(reason_part),
            "{msg} should contain {reason_part:?}"
        );
    }

    #[test]
    fn defaults_and_design_example_parse() {
        let c = GatewayConfig::from_toml("", FILE).unwrap();
        assert_eq!(c.gateway.listen, "0.0.0.0:31313");
        assert_eq!(c.gateway.metrics_listen, "0.0.0.0:31314");
        assert_eq!(c.eviction.strategy(), EvictionStrategy::Lru);
        assert_eq!(c.limits.max_body, ByteSize::mib(32));
        let c = GatewayConfig::from_toml(
            r#"
[gateway]
listen = "0.0.0.0:31313"
metrics_listen = "0.0.0.0:31314"
models = "models.toml"
poll_interval = "2s"

[eviction]
strategy = "priority"
idle_unload_after = "30m"
defrag_after_cycles = 50

[[neurons]]
name = "beast"
endpoint = "http://beast.internal:13131"
"#,
            FILE,
        )
        .unwrap();
        assert_eq!(c.eviction.strategy(), EvictionStrategy::Priority);
        assert_eq!(c.eviction.idle_unload_after.get().as_secs(), 1800);
        assert_eq!(c.neurons[0].endpoint, "http://beast.internal:13131");
    }

    #[test]
    fn bad_listen_address() {
        assert_invalid(
            "[gateway]\nlisten = \"nowhere\"\n",
            "gateway.listen",
            "not a listen address",
        );
        assert_invalid(
            "[gateway]\nmetrics_listen = \"1.2.3.4:99999\"\n",
            "gateway.metrics_listen",
            "not a listen address",
        );
        assert_invalid(
            "[gateway]\nlisten = \"127.0.0.1:5\"\nmetrics_listen = \"127.0.0.1:5\"\n",
            "gateway.metrics_listen",
            "must differ",
        );
    }

    #[test]
    fn unknown_eviction_strategy() {
        assert_invalid(
            "[eviction]\nstrategy = \"fifo\"\n",
            "eviction.strategy",
            "unknown eviction strategy",
        );
    }

    #[test]
    fn duplicate_neuron_and_bad_endpoint() {
        assert_invalid(
            "[[neurons]]\nname = \"a\"\nendpoint = \"http://h:1\"\n[[neurons]]\nname = \"a\"\nendpoint = \"http://h:2\"\n",
            "neurons[1].name",
            "duplicate neuron name",
        );
        for ep in [
            "h:1",
            "https://h:1",
            "http://h",
            "http://h:0",
            "http://h:1/path",
            "http://:1",
        ] {
            assert_invalid(
                &format!("[[neurons]]\nname = \"a\"\nendpoint = \"{ep}\"\n"),
                "neurons[0].endpoint",
                "http://HOST:PORT",
            );
        }
    }

    #[test]
    fn zero_values_rejected() {
        assert_invalid(
            "[gateway]\npoll_interval = \"0\"\n",
            "gateway.poll_interval",
            "greater than zero",
        );
        assert_invalid(
            "[gateway]\ndown_after_failures = 0\n",
            "gateway.down_after_failures",
            "at least 1",
        );
        assert_invalid(
            "[gateway]\nworkers = 2\n",
            "gateway.workers",
            "this key was removed",
        );
        assert_invalid(
            "[limits]\nmax_attempts = 0\n",
            "limits.max_attempts",
            "at least 1",
        );
        assert_invalid(
            "[limits]\nmax_body = \"10\"\n",
            "limits.max_body",
            "at least 1KiB",
        );
        assert_invalid(
            "[gateway]\napi_keys = [\"\"]\n",
            "gateway.api_keys[0]",
            "non-empty",
        );
        assert_invalid(
            "[gateway]\nadmin_keys = [\"ok\", \"a b\"]\n",
            "gateway.admin_keys[1]",
            "non-empty",
        );
    }

    #[test]
    fn parse_errors_name_file_line_and_key() {
        let e = err("[gateway]\nlisten = \"0.0.0.0:1\"\nbogus = 1\n");
        let msg = e.to_string();
        assert!(msg.starts_with("cortex.toml:3:"), "{msg}");
        assert!(msg.contains("bogus"), "{msg}");

        let e = err("[gateway]\npoll_interval = \"2 fortnights\"\n");
        let msg = e.to_string();
        assert!(msg.starts_with("cortex.toml:2:"), "{msg}");
        assert!(msg.contains("unknown unit"), "{msg}");

        let e = err("[eviction]\nidle_unload_after = 30\n");
        assert!(e.to_string().contains("duration"), "{e}");

        let e = err("[limits]\nmax_body = \"lots\"\n");
        assert!(e.to_string().contains("bad size"), "{e}");

        let e = err("this is not toml");
        assert!(
            matches!(e, ConfigError::Parse { line: Some(1), .. }),
            "{e:?}"
        );
    }
}
