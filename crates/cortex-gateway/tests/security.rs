//! Security promises against fake neurons: every route needs a key when
//! keys are configured (401 in the caller's dialect), keys are never echoed
//! or exposed, path tricks never reach a protected handler, model names are
//! never paths or URLs, clients cannot pick an upstream, and the HTTP layer
//! bounds header size (431) and header-read time (slowloris). Raw requests
//! go over a `TcpStream`, since HTTP clients normalise paths.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "sk-cortex-test-7f3a9c21e5";
const WRONG: &str = "sk-cortex-wrong-000000000";

async fn keyed() -> (FakeNeuron, TestGateway) {
    let a = FakeNeuron::serving("a", "m").await;
    let mut s = settings(&[&a]);
    s.config.gateway.api_keys = vec![KEY.into()];
    let gw = TestGateway::start(s).await;
    gw.wait_ready("m", "a").await;
    (a, gw)
}

/// Every route, its body, and whether it answers in the Anthropic dialect.
fn routes() -> Vec<(&'static str, &'static str, Option<Value>, bool)> {
    vec![
        ("GET", "/v1/models", None, false),
        (
            "POST",
            "/v1/chat/completions",
            Some(chat("m", false)),
            false,
        ),
        ("POST", "/v1/messages", Some(messages("m", false)), true),
        (
            "POST",
            "/v1/messages/count_tokens",
            Some(messages("m", false)),
            true,
        ),
        ("GET", "/admin/fleet", None, false),
        ("POST", "/admin/models/m/load", Some(json!({})), false),
        ("GET", "/health", None, false),
        ("GET", "/ready", None, false),
    ]
}

#[tokio::test]
async fn every_route_needs_a_key_and_keys_are_never_exposed() {
    let (a, gw) = keyed().await;
    let mut seen = String::new();
    for (method, path, body, anthropic) in routes() {
        let send = |auth: Option<(&'static str, String)>| {
            let mut req = gw.http.request(method.parse().unwrap(), gw.url(path));
            if let Some(b) = &body {
                req = req.json(b);
            }
            if let Some((h, v)) = auth {
                req = req.header(h, v);
            }
            async move {
                let r = req.send().await.unwrap();
                let st = r.status().as_u16();
                (st, r.text().await.unwrap())
            }
        };
        for auth in [
            None,
            Some(("authorization", format!("Bearer {WRONG}"))),
            Some(("x-api-key", WRONG.to_string())),
            Some(("authorization", KEY.to_string())),
        ] {
            let (st, text) = send(auth.clone()).await;
            assert_eq!(st, 401, "{method} {path} with {auth:?}: {text}");
            let v: Value = serde_json::from_str(&text).unwrap();
            if anthropic {
                assert_eq!(v["type"], "error", "{path}: {v}");
                assert_eq!(v["error"]["type"], "authentication_error", "{path}: {v}");
            } else {
                assert_eq!(v["error"]["code"], "invalid_api_key", "{path}: {v}");
            }
            seen.push_str(&text);
        }
        for auth in [
            ("authorization", format!("Bearer {KEY}")),
            ("x-api-key", KEY.to_string()),
        ] {
            let (st, text) = send(Some(auth.clone())).await;
            assert_eq!(st, 200, "{method} {path} with {auth:?}: {text}");
            seen.push_str(&text);
        }
    }
    seen.push_str(&gw.metrics_text().await);
    assert!(!seen.contains(KEY), "the key was echoed");
    assert!(!seen.contains(WRONG), "a presented key was echoed");
    // Neurons never see the clients' keys.
    for r in a.requests() {
        let all = format!("{:?} {}", r.headers, r.raw);
        assert!(
            !all.contains(KEY) && !all.contains(WRONG),
            "{} got a key",
            r.path
        );
    }
}

/// `/v1/models` answers Anthropic clients (an `anthropic-version` header)
/// in their shape, but its 401 is always OpenAI's: the guard picks the
/// dialect by path alone.
#[tokio::test]
async fn an_anthropic_client_listing_models_gets_its_own_401() {
    let (_a, gw) = keyed().await;
    let r = gw
        .http
        .get(gw.url("/v1/models"))
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", WRONG)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["error"]["type"], "authentication_error", "{v}");
}

/// A raw `GET path` with or without the key.
async fn raw_get(gw: &TestGateway, path: &str, key: bool) -> String {
    let auth = if key {
        format!("Authorization: Bearer {KEY}\r\n")
    } else {
        String::new()
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: gw\r\n{auth}Connection: close\r\n\r\n");
    raw_http(gw.api_addr, req.as_bytes()).await
}

#[tokio::test]
async fn path_tricks_never_reach_a_protected_handler() {
    let (_a, gw) = keyed().await;
    let ok = raw_get(&gw, "/admin/fleet", true).await;
    assert_eq!(raw_status(&ok), 200, "{ok}");
    assert!(ok.contains("consecutive_failures"));
    for path in [
        "//admin/fleet",
        "/v1/../admin/fleet",
        "/v1/%2e%2e/admin/fleet",
        "/v1/%2E%2E/admin/fleet",
        "/admin%2Ffleet",
        "/admin%2ffleet",
        "/v1/models/..",
        "/admin/./fleet",
        "/v1//models",
        "/v1/models/%2e%2e/%2e%2e/admin/fleet",
    ] {
        for key in [true, false] {
            let answer = raw_get(&gw, path, key).await;
            let st = raw_status(&answer);
            assert!(
                st == 404 || (st == 401 && !key) || st == 400,
                "{path} key={key}: {answer}"
            );
            assert!(
                !answer.contains("consecutive_failures"),
                "{path} reached /admin/fleet"
            );
            assert!(
                !answer.contains("\"object\":\"list\""),
                "{path} reached /v1/models"
            );
        }
    }
}

#[tokio::test]
async fn model_names_are_never_paths_or_urls() {
    let a = FakeNeuron::builder("a").file("m", 100).start().await;
    let gw = TestGateway::start_up(settings(&[&a])).await;
    let long = "m".repeat(200);
    for name in [
        "../../etc/passwd",
        "/etc/passwd",
        "http://evil/x",
        "file:///etc/passwd",
        "a/b",
        "..",
        "m/../m",
        "C:\\Windows\\win.ini",
        "m\u{0}",
        "",
        long.as_str(),
    ] {
        for (path, body) in [
            ("/v1/chat/completions", chat(name, false)),
            ("/v1/messages", messages(name, false)),
            ("/v1/messages/count_tokens", messages(name, false)),
        ] {
            let r = gw.post(path, &body).await;
            assert_eq!(r.status(), 404, "{path} {name:?}");
        }
    }
    for id in ["..", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "http:%2F%2Fevil"] {
        let answer = raw_http(
            gw.api_addr,
            format!("POST /admin/models/{id}/load HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(raw_status(&answer), 404, "{id}: {answer}");
    }
    assert!(
        a.traffic().is_empty(),
        "a name reached the neuron: {:?}",
        a.traffic()
    );
}

#[tokio::test]
async fn the_beta_query_routes_normally() {
    let (_a, gw) = keyed().await;
    let r = gw
        .http
        .post(gw.url("/v1/messages?beta=true"))
        .header("x-api-key", KEY)
        .header("anthropic-version", "2023-06-01")
        .header("anthropic-beta", "some-future-beta-2099-01-01")
        .json(&messages("m", false))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["content"][0]["text"], "Hello from m on a");
}

/// A raw `GET /health` with one header of `kib` KiB.
async fn big_header(gw: &TestGateway, kib: usize) -> String {
    let big = "x".repeat(kib * 1024);
    let req =
        format!("GET /health HTTP/1.1\r\nHost: gw\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    no_hang(raw_http(gw.api_addr, req.as_bytes())).await
}

#[tokio::test]
async fn a_header_far_over_the_limit_gets_431() {
    let (_a, gw) = keyed().await;
    let answer = big_header(&gw, 256).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
}

/// The head limit is 64 KiB (`MAX_HEAD_BYTES` in `server`), applied to
/// the head's exact size however it arrives.
#[tokio::test]
async fn a_header_just_over_the_limit_gets_431() {
    let (_a, gw) = keyed().await;
    let answer = big_header(&gw, 70).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
}

/// Real time: the gateway's header-read timeout is 10 s.
#[tokio::test]
async fn a_slowloris_client_is_disconnected() {
    let (_a, gw) = keyed().await;
    let started = Instant::now();
    let mut s = TcpStream::connect(gw.api_addr).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: gw\r\nX-Slow: a")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "still connected after 15 s");
    let text = String::from_utf8_lossy(&buf);
    assert!(buf.is_empty() || raw_status(&text) == 408, "{text}");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "closed too early"
    );
}

#[tokio::test]
async fn clients_cannot_choose_an_upstream() {
    let canary = FakeNeuron::serving("canary", "m").await;
    let a = FakeNeuron::serving("a", "m").await;
    let gw = TestGateway::start(settings(&[&a])).await;
    gw.wait_ready("m", "a").await;
    let steer = |mut body: Value| {
        for key in ["endpoint", "url", "base_url", "api_base", "upstream"] {
            body[key] = json!(format!("{}/v1/chat/completions", canary.endpoint()));
        }
        body["node"] = json!("canary");
        body
    };
    let r = gw
        .post("/v1/chat/completions", &steer(chat("m", false)))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(content(&r.json().await.unwrap()), "Hello from m on a");
    let r = gw.post("/v1/messages", &steer(messages("m", false))).await;
    assert_eq!(r.status(), 200);
    let r = gw
        .post("/v1/chat/completions", &steer(chat("m", true)))
        .await;
    assert_eq!(r.status(), 200);
    r.text().await.unwrap();
    assert!(canary.requests().is_empty(), "{:?}", canary.requests());
    assert_eq!(a.chat_calls(), 3);
}

#[tokio::test]
async fn a_neurons_admin_token_goes_only_to_its_lifecycle_routes() {
    const TOKEN: &str = "neuron-admin-token-4b8e";
    let a = FakeNeuron::builder("a").file("m", 100).start().await;
    let mut s = settings(&[&a]);
    s.config.neurons[0].admin_token = Some(TOKEN.into());
    let gw = TestGateway::start_up(s).await;
    let r = gw.post("/v1/chat/completions", &chat("m", false)).await;
    assert_eq!(r.status(), 200);
    let auth = |r: &common::fake_neuron::Recorded| {
        r.headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.clone())
    };
    let load = &a.calls("/models/load")[0];
    assert_eq!(auth(load), Some(format!("Bearer {TOKEN}")));
    for r in a
        .requests()
        .iter()
        .filter(|r| !r.path.starts_with("/models/"))
    {
        assert_eq!(auth(r), None, "{} got the admin token", r.path);
    }
    let fleet = gw.get("/admin/fleet").await.text().await.unwrap();
    let metrics = gw.metrics_text().await;
    assert!(!fleet.contains(TOKEN) && !metrics.contains(TOKEN));
}

/// Collects log output in memory.
#[derive(Clone, Default)]
struct Logs(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Everything runs on this test's thread (current-thread runtime), so a
/// thread-local subscriber at TRACE sees every log line of the gateway.
#[tokio::test]
async fn keys_and_tokens_are_never_logged() {
    const TOKEN: &str = "neuron-admin-token-91d0";
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let a = FakeNeuron::builder("a").file("m", 100).start().await;
    let mut s = settings(&[&a]);
    s.config.gateway.api_keys = vec![KEY.into()];
    s.config.neurons[0].admin_token = Some(TOKEN.into());
    let gw = TestGateway::start_up(s).await;
    let send = |path: &'static str, body: Value, key: &'static str| {
        gw.http
            .post(gw.url(path))
            .header("authorization", format!("Bearer {key}"))
            .json(&body)
            .send()
    };
    assert_eq!(
        send("/v1/chat/completions", chat("m", false), KEY)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send("/v1/chat/completions", chat("m", false), WRONG)
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        send("/v1/messages", messages("nope", false), KEY)
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        send("/admin/models/m/unload", json!({}), KEY)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        send("/admin/models/m/load", json!({}), WRONG)
            .await
            .unwrap()
            .status(),
        401
    );

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(text.contains("loading model"), "the logs were not captured");
    for secret in [KEY, WRONG, TOKEN] {
        assert!(!text.contains(secret), "{secret} was logged");
    }
}

/// With `gateway.admin_keys` set, each admin route answers an admin key,
/// refuses an API key with 403 and no key or a wrong one with 401; the
/// admin key also opens the API routes. The start-up log says which rule
/// holds and never names a key.
#[tokio::test]
async fn admin_keys_guard_the_admin_api() {
    const ADMIN: &str = "sk-cortex-admin-5e8b2d44c1";
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let a = FakeNeuron::serving("a", "m").await;
    let mut s = settings(&[&a]);
    s.config.gateway.api_keys = vec![KEY.into()];
    s.config.gateway.admin_keys = vec![ADMIN.into()];
    let gw = TestGateway::start_up(s).await;
    gw.wait_ready("m", "a").await;
    let send =
        |method: &'static str, path: &'static str, body: Option<Value>, key: Option<&str>| {
            let mut req = gw.http.request(method.parse().unwrap(), gw.url(path));
            if let Some(b) = body {
                req = req.json(&b);
            }
            if let Some(k) = key {
                req = req.header("authorization", format!("Bearer {k}"));
            }
            async move {
                let r = req.send().await.unwrap();
                let st = r.status().as_u16();
                (st, r.text().await.unwrap())
            }
        };
    let admin_routes: [(&str, &str); 5] = [
        ("GET", "/admin/fleet"),
        ("POST", "/admin/models/m/pin"),
        ("POST", "/admin/models/m/unpin"),
        ("POST", "/admin/models/m/unload"),
        ("POST", "/admin/models/m/load"),
    ];
    for (method, path) in admin_routes {
        let body = (method == "POST").then(|| json!({}));
        for (key, want) in [(None, 401), (Some(WRONG), 401), (Some(KEY), 403)] {
            let (st, text) = send(method, path, body.clone(), key).await;
            assert_eq!(st, want, "{method} {path} with {key:?}: {text}");
            if want == 403 {
                let v: Value = serde_json::from_str(&text).unwrap();
                assert_eq!(v["error"]["code"], "permission_denied", "{v}");
            }
        }
        let (st, text) = send(method, path, body, Some(ADMIN)).await;
        assert_eq!(st, 200, "{method} {path} with the admin key: {text}");
    }
    // The admin key is an API key too; the Anthropic dialect's 403.
    let (st, text) = send("GET", "/v1/models", None, Some(ADMIN)).await;
    assert_eq!(st, 200, "{text}");
    let (st, text) = send(
        "POST",
        "/v1/messages",
        Some(messages("m", false)),
        Some(ADMIN),
    )
    .await;
    assert_eq!(st, 200, "{text}");
    let (st, _) = send("GET", "/v1/models", None, Some(WRONG)).await;
    assert_eq!(st, 401);

    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        text.contains("the admin API needs one of gateway.admin_keys"),
        "no start-up line on the admin rule: {text}"
    );
    for secret in [KEY, WRONG, ADMIN] {
        assert!(!text.contains(secret), "{secret} was logged");
    }
}

/// Without admin keys the admin API takes the API keys, and the start-up
/// log says so.
#[tokio::test]
async fn without_admin_keys_the_log_says_api_keys_open_the_admin_api() {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let a = FakeNeuron::serving("a", "m").await;
    let mut s = settings(&[&a]);
    s.config.gateway.api_keys = vec![KEY.into()];
    let gw = TestGateway::start_up(s).await;
    gw.wait_ready("m", "a").await;
    let r = gw
        .http
        .post(gw.url("/admin/models/m/pin"))
        .header("x-api-key", KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = String::from_utf8_lossy(&logs.0.lock().unwrap()).to_string();
    assert!(
        text.contains("gateway.admin_keys is not set: the admin API accepts every API key"),
        "{text}"
    );
}
