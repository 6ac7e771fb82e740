//! `neuron.toml`: one node's settings. The same settings exist as flags of
//! `neuron serve`; flags win over the file (the binary merges them).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::error::parse_toml;
use super::{check_listen, ConfigError};
use crate::model_id::is_valid_model_id;
use crate::units::ByteSize;

/// Default KV pool per model: one full 8,192-token context of the default
/// model (SmolLM2-135M: 30 layers × 2 × 192 f32 = 45 KiB per token, 360 MiB)
/// with room to spare. On CPU, pool pages are committed only when written.
pub const DEFAULT_KV_RESERVE_MIB: u64 = 384;
/// Default tokens per forward pass.
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 256;
/// Default prompt chunk.
pub const DEFAULT_PREFILL_CHUNK: usize = 32;

/// The whole of `neuron.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NeuronConfig {
    /// Node name reported in `/status` (default: the host name).
    pub name: Option<String>,
    pub listen: String,
    /// Directories the neuron may load model files from.
    pub models_dirs: Vec<String>,
    /// What each device may give to models (default: half the RAM on CPU,
    /// 90% of memory on a GPU).
    pub memory_budget: Option<ByteSize>,
    /// When set, lifecycle routes need `Authorization: Bearer TOKEN`.
    pub admin_token: Option<String>,
    /// KV reserve of a model with no `[[models]]` entry: the size of the
    /// model's KV block pool, allocated at load.
    pub default_kv_reserve: ByteSize,
    /// Largest request body.
    pub max_body: ByteSize,
    /// Sequences a model runs at once (one batch); more wait in its queue.
    pub max_sequences: usize,
    /// Tokens in one forward pass of a model: every running sequence's
    /// decode token, then prompt chunks in what is left.
    pub max_batch_tokens: usize,
    /// Most prompt tokens of one sequence per forward pass (chunked prefill).
    pub prefill_chunk: usize,
    /// CPU threads for inference (default: all cores).
    pub threads: Option<usize>,
    /// Where `hf:` sources are downloaded to (default `$HF_HOME/hub`
    /// or `~/.cache/huggingface/hub`).
    pub hf_cache: Option<String>,
    /// Keep Claude Code's per-request `x-anthropic-billing-header:` line in
    /// system prompts (by default it is dropped before templating, so the
    /// prompt, and its cached prefix, stay the same across turns).
    pub keep_billing_header: bool,
    /// Per-model settings.
    pub models: Vec<NeuronModelSettings>,
}

impl Default for NeuronConfig {
    fn default() -> Self {
        Self {
            name: None,
            listen: "0.0.0.0:13131".into(),
            models_dirs: vec!["models".into()],
            memory_budget: None,
            admin_token: None,
            default_kv_reserve: ByteSize::mib(DEFAULT_KV_RESERVE_MIB),
            max_body: ByteSize::mib(32),
            max_sequences: 16,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            prefill_chunk: DEFAULT_PREFILL_CHUNK,
            threads: None,
            hf_cache: None,
            keep_billing_header: false,
            models: Vec::new(),
        }
    }
}

/// `[[models]]` in `neuron.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeuronModelSettings {
    pub id: String,
    /// Memory set aside for this model's KV caches on top of its weights.
    pub kv_reserve: ByteSize,
}

impl NeuronConfig {
    /// Parse and validate `neuron.toml`.
    pub fn from_toml(text: &str, file: &str) -> Result<Self, ConfigError> {
        let cfg: Self = parse_toml(text, file)?;
        cfg.validate(file)?;
        Ok(cfg)
    }

    pub fn validate(&self, file: &str) -> Result<(), ConfigError> {
        if let Some(name) = &self.name {
            if !is_valid_model_id(name) {
                return Err(ConfigError::invalid(
                    file,
                    "name",
                    name,
                    "a node name uses letters, digits, '.', '_', '-' and ':' only",
                ));
            }
        }
        check_listen(file, "listen", &self.listen)?;
        if self.models_dirs.is_empty() {
            return Err(ConfigError::invalid(
                file,
                "models_dirs",
                "[]",
                "name at least one directory",
            ));
        }
        for (i, d) in self.models_dirs.iter().enumerate() {
            if d.trim().is_empty() {
                return Err(ConfigError::invalid(
                    file,
                    format!("models_dirs[{i}]"),
                    d,
                    "empty path",
                ));
            }
        }
        if let Some(b) = self.memory_budget {
            if b.bytes() < (1 << 20) {
                return Err(ConfigError::invalid(
                    file,
                    "memory_budget",
                    b.to_string(),
                    "must be at least 1MiB",
                ));
            }
        }
        if let Some(t) = &self.admin_token {
            if t.trim().is_empty() {
                return Err(ConfigError::invalid(
                    file,
                    "admin_token",
                    "<redacted>",
                    "empty token",
                ));
            }
        }
        if self.max_sequences == 0 {
            return Err(ConfigError::invalid(
                file,
                "max_sequences",
                0,
                "must be at least 1",
            ));
        }
        if self.max_batch_tokens == 0 {
            return Err(ConfigError::invalid(
                file,
                "max_batch_tokens",
                0,
                "must be at least 1",
            ));
        }
        if self.prefill_chunk == 0 {
            return Err(ConfigError::invalid(
                file,
                "prefill_chunk",
                0,
                "must be at least 1",
            ));
        }
        if self.threads == Some(0) {
            return Err(ConfigError::invalid(
                file,
                "threads",
                0,
                "must be at least 1",
            ));
        }
        let mut seen = HashSet::new();
        for (i, m) in self.models.iter().enumerate() {
            if !is_valid_model_id(&m.id) {
                return Err(ConfigError::invalid(
                    file,
                    format!("models[{i}].id"),
                    &m.id,
                    "not a model id",
                ));
            }
            if !seen.insert(&m.id) {
                return Err(ConfigError::invalid(
                    file,
                    format!("models[{i}].id"),
                    &m.id,
                    "duplicate model id",
                ));
            }
        }
        Ok(())
    }

    /// The KV reserve for `model`.
    pub fn kv_reserve(&self, model: &str) -> ByteSize {
        self.models
            .iter()
            .find(|m| m.id == model)
            .map_or(self.default_kv_reserve, |m| m.kv_reserve)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "neuron.toml";

    fn assert_invalid(text: &str, key: &str, reason_part: &str) {
        let e = NeuronConfig::from_toml(text, FILE).expect_err("should be invalid");
        let msg = e.to_string();
        assert_eq!(e.key(), Some(key), "{msg}");
        assert!(msg.starts_with("neuron.toml: "), "{msg}");
        assert!(msg.contains(reason_part), "{msg}");
    }

    #[test]
    fn parses_full_file() {
        let c = NeuronConfig::from_toml(
            r#"
name = "beast"
listen = "0.0.0.0:13131"
models_dirs = ["/var/lib/cortex/models"]
memory_budget = "24GiB"
admin_token = "s3cret"
keep_billing_header = true

[[models]]
id = "smollm2-135m"
kv_reserve = "128MiB"
"#,
            FILE,
        )
        .unwrap();
        assert_eq!(c.memory_budget, Some(ByteSize::gib(24)));
        assert_eq!(c.kv_reserve("smollm2-135m"), ByteSize::mib(128));
        assert_eq!(c.kv_reserve("other"), ByteSize::mib(DEFAULT_KV_RESERVE_MIB));
        assert!(c.keep_billing_header);
        assert!(!NeuronConfig::default().keep_billing_header);
    }

    #[test]
    fn errors() {
        assert_invalid("listen = \"localhost\"\n", "listen", "not a listen address");
        assert_invalid("name = \"a b\"\n", "name", "letters, digits");
        assert_invalid("models_dirs = []\n", "models_dirs", "at least one");
        assert_invalid("memory_budget = \"12\"\n", "memory_budget", "at least 1MiB");
        assert_invalid("admin_token = \" \"\n", "admin_token", "empty token");
        assert_invalid("max_sequences = 0\n", "max_sequences", "at least 1");
        assert_invalid("max_batch_tokens = 0\n", "max_batch_tokens", "at least 1");
        assert_invalid("prefill_chunk = 0\n", "prefill_chunk", "at least 1");
        assert_invalid(
            "[[models]]\nid = \"a\"\nkv_reserve = \"1MiB\"\n[[models]]\nid = \"a\"\nkv_reserve = \"1MiB\"\n",
            "models[1].id",
            "duplicate model id",
        );
        let e = NeuronConfig::from_toml("memory_budget = \"24 GiBs\"\n", FILE).unwrap_err();
        assert!(e.to_string().starts_with("neuron.toml:1:"), "{e}");
        let e = NeuronConfig::from_toml("gpu = 1\n", FILE).unwrap_err();
        assert!(e.to_string().contains("gpu"), "{e}");
    }
}
