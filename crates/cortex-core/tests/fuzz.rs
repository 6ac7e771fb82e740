//! Fuzz harnesses for the configuration parsers (`cortex.toml`,
//! `models.toml`, `neuron.toml`): text built from the real sections and
//! keys with arbitrary values, and arbitrary text, for a time budget of
//! `CORTEX_FUZZ_SECS` seconds each (default 1; `scripts/test` gives more).
//! No panic; a file that loads validates, and loads again the same from
//! its own serialisation.
#![allow(clippy::unwrap_used)]

mod support;

use cortex_core::config::{GatewayConfig, ModelsFile, NeuronConfig};
use proptest::prelude::*;
use support::fuzz::fuzz;

/// A TOML value, plausible or not for the key it goes with.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u64..100_000).prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("true".to_string()),
        Just("\"\"".to_string()),
        "[0-9]{1,4}(ms|s|m|h|KiB|MiB|GiB|GB|B|x)?".prop_map(|s| format!("\"{s}\"")),
        "(lru|priority|[a-z]{0,6})".prop_map(|s| format!("\"{s}\"")),
        "[a-z0-9.:/_-]{0,20}".prop_map(|s| format!("\"{s}\"")),
        "[0-9.]{1,15}:[0-9]{1,6}".prop_map(|s| format!("\"{s}\"")),
        prop::collection::vec("[a-z0-9:._-]{0,8}", 0..3).prop_map(|v| format!(
            "[{}]",
            v.iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    ]
}

/// A document of `sections`, each with keys from `keys` (and a few
/// unknown ones), and arbitrary values.
fn document(
    sections: &'static [&'static str],
    keys: &'static [&'static str],
) -> impl Strategy<Value = String> {
    let line = (
        prop_oneof![8 => prop::sample::select(keys).prop_map(str::to_string), 1 => "[a-z_]{1,8}"],
        value(),
    )
        .prop_map(|(k, v)| format!("{k} = {v}\n"));
    let block = (
        prop::sample::select(sections),
        prop::collection::vec(line, 0..6),
    )
        .prop_map(|(s, lines)| format!("{s}\n{}", lines.concat()));
    prop::collection::vec(block, 0..6).prop_map(|b| b.concat())
}

const GATEWAY_SECTIONS: &[&str] = &["[gateway]", "[eviction]", "[limits]", "[[neurons]]", ""];
const GATEWAY_KEYS: &[&str] = &[
    "listen",
    "metrics_listen",
    "models",
    "poll_interval",
    "down_after_failures",
    "poll_timeout",
    "api_keys",
    "admin_keys",
    "state_file",
    "workers",
    "strategy",
    "idle_unload_after",
    "defrag_after_cycles",
    "interval",
    "min_residency",
    "max_body",
    "max_in_flight_per_model",
    "max_queued_per_model",
    "max_in_flight_total",
    "load_wait",
    "load_timeout",
    "connect_timeout",
    "first_byte_timeout",
    "idle_timeout",
    "request_deadline",
    "max_attempts",
    "max_upstream_line",
    "ping_interval",
    "name",
    "endpoint",
    "admin_token",
];
const MODELS_KEYS: &[&str] = &["id", "source", "aliases", "priority", "pinned", "neurons"];
const NEURON_SECTIONS: &[&str] = &["", "[[models]]"];
const NEURON_KEYS: &[&str] = &[
    "name",
    "listen",
    "models_dirs",
    "memory_budget",
    "admin_token",
    "default_kv_reserve",
    "max_body",
    "max_sequences",
    "threads",
    "hf_cache",
    "id",
    "kv_reserve",
];

fn text(doc: impl Strategy<Value = String>) -> impl Strategy<Value = String> {
    prop_oneof![4 => doc, 1 => ".{0,200}", 1 => "[\\[\\]a-z_=\"0-9 \n.]{0,200}"]
}

#[test]
fn gateway_config() {
    fuzz(
        "gateway_config",
        text(document(GATEWAY_SECTIONS, GATEWAY_KEYS)),
        |t| {
            if let Ok(c) = GatewayConfig::from_toml(&t, "cortex.toml") {
                prop_assert!(c.validate("cortex.toml").is_ok());
                let again = toml::to_string(&c).unwrap();
                let back = GatewayConfig::from_toml(&again, "again").unwrap();
                prop_assert_eq!(back, c);
            }
            Ok(())
        },
    );
}

#[test]
fn models_file() {
    let gateway = GatewayConfig::from_toml(
        "[[neurons]]\nname = \"a\"\nendpoint = \"http://127.0.0.1:1\"\n",
        "cortex.toml",
    )
    .unwrap();
    let doc = document(&["[[models]]", ""], MODELS_KEYS);
    fuzz("models_file", text(doc), |t| {
        if let Ok(m) = ModelsFile::from_toml(&t, "models.toml") {
            let _ = m.validate("models.toml", &gateway);
            let again = toml::to_string(&m).unwrap();
            prop_assert_eq!(ModelsFile::from_toml(&again, "again").unwrap(), m);
        }
        Ok(())
    });
}

#[test]
fn neuron_config() {
    fuzz(
        "neuron_config",
        text(document(NEURON_SECTIONS, NEURON_KEYS)),
        |t| {
            if let Ok(c) = NeuronConfig::from_toml(&t, "neuron.toml") {
                let again = toml::to_string(&c).unwrap();
                prop_assert_eq!(NeuronConfig::from_toml(&again, "again").unwrap(), c);
            }
            Ok(())
        },
    );
}

/// Model names: only identifiers pass, and an id made from any file name
/// is one.
#[test]
fn model_ids() {
    use cortex_core::model_id::{is_valid_model_id, model_id_from_file_name};
    let name = prop_oneof![".{0,40}", "[a-zA-Z0-9._:/\\\\%-]{0,40}"];
    fuzz("model_ids", name, |n| {
        if is_valid_model_id(&n) {
            prop_assert!(
                !n.contains('/') && !n.contains('\\') && !n.contains(".."),
                "{n}"
            );
            prop_assert!(
                !n.starts_with('.') && !n.chars().any(char::is_whitespace),
                "{n}"
            );
        }
        prop_assert!(is_valid_model_id(&model_id_from_file_name(&n)), "{n}");
        Ok(())
    });
}
