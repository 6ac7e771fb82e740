//! Fault-aware poisoning at every inference site, streaming and not: a
//! host-side error fails one request and the next succeeds; a device fault
//! poisons the model (503 until reloaded). Faults are injected through the
//! test-only `x-neuron-inject-fault` header.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::json;

const SITES: [&str; 4] = ["tokenize", "prefill", "decode", "detokenize"];

async fn request(n: &TestNeuron, stream: bool, inject: Option<&str>) -> (u16, String) {
    let body = json!({"model": MODEL_ID, "messages": user("Count to five."), "temperature": 0, "max_tokens": 4, "stream": stream});
    let headers: Vec<(&str, &str)> = inject
        .map(|v| vec![("x-neuron-inject-fault", v)])
        .unwrap_or_default();
    if stream {
        let (s, data) = n.chat_stream(body, &headers).await;
        (s, data.join("\n"))
    } else {
        let (s, b, _) = n
            .post_raw(
                "/v1/chat/completions",
                serde_json::to_vec(&body).unwrap(),
                &headers,
            )
            .await;
        (s, b.to_string())
    }
}

/// Did the request fail? A stream may have started (200) and then carry an
/// error chunk instead of finishing.
fn failed(status: u16, text: &str) -> bool {
    status >= 400 || text.contains("\"error\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_side_errors_fail_one_request_and_never_poison() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, true).await;
    for site in SITES {
        for stream in [false, true] {
            let (s, t) = request(&n, stream, Some(&format!("host@{site}"))).await;
            assert!(failed(s, &t), "{site} stream={stream}: {s} {t}");
            assert!(!t.contains("poisoned"), "{t}");
            let (s, t) = request(&n, stream, None).await;
            assert_eq!(s, 200, "after host@{site}: {t}");
            assert!(!failed(s, &t), "{t}");
        }
    }
    assert_eq!(n.registry.get(MODEL_ID).unwrap().health.poisoned(), None);
    let (_, m) = n.get("/metrics").await;
    let m = m.as_str().unwrap();
    assert!(
        m.contains("neuron_model_poisonings_total{model=\"smollm2-135m-instruct-q4_1\"} 0"),
        "the poisonings counter exists and stayed at 0: {m}"
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_faults_poison_at_every_site_until_reload() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, true).await;
    for site in SITES {
        for stream in [false, true] {
            let (s, t) = request(&n, stream, Some(&format!("device@{site}"))).await;
            assert!(failed(s, &t), "{site} stream={stream}: {s} {t}");
            assert!(t.contains("poisoned"), "{site} stream={stream}: {t}");

            // Poisoned: 503 with a clear message, streaming or not.
            for st in [false, true] {
                let (s, t) = request(&n, st, None).await;
                assert_eq!(s, 503, "{t}");
                assert!(t.contains("poisoned") && t.contains("reload"), "{t}");
            }
            let (_, status) = n.get("/status").await;
            assert_eq!(status["models"][0]["state"], "poisoned", "{status}");
            assert!(status["models"][0]["error"]
                .as_str()
                .unwrap()
                .contains(site));
            let (_, list) = n.get("/v1/models").await;
            assert_eq!(
                list["data"],
                json!([]),
                "a poisoned model is not listed as servable"
            );

            // A load of a poisoned model reloads it.
            let (s, b) = n.post("/models/load", json!({"model": MODEL_ID})).await;
            assert_eq!(s, 200, "{b}");
            assert_eq!(b["model"]["state"], "ready");
            let (s, t) = request(&n, stream, None).await;
            assert_eq!(s, 200, "after reload: {t}");
        }
    }
    let (_, m) = n.get("/metrics").await;
    assert!(
        m.as_str()
            .unwrap()
            .contains("neuron_model_poisonings_total{model=\"smollm2-135m-instruct-q4_1\"} 8"),
        "{m}"
    );
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injection_header_is_ignored_unless_enabled() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, false).await;
    let (s, t) = request(&n, false, Some("device@decode")).await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(n.registry.get(MODEL_ID).unwrap().health.poisoned(), None);
    n.stop().await;
}

/// A streamed request run to its end: whether it failed, its text, and
/// everything it received.
async fn long_stream(
    n: &TestNeuron,
    model: &str,
    prompt: &str,
    inject: Option<&str>,
) -> (bool, String, String) {
    let body = json!({"model": model, "messages": user(prompt), "temperature": 0, "max_tokens": 120, "stream": true});
    let headers: Vec<(&str, &str)> = inject
        .map(|v| vec![("x-neuron-inject-fault", v)])
        .unwrap_or_default();
    let (s, data) = n.chat_stream(body, &headers).await;
    let all = data.join("\n");
    let text = if s == 200 {
        stream_text(&data).0
    } else {
        String::new()
    };
    (failed(s, &all), text, all)
}

/// Waits until `n` sequences run on the device worker.
async fn until_running(n: &TestNeuron, count: usize) {
    for _ in 0..600 {
        if n.registry.workers()[0].active_sequences() >= count {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{count} sequences never ran together");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_device_fault_in_a_batched_pass_fails_every_sequence_and_poisons() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, true).await;
    let prompts = [
        "Tell me about the sea.",
        "Tell me about the moon.",
        "Tell me about trees.",
    ];
    let healthy =
        futures::future::join_all(prompts.iter().map(|p| long_stream(&n, MODEL_ID, p, None)));
    let faulty = async {
        until_running(&n, 3).await;
        long_stream(&n, MODEL_ID, "Count to ten.", Some("device@decode")).await
    };
    let (healthy, faulty) = tokio::join!(healthy, faulty);
    for (failed, _, all) in healthy.iter().chain(std::iter::once(&faulty)) {
        assert!(failed, "every sequence of the batch fails: {all}");
        assert!(all.contains("poisoned"), "{all}");
    }
    let why = n.registry.get(MODEL_ID).unwrap().health.poisoned().unwrap();
    assert!(why.contains("CUDA_ERROR_ILLEGAL_ADDRESS"), "{why}");
    let (s, t) = request(&n, false, None).await;
    assert_eq!(s, 503, "{t}");
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_host_error_in_a_batch_fails_only_its_request() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, true).await;
    let prompts = [
        "Tell me about the sea.",
        "Tell me about the moon.",
        "Tell me about trees.",
    ];
    // Alone first: the answers the batched run must reproduce.
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(long_stream(&n, MODEL_ID, p, None).await);
    }
    for site in ["prefill", "decode"] {
        let healthy =
            futures::future::join_all(prompts.iter().map(|p| long_stream(&n, MODEL_ID, p, None)));
        let inject = format!("host@{site}");
        let faulty = async {
            until_running(&n, 3).await;
            long_stream(&n, MODEL_ID, "Count to ten.", Some(&inject)).await
        };
        let (healthy, (failed, _, all)) = tokio::join!(healthy, faulty);
        assert!(failed, "{all}");
        assert!(!all.contains("poisoned"), "{all}");
        for ((failed, got, all), (_, want, _)) in healthy.iter().zip(&alone) {
            assert!(!failed, "the rest of the batch continues: {all}");
            assert_eq!(got, want, "and gives the same answer as alone");
        }
    }
    assert_eq!(n.registry.get(MODEL_ID).unwrap().health.poisoned(), None);
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_panic_in_a_tick_poisons_that_model_only_and_it_reloads() {
    let Some(dir) = models_dir() else { return };
    let n = TestNeuron::with_model(dir, true).await;
    // A second model on the same device worker (the same file, another id).
    let (s, b) = n
        .post(
            "/models/load",
            json!({"model": "other", "source": MODEL_FILE}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    for site in ["prefill", "decode"] {
        let inject = format!("panic@{site}");
        let other = long_stream(&n, "other", "Tell me about the sea.", None);
        let victim = long_stream(&n, MODEL_ID, "Tell me about the moon.", None);
        let faulty = async {
            until_running(&n, 2).await;
            long_stream(&n, MODEL_ID, "Count to ten.", Some(&inject)).await
        };
        let (other, victim, faulty) = tokio::join!(other, victim, faulty);
        assert!(!other.0, "the other model keeps serving: {}", other.2);
        for (failed, _, all) in [&victim, &faulty] {
            assert!(*failed && all.contains("poisoned"), "{all}");
        }
        let why = n.registry.get(MODEL_ID).unwrap().health.poisoned().unwrap();
        assert!(
            why.contains("panic") && why.contains(&format!("injected panic at {site}")),
            "{why}"
        );
        assert_eq!(n.registry.get("other").unwrap().health.poisoned(), None);
        // The worker is alive: the other model answers, the poisoned one reloads.
        let (s, b) = n
            .chat(json!({"model": "other", "messages": user(FRANCE), "temperature": 0, "max_tokens": 16}))
            .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = n.post("/models/load", json!({"model": MODEL_ID})).await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = n
            .chat(json!({"model": MODEL_ID, "messages": user(FRANCE), "temperature": 0, "max_tokens": 16}))
            .await;
        assert_eq!(s, 200, "{b}");
        assert!(
            b["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .contains("Paris"),
            "{b}"
        );
    }
    n.stop().await;
}
