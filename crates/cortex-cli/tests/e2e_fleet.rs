//! End to end through real binaries and real HTTP (a fleet of
//! `e2e_common::fleet`), driven over HTTP and with the `cortex` command
//! line: cold loads, LRU eviction under `--memory-budget`, pinning (kept
//! across a gateway restart), `cortex status` / `cortex models`, and
//! conversations routed back to the neuron that holds their prefix. Faults
//! (a SIGKILLed neuron, a restart, a client that leaves) are in
//! `e2e_faults.rs`.

#![allow(clippy::unwrap_used)]

mod e2e_common;

use e2e_common::fleet::*;
use e2e_common::*;
use serde_json::Value;

#[test]
fn the_first_request_loads_the_model_cold() {
    let Some(f) = Fleet::start(&["nA", "nB"]) else {
        return;
    };
    let view = f.view();
    assert!(placements(&view, ALPHA).is_empty(), "{view}");
    assert!(placements(&view, BETA).is_empty(), "{view}");

    let v = f.chat_ok(ALPHA);
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(!content.trim().is_empty(), "{v}");
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    assert!(["stop", "length"].contains(&finish), "{v}");
    assert_eq!(v["model"], ALPHA, "{v}");

    let view = f.view();
    let ready = ready_on(&view, ALPHA);
    assert_eq!(ready.len(), 1, "alpha ready on exactly one node: {view}");
    assert!(["nA", "nB"].contains(&ready[0].as_str()), "{view}");
    assert!(placements(&view, BETA).is_empty(), "{view}");
    // The same request again is served by the loaded model.
    f.chat_ok(ALPHA);
    assert_eq!(ready_on(&f.view(), ALPHA), ready);
}

#[test]
fn lru_evicts_the_older_model_under_the_memory_budget() {
    let Some(f) = Fleet::start(&["nA"]) else {
        return;
    };
    let evictions = |m: &str| {
        metric_sum(
            &f.metrics(),
            "cortex_model_evictions_total",
            &[&format!("model=\"{m}\"")],
        )
    };
    assert_eq!(evictions(ALPHA), 0.0);
    f.chat_ok(ALPHA);
    assert_eq!(ready_on(&f.view(), ALPHA), ["nA"]);
    f.chat_ok(BETA);

    let view = f.view();
    assert_eq!(ready_on(&view, BETA), ["nA"], "{view}");
    assert!(placements(&view, ALPHA).is_empty(), "alpha evicted: {view}");
    assert_eq!(neuron_models(&f.neurons[0]), [pair(BETA, "ready")]);
    assert!(
        metric_sum(
            &f.metrics(),
            "cortex_model_evictions_total",
            &["model=\"alpha\"", "node=\"nA\"", "reason=\"room\""],
        ) >= 1.0,
        "{}",
        f.metrics()
    );
    assert_eq!(evictions(BETA), 0.0);
    // The neuron's budget really is what the gateway planned against.
    let (_, status) = get(&format!("{}/status", f.neurons[0].url));
    assert_eq!(status["devices"][0]["memory_budget_bytes"], f.budget);
}

/// A poll taken while alpha's request ran reported `in_flight: 1`; once the
/// request has ended the gateway's own counter wins, so beta evicts the idle
/// alpha at once instead of getting 503 "held by … busy … models".
#[test]
fn a_model_can_be_evicted_as_soon_as_its_last_request_ended() {
    let Some(f) = Fleet::start(&["nA"]) else {
        return;
    };
    // A generation long enough that a status poll (every 200 ms) sees it.
    let (s, v) = chat(f.api(), ALPHA, "Write a short poem about the sea.", 16);
    assert_eq!(s, 200, "{v}");
    // Nothing is in flight any more, whatever the last poll saw.
    assert_eq!(in_flight(&f.view(), ALPHA), Some(0));
    // Alpha is idle and may be evicted.
    let (s, v) = chat(f.api(), BETA, "Say hello.", 8);
    assert_eq!(s, 200, "beta right after alpha ended: {v}");
    assert_eq!(ready_on(&f.view(), BETA), ["nA"]);
}

#[test]
fn a_pinned_model_stays_until_unpinned() {
    let Some(f) = Fleet::start(&["nA"]) else {
        return;
    };
    assert_eq!(f.cli(&["pin", ALPHA]), "pinned alpha\n");
    // Pinned models are loaded by the gateway on its own.
    wait_until("pinned alpha loaded", WAIT, || {
        (ready_on(&f.view(), ALPHA) == ["nA"]).then_some(())
    });

    // One neuron, room for one model, and that one is pinned: beta gets 503
    // at once (waiting `load_wait` could not help) saying why.
    let (s, v, headers) = post(
        &format!("{}/v1/chat/completions", f.api()),
        &chat_body(BETA, "Say hello.", 8),
    );
    assert_eq!(s, 503, "{v}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{headers:?}");
    let message = v["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("pinned") && message.contains("unpin"),
        "{v}"
    );
    let view = f.view();
    assert_eq!(ready_on(&view, ALPHA), ["nA"], "{view}");
    assert!(placements(&view, BETA).is_empty(), "{view}");
    assert_eq!(neuron_models(&f.neurons[0]), [pair(ALPHA, "ready")]);
    let models = f.cli(&["models", "--json"]);
    let models: Value = serde_json::from_str(&models).unwrap();
    let alpha = models
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == ALPHA)
        .unwrap();
    assert_eq!(alpha["pinned"], true, "{models}");

    assert_eq!(f.cli(&["unpin", ALPHA]), "unpinned alpha\n");
    f.chat_ok(BETA);
    let view = f.view();
    assert_eq!(ready_on(&view, BETA), ["nA"], "{view}");
    assert!(placements(&view, ALPHA).is_empty(), "{view}");
}

#[test]
fn status_and_models_show_the_live_fleet() {
    let Some(f) = Fleet::start(&["nA", "nB"]) else {
        return;
    };
    let out = f.cli(&["load", ALPHA, "--node", "nB"]);
    assert!(out.starts_with("loaded alpha on nB in "), "{out}");

    let table = f.cli(&["status", "--no-color"]);
    let line = |prefix: &str| -> String {
        table
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?}:\n{table}"))
            .to_string()
    };
    assert!(table.starts_with("NODES\n"), "{table}");
    assert!(table.contains("\nMODELS\n"), "{table}");
    for n in &f.neurons {
        let l = line(&format!("{} ", n.name));
        assert!(l.contains(" UP "), "{l}");
        assert!(l.contains(&n.url), "{l}");
        assert!(l.contains(" cpu "), "{l}");
    }
    let alpha = line("alpha ");
    assert!(alpha.contains(" nB "), "{alpha}");
    assert!(alpha.contains(" ready "), "{alpha}");
    let beta = line("beta ");
    assert!(beta.contains("available on: nA, nB"), "{beta}");

    let listing = f.cli(&["models"]);
    let alpha = listing.lines().find(|l| l.starts_with("alpha ")).unwrap();
    assert!(alpha.ends_with("ready on: nB"), "{listing}");
    let beta = listing.lines().find(|l| l.starts_with("beta ")).unwrap();
    assert!(beta.ends_with("loadable on: nA, nB"), "{listing}");
    // SmolLM2's window: the loaded model's, and the unloaded file's header.
    assert!(
        listing.lines().next().unwrap().contains(" CONTEXT "),
        "{listing}"
    );
    assert!(alpha.contains(" 8192 "), "{listing}");
    assert!(beta.contains(" 8192 "), "{listing}");

    let json = f.cli(&["status", "--json"]);
    let view: cortex_core::fleet::FleetView = serde_json::from_str(&json).unwrap();
    let names: Vec<&str> = view.nodes.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, ["nA", "nB"]);
    assert!(view.nodes.iter().all(|n| n.up), "{json}");
    let mut ids: Vec<&str> = view.models.iter().map(|m| m.id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, [ALPHA, BETA]);
}

/// `cortex pin` is kept in the state file beside `cortex.toml`: a gateway
/// stopped and started again on the same files still has the model pinned
/// (and loads it on its own); an unpin is kept the same way; a corrupt
/// state file stops the start with its path named.
#[test]
fn pins_survive_a_gateway_restart() {
    let Some(mut f) = Fleet::start(&["nA"]) else {
        return;
    };
    let dir = f.tmp.path().to_path_buf();
    let config = dir.join("cortex.toml");
    let state = dir.join("cortex-state.json");
    let restart = |f: &mut Fleet| {
        f.gw.proc.signal("TERM");
        let st = f.gw.proc.wait_exit(WAIT).expect("the gateway did not stop");
        assert!(st.success(), "{st:?}");
        f.gw = spawn_gateway(&dir, &["--config".as_ref(), config.as_os_str()]);
        wait_until("nA up after the restart", WAIT, || {
            (node_up(&f.view(), "nA") == Some(true)).then_some(())
        });
    };
    let pinned = |f: &Fleet| -> bool {
        let models: Value = serde_json::from_str(&f.cli(&["models", "--json"])).unwrap();
        let m = models.as_array().unwrap().iter().find(|m| m["id"] == ALPHA);
        m.unwrap_or_else(|| panic!("no {ALPHA}: {models}"))["pinned"] == true
    };

    assert!(!state.exists());
    assert_eq!(f.cli(&["pin", ALPHA]), "pinned alpha\n");
    let kept: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(kept["pins"][ALPHA], true, "{kept}");

    restart(&mut f);
    assert!(pinned(&f), "the pin was lost in the restart");
    wait_until("the pinned model loaded by the new gateway", WAIT, || {
        (ready_on(&f.view(), ALPHA) == ["nA"]).then_some(())
    });

    assert_eq!(f.cli(&["unpin", ALPHA]), "unpinned alpha\n");
    restart(&mut f);
    assert!(!pinned(&f), "the unpin was lost in the restart");

    // A corrupt state file: a clear start-up error naming it.
    f.gw.proc.signal("TERM");
    f.gw.proc.wait_exit(WAIT).expect("the gateway did not stop");
    std::fs::write(&state, "{\"pins\": ").unwrap();
    let mut cmd = std::process::Command::new(cortex_bin());
    cmd.args(["serve", "--config"]).arg(&config).args([
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let out = run_bounded(cmd, WAIT).expect("cortex serve did not exit on a corrupt state file");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("corrupt") && err.contains(&state.display().to_string()),
        "{err}"
    );
    // Start the gateway again for the fleet's drop.
    std::fs::remove_file(&state).unwrap();
    f.gw = spawn_gateway(&dir, &["--config".as_ref(), config.as_os_str()]);
}

/// Cache-aware routing end to end: the model ready on two real neurons,
/// four conversations interleaved turn by turn. Every turn after the first
/// finds its whole previous prompt in the prefix cache (asserted from
/// `usage.prompt_tokens_details.cached_tokens`; each conversation has its
/// own system prompt, so a turn sent to the other neuron would find nothing),
/// and both neurons serve conversations.
#[test]
fn conversations_return_to_the_neuron_that_holds_their_prefix() {
    let Some(f) = Fleet::start(&["nA", "nB"]) else {
        return;
    };
    f.cli(&["load", ALPHA, "--node", "nA"]);
    f.cli(&["load", ALPHA, "--node", "nB"]);
    wait_until("alpha ready on both", WAIT, || {
        (ready_on(&f.view(), ALPHA).len() == 2).then_some(())
    });
    let url = format!("{}/v1/chat/completions", f.api());
    let mut convs: Vec<Vec<Value>> = (0..4)
        .map(|i| {
            vec![
                serde_json::json!({"role": "system", "content": format!(
                    "You are assistant number {i}. You answer questions about rivers, briefly and politely."
                )}),
                serde_json::json!({"role": "user", "content": format!("Conversation {i}: name a river.")}),
            ]
        })
        .collect();
    let mut last_prompt = [0u64; 4];
    for turn in 0..3 {
        for (i, c) in convs.iter_mut().enumerate() {
            let body = serde_json::json!({"model": ALPHA, "messages": c, "max_tokens": 8, "temperature": 0});
            let (s, v, _) = post(&url, &body);
            assert_eq!(s, 200, "{v}");
            let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
            let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or_else(|| panic!("no cached_tokens: {v}"));
            assert!(cached < prompt, "{v}");
            if turn > 0 {
                // The previous prompt's whole blocks, at least.
                let want = last_prompt[i] / 16 * 16;
                assert!(
                    cached >= want,
                    "conversation {i}, turn {turn}: {cached} cached of {prompt}, the previous prompt had {}",
                    last_prompt[i]
                );
            }
            last_prompt[i] = prompt;
            let answer = v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            c.push(serde_json::json!({"role": "assistant", "content": answer}));
            c.push(serde_json::json!({"role": "user", "content": "And another one?"}));
        }
    }
    let metrics = f.metrics();
    for node in ["nA", "nB"] {
        let served = metric_sum(
            &metrics,
            "cortex_requests_total",
            &[&format!("node=\"{node}\"")],
        );
        assert!(served >= 3.0, "{node} served {served} requests:\n{metrics}");
    }
    let hits = metric_sum(
        &metrics,
        "cortex_routing_decisions_total",
        &["reason=\"cached_prefix\""],
    );
    assert!(hits >= 8.0, "{hits} routed by cached prefix:\n{metrics}");
}
