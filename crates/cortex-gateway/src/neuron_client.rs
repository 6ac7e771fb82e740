//! HTTP client for the neuron API: pooled HTTP/1.1 connections over
//! loopback or a private network ([`crate::h1`]), with timeouts, bounded
//! reads, and errors that say whether anything reached the neuron (the retry
//! rule depends on it).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cortex_core::neuron_api::{
    LoadRequest, LoadResponse, NodeStatus, UnloadRequest, UnloadResponse,
};
use futures::FutureExt;
use http::{header, HeaderName, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::h1::{self, H1Error};

/// A neuron as the gateway addresses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// `http://host:port`, no trailing slash.
    pub base: String,
    pub admin_token: Option<String>,
    /// `host:port` (port 80 when the endpoint names none), parsed once;
    /// `None` when the endpoint is not a plain `http://host[:port]`.
    authority: Option<Arc<str>>,
}

impl NodeInfo {
    pub fn new(name: &str, endpoint: &str, admin_token: Option<String>) -> Self {
        let base = endpoint.trim_end_matches('/').to_string();
        let authority = base
            .strip_prefix("http://")
            .and_then(|a| a.parse::<http::uri::Authority>().ok())
            .map(|a| match a.port_u16() {
                Some(_) => Arc::from(a.as_str()),
                None => Arc::from(format!("{}:80", a.host())),
            });
        Self {
            name: name.to_string(),
            base,
            admin_token,
            authority,
        }
    }
}

/// What went wrong talking to a neuron.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No connection: nothing was sent, so another neuron may be tried.
    #[error("cannot connect to neuron {node}: {message}")]
    Connect { node: String, message: String },
    #[error("neuron {node} did not answer in time ({what})")]
    Timeout { node: String, what: &'static str },
    /// The connection failed after the request was (perhaps) sent.
    #[error("connection to neuron {node} failed: {message}")]
    Transport { node: String, message: String },
    /// The neuron answered with an error status.
    #[error("neuron {node} answered {status}: {message}")]
    Status {
        node: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    #[error("neuron {node} sent an invalid answer: {message}")]
    Invalid { node: String, message: String },
}

impl UpstreamError {
    /// True when no byte of the request reached the neuron.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, UpstreamError::Connect { .. })
    }
}

/// The neuron's error envelope, as far as we read it.
#[derive(serde::Deserialize)]
struct Envelope {
    error: EnvelopeBody,
}

#[derive(serde::Deserialize)]
struct EnvelopeBody {
    message: String,
    #[serde(default)]
    code: Option<String>,
}

/// Message and code of an OpenAI error envelope, or the raw text.
pub fn error_of(body: &[u8]) -> (String, Option<String>) {
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) => (e.error.message, e.error.code),
        Err(_) => (
            String::from_utf8_lossy(body).chars().take(512).collect(),
            None,
        ),
    }
}

/// Pooled client for every neuron.
#[derive(Clone)]
pub struct NeuronClient {
    pool: h1::Pool,
    /// Largest answer read into memory.
    max_body: usize,
}

/// Idle keep-alive connections kept per neuron (and per API worker).
const MAX_IDLE_PER_NODE: usize = 1024;

impl std::fmt::Debug for NeuronClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NeuronClient")
    }
}

/// All of `body`, at most `max` bytes. An answer that came in one piece
/// (the usual case) is passed on as it is, without copying.
async fn whole<B>(mut body: B, max: usize) -> Result<Bytes, String>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut first = Bytes::new();
    let mut rest: Option<BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() else {
            continue;
        };
        let len = first.len() + rest.as_ref().map_or(0, BytesMut::len) + data.len();
        if len > max {
            return Err(format!("the answer is over {max} bytes"));
        }
        match &mut rest {
            None if first.is_empty() => first = data,
            None => {
                let mut all = BytesMut::with_capacity(len);
                all.extend_from_slice(&first);
                all.extend_from_slice(&data);
                rest = Some(all);
            }
            Some(all) => all.extend_from_slice(&data),
        }
    }
    Ok(rest.map_or(first, BytesMut::freeze))
}

impl NeuronClient {
    pub fn new(connect_timeout: Duration, max_body: usize) -> Self {
        Self {
            pool: h1::Pool::new(connect_timeout, MAX_IDLE_PER_NODE, h1::MAX_IDLE_AGE),
            max_body,
        }
    }

    /// Send a request; the answer's body is left to the caller. Errors
    /// distinguish "nothing sent" (connect) from later failures.
    pub async fn send(
        &self,
        node: &NodeInfo,
        method: Method,
        path: &str,
        body: Bytes,
        admin: bool,
        timeout: Duration,
    ) -> Result<h1::Answer, UpstreamError> {
        let Some(authority) = &node.authority else {
            return Err(UpstreamError::Connect {
                node: node.name.clone(),
                message: format!("bad endpoint {:?}: expected http://host[:port]", node.base),
            });
        };
        let json = (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let token = node
            .admin_token
            .as_ref()
            .filter(|_| admin)
            .and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok());
        let with_token: Vec<(HeaderName, HeaderValue)>;
        let headers: &[(HeaderName, HeaderValue)] = match token {
            // The request path: nothing allocated.
            None if body.is_empty() => &[],
            None => std::slice::from_ref(&json),
            Some(t) => {
                let auth = (header::AUTHORIZATION, t);
                with_token = if body.is_empty() {
                    vec![auth]
                } else {
                    vec![json, auth]
                };
                &with_token
            }
        };
        match self
            .pool
            .send(authority, &method, path, headers, &body, timeout)
            .await
        {
            Err(H1Error::TimedOut) => Err(UpstreamError::Timeout {
                node: node.name.clone(),
                what: "answer headers",
            }),
            Ok(resp) => Ok(resp),
            Err(H1Error::Connect(message)) => Err(UpstreamError::Connect {
                node: node.name.clone(),
                message,
            }),
            Err(e) => Err(UpstreamError::Transport {
                node: node.name.clone(),
                message: e.to_string(),
            }),
        }
    }

    /// Read a whole answer body (up to the client's limit) within `timeout`.
    pub async fn read_body(
        &self,
        node: &NodeInfo,
        body: h1::Body,
        timeout: Duration,
    ) -> Result<Bytes, UpstreamError> {
        let mut read = std::pin::pin!(whole(body, self.max_body));
        // An answer already in (the usual case for a small one) needs no
        // timer.
        let done = match (&mut read).now_or_never() {
            Some(r) => Ok(r),
            None => tokio::time::timeout(timeout, read).await,
        };
        match done {
            Err(_) => Err(UpstreamError::Timeout {
                node: node.name.clone(),
                what: "answer body",
            }),
            Ok(Ok(b)) => Ok(b),
            Ok(Err(message)) => Err(UpstreamError::Transport {
                node: node.name.clone(),
                message,
            }),
        }
    }

    /// A JSON call: send `body` (if any), read and decode the JSON answer;
    /// error statuses become [`UpstreamError::Status`].
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        node: &NodeInfo,
        method: Method,
        path: &str,
        body: Option<&B>,
        admin: bool,
        timeout: Duration,
    ) -> Result<T, UpstreamError> {
        let bytes = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| UpstreamError::Invalid {
                node: node.name.clone(),
                message: e.to_string(),
            })?),
            None => Bytes::new(),
        };
        let work = async {
            let resp = self.send(node, method, path, bytes, admin, timeout).await?;
            let status = resp.status();
            let body = self.read_body(node, resp.into_body(), timeout).await?;
            Ok::<_, UpstreamError>((status, body))
        };
        let (status, body) =
            tokio::time::timeout(timeout, work)
                .await
                .map_err(|_| UpstreamError::Timeout {
                    node: node.name.clone(),
                    what: "whole answer",
                })??;
        if status != StatusCode::OK {
            let (message, code) = error_of(&body);
            return Err(UpstreamError::Status {
                node: node.name.clone(),
                status: status.as_u16(),
                code,
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| UpstreamError::Invalid {
            node: node.name.clone(),
            message: e.to_string(),
        })
    }

    /// `GET /status`.
    pub async fn status(
        &self,
        node: &NodeInfo,
        timeout: Duration,
    ) -> Result<NodeStatus, UpstreamError> {
        self.call::<(), _>(node, Method::GET, "/status", None, false, timeout)
            .await
    }

    /// `POST /models/load` (with the node's admin token).
    pub async fn load(
        &self,
        node: &NodeInfo,
        model: &str,
        source: Option<String>,
        device: Option<u32>,
        timeout: Duration,
    ) -> Result<LoadResponse, UpstreamError> {
        let req = LoadRequest {
            model: model.to_string(),
            source,
            device,
        };
        self.call(
            node,
            Method::POST,
            "/models/load",
            Some(&req),
            true,
            timeout,
        )
        .await
    }

    /// `POST /models/unload` (with the node's admin token).
    pub async fn unload(
        &self,
        node: &NodeInfo,
        model: &str,
        timeout: Duration,
    ) -> Result<UnloadResponse, UpstreamError> {
        let req = UnloadRequest {
            model: model.to_string(),
        };
        self.call(
            node,
            Method::POST,
            "/models/unload",
            Some(&req),
            true,
            timeout,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::Frame;
    use http_body_util::StreamBody;

    type Frames = futures::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, String>>>;

    fn body(parts: &[&'static [u8]]) -> StreamBody<Frames> {
        let frames: Vec<Result<Frame<Bytes>, String>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn a_body_in_one_piece_is_not_copied_and_pieces_are_joined() {
        let one: &'static [u8] = b"{\"usage\":{}}";
        let b = whole(body(&[one]), 100).await.unwrap();
        assert_eq!(b.as_ptr(), one.as_ptr(), "passed on as it came");
        assert_eq!(whole(body(&[]), 100).await.unwrap(), "");
        assert_eq!(
            whole(body(&[b"", b"ab", b"", b"cd", b"e"]), 100)
                .await
                .unwrap(),
            "abcde"
        );
    }

    #[tokio::test]
    async fn a_body_over_the_limit_or_failing_is_an_error() {
        assert_eq!(whole(body(&[b"abc", b"de"]), 5).await.unwrap(), "abcde");
        let e = whole(body(&[b"abc", b"def"]), 5).await.unwrap_err();
        assert!(e.contains("over 5 bytes"), "{e}");
        assert!(whole(body(&[b"abcdef"]), 5).await.is_err());
        let failing = StreamBody::new(futures::stream::iter(vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err("cut".to_string()),
        ]));
        assert_eq!(whole(failing, 100).await.unwrap_err(), "cut");
    }
}
