//! Faults end to end through real binaries and real HTTP (a fleet of
//! `e2e_common::fleet`): a SIGKILLed neuron, re-admission after a restart
//! on the same port, and a client that leaves a stream stopping the
//! neuron's generation.

#![allow(clippy::unwrap_used)]

mod e2e_common;

use e2e_common::fleet::*;
use e2e_common::*;

/// A client that closes its stream after the first chunk: the gateway
/// closes its connection to the neuron, and the neuron stops generating
/// (it records the request as 499, and nothing stays in flight) long before
/// the 2,000 tokens asked for could have been generated.
#[test]
fn a_client_that_leaves_a_stream_stops_the_generation_on_the_neuron() {
    use std::io::{BufRead, BufReader};
    let Some(f) = Fleet::start(&["nA"]) else {
        return;
    };
    f.chat_ok(ALPHA);
    let neuron_metrics = format!("{}/metrics", f.neurons[0].url);
    let gone = |text: &str| {
        metric_sum(
            text,
            "neuron_requests_total",
            &["model=\"alpha\"", "status=\"499\""],
        )
    };
    assert_eq!(gone(&get_text(&neuron_metrics)), 0.0);

    let mut body = chat_body(
        ALPHA,
        "Count from 1 to 1000, separated by commas, without stopping.",
        2000,
    );
    body["stream"] = serde_json::json!(true);
    let r = client()
        .post(format!("{}/v1/chat/completions", f.api()))
        .json(&body)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut lines = BufReader::new(r).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("data: "), "{first}");
    drop(lines);

    // 2,000 tokens take well over a minute here; the cancel takes one step.
    let text = wait_until(
        "the neuron records the stream as abandoned",
        std::time::Duration::from_secs(20),
        || {
            let text = get_text(&neuron_metrics);
            (gone(&text) == 1.0).then_some(text)
        },
    );
    assert_eq!(
        metric_sum(&text, "neuron_requests_in_flight", &["model=\"alpha\""]),
        0.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "neuron_requests_total",
            &["model=\"alpha\"", "status=\"200\"", "stream=\"true\""]
        ),
        0.0,
        "the stream never ran to its end: {text}"
    );
}

#[test]
fn requests_survive_a_sigkilled_neuron() {
    let Some(mut f) = Fleet::start(&["nA", "nB"]) else {
        return;
    };
    let out = f.cli(&["load", ALPHA, "--node", "nA"]);
    assert!(out.starts_with("loaded alpha on nA in "), "{out}");
    let out = f.cli(&["load", ALPHA, "--node", "nB"]);
    assert!(out.starts_with("loaded alpha on nB in "), "{out}");
    let mut both = ready_on(&f.view(), ALPHA);
    both.sort();
    assert_eq!(both, ["nA", "nB"]);

    let status = f.neuron("nA").proc.kill_hard();
    assert!(!status.success());
    for i in 0..5 {
        let (s, v) = chat(f.api(), ALPHA, "Say hello.", 4);
        assert_eq!(s, 200, "request {i} after the kill: {v}");
    }
    wait_until("nA marked down", WAIT, || {
        (node_up(&f.view(), "nA") == Some(false)).then_some(())
    });
    let view = f.view();
    assert_eq!(node_up(&view, "nB"), Some(true), "{view}");
    assert!(ready_on(&view, ALPHA).contains(&"nB".to_string()), "{view}");
    let metrics = f.metrics();
    assert_eq!(
        metric_sum(&metrics, "cortex_neuron_up", &["node=\"nA\""]),
        0.0,
        "{metrics}"
    );
    // Every answer after the kill came from nB.
    assert!(
        metric_sum(
            &metrics,
            "cortex_requests_total",
            &["node=\"nB\"", "status=\"200\""]
        ) >= 5.0,
        "{metrics}"
    );
}

#[test]
fn a_restarted_neuron_is_admitted_again() {
    let Some(mut f) = Fleet::start(&["nA", "nB"]) else {
        return;
    };
    let addr = f.neuron("nA").addr.clone();
    f.neuron("nA").proc.kill_hard();
    wait_until("nA marked down", WAIT, || {
        (node_up(&f.view(), "nA") == Some(false)).then_some(())
    });

    let dir = f.models[0].clone();
    let budget = f.budget;
    let again = respawn_neuron("nA", &dir, Some(budget), &addr);
    assert_eq!(again.addr, addr);
    *f.neuron("nA") = again;
    wait_until("nA up again", WAIT, || {
        (node_up(&f.view(), "nA") == Some(true)).then_some(())
    });

    let out = f.cli(&["load", ALPHA, "--node", "nA"]);
    assert!(out.starts_with("loaded alpha on nA in "), "{out}");
    // alpha lives on nA only, so this request can only be served there.
    f.chat_ok(ALPHA);
    assert_eq!(ready_on(&f.view(), ALPHA), ["nA"]);
    let metrics = f.metrics();
    assert!(
        metric_sum(
            &metrics,
            "cortex_requests_total",
            &["model=\"alpha\"", "node=\"nA\"", "status=\"200\""]
        ) >= 1.0,
        "{metrics}"
    );
    assert_eq!(neuron_models(&f.neurons[0]), [pair(ALPHA, "ready")]);
}
