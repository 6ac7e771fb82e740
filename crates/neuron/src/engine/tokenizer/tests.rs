//! Tests of the tokenizer against llama.cpp's token ids, on both real
//! models.

use super::*;
use crate::engine::test_model;
use crate::engine::ModelAssets;
use candle_core::quantized::gguf_file::VersionedMagic;
use cortex_core::openai::{ChatMessage, Role};
use proptest::prelude::*;
use std::sync::Arc;

/// A GGUF header holding only `metadata`.
pub(super) fn synthetic(metadata: Vec<(&str, Value)>) -> Content {
    Content {
        magic: VersionedMagic::GgufV3,
        metadata: metadata
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        tensor_infos: Default::default(),
        tensor_data_offset: 0,
    }
}

fn strings(values: &[&str]) -> Value {
    Value::Array(
        values
            .iter()
            .map(|s| Value::String(s.to_string()))
            .collect(),
    )
}

/// A small SentencePiece header: `<unk> <s> </s> <0x61> ▁ a ▁a`.
fn small_spm(extra: Vec<(&'static str, Value)>) -> Content {
    let mut metadata = vec![
        ("tokenizer.ggml.model", Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens",
            strings(&[
                "<unk>",
                "<s>",
                "</s>",
                "<0x61>",
                "\u{2581}",
                "a",
                "\u{2581}a",
            ]),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array([2, 3, 3, 6, 1, 1, 1].into_iter().map(Value::I32).collect()),
        ),
    ];
    for (key, value) in extra {
        metadata.retain(|(k, _)| *k != key);
        metadata.push((key, value));
    }
    synthetic(metadata)
}

fn gguf_error(content: &Content) -> String {
    match from_gguf(content) {
        Err(EngineError::Gguf(text)) => text,
        other => panic!("expected a GGUF error, got {other:?}"),
    }
}

#[test]
fn small_spm_defaults_follow_llama_cpp() {
    // No scores, no ids, no flags: BOS 1 added, a space prefixed, unknown 0.
    let t = from_gguf(&small_spm(vec![])).unwrap();
    assert_eq!(t.encode("a", true).unwrap().get_ids(), &[1, 6]);
    assert_eq!(t.encode("a a", false).unwrap().get_ids(), &[6, 6]);
    assert_eq!(t.decode(&[1, 6, 6], true).unwrap(), "a a");
    // The unknown token's text is parsed like a control token's.
    assert_eq!(t.encode("<unk>a", false).unwrap().get_ids(), &[0, 6]);
    let specials = Specials::of(&small_spm(vec![]), 7).unwrap();
    assert_eq!(
        specials,
        Specials {
            bos: Some(1),
            eos: Some(2),
            add_bos: true,
            add_eos: false
        }
    );
}

#[test]
fn add_eos_token_appends_eos() {
    let content = small_spm(vec![
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
        ("tokenizer.ggml.add_eos_token", Value::Bool(true)),
    ]);
    let t = from_gguf(&content).unwrap();
    assert_eq!(t.encode("a", true).unwrap().get_ids(), &[6, 2]);
}

#[test]
fn malformed_vocabularies_are_gguf_errors() {
    let duplicate = small_spm(vec![(
        "tokenizer.ggml.tokens",
        strings(&["<unk>", "<s>", "</s>", "<0x61>", "<s>", "a", "\u{2581}a"]),
    )]);
    assert!(gguf_error(&duplicate).contains("duplicate token \"<s>\""));
    let scores = small_spm(vec![("tokenizer.ggml.scores", strings(&["1"; 7]))]);
    assert!(gguf_error(&scores).contains("scores"));
    let few_scores = small_spm(vec![(
        "tokenizer.ggml.scores",
        Value::Array(vec![Value::F32(0.0); 5]),
    )]);
    assert!(gguf_error(&few_scores).contains("5 scores for 7 tokens"));
    let types = small_spm(vec![(
        "tokenizer.ggml.token_type",
        Value::Array(vec![Value::I32(1); 2]),
    )]);
    assert!(gguf_error(&types).contains("2 token types for 7 tokens"));
    let bos = small_spm(vec![("tokenizer.ggml.bos_token_id", Value::U32(7))]);
    assert!(gguf_error(&bos).contains("outside the vocabulary"));
    let flag = small_spm(vec![("tokenizer.ggml.add_bos_token", Value::U32(1))]);
    assert!(gguf_error(&flag).contains("not a boolean"));
    let empty = small_spm(vec![("tokenizer.ggml.tokens", strings(&[]))]);
    assert!(gguf_error(&empty).contains("empty"));
    let no_merges = synthetic(vec![("tokenizer.ggml.tokens", strings(&["a"]))]);
    assert!(gguf_error(&no_merges).contains("merges"));
}

#[test]
fn other_tokenizer_models_are_unsupported() {
    for model in ["bert", "t5", "rwkv", "gemma4"] {
        let content = small_spm(vec![("tokenizer.ggml.model", Value::String(model.into()))]);
        let err = from_gguf(&content).unwrap_err();
        assert!(
            matches!(&err, EngineError::Unsupported(text) if text.contains(model)),
            "{err:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Whatever the metadata holds, building and using the tokenizer gives
    /// a tokenizer or an error, never a panic.
    #[test]
    fn random_metadata_never_panics(
        tokens in proptest::collection::vec("(<0x[0-9A-F]{2}>|[a-c▁ <>/]{0,4})", 0..24),
        types in proptest::collection::vec(0i32..8, 0..24),
        scores in proptest::collection::vec(any::<f32>(), 0..24),
        bos in proptest::option::of(0u32..30),
        add_bos in proptest::option::of(any::<bool>()),
        spm in any::<bool>(),
        text in "[a-c▁ <>/0x]{0,16}",
    ) {
        let mut metadata = vec![
            ("tokenizer.ggml.model", Value::String(if spm { "llama" } else { "gpt2" }.into())),
            ("tokenizer.ggml.tokens", Value::Array(tokens.into_iter().map(Value::String).collect())),
            ("tokenizer.ggml.token_type", Value::Array(types.into_iter().map(Value::I32).collect())),
            ("tokenizer.ggml.scores", Value::Array(scores.into_iter().map(Value::F32).collect())),
            ("tokenizer.ggml.merges", strings(&["a b", "▁ a"])),
        ];
        if let Some(bos) = bos {
            metadata.push(("tokenizer.ggml.bos_token_id", Value::U32(bos)));
        }
        if let Some(add) = add_bos {
            metadata.push(("tokenizer.ggml.add_bos_token", Value::Bool(add)));
        }
        if let Ok(t) = from_gguf(&synthetic(metadata)) {
            if let Ok(encoding) = t.encode(text.as_str(), true) {
                let _ = t.decode(encoding.get_ids(), true);
            }
        }
    }
}

// Expected ids come from llama.cpp, the reference implementation: the npm
// package node-llama-cpp 3.21.1 (prebuilt llama.cpp for linux-x64),
// `model.tokenize(text, true)` (special tokens parsed, no BOS added — the
// file says add_bos_token = false) on SmolLM2-135M-Instruct.Q4_1.gguf:
//   cd /tmp && npm install node-llama-cpp@3.21
//   const llama = await getLlama({gpu: false, build: "never"});
//   const model = await llama.loadModel({modelPath});
//   console.log(Array.from(model.tokenize(s, true)));
const CHAT_PROMPT: &str = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France? Answer in one sentence.<|im_end|>\n<|im_start|>assistant\n";
const EXPECTED: &[(&str, &[u32])] = &[
    ("Hello world", &[19556, 905]),
    ("Hello, world!", &[19556, 28, 905, 17]),
    ("naïve café", &[3546, 46494, 37366]),
    ("I ❤️ 🦀", &[57, 4636, 247, 114, 31752, 15107, 116, 218]),
    (
        "你好，世界",
        &[18645, 250, 48392, 138, 12831, 7906, 240, 178, 239, 230],
    ),
    (
        "a\tb\t\tc    d  e\n\n  f",
        &[81, 197, 82, 197, 197, 83, 333, 287, 216, 297, 8866, 275],
    ),
    (
        "12345 and 3.14159",
        &[33, 34, 35, 36, 37, 284, 216, 35, 30, 33, 36, 33, 37, 41],
    ),
    ("I'm can't we'll", &[57, 5248, 416, 982, 392, 3060]),
    (
        "<|im_start|>user\nHi<|im_end|>\n",
        &[1, 4093, 198, 26843, 2, 198],
    ),
    (
        CHAT_PROMPT,
        &[
            1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411,
            407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 19842,
            281, 582, 6330, 30, 2, 198, 1, 520, 9531, 198,
        ],
    ),
    (
        "  leading spaces and trailing  ",
        &[216, 2899, 5600, 284, 35079, 256],
    ),
    (
        "Ünïcödé — “quotes” … ½",
        &[
            142, 246, 94, 25972, 83, 7466, 84, 2756, 1841, 619, 385, 2346, 573, 5548, 216, 16738,
        ],
    ),
    (
        "fn main() {\n    println!(\"hi\");\n}",
        &[
            7853, 1085, 1000, 1662, 472, 1628, 34115, 17, 1470, 6004, 21646, 198, 109,
        ],
    ),
];

#[test]
fn token_ids_match_llama_cpp() {
    let Some(w) = test_model::weights() else {
        return;
    };
    let mut failures = Vec::new();
    for (text, expected) in EXPECTED {
        let ids = w.assets.encode(text).unwrap();
        if ids != *expected {
            failures.push(format!("{text:?}: got {ids:?}, llama.cpp {expected:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn decode_round_trips() {
    let Some(w) = test_model::weights() else {
        return;
    };
    for (text, _) in EXPECTED {
        let ids = w.assets.encode(text).unwrap();
        let full = w.assets.tokenizer.decode(&ids, false).unwrap();
        assert_eq!(full, *text);
        if !text.contains("<|") {
            assert_eq!(w.assets.decode(&ids).unwrap(), *text);
        }
    }
    // Special tokens are skipped by ModelAssets::decode.
    let ids = w.assets.encode("<|im_start|>user\nHi<|im_end|>\n").unwrap();
    assert_eq!(w.assets.decode(&ids).unwrap(), "user\nHi\n");
}

#[test]
fn special_tokens_are_registered() {
    let Some(w) = test_model::weights() else {
        return;
    };
    let t = &w.assets.tokenizer;
    assert_eq!(t.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(t.token_to_id("<|im_end|>"), Some(2));
    assert_eq!(t.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(t.get_vocab_size(true), 49152);
}

// Gemma 3 270M (`tokenizer.ggml.model = "llama"`): ids from llama.cpp as
// node-llama-cpp 3.22.1 ships it, `model.tokenize(text, true)` (special
// tokens parsed, nothing added) on gemma-3-270m-q4_k_m.gguf. The strings
// cover byte fallback (U+0007, U+13000), user-defined tokens (runs of
// spaces, tabs and newlines, HTML tags), control tokens and a literal
// byte-token text.
const GEMMA3_EXPECTED: &[(&str, &[u32])] = &[
    ("Hello world", &[9259, 1902]),
    ("Hello, world!", &[9259, 236764, 1902, 236888]),
    ("naïve café", &[1789, 238527, 560, 33443]),
    ("I ❤️ 🦀", &[236777, 64813, 236743, 248714]),
    ("你好，世界", &[144626, 236900, 12811]),
    (
        "a\tb\t\tc    d  e\n\n  f",
        &[
            236746, 255968, 236763, 255969, 236755, 140, 236753, 138, 236744, 108, 138, 236760,
        ],
    ),
    (
        "12345 and 3.14159",
        &[
            236770, 236778, 236800, 236812, 236810, 532, 236743, 236800, 236761, 236770, 236812,
            236770, 236810, 236819,
        ],
    ),
    (
        "I'm can't we'll",
        &[
            236777, 236789, 236757, 740, 236789, 236745, 692, 236789, 859,
        ],
    ),
    (
        "<start_of_turn>user\nHi<end_of_turn>\n",
        &[105, 2364, 107, 10979, 106, 107],
    ),
    (
        "  leading spaces and trailing  ",
        &[138, 26016, 9952, 532, 45330, 138],
    ),
    (" leading space", &[5830, 2557]),
    (
        "Ünïcödé — “quotes” … ½",
        &[
            238194, 236749, 238527, 236755, 55515, 236859, 2192, 999, 52231, 236919, 7881, 47041,
        ],
    ),
    (
        "fn main() {\n    println!(\"hi\");\n}",
        &[
            15059, 1689, 825, 642, 107, 140, 4629, 36492, 2202, 1443, 107, 236783,
        ],
    ),
    (
        "<b>bold</b> and <0x41> literal",
        &[
            200, 15640, 209, 532, 655, 236771, 236781, 236812, 236770, 236813, 37087,
        ],
    ),
    (
        "\u{7}bell \u{e000} private 𓀀",
        &[245, 11761, 236743, 245863, 2147, 236743, 478, 385, 366, 366],
    ),
    ("<bos><eos><pad>x<unused0>", &[2, 1, 0, 236781, 6]),
    (
        "                                        x\t\t\t\n\n\n\ny",
        &[167, 145, 236781, 255970, 110, 236762],
    ),
    (
        "Привет, мир! Ελληνικά. العربية. हिन्दी.",
        &[
            116130, 236764, 58562, 236888, 23883, 109959, 42220, 236761, 87595, 236761, 85394,
            236761,
        ],
    ),
    ("\r\n windows line\r\n", &[251, 107, 11665, 1757, 251, 107]),
];

/// The Gemma chat of [`gemma3_chat_prompt_has_one_bos`], as Gemma 3's
/// template renders it (checked against Python's jinja2 too).
const GEMMA3_CHAT_PROMPT: &str = "<bos><start_of_turn>user\nYou are a helpful assistant.\n\nWhat is the capital of France?<end_of_turn>\n<start_of_turn>model\nParis.<end_of_turn>\n<start_of_turn>user\nAnd of Italy? Answer in one sentence.<end_of_turn>\n<start_of_turn>model\n";
const GEMMA3_CHAT_IDS: &[u32] = &[
    2, 105, 2364, 107, 3048, 659, 496, 11045, 16326, 236761, 108, 3689, 563, 506, 5279, 529, 7001,
    236881, 106, 107, 105, 4368, 107, 50429, 236761, 106, 107, 105, 2364, 107, 3133, 529, 11702,
    236881, 25685, 528, 886, 13315, 236761, 106, 107, 105, 4368, 107,
];

/// Where `encode` differs from llama.cpp, one line per string.
fn mismatches(assets: &ModelAssets, expected: &[(&str, &[u32])]) -> Vec<String> {
    expected
        .iter()
        .filter_map(|(text, want)| {
            let got = assets.encode(text).unwrap();
            (got != *want).then(|| format!("{text:?}: got {got:?}, llama.cpp {want:?}"))
        })
        .collect()
}

#[test]
fn gemma3_token_ids_match_llama_cpp() {
    let Some(assets) = test_model::gemma3_assets() else {
        return;
    };
    let failures = mismatches(&assets, GEMMA3_EXPECTED);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The rendered chat, its <bos> text parsed as the control token.
    assert_eq!(assets.encode(GEMMA3_CHAT_PROMPT).unwrap(), GEMMA3_CHAT_IDS);
}

#[test]
fn gemma3_chat_prompt_has_one_bos() {
    let Some(assets) = test_model::gemma3_assets() else {
        return;
    };
    assert!(assets.meta.add_bos_token && !assets.meta.add_eos_token);
    let messages = [
        ChatMessage::text(Role::System, "You are a helpful assistant."),
        ChatMessage::text(Role::User, "What is the capital of France?"),
        ChatMessage::text(Role::Assistant, "Paris."),
        ChatMessage::text(Role::User, "And of Italy? Answer in one sentence."),
    ];
    // The file has no template: Gemma 3's built-in one folds the system
    // message into the first user turn and writes the BOS text itself.
    let rendered = assets.template.render(&messages, None, true).unwrap();
    assert_eq!(rendered, GEMMA3_CHAT_PROMPT);
    // add_bos_token strips that text and adds the token: exactly one BOS,
    // the ids llama.cpp gives the rendered text.
    let ids = assets.encode_chat(&messages, None).unwrap();
    assert_eq!(ids, GEMMA3_CHAT_IDS);
    assert_eq!(ids.iter().filter(|id| **id == 2).count(), 1, "{ids:?}");
}

#[test]
fn gemma3_prompt_gets_bos_once() {
    let Some(assets) = test_model::gemma3_assets() else {
        return;
    };
    let hello = assets.encode("Hello world").unwrap();
    let with_bos = [&[2][..], &hello].concat();
    assert_eq!(assets.encode_prompt("Hello world").unwrap(), with_bos);
    assert_eq!(assets.encode_prompt("<bos>Hello world").unwrap(), with_bos);
    assert_eq!(assets.encode_prompt("").unwrap(), vec![2]);
    // Only a leading BOS text is the template's: a second one is the user's.
    assert_eq!(
        assets.encode_prompt("<bos><bos>Hello world").unwrap(),
        [&[2, 2][..], &hello].concat()
    );
}

#[test]
fn smollm2_prompt_gets_no_bos() {
    let Some(w) = test_model::weights() else {
        return;
    };
    assert!(!w.assets.meta.add_bos_token);
    let plain = w.assets.encode(CHAT_PROMPT).unwrap();
    assert_eq!(w.assets.encode_prompt(CHAT_PROMPT).unwrap(), plain);
}

#[test]
fn gemma3_decode_round_trips() {
    let Some(assets) = test_model::gemma3_assets() else {
        return;
    };
    for (text, _) in GEMMA3_EXPECTED
        .iter()
        .chain([&(GEMMA3_CHAT_PROMPT, GEMMA3_CHAT_IDS)])
    {
        let ids = assets.encode(text).unwrap();
        assert_eq!(assets.tokenizer.decode(&ids, false).unwrap(), *text);
    }
    // Control tokens are skipped; user-defined ones ("\n", "<b>") are text.
    let ids = assets
        .encode("<start_of_turn>user\n<b>Hi</b><end_of_turn>\n")
        .unwrap();
    assert_eq!(assets.decode(&ids).unwrap(), "user\n<b>Hi</b>\n");
    assert_eq!(assets.decode(&[2, 1, 0, 236781, 6]).unwrap(), "x");
    // Byte-fallback tokens become bytes: U+13000 is F0 93 80 80.
    assert_eq!(assets.decode(&[478, 385, 366, 366]).unwrap(), "\u{13000}");
}

#[test]
fn gemma3_vocabulary_and_specials() {
    let Some(assets) = test_model::gemma3_assets() else {
        return;
    };
    let t = &assets.tokenizer;
    assert_eq!(t.get_vocab_size(true), 262_144);
    assert_eq!(t.token_to_id("<start_of_turn>"), Some(105));
    assert_eq!(t.token_to_id("<end_of_turn>"), Some(106));
    assert_eq!(t.token_to_id("<0x41>"), Some(303));
    let meta = &assets.meta;
    assert_eq!(meta.architecture, "gemma3");
    assert_eq!(meta.vocab_size, 262_144);
    assert_eq!(meta.bos_token.as_deref(), Some("<bos>"));
    assert_eq!(meta.eos_token.as_deref(), Some("<eos>"));
    // <eos> and <end_of_turn>.
    assert_eq!(meta.eos_token_ids, vec![1, 106]);
}

/// Any text survives encode → decode (special tokens included), on both
/// real models.
#[test]
fn arbitrary_text_round_trips() {
    let models: Vec<Arc<ModelAssets>> = [
        test_model::weights().map(|w| w.assets.clone()),
        test_model::gemma3_assets(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let text = prop_oneof![
        any::<String>(),
        "([a-z ]{1,8}|\t|\n| {2,40}|<start_of_turn>|<b>|<0x41>|<\\|im_start\\|>|🦀|中文|é){0,12}",
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
    for assets in models {
        runner
            .run(&text, |text| {
                let ids = assets.encode(&text).unwrap();
                prop_assert_eq!(assets.tokenizer.decode(&ids, false).unwrap(), text);
                Ok(())
            })
            .unwrap();
    }
}
