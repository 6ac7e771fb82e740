//! The real `cortex` binary against a fake gateway: a `std::net` listener on
//! `127.0.0.1:0` that records each request and answers from a canned table.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use cortex_core::fleet::{CatalogEntry, FleetView, NodeView, Placement};
use cortex_core::neuron_api::{DeviceKind, DeviceStatus, ModelState};
use serde_json::{json, Value};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: String,
}

/// A canned answer: status and JSON body.
type Reply = (u16, String);

struct FakeGateway {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeGateway {
    /// Answers `"METHOD /path"` from `routes`; anything else gets a 404
    /// in the OpenAI envelope.
    fn start(routes: Vec<(&str, Reply)>) -> Self {
        let routes: HashMap<String, Reply> = routes
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serve_one(stream, &routes, &record);
            }
        });
        Self { url, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_one(mut stream: TcpStream, routes: &HashMap<String, Reply>, seen: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let key = format!("{method} {path}");
    seen.lock().unwrap().push(Seen {
        method,
        path,
        headers,
        body: String::from_utf8(body).unwrap(),
    });
    let (status, body) = routes.get(&key).cloned().unwrap_or_else(|| {
        (
            404,
            json!({"error": {"message": format!("no route {key}"), "type": "not_found_error", "param": null, "code": null}})
                .to_string(),
        )
    });
    let answer = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(answer.as_bytes());
}

/// Run `cortex ARGS` with a clean environment for the variables it reads.
fn cortex(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cortex"));
    cmd.args(args);
    for var in [
        "CORTEX_GATEWAY",
        "CORTEX_API_KEY",
        "CORTEX_LOG_FORMAT",
        "NO_COLOR",
        "COLUMNS",
        "http_proxy",
        "HTTP_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn fleet() -> FleetView {
    FleetView {
        nodes: vec![NodeView {
            name: "beast".into(),
            endpoint: "http://beast.internal:13131".into(),
            up: true,
            consecutive_failures: 0,
            last_seen_ms_ago: Some(500),
            version: Some("0.1.0".into()),
            devices: vec![DeviceStatus {
                index: 0,
                kind: DeviceKind::Cuda,
                name: "NVIDIA H200".into(),
                memory_total_bytes: 140 << 30,
                memory_free_bytes: 100 << 30,
                memory_budget_bytes: 120 << 30,
                memory_used_bytes: 8 << 30,
            }],
        }],
        models: vec![
            CatalogEntry {
                kind: Default::default(),
                id: "smollm2-135m".into(),
                aliases: vec!["smol".into()],
                pinned: true,
                priority: 0,
                configured: true,
                placements: vec![Placement {
                    node: "beast".into(),
                    state: ModelState::Ready,
                    device: 0,
                    memory_bytes: 98 << 20,
                    kv_reserve_bytes: 16 << 20,
                    loaded_at: 1,
                    last_used_at: 2,
                    in_flight: 0,
                    cached_conversations: 0,
                    cached_tokens: 0,
                }],
                loadable_on: vec!["beast".into()],
                context_length: Some(8192),
            },
            CatalogEntry {
                kind: Default::default(),
                id: "phi-3-mini".into(),
                aliases: Vec::new(),
                pinned: false,
                priority: 0,
                configured: false,
                placements: Vec::new(),
                loadable_on: vec!["beast".into(), "tiny".into()],
                context_length: None,
            },
        ],
    }
}

fn fleet_gateway() -> FakeGateway {
    FakeGateway::start(vec![(
        "GET /admin/fleet",
        (200, serde_json::to_string(&fleet()).unwrap()),
    )])
}

#[test]
fn status_json_round_trips_the_fleet() {
    let gw = fleet_gateway();
    let out = cortex(&["status", "--json", "--gateway", &gw.url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let back: FleetView = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(back, fleet());
    let seen = gw.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/admin/fleet")
    );
}

#[test]
fn status_prints_a_plain_table_when_not_on_a_terminal() {
    let gw = fleet_gateway();
    let out = cortex(&["status", "--gateway", &gw.url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains('\x1b'), "{text:?}");
    for want in ["NODES", "MODELS", "beast", "smollm2-135m", "phi-3-mini"] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
}

#[test]
fn models_lists_the_catalogue() {
    let gw = fleet_gateway();
    let out = cortex(&["models", "--gateway", &gw.url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "\
ID            ALIASES  CONTEXT  PINNED  WHERE
smollm2-135m  smol     8192     yes     ready on: beast
phi-3-mini    -        -        no      loadable on: beast, tiny
"
    );

    let out = cortex(&["models", "--json", "--gateway", &gw.url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let back: Vec<CatalogEntry> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(back, fleet().models);
}

#[test]
fn load_prints_the_node_and_the_time() {
    let gw = FakeGateway::start(vec![(
        "POST /admin/models/smollm2-135m/load",
        (
            200,
            json!({"model": "smollm2-135m", "node": "beast", "load_ms": 1234, "evicted": ["beast/phi-3-mini"]})
                .to_string(),
        ),
    )]);
    let out = cortex(&[
        "load",
        "smollm2-135m",
        "--node",
        "beast",
        "--gateway",
        &gw.url,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "loaded smollm2-135m on beast in 1.2s\nevicted: beast/phi-3-mini\n"
    );
    // Not a terminal: no progress line.
    assert_eq!(stderr(&out), "");
    let seen = gw.seen();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].path, "/admin/models/smollm2-135m/load");
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body, json!({"node": "beast"}));
}

#[test]
fn load_of_an_unknown_model_shows_the_gateway_message() {
    let gw = FakeGateway::start(vec![(
        "POST /admin/models/nope/load",
        (
            404,
            json!({"error": {"message": "model 'nope' not found", "type": "not_found_error", "param": null, "code": "model_not_found"}})
                .to_string(),
        ),
    )]);
    let out = cortex(&["load", "nope", "--gateway", &gw.url]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        stderr(&out),
        "cortex: 404 Not Found: model 'nope' not found\n"
    );
    let body: Value = serde_json::from_str(&gw.seen()[0].body).unwrap();
    assert_eq!(body, json!({}));
}

#[test]
fn unload_pin_and_unpin_hit_their_routes() {
    let gw = FakeGateway::start(vec![
        (
            "POST /admin/models/m1/unload",
            (
                200,
                json!({"model": "m1", "unloaded_from": ["a", "b"]}).to_string(),
            ),
        ),
        (
            "POST /admin/models/m2/unload",
            (200, json!({"model": "m2", "unloaded_from": []}).to_string()),
        ),
        (
            "POST /admin/models/m1/pin",
            (200, json!({"model": "m1", "pinned": true}).to_string()),
        ),
        (
            "POST /admin/models/m1/unpin",
            (200, json!({"model": "m1", "pinned": false}).to_string()),
        ),
    ]);
    let cases: [(&[&str], &str); 4] = [
        (&["unload", "m1", "--node", "a"], "unloaded m1 from a, b\n"),
        (&["unload", "m2"], "m2 was not loaded\n"),
        (&["pin", "m1"], "pinned m1\n"),
        (&["unpin", "m1"], "unpinned m1\n"),
    ];
    for (args, want) in cases {
        let mut args = args.to_vec();
        args.extend(["--gateway", gw.url.as_str()]);
        let out = cortex(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert_eq!(stdout(&out), want, "{args:?}");
    }
    let seen = gw.seen();
    let calls: Vec<(&str, &str)> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        calls,
        [
            ("POST", "/admin/models/m1/unload"),
            ("POST", "/admin/models/m2/unload"),
            ("POST", "/admin/models/m1/pin"),
            ("POST", "/admin/models/m1/unpin"),
        ]
    );
    let unload_bodies: Vec<Value> = seen[..2]
        .iter()
        .map(|s| serde_json::from_str(&s.body).unwrap())
        .collect();
    assert_eq!(unload_bodies, [json!({"node": "a"}), json!({})]);
    assert_eq!(seen[2].body, "");
    assert_eq!(seen[3].body, "");
}

#[test]
fn the_api_key_is_sent_as_a_bearer_token() {
    let gw = fleet_gateway();
    let out = cortex(&[
        "status",
        "--json",
        "--gateway",
        &gw.url,
        "--api-key",
        "sk-test",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = cortex(&["models", "--gateway", &gw.url]);
    assert!(out.status.success(), "{}", stderr(&out));
    let seen = gw.seen();
    assert_eq!(
        seen[0].headers.get("authorization").map(String::as_str),
        Some("Bearer sk-test")
    );
    assert_eq!(seen[1].headers.get("authorization"), None);
}

#[test]
fn an_unreachable_gateway_is_one_line_and_exit_1() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["status"],
        vec!["models"],
        vec!["load", "m"],
        vec!["unload", "m"],
        vec!["pin", "m"],
        vec!["unpin", "m"],
    ] {
        let mut args = args.clone();
        args.extend(["--gateway", url.as_str()]);
        let out = cortex(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        let prefix = format!("cortex: cannot reach the gateway at {url}: ");
        assert!(err.starts_with(&prefix), "{err}");
        assert!(
            err.ends_with("(is `cortex serve` running? use --gateway URL)\n"),
            "{err}"
        );
        assert!(!err.contains("panick"), "{err}");
    }
}

#[test]
fn an_invalid_model_is_refused_before_any_request() {
    let gw = fleet_gateway();
    for cmd in ["load", "unload", "pin", "unpin"] {
        let out = cortex(&[cmd, "../etc/passwd", "--gateway", &gw.url]);
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{cmd}: {err}");
        assert!(
            err.starts_with("cortex: invalid value '../etc/passwd'"),
            "{err}"
        );
    }
    assert!(gw.seen().is_empty());
}

#[test]
fn bad_flags_exit_2() {
    let out = cortex(&["status", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cortex(&[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_and_version_exit_0() {
    let out = cortex(&["--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for cmd in [
        "serve", "status", "models", "load", "unload", "pin", "unpin",
    ] {
        assert!(text.contains(cmd), "{cmd} missing from\n{text}");
    }
    let out = cortex(&["load", "--help"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("--gateway"));

    let out = cortex(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        stdout(&out),
        format!("cortex {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_api_key_value_is_not_shown_in_help() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cortex"));
    let out = cmd
        .args(["status", "--help"])
        .env("CORTEX_API_KEY", "sk-secret")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!stdout(&out).contains("sk-secret"));
}
