//! The encoder against reference vectors of all-MiniLM-L6-v2.
//!
//! `testdata/reference.json` was computed once by `testdata/reference.py`:
//! a second, independent implementation in plain numpy (float64) over the
//! same `model.safetensors`, tokenized by the Hugging Face `tokenizers`
//! Python package from the same `tokenizer.json`, following transformers'
//! `BertModel` and sentence-transformers' mean pooling + normalisation.

use std::sync::{Arc, OnceLock};

use serde::Deserialize;

use super::*;
use crate::engine::test_model;

#[derive(Deserialize)]
struct Reference {
    sentences: Vec<RefSentence>,
    cosines: Vec<Vec<f32>>,
}

#[derive(Deserialize)]
struct RefSentence {
    text: String,
    ids: Vec<u32>,
    leading: Vec<f32>,
    sum: f32,
}

fn reference() -> Reference {
    serde_json::from_str(include_str!("testdata/reference.json")).unwrap()
}

/// Tolerance against the float64 reference (f32 arithmetic over 6 layers).
const TOL: f32 = 1e-4;

fn model() -> Option<Arc<EmbedModel>> {
    static MODEL: OnceLock<Option<Arc<EmbedModel>>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = test_model::embed_path()?;
            match load(&dir, &Device::Cpu) {
                Ok(m) => Some(Arc::new(m)),
                Err(e) => panic!("loading {}: {}", dir.display(), e.chain()),
            }
        })
        .clone()
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn tokenizer_matches_reference_ids() {
    let Some(m) = model() else { return };
    for s in reference().sentences {
        assert_eq!(m.assets.encode(&s.text).unwrap(), s.ids, "{}", s.text);
    }
}

#[test]
fn vectors_match_reference() {
    let Some(m) = model() else { return };
    let r = reference();
    let ids: Vec<Vec<u32>> = r.sentences.iter().map(|s| s.ids.clone()).collect();
    let v = m.embed(&ids).unwrap();
    assert_eq!(v.len(), 3);
    for (e, s) in v.iter().zip(&r.sentences) {
        assert_eq!(e.len(), 384);
        let norm = dot(e, e).sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
        for (i, (got, want)) in e.iter().zip(&s.leading).enumerate() {
            assert!(
                (got - want).abs() < TOL,
                "{:?} dim {i}: {got} vs {want}",
                s.text
            );
        }
        let sum: f32 = e.iter().sum();
        assert!(
            (sum - s.sum).abs() < 1e-3,
            "{:?} sum {sum} vs {}",
            s.text,
            s.sum
        );
    }
    for i in 0..3 {
        for j in 0..3 {
            let c = dot(&v[i], &v[j]);
            assert!(
                (c - r.cosines[i][j]).abs() < TOL,
                "cos({i},{j}) {c} vs {}",
                r.cosines[i][j]
            );
        }
    }
}

#[test]
fn similar_sentences_are_closer() {
    let Some(m) = model() else { return };
    let texts = [
        "The cat sits on the mat.",
        "A cat is sitting on a rug.",
        "Quarterly revenue grew by twelve percent.",
        "The company's sales rose twelve percent this quarter.",
    ];
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| m.assets.encode(t).unwrap()).collect();
    let v = m.embed(&ids).unwrap();
    assert!(dot(&v[0], &v[1]) > dot(&v[0], &v[2]) + 0.3);
    assert!(dot(&v[0], &v[1]) > dot(&v[0], &v[3]) + 0.3);
    assert!(dot(&v[2], &v[3]) > dot(&v[2], &v[1]) + 0.3);
}

#[test]
fn batched_equals_alone_whatever_the_padding() {
    let Some(m) = model() else { return };
    let long = "word ".repeat(200);
    let texts = [
        "short",
        long.as_str(),
        "a little longer sentence here",
        "short",
    ];
    let ids: Vec<Vec<u32>> = texts.iter().map(|t| m.assets.encode(t).unwrap()).collect();
    let together = m.embed(&ids).unwrap();
    for (i, one) in ids.iter().enumerate() {
        let alone = m.embed(std::slice::from_ref(one)).unwrap();
        for (a, b) in alone[0].iter().zip(&together[i]) {
            assert!((a - b).abs() < 1e-5, "input {i}: {a} vs {b}");
        }
    }
    assert_eq!(together[0], together[3]);
}

#[test]
fn many_inputs_run_in_several_passes() {
    let Some(m) = model() else { return };
    // 30 inputs of ~300 tokens: more than one pass of WORK_BYTES.
    let text = "the quick brown fox jumps over the lazy dog ".repeat(33);
    let ids = m.assets.encode(&text).unwrap();
    assert!(ids.len() > 250, "{}", ids.len());
    assert!(m.pass_bytes(30, ids.len()) > 2 * WORK_BYTES);
    assert!(m.pass_bytes(1, 512) < WORK_BYTES);
    let mut inputs = vec![ids.clone(); 30];
    inputs.push(m.assets.encode("hello").unwrap());
    let v = m.embed(&inputs).unwrap();
    assert_eq!(v.len(), 31);
    for e in &v[1..30] {
        for (a, b) in e.iter().zip(&v[0]) {
            assert!((a - b).abs() < 1e-5);
        }
    }
    assert!(dot(&v[0], &v[30]) < 0.9);
}

#[test]
fn bad_inputs_are_host_side_errors() {
    let Some(m) = model() else { return };
    let too_long = vec![101u32; 513];
    let err = m.embed(&[too_long]).unwrap_err();
    assert!(
        matches!(
            err,
            EngineError::ContextOverflow {
                needed: 513,
                max: 512
            }
        ),
        "{err:?}"
    );
    assert!(!crate::fault::is_device_fault(&err.chain()));
    let err = m.embed(&[vec![]]).unwrap_err();
    assert!(matches!(err, EngineError::EmptyPrompt), "{err:?}");
    let err = m.embed(&[vec![101, 30522, 102]]).unwrap_err();
    assert!(matches!(err, EngineError::Batch(_)), "{err:?}");
    assert!(!crate::fault::is_device_fault(&err.chain()));
    // Exactly the limit is fine.
    let v = m.embed(&[vec![1996u32; 512]]).unwrap();
    assert_eq!(v[0].len(), 384);
}

#[test]
fn inspect_reads_the_config_only() {
    let Some(dir) = test_model::embed_path() else {
        return;
    };
    let s = inspect(&dir).unwrap();
    assert_eq!(s.dims, 384);
    // Every tensor as f32 (the file's int64 position ids take half).
    assert_eq!(s.weights_bytes, 90_854_912);
    let m = load(&dir, &Device::Cpu).unwrap();
    assert_eq!(m.weights_bytes, s.weights_bytes);
    assert_eq!(inspect(&dir.join(WEIGHTS_FILE)).unwrap(), s);
    assert!(inspect(&dir.join(CONFIG_FILE)).is_err());
}

#[test]
fn config_errors_name_the_field() {
    let base = serde_json::json!({
        "model_type": "bert", "vocab_size": 10, "hidden_size": 8,
        "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
        "max_position_embeddings": 4
    });
    assert!(BertConfig::parse(&base.to_string()).is_ok());
    let with = |k: &str, v: serde_json::Value| {
        let mut c = base.clone();
        c[k] = v;
        BertConfig::parse(&c.to_string()).unwrap_err().to_string()
    };
    assert!(with("num_attention_heads", 3.into()).contains("multiple"));
    assert!(with("hidden_act", "relu".into()).contains("hidden_act"));
    assert!(with("model_type", "llama".into()).contains("model_type"));
    assert!(with("position_embedding_type", "relative_key".into()).contains("relative_key"));
    assert!(with("num_hidden_layers", 0.into()).contains("num_hidden_layers is 0"));
    assert!(BertConfig::parse("{")
        .unwrap_err()
        .to_string()
        .contains("config.json"));
}

#[test]
fn a_directory_without_weights_is_not_a_model() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join(CONFIG_FILE), "{}").unwrap();
    std::fs::write(t.path().join(TOKENIZER_FILE), "{}").unwrap();
    assert!(!is_model_dir(t.path()));
    assert!(model_dir(t.path()).is_none());
    std::fs::write(t.path().join(WEIGHTS_FILE), "").unwrap();
    assert!(is_model_dir(t.path()));
    let err = load(t.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(err, EngineError::Files(_)), "{err:?}");
    assert!(inspect(t.path()).is_err());
    // A header that claims more than the file holds.
    let mut bytes = 1_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(t.path().join(WEIGHTS_FILE), bytes).unwrap();
    std::fs::write(t.path().join(CONFIG_FILE), TINY_CONFIG).unwrap();
    assert!(inspect(t.path()).is_err());
}

/// A valid config of a one-layer model, for tests of the weights header.
const TINY_CONFIG: &str = r#"{"vocab_size":10,"hidden_size":8,"num_hidden_layers":1,
    "num_attention_heads":2,"intermediate_size":16,"max_position_embeddings":4}"#;

/// A directory with [`TINY_CONFIG`] and an empty tokenizer (no weights yet).
fn tiny_model_dir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join(CONFIG_FILE), TINY_CONFIG).unwrap();
    std::fs::write(t.path().join(TOKENIZER_FILE), "{}").unwrap();
    t
}

proptest::proptest! {
    /// Any bytes as `model.safetensors`, or a length followed by any text as
    /// its header: `inspect` answers Ok or an error, never panics.
    #[test]
    fn any_weights_header_is_read_or_refused(
        raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
        header in "\\PC{0,80}",
        claim in 0u64..200,
    ) {
        let t = tiny_model_dir();
        std::fs::write(t.path().join(WEIGHTS_FILE), &raw).unwrap();
        let _ = inspect(t.path());
        let mut bytes = claim.to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        std::fs::write(t.path().join(WEIGHTS_FILE), bytes).unwrap();
        let _ = inspect(t.path());
    }
}

#[test]
fn a_header_names_its_tensors_sizes() {
    let t = tiny_model_dir();
    let header = br#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2,3],"data_offsets":[0,12]},"b":{"dtype":"I64","shape":[4],"data_offsets":[12,44]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 44]);
    std::fs::write(t.path().join(WEIGHTS_FILE), bytes).unwrap();
    // 6 + 4 elements, each an f32 once loaded.
    assert_eq!(inspect(t.path()).unwrap().weights_bytes, 40);
}
