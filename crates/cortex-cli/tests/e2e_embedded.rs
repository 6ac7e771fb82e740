//! End to end through the real `cortex` binary in embedded mode: `cortex
//! serve` with no `--config` (run from an empty temporary directory, so no
//! `./cortex.toml` or `./models` is picked up by accident) starts the
//! gateway and an in-process neuron on loopback. Real inference over real
//! HTTP in both dialects, the `cortex status` table (golden, with the
//! variable parts masked), graceful shutdown during a stream, the hint for
//! an empty models directory, and `--help` / `--version` of both binaries.

#![allow(clippy::unwrap_used)]

mod e2e_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;

use e2e_common::*;
use serde_json::{json, Value};

/// A scratch working directory with `models/` holding only the default
/// model, and `cortex serve` started there in embedded mode.
struct Embedded {
    gw: Gateway,
    _tmp: tempfile::TempDir,
}

/// Whether a system-wide `cortex.toml` would turn embedded mode off; such a
/// machine cannot run these tests (the same rule as a missing model).
fn system_config_absent() -> bool {
    let path = Path::new("/etc/cortex/cortex.toml");
    if !path.exists() {
        return true;
    }
    let msg = format!(
        "{} exists, so `cortex serve` is not in embedded mode",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

impl Embedded {
    /// With the default model; `None` when it is missing.
    fn start() -> Option<Self> {
        let source = models_dir()?;
        if !system_config_absent() {
            return None;
        }
        let tmp = tempdir();
        let models = tmp.path().join("models");
        model_links(&source, &models, &[MODEL_FILE.trim_end_matches(".gguf")]);
        Some(Self::in_dir(tmp, &models))
    }

    fn in_dir(tmp: tempfile::TempDir, models: &Path) -> Self {
        let gw = spawn_gateway(
            tmp.path(),
            &[
                "--models-dir".as_ref(),
                models.as_os_str(),
                "--neuron-listen".as_ref(),
                "127.0.0.1:0".as_ref(),
            ],
        );
        wait_until("the local neuron up", WAIT, || {
            (node_up(&fleet(&gw.api), "local") == Some(true)).then_some(())
        });
        Self { gw, _tmp: tmp }
    }

    fn api(&self) -> &str {
        &self.gw.api
    }
}

#[test]
fn embedded_mode_serves_the_default_model_in_both_dialects() {
    let Some(e) = Embedded::start() else { return };
    assert_eq!(model_ids(e.api()), [MODEL_ID]);

    let (s, v) = chat(e.api(), MODEL_ID, FRANCE, 30);
    assert_eq!(s, 200, "{v}");
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.contains("Paris"), "{v}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0, "{v}");

    let (s, v, _) = post(
        &format!("{}/v1/messages", e.api()),
        &json!({
            "model": MODEL_ID,
            "max_tokens": 30,
            "temperature": 0,
            "messages": [{"role": "user", "content": FRANCE}],
        }),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["type"], "message", "{v}");
    assert_eq!(v["role"], "assistant", "{v}");
    assert_eq!(v["content"][0]["type"], "text", "{v}");
    assert!(
        v["content"][0]["text"].as_str().unwrap().contains("Paris"),
        "{v}"
    );
    assert!(
        ["end_turn", "max_tokens"].contains(&v["stop_reason"].as_str().unwrap()),
        "{v}"
    );
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 0, "{v}");
}

/// `cortex status` with what changes from run to run masked: ports, sizes,
/// memory bars and "12s ago". Columns are re-joined with two spaces, since
/// their widths follow the masked values.
fn mask_status(table: &str) -> String {
    table
        .lines()
        .map(|line| {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(mask_cell)
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `12s`, `3m`, `5h`, `2d`: the number part of "12s ago".
fn is_age(w: &str) -> bool {
    w.strip_suffix(['s', 'm', 'h', 'd'])
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

fn mask_cell(cell: &str) -> String {
    // The CACHED column: conversations and tokens in the prefix cache.
    if cell.ends_with(" tok") {
        return "[CACHED]".into();
    }
    let words: Vec<&str> = cell.split(' ').collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let next = words.get(i + 1).copied().unwrap_or_default();
        let is_number = !w.is_empty() && w.chars().all(|c| c.is_ascii_digit() || c == '.');
        let is_bar = w.len() == 22
            && w.starts_with('[')
            && w.ends_with(']')
            && w[1..21].chars().all(|c| c == '#' || c == '.');
        if let Some(port) = w.strip_prefix("http://127.0.0.1:") {
            assert!(port.chars().all(|c| c.is_ascii_digit()), "{cell}");
            out.push("http://127.0.0.1:[PORT]".into());
        } else if is_bar {
            out.push("[BAR]".into());
        } else if is_number && ["B", "KiB", "MiB", "GiB", "TiB"].contains(&next) {
            out.push("[SIZE]".into());
            i += 1;
        } else if (w == "just" && next == "now") || (is_age(w) && next == "ago") {
            out.push("[AGO]".into());
            i += 1;
        } else {
            out.push(w.to_string());
        }
        i += 1;
    }
    out.join(" ")
}

#[test]
fn cortex_status_shows_the_embedded_fleet() {
    let Some(e) = Embedded::start() else { return };
    let before = mask_status(&cortex_ok(&["status", "--no-color", "--gateway", e.api()]));
    insta::assert_snapshot!("status_before_load", before);

    let out = cortex_ok(&["load", MODEL_ID, "--gateway", e.api()]);
    assert!(
        out.starts_with(&format!("loaded {MODEL_ID} on local in ")),
        "{out}"
    );
    let (s, v) = chat(e.api(), MODEL_ID, "Say hello.", 4);
    assert_eq!(s, 200, "{v}");
    // The conversation reaches the prefix cache report with the next poll.
    wait_until("the conversation reported cached", WAIT, || {
        let json = cortex_ok(&["status", "--json", "--gateway", e.api()]);
        let view: cortex_core::fleet::FleetView = serde_json::from_str(&json).unwrap();
        (view.models[0].placements.first()?.cached_conversations == 1).then_some(())
    });
    let after = mask_status(&cortex_ok(&["status", "--no-color", "--gateway", e.api()]));
    insta::assert_snapshot!("status_after_load", after);

    let json = cortex_ok(&["status", "--json", "--gateway", e.api()]);
    let view: cortex_core::fleet::FleetView = serde_json::from_str(&json).unwrap();
    assert_eq!(view.nodes.len(), 1, "{json}");
    assert_eq!(view.nodes[0].name, "local");
    assert!(view.nodes[0].up, "{json}");
    assert_eq!(view.models.len(), 1, "{json}");
    assert_eq!(view.models[0].id, MODEL_ID);
    assert_eq!(view.models[0].placements.len(), 1, "{json}");
    assert_eq!(view.models[0].placements[0].node, "local");
}

#[test]
fn sigterm_during_a_stream_ends_it_cleanly_and_exits_zero() {
    let Some(mut e) = Embedded::start() else {
        return;
    };
    let (first_tx, first_rx) = mpsc::channel();
    let url = format!("{}/v1/chat/completions", e.api());
    let streamer = std::thread::spawn(move || {
        let mut body = chat_body(MODEL_ID, "Write a story about a dragon.", 40);
        body["stream"] = json!(true);
        let r = client().post(url).json(&body).send().unwrap();
        assert_eq!(r.status(), 200);
        let mut text = String::new();
        let mut told = false;
        for line in BufReader::new(r).lines() {
            let line = line.unwrap();
            if !told && line.starts_with("data: ") {
                told = true;
                let _ = first_tx.send(());
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    first_rx
        .recv_timeout(WAIT)
        .expect("the first chunk of the stream");
    e.gw.proc.signal("TERM");

    let body = streamer.join().unwrap();
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"), "{body}");
    let finish = data
        .iter()
        .filter(|d| *d != "[DONE]")
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["finish_reason"].as_str().map(String::from))
        .next_back();
    assert!(
        matches!(finish.as_deref(), Some("stop" | "length")),
        "{body}"
    );
    let status =
        e.gw.proc
            .wait_exit(WAIT)
            .expect("cortex serve exits after SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "cortex serve exit status {status:?}"
    );
}

#[test]
fn an_empty_models_dir_prints_how_to_fetch_the_model_and_still_serves() {
    if !system_config_absent() {
        return;
    }
    let tmp = tempdir();
    let models = tmp.path().join("models");
    std::fs::create_dir(&models).unwrap();
    let e = Embedded::in_dir(tmp, &models);

    let hints: Vec<String> =
        e.gw.proc
            .stderr_lines()
            .into_iter()
            .filter(|l| l.contains("scripts/fetch-model"))
            .collect();
    assert_eq!(hints.len(), 1, "{hints:?}");
    assert!(hints[0].starts_with("cortex: "), "{hints:?}");
    assert!(
        serde_json::from_str::<Value>(&hints[0]).is_err(),
        "{hints:?}"
    );

    let (s, v) = get(&format!("{}/health", e.api()));
    assert_eq!(s, 200, "{v}");
    assert!(model_ids(e.api()).is_empty());
}

fn run_ok(bin: &Path, arg: &str) -> String {
    let mut cmd = Command::new(bin);
    cmd.arg(arg);
    let out = run_bounded(cmd, WAIT).unwrap();
    assert!(out.status.success(), "{} {arg}: {out:?}", bin.display());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn help_and_version_of_both_binaries() {
    let version = env!("CARGO_PKG_VERSION");
    for (name, bin) in [("cortex", cortex_bin()), ("neuron", neuron_bin())] {
        let help = run_ok(&bin, "--help");
        assert!(help.contains(&format!("Usage: {name}")), "{help}");
        assert!(help.contains("serve"), "{help}");
        assert!(help.contains("--version"), "{help}");
        assert_eq!(run_ok(&bin, "--version"), format!("{name} {version}\n"));
    }
}
