//! The SentencePiece tokenizer against a port of llama.cpp's SPM algorithm
//! (`llm_tokenizer_spm_session::tokenize`) on random vocabularies.

use super::super::tests::synthetic;
use super::*;
use candle_core::quantized::gguf_file::Value;
use proptest::prelude::*;
use std::collections::{BinaryHeap, HashMap};

/// The characters vocabularies are built from; each is also a token.
const ALPHABET: &[char] = &['a', 'b', 'c', 'd', '\u{2581}', 'é', '中'];
/// Characters that are no token: they come out as byte tokens.
const STRANGERS: &[char] = &['Z', '✓'];

/// A candidate merge, ordered as llama.cpp's `llm_bigram_spm::comparator`:
/// the higher score first, then the leftmost.
#[derive(Debug, PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Eq for Bigram {}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bigram {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

/// llama.cpp's SPM tokenization of `text`: characters as symbols, the
/// adjacent pair whose concatenation is the best-scoring token merged first
/// (ties: the leftmost), symbols that are no token written as `<0xNN>`.
fn llama_cpp_spm(tokens: &[String], scores: &[f32], text: &str, prefix: bool) -> Vec<u32> {
    if text.is_empty() {
        return Vec::new();
    }
    let text = if prefix {
        format!(" {text}")
    } else {
        text.to_string()
    }
    .replace(' ', SPACE);
    let vocab: HashMap<&str, u32> = tokens
        .iter()
        .enumerate()
        .map(|(id, t)| (t.as_str(), id as u32))
        .collect();
    // (start, len) of each symbol, and the chain.
    let mut syms: Vec<(usize, usize)> = text
        .char_indices()
        .map(|(i, c)| (i, c.len_utf8()))
        .collect();
    let mut next: Vec<Option<usize>> = (0..syms.len())
        .map(|i| (i + 1 < syms.len()).then_some(i + 1))
        .collect();
    let mut prev: Vec<Option<usize>> = (0..syms.len()).map(|i| i.checked_sub(1)).collect();
    let mut heap = BinaryHeap::new();
    let bigram = |syms: &[(usize, usize)], l: usize, r: usize, heap: &mut BinaryHeap<_>| {
        let span = &text[syms[l].0..syms[r].0 + syms[r].1];
        if let Some(&id) = vocab.get(span) {
            heap.push(Bigram {
                score: scores[id as usize],
                left: l,
                right: r,
                size: span.len(),
            });
        }
    };
    for i in 1..syms.len() {
        bigram(&syms, i - 1, i, &mut heap);
    }
    while let Some(Bigram {
        left: l,
        right: r,
        size,
        ..
    }) = heap.pop()
    {
        if syms[l].1 == 0 || syms[r].1 == 0 || syms[l].1 + syms[r].1 != size {
            continue;
        }
        syms[l].1 += syms[r].1;
        syms[r].1 = 0;
        next[l] = next[r];
        if let Some(n) = next[r] {
            prev[n] = Some(l);
        }
        if let Some(p) = prev[l] {
            bigram(&syms, p, l, &mut heap);
        }
        if let Some(n) = next[l] {
            bigram(&syms, l, n, &mut heap);
        }
    }
    let mut out = Vec::new();
    let mut at = Some(0);
    while let Some(i) = at {
        let piece = &text[syms[i].0..syms[i].0 + syms[i].1];
        match vocab.get(piece) {
            Some(&id) => out.push(id),
            None => out.extend(
                piece
                    .bytes()
                    .map(|b| vocab[format!("<0x{b:02X}>").as_str()]),
            ),
        }
        at = next[i];
    }
    out
}

/// A SentencePiece GGUF header: `<unk>`, the 256 byte tokens, the alphabet,
/// then `words`, with `ranks` turned into distinct scores.
fn vocabulary(words: &[String], ranks: &[u32], prefix: bool) -> (Vec<String>, Vec<f32>, Content) {
    let mut tokens = vec!["<unk>".to_string()];
    let mut types = vec![3];
    let mut scores = vec![0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    let normal = ALPHABET
        .iter()
        .map(char::to_string)
        .chain(words.iter().cloned());
    for (word, rank) in normal.zip(ranks.iter().chain(std::iter::repeat(&0))) {
        if !tokens.contains(&word) {
            // Distinct: the rank, then the id.
            scores.push(-(*rank as f32) - tokens.len() as f32 * 1e-3);
            tokens.push(word);
            types.push(1);
        }
    }
    let content = synthetic(vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(tokens.iter().cloned().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(scores.iter().copied().map(Value::F32).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
        ("tokenizer.ggml.add_space_prefix", Value::Bool(prefix)),
    ]);
    (tokens, scores, content)
}

fn word(chars: &'static [char], len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(chars), len)
        .prop_map(|cs| cs.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn same_ids_as_llama_cpp_spm(
        words in proptest::collection::vec(word(ALPHABET, 2..6), 0..80),
        ranks in proptest::collection::vec(0u32..1000, 100),
        prefix in any::<bool>(),
        texts in proptest::collection::vec(
            word(&['a', 'b', 'c', 'd', '\u{2581}', 'é', '中', 'Z', '✓', ' '], 0..40),
            1..8,
        ),
    ) {
        let (tokens, scores, content) = vocabulary(&words, &ranks, prefix);
        let tokenizer = super::super::from_gguf(&content).unwrap();
        for text in &texts {
            let ours = tokenizer.encode(text.as_str(), false).unwrap().get_ids().to_vec();
            prop_assert_eq!(
                &ours,
                &llama_cpp_spm(&tokens, &scores, text, prefix),
                "text {:?}, tokens {:?}",
                text,
                &tokens[257..]
            );
            let back = tokenizer.decode(&ours, false).unwrap();
            prop_assert_eq!(back, text.replace('\u{2581}', " "));
        }
    }
}

#[test]
fn strangers_fall_back_to_bytes() {
    let (tokens, scores, content) = vocabulary(&["ab".into(), "abc".into()], &[5, 1], false);
    let tokenizer = super::super::from_gguf(&content).unwrap();
    for c in STRANGERS {
        let text = format!("ab{c}abc");
        let ids = tokenizer
            .encode(text.as_str(), false)
            .unwrap()
            .get_ids()
            .to_vec();
        assert_eq!(
            ids,
            llama_cpp_spm(&tokens, &scores, &text, false),
            "{text:?}"
        );
        assert!(ids.iter().any(|id| (1..=256).contains(id)), "{ids:?}");
    }
}

#[test]
fn descending_orders_scores() {
    let mut scores = vec![
        0.0f32,
        -1.0,
        3.5,
        -0.0,
        f32::NEG_INFINITY,
        1e-30,
        -255_504.0,
    ];
    scores.sort_by_key(|s| descending(*s));
    assert_eq!(
        scores,
        vec![3.5, 1e-30, 0.0, -0.0, -1.0, -255_504.0, f32::NEG_INFINITY]
    );
}
