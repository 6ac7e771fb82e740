//! Routing, loading and eviction against fake neurons: cold loads, the
//! fewest-in-flight rule, load coalescing, LRU and priority eviction, pins
//! (from models.toml and at runtime), the thrash guard, idle unloads,
//! poisoned models, affinity, and a property test that random request
//! sequences never overfill a neuron.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use cortex_core::neuron_api::ModelState;
use proptest::prelude::*;
use serde_json::{json, Value};

async fn ask_ok(gw: &TestGateway, model: &str) -> String {
    let (st, v) = ask(gw, model).await;
    assert_eq!(st, 200, "{model}: {v}");
    content(&v)
}

fn retry_after(r: &reqwest::Response) -> u64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Node `a` with `m1`, `m2` and `m3` (100 each) and room for two.
async fn two_of_three_fit() -> FakeNeuron {
    FakeNeuron::builder("a")
        .budget(200)
        .file("m1", 100)
        .file("m2", 100)
        .file("m3", 100)
        .start()
        .await
}

/// Node `a` with `m1` and `m2` (100 each) and room for one.
async fn one_of_two_fits() -> FakeNeuron {
    FakeNeuron::builder("a")
        .budget(100)
        .file("m1", 100)
        .file("m2", 100)
        .start()
        .await
}

#[tokio::test]
async fn cold_model_is_loaded_on_first_request() {
    let a = FakeNeuron::builder("a").file("m", 100).start().await;
    let gw = TestGateway::start_up(settings(&[&a])).await;
    assert!(a.loaded().is_empty());
    assert_eq!(ask_ok(&gw, "m").await, "Hello from m on a");
    let paths: Vec<String> = a.traffic().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/models/load", "/v1/chat/completions"]);
    let load = &a.calls("/models/load")[0].body;
    assert_eq!(
        (&load["model"], &load["source"]),
        (&json!("m"), &json!("m.gguf"))
    );
    gw.wait_ready("m", "a").await;
}

#[tokio::test]
async fn a_ready_model_goes_to_the_node_with_fewest_in_flight() {
    let slow = |b: &mut common::fake_neuron::Behaviour| {
        b.chunk_delay = Duration::from_millis(100);
        b.extra_chunks = 50;
    };
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .loaded("m")
        .behaviour(slow)
        .start()
        .await;
    let b = FakeNeuron::builder("b")
        .file("m", 100)
        .loaded("m")
        .behaviour(slow)
        .start()
        .await;
    let gw = TestGateway::start(settings(&[&a, &b])).await;
    gw.wait_ready("m", "a").await;
    gw.wait_ready("m", "b").await;

    // A slow stream holds one node busy…
    let held = gw.post("/v1/chat/completions", &chat("m", true)).await;
    assert_eq!(held.status(), 200);
    let busy = if a.chat_calls() == 1 { "a" } else { "b" };
    let idle = if busy == "a" { "b" } else { "a" };
    // …so the next requests go to the other one.
    for _ in 0..3 {
        let text = ask_ok(&gw, "m").await;
        assert!(
            text.starts_with(&format!("Hello from m on {idle}")),
            "{text}"
        );
    }
    let (fa, fb) = if busy == "a" { (&a, &b) } else { (&b, &a) };
    assert_eq!((fa.chat_calls(), fb.chat_calls()), (1, 3));
    drop(held);
}

#[tokio::test]
async fn concurrent_requests_for_a_loading_model_share_one_load() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .behaviour(|b| b.load_delay = Duration::from_millis(300))
        .start()
        .await;
    let gw = TestGateway::start_up(settings(&[&a])).await;
    let all = futures::future::join_all((0..5).map(|_| ask(&gw, "m"))).await;
    for (st, v) in &all {
        assert_eq!(*st, 200, "{v}");
        assert_eq!(content(v), "Hello from m on a");
    }
    assert_eq!(a.load_calls(), ["m"], "one load for five requests");
    assert_eq!(a.chat_calls(), 5);
}

#[tokio::test]
async fn a_slow_load_answers_503_after_load_wait_and_still_completes() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .behaviour(|b| b.load_delay = Duration::from_millis(1500))
        .start()
        .await;
    let mut s = settings(&[&a]);
    s.config.limits.load_wait = ms(200);
    let gw = TestGateway::start_up(s).await;
    let r = no_hang(gw.post("/v1/chat/completions", &chat("m", false))).await;
    assert_eq!(r.status(), 503);
    assert!(retry_after(&r) >= 1);
    // Answered while the load was still running…
    assert_eq!(a.state("m"), Some(ModelState::Loading));
    // …which goes on, and serves the next request without a second load.
    gw.wait_ready("m", "a").await;
    assert_eq!(ask_ok(&gw, "m").await, "Hello from m on a");
    assert_eq!(a.load_calls(), ["m"]);
}

#[tokio::test]
async fn a_failed_load_is_reported_in_dialect_and_tried_again_later() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .behaviour(|b| b.load_fails = true)
        .start()
        .await;
    let gw = TestGateway::start_up(settings(&[&a])).await;
    let (st, v) = ask(&gw, "m").await;
    assert!(st >= 500, "{st}: {v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("m"), "{v}");
    let r = gw.post("/v1/messages", &messages("m", false)).await;
    assert!(r.status().as_u16() >= 500);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    a.set(|b| b.load_fails = false);
    assert_eq!(ask_ok(&gw, "m").await, "Hello from m on a");
    assert_eq!(a.load_calls(), ["m", "m", "m"]);
}

/// A neuron restarted between two polls has lost its models: it answers
/// 404 `model_not_found`. The gateway retries that request, but on the
/// replica its (stale) table still calls ready, so the client gets the
/// neuron's 404 for a model that exists until the next poll.
#[tokio::test]
async fn a_model_the_neuron_lost_is_loaded_again() {
    let a = FakeNeuron::serving("a", "m").await;
    let mut s = settings(&[&a]);
    s.config.gateway.poll_interval = ms(60_000);
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;
    a.forget("m");
    let (st, v) = ask(&gw, "m").await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(a.load_calls(), ["m"]);
}

#[tokio::test]
async fn lru_evicts_the_least_recently_used_model() {
    let a = two_of_three_fit().await;
    let gw = TestGateway::start_up(settings(&[&a])).await;
    for m in ["m1", "m2", "m3"] {
        ask_ok(&gw, m).await;
    }
    assert_eq!(a.unload_calls(), ["m1"]);
    assert_eq!(a.loaded(), ["m2", "m3"]);
    assert!(a.max_used() <= 200 && a.over_budget() == 0);
    gw.wait_for("m2, m3 placed", |v| placed_on(v, "a") == ["m2", "m3"])
        .await;
    let text = gw.metrics_text().await;
    let labels = ["model=\"m1\"", "reason=\"room\""];
    assert_eq!(
        metric(&text, "cortex_model_evictions_total", &labels),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn priority_strategy_evicts_the_lowest_priority_first() {
    let a = two_of_three_fit().await;
    let mut s = with_models(
        settings(&[&a]),
        r#"
[[models]]
id = "m1"
source = "m1.gguf"
priority = 5
[[models]]
id = "m2"
source = "m2.gguf"
priority = 1
[[models]]
id = "m3"
source = "m3.gguf"
priority = 10
"#,
    );
    s.config.eviction.strategy = "priority".into();
    let gw = TestGateway::start_up(s).await;
    for m in ["m1", "m2", "m3"] {
        ask_ok(&gw, m).await;
    }
    // m1 is the least recently used, but m2 has the lowest priority.
    assert_eq!(a.unload_calls(), ["m2"]);
    assert_eq!(a.loaded(), ["m1", "m3"]);
}

#[tokio::test]
async fn pinned_models_load_at_start_and_are_never_evicted() {
    let a = FakeNeuron::builder("a")
        .budget(200)
        .file("p", 100)
        .file("x", 100)
        .file("y", 150)
        .file("z", 100)
        .start()
        .await;
    let s = with_models(
        settings(&[&a]),
        "[[models]]\nid = \"p\"\nsource = \"p.gguf\"\npinned = true\n",
    );
    let gw = TestGateway::start(s).await;
    gw.wait_ready("p", "a").await;
    assert_eq!(a.load_calls(), ["p"], "loaded without any request");
    assert_eq!(a.chat_calls(), 0);

    ask_ok(&gw, "x").await;
    // y fits only if the pinned model goes: refused, with a retry-after.
    let r = gw.post("/v1/chat/completions", &chat("y", false)).await;
    assert_eq!(r.status(), 503);
    assert!(retry_after(&r) >= 1);
    assert!(a.unload_calls().is_empty());
    // z fits by evicting x, never p.
    ask_ok(&gw, "z").await;
    assert_eq!(a.unload_calls(), ["x"]);
    assert_eq!(a.loaded(), ["p", "z"]);
}

#[tokio::test]
async fn a_runtime_pin_protects_from_eviction_and_unload() {
    let a = two_of_three_fit().await;
    let gw = TestGateway::start_up(settings(&[&a])).await;
    ask_ok(&gw, "m1").await;
    let r = gw.post("/admin/models/m1/pin", &json!({})).await;
    assert_eq!(r.status(), 200);
    ask_ok(&gw, "m2").await;
    ask_ok(&gw, "m3").await;
    assert_eq!(a.unload_calls(), ["m2"], "the pinned LRU model stays");
    let r = gw.post("/admin/models/m1/unload", &json!({})).await;
    assert_eq!(r.status(), 409);
    let r = gw.post("/admin/models/m1/unpin", &json!({})).await;
    assert_eq!(r.status(), 200);
    let r = gw.post("/admin/models/m1/unload", &json!({})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(a.unload_calls(), ["m2", "m1"]);
}

/// The guard's moment lies beyond `load_wait`: 503 / 529 at once, with
/// `Retry-After`, and nothing evicted.
#[tokio::test]
async fn thrash_guard_refuses_to_evict_a_model_just_loaded() {
    let a = one_of_two_fits().await;
    let mut s = settings(&[&a]);
    s.config.eviction.min_residency = ms(60_000);
    s.config.limits.load_wait = ms(2_000);
    let gw = TestGateway::start_up(s).await;
    ask_ok(&gw, "m1").await;
    let r = gw.post("/v1/chat/completions", &chat("m2", false)).await;
    assert_eq!(r.status(), 503);
    let after = retry_after(&r);
    assert!((1..=60).contains(&after), "retry-after {after}");
    let r = gw.post("/v1/messages", &messages("m2", false)).await;
    assert_eq!(r.status(), 529);
    assert!(r.headers().contains_key("retry-after"));
    assert!(a.unload_calls().is_empty());
    assert_eq!(a.loaded(), ["m1"]);
}

/// The guard's moment comes within `load_wait`: the request waits for it,
/// then the young model is evicted and the request answered; one for the
/// model just evicted then waits for the new one to grow up in turn (no
/// swap per request).
#[tokio::test]
async fn a_request_held_by_the_thrash_guard_waits_and_is_served() {
    let a = one_of_two_fits().await;
    let mut s = settings(&[&a]);
    s.config.eviction.min_residency = ms(1_500);
    s.config.limits.load_wait = ms(10_000);
    let gw = TestGateway::start_up(s).await;
    ask_ok(&gw, "m1").await;
    let started = std::time::Instant::now();
    let r = gw.post("/v1/chat/completions", &chat("m2", false)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1_000),
        "no wait for the guard: {waited:?}"
    );
    assert_eq!(a.unload_calls(), ["m1"]);
    assert_eq!(a.loaded(), ["m2"]);
    // Back to m1 (Anthropic dialect): m2 is young now, so this one waits too.
    let started = std::time::Instant::now();
    let r = gw.post("/v1/messages", &messages("m1", false)).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert!(started.elapsed() >= Duration::from_millis(1_000));
    assert_eq!(a.unload_calls(), ["m1", "m2"]);
}

/// The only room is held by a model with a request in flight: a request
/// for another model waits for it to end (within `load_wait`), then the
/// idle model is evicted and the request answered; the stream that held
/// the room runs to its end. With the stream longer than `load_wait`: 503
/// with `Retry-After`, and nothing evicted.
#[tokio::test]
async fn a_request_for_room_held_by_a_busy_model_waits_for_it() {
    let a = one_of_two_fits().await;
    let mut s = settings(&[&a]);
    s.config.limits.load_wait = ms(10_000);
    let gw = TestGateway::start_up(s).await;
    ask_ok(&gw, "m1").await;
    a.set(|b| {
        b.chunk_delay = Duration::from_millis(50);
        b.extra_chunks = 20;
    });
    let held = gw.post("/v1/chat/completions", &chat("m1", true)).await;
    assert_eq!(held.status(), 200);
    let body = chat("m2", false);
    let (r, text) = tokio::join!(gw.post("/v1/chat/completions", &body), held.text());
    let text = text.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(a.unload_calls(), ["m1"]);
    assert_eq!(a.loaded(), ["m2"]);

    let mut s = settings(&[&a]);
    s.config.limits.load_wait = ms(300);
    let gw = TestGateway::start_up(s).await;
    a.set(|b| b.extra_chunks = 200);
    let held = gw.post("/v1/chat/completions", &chat("m2", true)).await;
    assert_eq!(held.status(), 200);
    let r = no_hang(gw.post("/v1/messages", &messages("m1", false))).await;
    assert_eq!(r.status(), 529);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(a.unload_calls(), ["m1"], "nothing more evicted");
}

#[tokio::test]
async fn idle_models_are_unloaded_but_pinned_ones_stay() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .file("p", 100)
        .start()
        .await;
    let mut s = with_models(
        settings(&[&a]),
        "[[models]]\nid = \"p\"\nsource = \"p.gguf\"\npinned = true\n",
    );
    s.config.eviction.idle_unload_after = ms(1000);
    let gw = TestGateway::start(s).await;
    gw.wait_ready("p", "a").await;
    ask_ok(&gw, "m").await;
    eventually("m unloaded when idle", || async {
        a.unload_calls() == ["m"]
    })
    .await;
    assert_eq!(a.loaded(), ["p"]);
    let text = gw.metrics_text().await;
    let labels = ["model=\"m\"", "reason=\"idle\""];
    assert_eq!(
        metric(&text, "cortex_model_evictions_total", &labels),
        Some(1.0)
    );
}

/// Two fakes with `m` ready, polled once only (so that what the gateway
/// learns about `a` comes from requests).
async fn two_ready_polled_once() -> (FakeNeuron, FakeNeuron, TestGateway) {
    let a = FakeNeuron::serving("a", "m").await;
    let b = FakeNeuron::serving("b", "m").await;
    let mut s = settings(&[&a, &b]);
    s.config.gateway.poll_interval = ms(60_000);
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;
    gw.wait_ready("m", "b").await;
    (a, b, gw)
}

#[tokio::test]
async fn a_poisoned_answer_is_retried_elsewhere_and_the_replica_leaves_routing() {
    let (a, b, gw) = two_ready_polled_once().await;
    a.poison("m", true);
    // Ties go to `a`; it answers 503 model_poisoned, so `b` serves.
    for _ in 0..3 {
        assert_eq!(ask_ok(&gw, "m").await, "Hello from m on b");
    }
    assert_eq!((a.chat_calls(), b.chat_calls()), (1, 3));
    // Poisoned there (or already unloaded by the evictor, which is quick).
    let v = gw.view().await;
    assert_ne!(placement(&v, "m", "a"), Some(ModelState::Ready));
    // The evictor unloads poisoned replicas.
    eventually("poisoned m unloaded from a", || async {
        a.unload_calls() == ["m"]
    })
    .await;
    assert!(b.unload_calls().is_empty());
}

#[tokio::test]
async fn a_model_poisoned_in_status_is_never_routed_to() {
    let a = FakeNeuron::serving("a", "m").await;
    let b = FakeNeuron::serving("b", "m").await;
    let gw = TestGateway::start(settings(&[&a, &b])).await;
    gw.wait_ready("m", "b").await;
    a.poison("m", true);
    gw.wait_for("m poisoned on a", |v| {
        placement(v, "m", "a") != Some(ModelState::Ready)
    })
    .await;
    for _ in 0..3 {
        assert_eq!(ask_ok(&gw, "m").await, "Hello from m on b");
    }
    assert_eq!(a.chat_calls(), 0);
}

#[tokio::test]
async fn affinity_restricts_placement() {
    let a = FakeNeuron::builder("a").file("m", 100).start().await;
    let b = FakeNeuron::builder("b").file("m", 100).start().await;
    let s = with_models(
        settings(&[&a, &b]),
        "[[models]]\nid = \"m\"\nsource = \"m.gguf\"\nneurons = [\"b\"]\n",
    );
    let gw = TestGateway::start(s).await;
    let v = gw.wait_up(&["a", "b"]).await;
    let entry = v.models.iter().find(|m| m.id == "m").unwrap();
    assert_eq!(entry.loadable_on, ["b"]);
    for _ in 0..3 {
        assert_eq!(ask_ok(&gw, "m").await, "Hello from m on b");
    }
    let r = gw.post("/admin/models/m/load", &json!({"node": "a"})).await;
    assert_ne!(r.status(), 200, "{:?}", r.text().await);
    assert!(a.traffic().is_empty(), "{:?}", a.traffic());
}

/// A step of the property test: one request, or two at once.
fn step() -> impl Strategy<Value = (usize, Option<usize>)> {
    (0usize..3, proptest::option::of(0usize..3))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Whatever the order of requests over three models with room for two,
    /// the neuron is never asked to hold more than its budget, and the
    /// gateway's own view of it settles within the budget.
    #[test]
    fn random_requests_never_overfill_a_neuron(steps in proptest::collection::vec(step(), 1..8)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let a = FakeNeuron::builder("a")
                .budget(200)
                .file("m0", 100)
                .file("m1", 100)
                .file("m2", 100)
                .start()
                .await;
            let gw = TestGateway::start_up(settings(&[&a])).await;
            for (first, second) in steps {
                let m1 = format!("m{first}");
                let results = match second {
                    None => vec![ask(&gw, &m1).await],
                    Some(s) => {
                        let m2 = format!("m{s}");
                        let (x, y) = futures::join!(ask(&gw, &m1), ask(&gw, &m2));
                        vec![x, y]
                    }
                };
                for (st, v) in results {
                    assert!(st == 200 || st == 503, "{st}: {v}");
                }
                assert!(a.max_used() <= 200, "fake held {} bytes", a.max_used());
                assert_eq!(a.over_budget(), 0, "a load was sent without room");
            }
            gw.wait_for("the view within budget", |v| {
                let used: u64 = v
                    .models
                    .iter()
                    .flat_map(|m| &m.placements)
                    .map(|p| p.memory_bytes + p.kv_reserve_bytes)
                    .sum();
                used <= 200
            })
            .await;
        });
    }
}

/// Defragmentation: `big` fits node a only once a's two idle small models
/// have moved to b (which has room for them but not the big file); the
/// evictor moves them (load on b, then unload on a) and `big` then loads on
/// a without evicting anything.
#[tokio::test]
async fn defragmentation_moves_idle_models_to_make_room() {
    let a = FakeNeuron::builder("a")
        .budget(200)
        .file("s1", 60)
        .file("s2", 60)
        .file("big", 150)
        .loaded("s1")
        .loaded("s2")
        .start()
        .await;
    let b = FakeNeuron::builder("b")
        .budget(200)
        .file("s1", 60)
        .file("s2", 60)
        .start()
        .await;
    let mut s = settings(&[&a, &b]);
    s.config.eviction.defrag_after_cycles = 1;
    let gw = TestGateway::start_up(s).await;
    eventually("s1 and s2 moved from a to b", || async {
        let mut on_b = b.loaded();
        on_b.sort();
        on_b == ["s1", "s2"] && a.loaded().is_empty()
    })
    .await;
    let mut unloaded = a.unload_calls();
    unloaded.sort();
    assert_eq!(unloaded, ["s1", "s2"], "moved, not dropped");
    assert!(b.unload_calls().is_empty());
    // Now the big model fits a, and nothing has to be evicted for it.
    ask_ok(&gw, "big").await;
    assert_eq!(a.loaded(), ["big"]);
    assert_eq!(a.unload_calls().len(), 2, "no eviction for big");
    assert!(a.over_budget() == 0 && b.over_budget() == 0);
    let text = gw.metrics_text().await;
    for m in ["s1", "s2"] {
        let labels = [
            &format!("model=\"{m}\"")[..],
            "node=\"a\"",
            "reason=\"defrag\"",
        ];
        assert_eq!(
            metric(&text, "cortex_model_evictions_total", &labels),
            Some(1.0),
            "{m}"
        );
    }
}
