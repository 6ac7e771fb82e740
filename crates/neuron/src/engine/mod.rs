//! The candle inference engine: everything between a GGUF file on disk and
//! logits for a batch of sequences.
//!
//! What lives here:
//! - [`gguf`]: reading GGUF headers ([`gguf::inspect`]) and loading a model
//!   ([`gguf::load`]) into a [`LoadedModel`];
//! - [`model`]: the [`model::Model`] seam and one file per architecture
//!   (`llama`, `gemma3`), built from [`layers`] (quantized linear layers,
//!   norms, the quantized embedding, RoPE);
//! - [`kv`]: the KV cache the engine owns — a pool of fixed-size token
//!   blocks per model, with refcounts and the prefix cache's hash chain;
//! - [`attention`]: attention over that paged cache (generic candle ops, and
//!   a CPU kernel behind the same seam);
//! - [`batch`] and [`scheduler`]: what one forward pass computes, and
//!   continuous batching with chunked prefill; [`offline`] runs them to
//!   completion on one thread (tests, benchmarks, tools);
//! - [`tokenizer`]: the tokenizer (byte-level BPE or SentencePiece) rebuilt
//!   from the GGUF metadata (not candle's `TokenizerFromGguf`, see
//!   `ENGINE-NOTES.md`);
//! - [`template`]: the GGUF chat template rendered with `minijinja`;
//! - [`sampling`]: greedy / temperature / top-k / top-p sampling;
//! - [`stop`]: stop sequences over streamed text;
//! - [`detok`]: incremental detokenization for streaming;
//! - [`kernels`]: quantized matmul kernels for the CPU, chosen at run time.
//!
//! What does not: threads, channels and HTTP. The engine is synchronous; the
//! device worker owns the thread that loads models and runs their ticks, and
//! tensors never leave it. [`ModelAssets`] is the CPU-side half (tokenizer,
//! template, metadata) that async handlers share through an `Arc`.

pub mod attention;
pub mod batch;
pub mod conversations;
pub mod detok;
pub mod embed;
pub mod gguf;
pub mod kernels;
pub mod kv;
pub mod layers;
pub mod model;
pub mod offline;
pub mod sampling;
pub mod scheduler;
pub mod stop;
pub mod template;
pub mod tokenizer;

pub use candle_core::Device;

use cortex_core::openai::{ChatMessage, Tool};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Every way the engine can fail.
///
/// The text of [`EngineError::chain`] is what fault classification reads, so
/// the variants keep the text of the underlying error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model file could not be opened or read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a GGUF file, or its metadata is inconsistent.
    #[error("invalid GGUF file: {0}")]
    Gguf(String),
    /// A model directory (config, safetensors, tokenizer.json) that cannot
    /// be read as a model.
    #[error("invalid model files: {0}")]
    Files(String),
    /// A valid GGUF file of an architecture or tokenizer the engine cannot run.
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// An error raised by candle (tensor ops, kernels, device).
    #[error("candle error: {0}")]
    Candle(#[from] candle_core::Error),
    /// Text could not be turned into token ids.
    #[error("tokenize error: {0}")]
    Tokenize(String),
    /// Token ids could not be turned into text.
    #[error("detokenize error: {0}")]
    Detokenize(String),
    /// The chat template failed to parse or render (including `raise_exception`).
    #[error("chat template error: {0}")]
    Template(String),
    /// The prompt has no tokens (or the conversation no messages).
    #[error("empty prompt")]
    EmptyPrompt,
    /// The model produced NaN logits; the value is the sequence position.
    #[error("NaN logits at position {0}")]
    NanLogits(usize),
    /// An embedding came out NaN or infinite (the value is the input's
    /// index); host-side like [`EngineError::NanLogits`].
    #[error("NaN logits in the embedding of input {0}")]
    NanEmbedding(usize),
    /// The sequence would need more positions than the model supports.
    /// Checked before any forward pass, so it is never a device fault.
    #[error("context length exceeded: {needed} positions needed, the model supports {max}")]
    ContextOverflow {
        /// Positions the next forward pass would need.
        needed: usize,
        /// Positions the loaded model supports.
        max: usize,
    },
    /// The model's KV pool cannot hold what a sequence needs (host-side:
    /// found while planning, before any kernel runs).
    #[error("KV cache too small: {0}")]
    KvCacheTooSmall(String),
    /// A batch that does not fit the model or its pool (host-side: checked
    /// before any kernel runs).
    #[error("invalid batch: {0}")]
    Batch(String),
}

impl EngineError {
    /// The error and all its sources, joined with `": "`.
    ///
    /// A source whose text the previous link already ends with is skipped
    /// (the `Candle` variant embeds its source's text), so candle's own
    /// message appears once.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(err) = source {
            let text = err.to_string();
            if !out.ends_with(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            source = err.source();
        }
        out
    }
}

/// What the GGUF metadata says about a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelMeta {
    /// `general.architecture`, e.g. `"llama"`.
    pub architecture: String,
    /// `general.name`, when present.
    pub name: Option<String>,
    /// `<arch>.context_length` as declared by the file.
    pub context_length: usize,
    /// Text of the BOS token, when the file names one.
    pub bos_token: Option<String>,
    /// Text of the EOS token, when the file names one.
    pub eos_token: Option<String>,
    /// `tokenizer.ggml.add_bos_token`: a prompt starts with the BOS token.
    pub add_bos_token: bool,
    /// `tokenizer.ggml.add_eos_token`: a prompt ends with the EOS token.
    pub add_eos_token: bool,
    /// Every token id that ends generation (EOS, EOT, EOM and the usual
    /// end-of-turn control tokens), sorted, without duplicates.
    pub eos_token_ids: Vec<u32>,
    /// Number of tokens in the vocabulary.
    pub vocab_size: usize,
}

impl ModelMeta {
    /// Positions a sequence may use: the declared context length (RoPE is
    /// computed for any position, see `layers::Rope`).
    pub fn max_positions(&self) -> usize {
        self.context_length
    }
}

/// Everything CPU-side of a loaded model; `Send + Sync`, shared through `Arc`
/// by async handlers.
pub struct ModelAssets {
    /// Metadata from the GGUF header.
    pub meta: ModelMeta,
    /// The tokenizer rebuilt from `tokenizer.ggml.*`.
    pub tokenizer: tokenizers::Tokenizer,
    /// The chat template (`tokenizer.chat_template`, or a ChatML fallback).
    pub template: template::ChatTemplate,
}

impl ModelAssets {
    /// Renders the conversation with `add_generation_prompt = true` and encodes
    /// it with [`ModelAssets::encode_prompt`]. [`EngineError::EmptyPrompt`] if
    /// there are no messages or no tokens.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[Tool]>,
    ) -> Result<Vec<u32>, EngineError> {
        if messages.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let prompt = self.template.render(messages, tools, true)?;
        let ids = self.encode_prompt(&prompt)?;
        if ids.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        Ok(ids)
    }

    /// Encodes a whole prompt as llama.cpp does (`add_special = true`): BOS
    /// first when the file says `add_bos_token` (EOS last for
    /// `add_eos_token`), after removing the BOS (EOS) text a chat template
    /// already wrote at the start (end), so it is neither missing nor doubled.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        let mut text = text;
        if let (true, Some(bos)) = (self.meta.add_bos_token, &self.meta.bos_token) {
            text = text.strip_prefix(bos.as_str()).unwrap_or(text);
        }
        if let (true, Some(eos)) = (self.meta.add_eos_token, &self.meta.eos_token) {
            text = text.strip_suffix(eos.as_str()).unwrap_or(text);
        }
        self.tokenize(text, true)
    }

    /// Encodes text. Special-token text (`<|im_start|>`) becomes the special
    /// token, as llama.cpp does with `parse_special = true`; no BOS is added.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, EngineError> {
        self.tokenize(text, false)
    }

    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, EngineError> {
        let encoding = self
            .tokenizer
            .encode(text, add_special)
            .map_err(|e| EngineError::Tokenize(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes ids to text, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, EngineError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| EngineError::Detokenize(e.to_string()))
    }

    /// The id of a token whose text is exactly `text`, if there is one.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokenizer.token_to_id(text)
    }

    /// The text of one token as written in the vocabulary (for special
    /// tokens, their text: `<tool_call>`).
    pub fn token_text(&self, id: u32) -> String {
        self.tokenizer.id_to_token(id).unwrap_or_default()
    }

    /// Whether `id` ends generation.
    pub fn is_eos(&self, id: u32) -> bool {
        self.meta.eos_token_ids.contains(&id)
    }
}

impl std::fmt::Debug for ModelAssets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelAssets")
            .field("meta", &self.meta)
            .field("template", &self.template)
            .finish_non_exhaustive()
    }
}

/// The CPU-side half of any loaded model, by what it serves.
#[derive(Debug, Clone)]
pub enum Assets {
    /// A chat (generative) model: tokenizer, template, metadata.
    Chat(Arc<ModelAssets>),
    /// An embedding model: tokenizer and sizes.
    Embedding(Arc<embed::EmbedAssets>),
}

impl Assets {
    /// What the model serves.
    pub fn kind(&self) -> cortex_core::neuron_api::ModelKind {
        match self {
            Assets::Chat(_) => cortex_core::neuron_api::ModelKind::Chat,
            Assets::Embedding(_) => cortex_core::neuron_api::ModelKind::Embedding,
        }
    }

    /// A chat model's assets.
    pub fn chat(&self) -> Option<&Arc<ModelAssets>> {
        match self {
            Assets::Chat(a) => Some(a),
            Assets::Embedding(_) => None,
        }
    }

    /// An embedding model's assets.
    pub fn embedding(&self) -> Option<&Arc<embed::EmbedAssets>> {
        match self {
            Assets::Embedding(a) => Some(a),
            Assets::Chat(_) => None,
        }
    }

    /// Positions one sequence (one input, for an embedding model) may use.
    pub fn max_positions(&self) -> usize {
        match self {
            Assets::Chat(a) => a.meta.max_positions(),
            Assets::Embedding(a) => a.max_positions,
        }
    }
}

/// A loaded model: its weights behind the [`model::Model`] seam and its
/// CPU-side assets. Owned by a device worker; the KV pool is made beside it.
pub struct LoadedModel {
    /// The forward pass.
    pub model: Box<dyn model::Model>,
    /// Tokenizer, template and metadata.
    pub assets: Arc<ModelAssets>,
    /// Estimated memory the weights take once loaded, in bytes.
    pub weights_bytes: u64,
    /// The device the weights live on.
    pub device: Device,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("config", self.model.config())
            .field("assets", &self.assets)
            .field("weights_bytes", &self.weights_bytes)
            .field("device", &self.device)
            .finish()
    }
}

#[cfg(test)]
pub(crate) mod test_model {
    //! Locating the real model file for tests.

    use super::{Device, LoadedModel, ModelAssets};
    use std::path::PathBuf;
    use std::sync::{Arc, OnceLock};

    /// The default model file name.
    pub const MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
    /// The second real model (`scripts/fetch-model --gemma3`).
    pub const GEMMA3_FILE: &str = "gemma-3-270m-q4_k_m.gguf";

    /// The embedding model's directory (`scripts/fetch-model --embed`).
    pub const EMBED_DIR: &str = "all-MiniLM-L6-v2";

    /// The embedding model's directory; `None` or a panic as [`path`].
    pub fn embed_path() -> Option<PathBuf> {
        path_of(EMBED_DIR, "scripts/fetch-model --embed")
    }

    /// The default model's path, or `None` (after a skip message) when it is
    /// absent. Panics when absent and `CI` is set.
    pub fn path() -> Option<PathBuf> {
        path_of(MODEL_FILE, "scripts/fetch-model")
    }

    /// Gemma 3 270M's path; `None` or a panic as [`path`].
    pub fn gemma3_path() -> Option<PathBuf> {
        path_of(GEMMA3_FILE, "scripts/fetch-model --gemma3")
    }

    fn path_of(file: &str, fetch: &str) -> Option<PathBuf> {
        let dir = std::env::var_os("CORTEX_MODELS_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models")));
        let path = dir.join(file);
        if path.is_file() || super::embed::is_model_dir(&path) {
            return Some(path);
        }
        if std::env::var_os("CI").is_some() {
            panic!(
                "model file {} is missing (CI is set); run {fetch}",
                path.display()
            );
        }
        eprintln!(
            "skipping: model file {} not found (run {fetch} or set CORTEX_MODELS_DIR)",
            path.display()
        );
        None
    }

    /// Gemma 3 270M's tokenizer, template and metadata (header only), read
    /// once per test binary, or `None` when the file is absent.
    pub fn gemma3_assets() -> Option<Arc<ModelAssets>> {
        static ASSETS: OnceLock<Option<Arc<ModelAssets>>> = OnceLock::new();
        ASSETS
            .get_or_init(|| {
                let path = gemma3_path()?;
                match super::gguf::assets_of(&path) {
                    Ok(a) => Some(Arc::new(a)),
                    Err(e) => panic!("reading {}: {}", path.display(), e.chain()),
                }
            })
            .clone()
    }

    /// The model loaded once per test binary on the CPU, or `None` when absent.
    pub fn weights() -> Option<Arc<LoadedModel>> {
        static WEIGHTS: OnceLock<Option<Arc<LoadedModel>>> = OnceLock::new();
        WEIGHTS
            .get_or_init(|| {
                let path = path()?;
                match super::gguf::load(&path, &Device::Cpu) {
                    Ok(w) => Some(Arc::new(w)),
                    Err(e) => panic!("loading {}: {}", path.display(), e.chain()),
                }
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn shared_types_are_send_sync() {
        assert_send_sync::<ModelAssets>();
        assert_send_sync::<LoadedModel>();
        assert_send_sync::<EngineError>();
    }

    #[test]
    fn chain_keeps_candle_text_once() {
        let err = EngineError::from(candle_core::Error::Msg("shape mismatch in add".into()));
        assert_eq!(err.chain(), "candle error: shape mismatch in add");
    }

    #[test]
    fn chain_joins_sources() {
        let err = EngineError::Io {
            path: "/x".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(err.chain(), "cannot read model file /x: gone");
        let wrapped = candle_core::Error::Msg("inner".into()).context("outer");
        let chain = EngineError::from(wrapped).chain();
        assert!(
            chain.contains("outer") && chain.contains("inner"),
            "{chain}"
        );
    }

    #[test]
    fn encode_chat_rejects_empty_conversation() {
        let Some(w) = test_model::weights() else {
            return;
        };
        assert!(matches!(
            w.assets.encode_chat(&[], None),
            Err(EngineError::EmptyPrompt)
        ));
    }
}
