//! Tests for [`super`]: catalogue facts in, `/api/tags`, `/api/ps` and
//! `/api/show` out, and the facts a fleet view gives.
#![allow(clippy::unwrap_used)]

use super::*;
use cortex_core::ollama::{PsResponse, ShowResponse, TagsResponse};
use serde_json::{json, Value};

fn smollm(loaded: Vec<Loaded>) -> ModelFacts {
    ModelFacts {
        id: "smollm2-135m-instruct-q4_1".into(),
        source: Some("SmolLM2-135M-Instruct.Q4_1.gguf".into()),
        size_bytes: 98_362_432,
        architecture: Some("llama".into()),
        context_length: Some(8192),
        embedding: false,
        modified_ms: 1_717_537_111_837,
        loaded,
    }
}

#[test]
fn tags_describe_each_model() {
    let got = tags(&[smollm(vec![])]);
    let v = serde_json::to_value(&got).unwrap();
    let m = &v["models"][0];
    assert_eq!(m["name"], "smollm2-135m-instruct-q4_1");
    assert_eq!(m["model"], "smollm2-135m-instruct-q4_1");
    assert_eq!(m["modified_at"], "2024-06-04T21:38:31.837Z");
    assert_eq!(m["size"], 98_362_432);
    assert_eq!(
        m["details"],
        json!({"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
               "parameter_size": "135M", "quantization_level": "Q4_1"})
    );
    let digest = m["digest"].as_str().unwrap();
    assert_eq!(digest.len(), 64);
    assert!(digest.chars().all(|c| c.is_ascii_hexdigit()));
    // Stable, and different for another entry.
    assert_eq!(tags(&[smollm(vec![])]), got);
    let mut other = smollm(vec![]);
    other.id = "other".into();
    assert_ne!(tags(&[other]).models[0].digest, digest);
    // What the ollama package reads back.
    let back: TagsResponse = serde_json::from_value(v).unwrap();
    assert_eq!(back, got);
}

#[test]
fn details_from_file_names() {
    for (file, quant, params) in [
        ("gemma-3-270m-q4_k_m.gguf", "Q4_K_M", "270M"),
        ("Llama-3.2-1B-Instruct-IQ3_XS.gguf", "IQ3_XS", "1B"),
        ("qwen2.5-7b-instruct-f16.gguf", "F16", "7B"),
        ("model.safetensors", "", ""),
        ("hf:org/repo/Mistral-7B-v0.1.Q8_0.gguf", "Q8_0", "7B"),
    ] {
        let mut m = smollm(vec![]);
        m.source = Some(file.into());
        m.architecture = None;
        let d = details(&m);
        assert_eq!(
            (d.quantization_level.as_str(), d.parameter_size.as_str()),
            (quant, params),
            "{file}"
        );
        assert_eq!((d.family.as_str(), d.families), ("", None));
    }
}

#[test]
fn ps_lists_loaded_placements() {
    let got = ps(&[
        smollm(vec![
            Loaded {
                footprint_bytes: 170_000_000,
                on_gpu: false,
                expires_ms: 1_717_537_411_837,
            },
            Loaded {
                footprint_bytes: 170_000_000,
                on_gpu: true,
                expires_ms: NEVER_MS,
            },
        ]),
        ModelFacts {
            id: "idle".into(),
            ..smollm(vec![])
        },
    ]);
    let v = serde_json::to_value(&got).unwrap();
    assert_eq!(v["models"].as_array().unwrap().len(), 2);
    assert_eq!(v["models"][0]["size_vram"], 0);
    assert_eq!(v["models"][0]["expires_at"], "2024-06-04T21:43:31.837Z");
    assert_eq!(v["models"][1]["size_vram"], 170_000_000);
    assert_eq!(v["models"][1]["expires_at"], "9999-12-31T23:59:59.000Z");
    assert_eq!(v["models"][1]["context_length"], 8192);
    let back: PsResponse = serde_json::from_value(v).unwrap();
    assert_eq!(back, got);
}

#[test]
fn show_gives_context_length_where_clients_look() {
    let got = show(&smollm(vec![]));
    let v = serde_json::to_value(&got).unwrap();
    assert_eq!(v["model_info"]["general.architecture"], "llama");
    assert_eq!(v["model_info"]["llama.context_length"], 8192);
    assert_eq!(v["capabilities"], json!(["completion", "tools"]));
    assert!(v["modelfile"]
        .as_str()
        .unwrap()
        .contains("FROM SmolLM2-135M-Instruct.Q4_1.gguf"));
    let mut embed = smollm(vec![]);
    embed.embedding = true;
    embed.context_length = None;
    embed.architecture = None;
    let v = serde_json::to_value(show(&embed)).unwrap();
    assert_eq!(v["capabilities"], json!(["embedding"]));
    assert_eq!(
        v["model_info"],
        json!({"general.architecture": "unknown", "general.basename": "smollm2-135m-instruct-q4_1"})
    );
    let _: ShowResponse = serde_json::from_value(v).unwrap();
}

fn view() -> FleetView {
    serde_json::from_value(json!({
        "nodes": [
            {"name": "cpu-box", "endpoint": "http://a", "up": true, "consecutive_failures": 0,
             "last_seen_ms_ago": 10, "version": "0.1.0",
             "devices": [{"index": 0, "kind": "cpu", "name": "cpu", "memory_total_bytes": 100,
                          "memory_free_bytes": 50, "memory_budget_bytes": 80, "memory_used_bytes": 30}]},
            {"name": "gpu-box", "endpoint": "http://b", "up": true, "consecutive_failures": 0,
             "last_seen_ms_ago": 10, "version": "0.1.0",
             "devices": [{"index": 0, "kind": "cpu", "name": "cpu", "memory_total_bytes": 100,
                          "memory_free_bytes": 50, "memory_budget_bytes": 80, "memory_used_bytes": 0},
                         {"index": 1, "kind": "cuda", "name": "H100", "memory_total_bytes": 100,
                          "memory_free_bytes": 50, "memory_budget_bytes": 80, "memory_used_bytes": 30}]}
        ],
        "models": [
            {"id": "a", "aliases": [], "pinned": false, "priority": 0, "configured": true,
             "loadable_on": ["cpu-box", "gpu-box"], "placements": [
                {"node": "cpu-box", "state": "ready", "device": 0, "memory_bytes": 20,
                 "kv_reserve_bytes": 10, "loaded_at": 1000, "last_used_at": 5000, "in_flight": 0},
                {"node": "gpu-box", "state": "ready", "device": 1, "memory_bytes": 20,
                 "kv_reserve_bytes": 10, "loaded_at": 2000, "last_used_at": 0, "in_flight": 1},
                {"node": "gpu-box", "state": "poisoned", "device": 0, "memory_bytes": 20,
                 "kv_reserve_bytes": 10, "loaded_at": 2000, "last_used_at": 0, "in_flight": 0}]},
            {"id": "pinned", "aliases": [], "pinned": true, "priority": 0, "configured": true,
             "loadable_on": [], "placements": [
                {"node": "cpu-box", "state": "loading", "device": 0, "memory_bytes": 5,
                 "kv_reserve_bytes": 1, "loaded_at": 0, "last_used_at": 0, "in_flight": 0}]},
            {"id": "cold", "aliases": [], "pinned": false, "priority": 0, "configured": false,
             "loadable_on": ["cpu-box"], "placements": []}
        ]
    }))
    .unwrap()
}

#[test]
fn facts_from_the_fleet_view() {
    let facts = facts_from_fleet(&view(), |_| Some(Duration::from_secs(60)), 9_000);
    // (footprint, on GPU, expires) of each placement.
    type Placed = Vec<(u64, bool, u64)>;
    let got: Vec<(String, Placed, u64)> = facts
        .iter()
        .map(|f| {
            (
                f.id.clone(),
                f.loaded
                    .iter()
                    .map(|l| (l.footprint_bytes, l.on_gpu, l.expires_ms))
                    .collect(),
                f.modified_ms,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "a".into(),
                vec![(30, false, 65_000), (30, true, 62_000)],
                2000
            ),
            ("pinned".into(), vec![(6, false, NEVER_MS)], 0),
            ("cold".into(), vec![], 9_000),
        ]
    );
    let off = facts_from_fleet(&view(), |_| None, 0);
    assert_eq!(off[0].loaded[0].expires_ms, NEVER_MS);
    let v: Value = serde_json::to_value(ps(&facts)).unwrap();
    assert_eq!(v["models"].as_array().unwrap().len(), 3);
}
