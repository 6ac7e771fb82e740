//! Reliability promises against fake neurons: failed polls take a neuron out
//! of routing and a good poll brings it back; a refused connection is
//! retried once elsewhere (and attempts are capped); with nothing available
//! requests fail fast; one deadline bounds the wait for a load; admission
//! rejects at once when full; 4xx answers never count against a neuron; an
//! answer with bad framing is a 502 and its connection is closed. Streams
//! (broken, stalled, cancelled) are in `streams.rs`. All in real time, with
//! short intervals: the fakes are real sockets, and paused time would fire
//! the gateway's I/O timeouts while the runtime waits on them.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

async fn served_by(gw: &TestGateway, model: &str) -> String {
    let (st, v) = ask(gw, model).await;
    assert_eq!(st, 200, "{v}");
    content(&v).rsplit(' ').next().unwrap().to_string()
}

#[tokio::test]
async fn failing_polls_take_a_neuron_out_of_routing_until_it_answers_again() {
    let a = FakeNeuron::serving("a", "m").await;
    let b = FakeNeuron::serving("b", "m").await;
    let gw = TestGateway::start(settings(&[&a, &b])).await;
    gw.wait_ready("m", "a").await;
    gw.wait_ready("m", "b").await;

    a.set(|x| x.status_fails = true);
    let v = gw.wait_for("a down", |v| !node_up(v, "a")).await;
    let node = v.nodes.iter().find(|n| n.name == "a").unwrap();
    assert!(node.consecutive_failures >= 2, "{node:?}");
    let chats_before = a.chat_calls();
    for _ in 0..3 {
        assert_eq!(served_by(&gw, "m").await, "b");
    }
    assert_eq!(a.chat_calls(), chats_before, "a down neuron got traffic");

    a.set(|x| x.status_fails = false);
    gw.wait_ready("m", "a").await;
    // Back in routing: the least recently used replica is `a`.
    assert_eq!(served_by(&gw, "m").await, "a");
}

/// Two fakes with `m` ready, without keep-alive (so that a killed one is a
/// refused connection, not a stale pooled one), polled once only.
async fn two_ready(max_attempts: u32) -> (FakeNeuron, FakeNeuron, TestGateway) {
    let fake = |name: &'static str| {
        FakeNeuron::builder(name)
            .file("m", 100)
            .loaded("m")
            .keep_alive(false)
            .start()
    };
    let (a, b) = (fake("a").await, fake("b").await);
    let mut s = settings(&[&a, &b]);
    s.config.gateway.poll_interval = ms(60_000);
    s.config.limits.max_attempts = max_attempts;
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;
    gw.wait_ready("m", "b").await;
    (a, b, gw)
}

#[tokio::test]
async fn a_refused_connection_is_retried_once_elsewhere_and_the_neuron_marked_down() {
    let (mut a, b, gw) = two_ready(2).await;
    a.kill().await;
    // Ties go to `a`, which refuses; `b` serves the same request.
    let (st, v) = no_hang(ask(&gw, "m")).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(content(&v), "Hello from m on b");
    assert_eq!(b.chat_calls(), 1);
    assert!(!node_up(&gw.view().await, "a"), "a is marked down at once");
    assert!(node_up(&gw.view().await, "b"));
    let text = gw.metrics_text().await;
    assert_eq!(
        metric(&text, "cortex_upstream_retries_total", &["model=\"m\""]),
        Some(1.0)
    );
    assert_eq!(served_by(&gw, "m").await, "b");
}

/// The same with kept-alive connections: the crash also closes the
/// connections the gateway holds in its pool.
#[tokio::test]
async fn a_crashed_neuron_with_pooled_connections_is_retried_elsewhere() {
    let mut a = FakeNeuron::serving("a", "m").await;
    let b = FakeNeuron::serving("b", "m").await;
    let mut s = settings(&[&a, &b]);
    s.config.gateway.poll_interval = ms(60_000);
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;
    gw.wait_ready("m", "b").await;
    // One request each (a, then b): both have a pooled connection, and `a`
    // is now the least recently used.
    assert_eq!(served_by(&gw, "m").await, "a");
    assert_eq!(served_by(&gw, "m").await, "b");
    a.kill().await;
    assert_eq!(no_hang(served_by(&gw, "m")).await, "b");
    assert_eq!((a.chat_calls(), b.chat_calls()), (1, 2));
    assert!(!node_up(&gw.view().await, "a"));
}

#[tokio::test]
async fn attempts_per_request_are_capped() {
    let (mut a, b, gw) = two_ready(1).await;
    a.kill().await;
    let r = no_hang(gw.post("/v1/chat/completions", &chat("m", false))).await;
    assert_eq!(r.status(), 503, "one attempt only");
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(b.chat_calls(), 0);
}

#[tokio::test]
async fn with_only_dead_neurons_requests_fail_fast_in_both_dialects() {
    let (mut a, mut b, gw) = two_ready(2).await;
    a.kill().await;
    b.kill().await;
    let r = no_hang(gw.post("/v1/chat/completions", &chat("m", false))).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    let r = no_hang(gw.post("/v1/messages", &messages("m", false))).await;
    assert_eq!(r.status(), 529);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error", "{v}");
    let r = no_hang(gw.post("/v1/messages", &messages("m", true))).await;
    assert_eq!(r.status(), 529, "a stream fails before it starts");
}

#[tokio::test]
async fn a_neuron_that_never_answered_gives_503_fast() {
    let s = with_models(
        settings_for(&[("x", dead_endpoint().await)]),
        "[[models]]\nid = \"m\"\nsource = \"m.gguf\"\n",
    );
    let gw = TestGateway::start(s).await;
    eventually("a failed poll", || async {
        gw.view().await.nodes[0].consecutive_failures > 0
    })
    .await;
    assert_eq!(gw.get("/ready").await.status(), 503);
    let r = no_hang(gw.post("/v1/chat/completions", &chat("m", false))).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let r = no_hang(gw.post("/v1/messages", &messages("m", false))).await;
    assert_eq!(r.status(), 529);
    assert!(r.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn one_deadline_bounds_the_wait_for_a_load() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .behaviour(|b| b.load_delay = Duration::from_millis(1500))
        .start()
        .await;
    let mut s = settings(&[&a]);
    s.config.limits.request_deadline = ms(200);
    let gw = TestGateway::start_up(s).await;
    let r = no_hang(gw.post("/v1/chat/completions", &chat("m", false))).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        a.state("m"),
        Some(cortex_core::neuron_api::ModelState::Loading),
        "answered before the load finished"
    );
}

#[tokio::test]
async fn admission_rejects_at_once_when_full() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .loaded("m")
        .file("n", 100)
        .loaded("n")
        .file("o", 100)
        .loaded("o")
        .behaviour(slow)
        .start()
        .await;
    let mut s = settings(&[&a]);
    s.config.limits.max_in_flight_total = 2;
    s.config.limits.max_in_flight_per_model = 1;
    s.config.limits.max_queued_per_model = 0;
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;

    let held = gw.post("/v1/chat/completions", &chat("m", true)).await;
    assert_eq!(held.status(), 200);
    let r = no_hang(gw.post("/v1/chat/completions", &chat("m", false))).await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    let r = no_hang(gw.post("/v1/messages", &messages("m", true))).await;
    assert_eq!(r.status(), 529);
    assert!(r.headers().contains_key("retry-after"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error", "{v}");
    // The total cap: one more for `n` fits, a third is rejected.
    let held_n = gw.post("/v1/chat/completions", &chat("n", true)).await;
    assert_eq!(held_n.status(), 200);
    let r = no_hang(gw.post("/v1/chat/completions", &chat("o", false))).await;
    assert_eq!(r.status(), 429, "over the total cap");
    assert_eq!(
        a.chat_calls(),
        2,
        "rejected requests never reached the neuron"
    );
    let in_flight = |text: &str, m: &str| {
        metric(
            text,
            "cortex_requests_in_flight",
            &[&format!("model=\"{m}\"")],
        )
    };
    let text = gw.metrics_text().await;
    assert_eq!(in_flight(&text, "m"), Some(1.0), "{text}");
    assert_eq!(in_flight(&text, "n"), Some(1.0), "{text}");
    drop(held_n);

    drop(held);
    a.set(|b| *b = Default::default());
    eventually("a slot frees up", || async { ask(&gw, "m").await.0 == 200 }).await;
    eventually("nothing in flight any more", || async {
        let text = gw.metrics_text().await;
        in_flight(&text, "m") == Some(0.0) && in_flight(&text, "n") == Some(0.0)
    })
    .await;
}

#[tokio::test]
async fn client_errors_from_a_neuron_never_count_against_it() {
    let a = FakeNeuron::serving("a", "m").await;
    let gw = TestGateway::start(settings(&[&a])).await;
    gw.wait_ready("m", "a").await;
    for status in [400u16, 404, 422, 400, 400] {
        a.set(|b| b.chat_status = Some(status));
        let (st, v) = ask(&gw, "m").await;
        assert_eq!(st, status, "{v}");
        assert_eq!(v["error"]["code"], "fake_error", "{v}");
        let r = gw.post("/v1/messages", &messages("m", false)).await;
        assert_eq!(
            r.status().as_u16(),
            if status == 422 { 400 } else { status }
        );
    }
    let v = gw.view().await;
    let node = &v.nodes[0];
    assert!(node.up && node.consecutive_failures == 0, "{node:?}");
    a.set(|b| b.chat_status = None);
    assert_eq!(served_by(&gw, "m").await, "a");
}

/// `count_tokens` goes to a neuron (and may load a model), so it passes
/// admission like any request: a full model turns it away before the neuron.
#[tokio::test]
async fn count_tokens_passes_admission_too() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .loaded("m")
        .behaviour(slow)
        .start()
        .await;
    let mut s = settings(&[&a]);
    s.config.limits.max_in_flight_per_model = 1;
    s.config.limits.max_queued_per_model = 0;
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;
    let held = gw.post("/v1/messages", &messages("m", true)).await;
    assert_eq!(held.status(), 200);
    let r = no_hang(gw.post("/v1/messages/count_tokens", &messages("m", false))).await;
    assert_eq!(r.status(), 529);
    assert!(r.headers().contains_key("retry-after"));
    assert!(a.calls("/tokenize").is_empty());
}

/// The framing cases a neuron's answer must not get away with (a length
/// with a sign, both `Transfer-Encoding` and `Content-Length`, bare-LF
/// chunk lines), from a neuron written over raw TCP: each is a 502 in the
/// caller's dialect, the request is not retried, and the connection that
/// carried it is closed, never used again.
#[tokio::test]
async fn an_answer_with_bad_framing_is_a_502_and_its_connection_is_never_reused() {
    use common::raw_neuron::RawNeuron;
    const GOOD: &[u8] =
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
    let cases: [(&str, &[u8]); 3] = [
        (
            "a length with a sign",
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: +2\r\n\r\n{}",
        ),
        (
            "both Transfer-Encoding and Content-Length",
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\ncontent-length: 7\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        ),
        (
            "bare-LF chunk lines",
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n2\n{}\n0\n\n",
        ),
    ];
    for (what, answer) in cases {
        let raw = RawNeuron::start("a", answer).await;
        let gw = TestGateway::start(settings_for(&[("a", raw.endpoint())])).await;
        gw.wait_ready("m", "a").await;
        for (path, body, anthropic) in [
            ("/v1/chat/completions", chat("m", false), false),
            ("/v1/messages", messages("m", false), true),
        ] {
            let r = no_hang(gw.post(path, &body)).await;
            assert_eq!(r.status(), 502, "{what}, {path}");
            let v: Value = r.json().await.unwrap();
            if anthropic {
                assert_eq!(v["type"], "error", "{what}: {v}");
                assert_eq!(v["error"]["type"], "api_error", "{what}: {v}");
            } else {
                assert_eq!(v["error"]["code"], "bad_gateway", "{what}: {v}");
            }
        }
        let bad = raw.chats();
        assert_eq!(bad.len(), 2, "{what}: never retried: {bad:?}");
        raw.answer_chats_with(GOOD);
        let (st, _) = ask(&gw, "m").await;
        assert_eq!(st, 200, "{what}");
        eventually(
            &format!("{what}: the bad answers' connections closed"),
            || async { bad.iter().all(|b| raw.closed().contains(&b.conn)) },
        )
        .await;
        for b in &bad {
            assert_eq!(
                raw.on_conn(b.conn).len(),
                raw.on_conn(b.conn).iter().position(|r| r == b).unwrap() + 1,
                "{what}: connection {} was used after its bad answer",
                b.conn
            );
        }
    }
}
