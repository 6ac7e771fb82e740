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
