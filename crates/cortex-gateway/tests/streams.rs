//! Streams through the gateway against fake neurons: streams that break,
//! stall or send over-long lines end with an error event in the caller's
//! dialect and are never retried; first-token and idle limits but no total
//! limit; Anthropic pings keep a slow prefill alive; a client that goes away
//! cancels the upstream stream; a finished stream leaves its connection to
//! the next request. In real time, as `reliability.rs` explains.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use futures::StreamExt;

/// Read a streamed answer until `done` says so or it ends.
async fn read_until(resp: reqwest::Response, done: impl Fn(&str) -> bool) -> String {
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        if done(&text) {
            break;
        }
    }
    text
}

/// Two fakes with `m` ready whose streams break after two chunks.
async fn two_cutting() -> (FakeNeuron, FakeNeuron, TestGateway) {
    let fake = |name: &'static str| {
        FakeNeuron::builder(name)
            .file("m", 100)
            .loaded("m")
            .behaviour(|b| b.cut_after = Some(2))
            .start()
    };
    let (a, b) = (fake("a").await, fake("b").await);
    let gw = TestGateway::start(settings(&[&a, &b])).await;
    gw.wait_ready("m", "a").await;
    gw.wait_ready("m", "b").await;
    (a, b, gw)
}

#[tokio::test]
async fn an_openai_stream_broken_after_its_first_byte_ends_with_an_error_chunk() {
    let (a, b, gw) = two_cutting().await;
    let r = gw.post("/v1/chat/completions", &chat("m", true)).await;
    assert_eq!(r.status(), 200);
    let events = parse_sse(&no_hang(r.text()).await.unwrap());
    let last = events.last().unwrap().json();
    assert!(last["error"]["message"].is_string(), "{events:?}");
    assert!(events.iter().all(|e| e.data != "[DONE]"), "{events:?}");
    assert_eq!(streamed_text(&events), "Hello ");
    assert_eq!(a.chat_calls() + b.chat_calls(), 1, "never retried");
}

#[tokio::test]
async fn an_anthropic_stream_broken_after_its_first_byte_ends_with_an_error_event() {
    let (a, b, gw) = two_cutting().await;
    let r = gw.post("/v1/messages", &messages("m", true)).await;
    assert_eq!(r.status(), 200);
    let events = parse_sse(&no_hang(r.text()).await.unwrap());
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    assert_eq!(names.first(), Some(&"message_start"), "{names:?}");
    assert_eq!(names.last(), Some(&"error"), "{names:?}");
    assert_eq!(names.iter().filter(|n| **n == "error").count(), 1);
    assert!(!names.contains(&"message_stop"), "{names:?}");
    let e = events.last().unwrap().json();
    assert_eq!(e["type"], "error");
    assert!(e["error"]["message"].is_string(), "{e}");
    assert_eq!(a.chat_calls() + b.chat_calls(), 1, "never retried");
}

#[tokio::test]
async fn a_stream_that_ends_without_done_is_never_a_silent_cut() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .loaded("m")
        .behaviour(|b| b.end_after = Some(3))
        .start()
        .await;
    let gw = TestGateway::start(settings(&[&a])).await;
    gw.wait_ready("m", "a").await;
    let r = gw.post("/v1/chat/completions", &chat("m", true)).await;
    let events = parse_sse(&no_hang(r.text()).await.unwrap());
    assert!(
        events.last().unwrap().json()["error"]["message"].is_string(),
        "{events:?}"
    );
    let r = gw.post("/v1/messages", &messages("m", true)).await;
    let events = parse_sse(&no_hang(r.text()).await.unwrap());
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("error"),
        "{events:?}"
    );
    assert_eq!(a.chat_calls(), 2);
}

#[tokio::test]
async fn an_endless_upstream_line_ends_the_stream_cleanly() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .loaded("m")
        .behaviour(|b| b.endless_line_after = Some(2))
        .start()
        .await;
    let mut s = settings(&[&a]);
    s.config.limits.max_upstream_line = kib(4);
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;

    let r = gw.post("/v1/chat/completions", &chat("m", true)).await;
    let events = parse_sse(&no_hang(r.text()).await.unwrap());
    let last = events.last().unwrap().json();
    let msg = last["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("longer than"), "{events:?}");
    assert!(events.iter().all(|e| e.data.len() < 4096));

    let r = gw.post("/v1/messages", &messages("m", true)).await;
    let events = parse_sse(&no_hang(r.text()).await.unwrap());
    assert_eq!(
        events.last().unwrap().event.as_deref(),
        Some("error"),
        "{events:?}"
    );
    // The gateway stopped reading: the fake's endless streams were dropped.
    eventually("upstream streams dropped", || async {
        a.streams_cancelled() == 2
    })
    .await;
}

#[tokio::test]
async fn streams_have_first_token_and_idle_limits_but_no_total_limit() {
    let a = FakeNeuron::serving("a", "m").await;
    let mut s = settings(&[&a]);
    s.config.limits.first_byte_timeout = ms(1000);
    s.config.limits.idle_timeout = ms(1000);
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;

    // Silent for 3 s after the first token: cut at the idle limit.
    a.set(|b| b.stall_after = Some((2, Duration::from_secs(3))));
    let r = gw.post("/v1/chat/completions", &chat("m", true)).await;
    let events = parse_sse(&no_hang(r.text()).await.unwrap());
    let last = events.last().unwrap().json();
    let msg = last["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("between tokens"), "{events:?}");

    // Silent before the first token: cut at the first-token limit.
    a.set(|b| b.stall_after = Some((0, Duration::from_secs(3))));
    let r = gw.post("/v1/chat/completions", &chat("m", true)).await;
    let events = parse_sse(&no_hang(r.text()).await.unwrap());
    let last = events.last().unwrap().json();
    let msg = last["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("before the first token"), "{events:?}");

    // Steady tokens for longer than both limits together: fine.
    a.set(|b| {
        b.stall_after = None;
        b.chunk_delay = Duration::from_millis(100);
        b.extra_chunks = 25;
    });
    let r = gw.post("/v1/chat/completions", &chat("m", true)).await;
    let events = parse_sse(&no_hang(r.text()).await.unwrap());
    assert_eq!(events.last().unwrap().data, "[DONE]", "{events:?}");
}

#[tokio::test]
async fn anthropic_pings_while_the_first_token_is_slow() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .loaded("m")
        .behaviour(|b| b.first_chunk_delay = Duration::from_millis(700))
        .start()
        .await;
    let mut s = settings(&[&a]);
    s.config.limits.ping_interval = ms(100);
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;
    let r = gw.post("/v1/messages", &messages("m", true)).await;
    let events = parse_sse(&no_hang(r.text()).await.unwrap());
    let names: Vec<&str> = events.iter().map(|e| e.event.as_deref().unwrap()).collect();
    let first_block = names
        .iter()
        .position(|n| *n == "content_block_start")
        .unwrap();
    let pings = names[..first_block]
        .iter()
        .filter(|n| **n == "ping")
        .count();
    assert!(pings >= 2, "{names:?}");
    assert_eq!(names[0], "message_start");
    assert_eq!(names.last(), Some(&"message_stop"));
    for e in events.iter().filter(|e| e.event.as_deref() == Some("ping")) {
        assert_eq!(e.json()["type"], "ping");
    }
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_the_upstream_stream() {
    let a = FakeNeuron::builder("a")
        .file("m", 100)
        .loaded("m")
        .behaviour(slow)
        .start()
        .await;
    let gw = TestGateway::start(settings(&[&a])).await;
    gw.wait_ready("m", "a").await;

    for (path, body) in [
        ("/v1/chat/completions", chat("m", true)),
        ("/v1/messages", messages("m", true)),
    ] {
        let r = gw.post(path, &body).await;
        let text = read_until(r, |t| t.contains("Hello")).await;
        assert!(text.contains("Hello"), "{text}");
        // The response (and its connection) is dropped here.
    }
    eventually("both upstream streams dropped", || async {
        a.streams_cancelled() == 2
    })
    .await;
    assert_eq!(a.streams_finished(), 0);
    gw.wait_for("nothing in flight", |v| {
        v.models[0].placements.iter().all(|p| p.in_flight == 0)
    })
    .await;
}

/// A stream read to its `[DONE]` leaves its neuron connection to the next
/// request: a few connections serve many streams in both dialects (one
/// closed after each stream would cost every stream a new connection).
#[tokio::test]
async fn finished_streams_leave_their_connection_to_the_next_request() {
    let a = FakeNeuron::serving("a", "m").await;
    let mut s = settings(&[&a]);
    s.config.gateway.poll_interval = ms(60_000);
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;
    let before = a.connections();
    for _ in 0..5 {
        for (path, body) in [
            ("/v1/chat/completions", chat("m", true)),
            ("/v1/messages", messages("m", true)),
        ] {
            let r = gw.post(path, &body).await;
            let text = no_hang(r.text()).await.unwrap();
            assert!(
                text.contains("[DONE]") || text.contains("message_stop"),
                "{text}"
            );
        }
    }
    assert_eq!(a.streams_finished(), 10);
    assert!(
        a.connections() - before <= 1,
        "{} connections for 10 streams",
        a.connections() - before
    );
}
