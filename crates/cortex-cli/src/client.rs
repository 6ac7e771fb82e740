//! A small blocking client of the gateway's admin API (`/admin/...`), for
//! the `cortex` client commands.
//!
//! Owns the HTTP side: URLs, the bearer header, timeouts, and turning a
//! failure into a [`ClientError`] whose message fits on one line. It knows
//! nothing about how answers are shown.

use std::time::Duration;

use cortex_core::fleet::{
    AdminLoadResponse, AdminPinResponse, AdminTarget, AdminUnloadResponse, FleetView,
};
use cortex_core::openai::ErrorResponse;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;

/// How long to wait for the TCP connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Whole-request limit for everything but `load`, which can take minutes.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest error body quoted back to the user.
const MAX_QUOTED_BODY: usize = 300;

/// Why a gateway call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered: refused, unresolvable, or the connect timed out.
    #[error("cannot reach the gateway at {gateway}: {reason} (is `cortex serve` running? use --gateway URL)")]
    Unreachable { gateway: String, reason: String },
    /// The request was sent but the exchange broke or timed out.
    #[error("request to the gateway at {gateway} failed: {reason}")]
    Transport { gateway: String, reason: String },
    /// The gateway answered with an error status; `message` is empty when
    /// the answer had no body.
    #[error("{}", status_line(*.status, .message))]
    Status { status: StatusCode, message: String },
    /// The gateway answered 2xx with a body we do not understand.
    #[error("unexpected answer from the gateway at {gateway}: {reason}")]
    Decode { gateway: String, reason: String },
    /// The HTTP client could not be built (no usable TLS or resolver).
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

/// Which request timeout a call runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// [`REQUEST_TIMEOUT`].
    Short,
    /// No limit: loads take as long as they take.
    Unbounded,
}

/// A client of one gateway.
#[derive(Debug)]
pub struct GatewayClient {
    base: String,
    api_key: Option<String>,
    http: Client,
}

impl GatewayClient {
    /// `base` is the gateway URL without a trailing `/`.
    pub fn new(base: &str, api_key: Option<&str>) -> Result<Self, ClientError> {
        let http = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            // Per request instead: see `Wait`.
            .timeout(None)
            .user_agent(concat!("cortex/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Setup(error_chain(&e)))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            api_key: api_key.map(str::to_string),
            http,
        })
    }

    /// `GET /admin/fleet`.
    pub fn fleet(&self) -> Result<FleetView, ClientError> {
        let req = self.http.get(self.url("/admin/fleet"));
        self.send(req, Wait::Short)
    }

    /// `POST /admin/models/{model}/load`; waits however long the load takes.
    pub fn load(&self, model: &str, node: Option<&str>) -> Result<AdminLoadResponse, ClientError> {
        let req = self
            .http
            .post(self.model_url(model, "load"))
            .json(&target(node));
        self.send(req, Wait::Unbounded)
    }

    /// `POST /admin/models/{model}/unload`.
    pub fn unload(
        &self,
        model: &str,
        node: Option<&str>,
    ) -> Result<AdminUnloadResponse, ClientError> {
        let req = self
            .http
            .post(self.model_url(model, "unload"))
            .json(&target(node));
        self.send(req, Wait::Short)
    }

    /// `POST /admin/models/{model}/pin` or `/unpin`.
    pub fn set_pinned(&self, model: &str, pinned: bool) -> Result<AdminPinResponse, ClientError> {
        let action = if pinned { "pin" } else { "unpin" };
        let req = self.http.post(self.model_url(model, action));
        self.send(req, Wait::Short)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The caller has checked `model` with `is_valid_model_id`, so it needs
    /// no percent-encoding.
    fn model_url(&self, model: &str, action: &str) -> String {
        self.url(&format!("/admin/models/{model}/{action}"))
    }

    fn send<T: DeserializeOwned>(&self, req: RequestBuilder, wait: Wait) -> Result<T, ClientError> {
        let req = match &self.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        };
        let req = match wait {
            Wait::Short => req.timeout(REQUEST_TIMEOUT),
            Wait::Unbounded => req,
        };
        let resp = req.send().map_err(|e| self.transport_error(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = read_text(resp);
            return Err(ClientError::Status {
                status,
                message: error_message(&body),
            });
        }
        let body = resp.bytes().map_err(|e| self.transport_error(&e))?;
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            gateway: self.base.clone(),
            reason: e.to_string(),
        })
    }

    fn transport_error(&self, e: &reqwest::Error) -> ClientError {
        let gateway = self.base.clone();
        if e.is_connect() {
            ClientError::Unreachable {
                gateway,
                reason: root_cause(e),
            }
        } else if e.is_timeout() {
            ClientError::Transport {
                gateway,
                reason: "no answer in time".to_string(),
            }
        } else {
            ClientError::Transport {
                gateway,
                reason: error_chain(e),
            }
        }
    }
}

fn target(node: Option<&str>) -> AdminTarget {
    AdminTarget {
        node: node.map(str::to_string),
    }
}

/// The body of an error answer, or nothing if even that fails.
fn read_text(resp: Response) -> String {
    resp.text().unwrap_or_default()
}

/// `404 Not Found: message`, or just the status when there is no message.
fn status_line(status: StatusCode, message: &str) -> String {
    if message.is_empty() {
        status.to_string()
    } else {
        format!("{status}: {message}")
    }
}

/// `error.message` from an OpenAI (or Anthropic) error envelope, else the
/// body itself on one line (empty if there is none).
fn error_message(body: &str) -> String {
    if let Ok(env) = serde_json::from_str::<ErrorResponse>(body) {
        return one_line(&env.error.message);
    }
    // The Anthropic envelope `{"type":"error","error":{"type","message"}}`
    // in case a proxy in between answers in that dialect.
    if let Some(msg) = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/message")?.as_str().map(str::to_string))
    {
        return one_line(&msg);
    }
    let text = one_line(body);
    if text.chars().count() > MAX_QUOTED_BODY {
        let cut: String = text.chars().take(MAX_QUOTED_BODY).collect();
        format!("{cut}…")
    } else {
        text
    }
}

/// Collapse runs of whitespace (newlines included) into single spaces.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The innermost cause: "Connection refused (os error 111)" rather than
/// "error sending request for url (...)".
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    one_line(&cur.to_string())
}

/// Every message of the chain, joined with ": ", repeats dropped.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur = Some(e);
    while let Some(err) = cur {
        let msg = one_line(&err.to_string());
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = err.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_openai_envelope_gives_the_message() {
        let body = r#"{"error":{"message":"model 'x' not found","type":"not_found_error","param":null,"code":"model_not_found"}}"#;
        assert_eq!(error_message(body), "model 'x' not found");
    }

    #[test]
    fn the_anthropic_envelope_gives_the_message() {
        let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#;
        assert_eq!(error_message(body), "busy");
    }

    #[test]
    fn other_bodies_are_quoted_on_one_line() {
        assert_eq!(
            error_message("upstream\n  went away\n"),
            "upstream went away"
        );
        let long = "x".repeat(1000);
        let msg = error_message(&long);
        assert_eq!(msg.chars().count(), MAX_QUOTED_BODY + 1);
        assert!(msg.ends_with('…'));
    }

    #[test]
    fn an_empty_body_gives_just_the_status() {
        assert_eq!(error_message(" \n"), "");
        let e = ClientError::Status {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: String::new(),
        };
        assert_eq!(e.to_string(), "500 Internal Server Error");
    }

    #[test]
    fn status_errors_read_status_then_message() {
        let e = ClientError::Status {
            status: StatusCode::NOT_FOUND,
            message: "no such model".into(),
        };
        assert_eq!(e.to_string(), "404 Not Found: no such model");
    }

    #[test]
    fn unreachable_says_what_to_do() {
        let e = ClientError::Unreachable {
            gateway: "http://127.0.0.1:9".into(),
            reason: "Connection refused (os error 111)".into(),
        };
        assert_eq!(
            e.to_string(),
            "cannot reach the gateway at http://127.0.0.1:9: Connection refused (os error 111) \
             (is `cortex serve` running? use --gateway URL)"
        );
    }

    #[test]
    fn urls_are_built_under_the_base() {
        let c = GatewayClient::new("http://gw:1/", None).unwrap();
        assert_eq!(c.url("/admin/fleet"), "http://gw:1/admin/fleet");
        assert_eq!(
            c.model_url("qwen2.5:7b", "pin"),
            "http://gw:1/admin/models/qwen2.5:7b/pin"
        );
    }

    #[test]
    fn the_target_body_omits_an_absent_node() {
        assert_eq!(serde_json::to_string(&target(None)).unwrap(), "{}");
        assert_eq!(
            serde_json::to_string(&target(Some("beast"))).unwrap(),
            r#"{"node":"beast"}"#
        );
    }
}
