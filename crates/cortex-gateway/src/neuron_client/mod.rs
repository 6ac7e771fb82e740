//! The seam between the gateway and its neurons. [`NeuronApi`] sends one
//! request to one neuron and hands back the answer's head with its body
//! still to be read; [`HttpNeurons`] is the real one (hyper's HTTP/1.1
//! client connection and our [`pool`]), and tests swap in fakes that need
//! no sockets. [`NeuronClient`] adds what every caller shares on top of any
//! [`NeuronApi`]: bounded whole-body reads, JSON calls and the lifecycle
//! routes (`/status`, `/models/load`, `/models/unload`).
//!
//! Errors say whether anything reached the neuron ([`UpstreamError::nothing_sent`]),
//! since the proxy's retry rule depends on it; deciding to retry is the
//! proxy's business, not this module's.

mod hyper_client;
pub mod pool;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use cortex_core::neuron_api::{
    LoadRequest, LoadResponse, NodeStatus, UnloadRequest, UnloadResponse,
};
use futures::future::BoxFuture;
use futures::FutureExt;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use self::hyper_client::HttpNeurons;

/// Why a cause is kept: shared, so that one failed load can be reported to
/// every request that waited on it.
pub type Cause = Arc<dyn StdError + Send + Sync>;

/// `e` as a [`Cause`].
pub fn cause(e: impl Into<BodyError>) -> Cause {
    Arc::from(e.into())
}

/// The error of a neuron answer's body.
pub type BodyError = Box<dyn StdError + Send + Sync>;

/// A neuron answer's body, read as it is polled. Dropping it before its
/// end closes the connection, which is how a neuron learns that the client
/// went away.
pub type NeuronBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BodyError>;

/// A neuron's answer: status and headers, the body still to be read.
pub type Answer = http::Response<NeuronBody>;

/// A neuron as the gateway addresses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    /// `http://host:port`, no trailing slash.
    pub base: String,
    pub admin_token: Option<String>,
    /// `host:port` (port 80 when the endpoint names none), parsed once;
    /// `None` when the endpoint is not a plain `http://host[:port]`.
    pub authority: Option<Arc<str>>,
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

/// One request to a neuron.
#[derive(Debug, Clone)]
pub struct NeuronRequest {
    pub method: Method,
    pub path: &'static str,
    /// JSON, or empty.
    pub body: Bytes,
    /// Send the node's admin token (lifecycle routes).
    pub admin: bool,
    /// How long the answer's head may take.
    pub timeout: Duration,
}

impl NeuronRequest {
    /// `POST path` with a JSON body.
    pub fn post(path: &'static str, body: Bytes, timeout: Duration) -> Self {
        Self {
            method: Method::POST,
            path,
            body,
            admin: false,
            timeout,
        }
    }
}

/// Sends requests to neurons. Implemented over HTTP by [`HttpNeurons`];
/// tests implement it with canned answers.
pub trait NeuronApi: Send + Sync + 'static {
    /// Send `req` to `node`; the answer's head, its body left to the caller.
    fn send<'a>(
        &'a self,
        node: &'a NodeInfo,
        req: NeuronRequest,
    ) -> BoxFuture<'a, Result<Answer, UpstreamError>>;
}

/// What went wrong talking to a neuron.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    /// No request reached the neuron (no connection, or the connection was
    /// found closed before a byte was written): another neuron may be tried.
    #[error("cannot connect to neuron {node}")]
    Connect {
        node: String,
        #[source]
        cause: Cause,
    },
    #[error("neuron {node} did not answer in time ({what})")]
    Timeout { node: String, what: &'static str },
    /// The exchange failed after the request was (perhaps) written.
    #[error("the exchange with neuron {node} failed")]
    Transport {
        node: String,
        #[source]
        cause: Cause,
    },
    /// The neuron answered with an error status.
    #[error("neuron {node} answered {status}: {message}")]
    Status {
        node: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// The answer could not be used (bad framing, too large, not the JSON
    /// expected).
    #[error("neuron {node} sent an invalid answer")]
    Invalid {
        node: String,
        #[source]
        cause: Cause,
    },
}

impl UpstreamError {
    /// True when no byte of the request reached the neuron.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, UpstreamError::Connect { .. })
    }

    fn invalid(node: &NodeInfo, cause: impl Into<BodyError>) -> Self {
        UpstreamError::Invalid {
            node: node.name.clone(),
            cause: self::cause(cause),
        }
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

/// A body that grew past the limit.
#[derive(Debug, thiserror::Error)]
#[error("the answer is over {0} bytes")]
pub struct TooLarge(pub usize);

/// All of `body`, at most `max` bytes.
pub async fn whole<B>(body: B, max: usize) -> Result<Bytes, BodyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    let mut body = std::pin::pin!(body);
    let mut all = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(Into::into)?.into_data() else {
            continue;
        };
        if all.len() + data.len() > max {
            return Err(Box::new(TooLarge(max)));
        }
        all.extend_from_slice(&data);
    }
    Ok(all.freeze())
}

/// Talks to neurons through a [`NeuronApi`]; cheap to clone.
#[derive(Clone)]
pub struct NeuronClient {
    api: Arc<dyn NeuronApi>,
    /// Largest answer read into memory.
    max_body: usize,
}

impl std::fmt::Debug for NeuronClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NeuronClient")
    }
}

impl NeuronClient {
    pub fn new(api: Arc<dyn NeuronApi>, max_body: usize) -> Self {
        Self { api, max_body }
    }

    /// Send a request; the answer's body is left to the caller.
    pub async fn send(&self, node: &NodeInfo, req: NeuronRequest) -> Result<Answer, UpstreamError> {
        self.api.send(node, req).await
    }

    /// Read a whole answer body (up to the client's limit) within `timeout`.
    pub async fn read_body(
        &self,
        node: &NodeInfo,
        body: NeuronBody,
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
            Ok(Err(e)) if e.is::<TooLarge>() => Err(UpstreamError::invalid(node, e)),
            Ok(Err(e)) => Err(UpstreamError::Transport {
                node: node.name.clone(),
                cause: Arc::from(e),
            }),
        }
    }

    /// A JSON call: send `body` (if any), read and decode the JSON answer
    /// within `timeout`; error statuses become [`UpstreamError::Status`].
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        node: &NodeInfo,
        method: Method,
        path: &'static str,
        body: Option<&B>,
        admin: bool,
        timeout: Duration,
    ) -> Result<T, UpstreamError> {
        let body = match body {
            Some(b) => {
                Bytes::from(serde_json::to_vec(b).map_err(|e| UpstreamError::invalid(node, e))?)
            }
            None => Bytes::new(),
        };
        let req = NeuronRequest {
            method,
            path,
            body,
            admin,
            timeout,
        };
        let work = async {
            let resp = self.send(node, req).await?;
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
        serde_json::from_slice(&body).map_err(|e| UpstreamError::invalid(node, e))
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
        req: &LoadRequest,
        timeout: Duration,
    ) -> Result<LoadResponse, UpstreamError> {
        self.call(node, Method::POST, "/models/load", Some(req), true, timeout)
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
mod tests;
