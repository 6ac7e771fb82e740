//! [`NeuronApi`] over HTTP/1.1: requests to `http://host:port` through the
//! connection [`Pool`].

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::{header, HeaderValue, Request};
use http_body_util::{BodyExt, Full};

use super::pool::{Pool, PoolError, MAX_IDLE_AGE};
use super::{cause, Answer, NeuronApi, NeuronRequest, NodeInfo, UpstreamError};

/// Idle keep-alive connections kept per neuron.
const MAX_IDLE_PER_NODE: usize = 1024;

/// The neurons, over HTTP.
#[derive(Clone)]
pub struct HttpNeurons {
    pool: Pool,
}

impl HttpNeurons {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            pool: Pool::new(connect_timeout, MAX_IDLE_PER_NODE, MAX_IDLE_AGE),
        }
    }
}

impl NeuronApi for HttpNeurons {
    fn send<'a>(
        &'a self,
        node: &'a NodeInfo,
        req: NeuronRequest,
    ) -> BoxFuture<'a, Result<Answer, UpstreamError>> {
        Box::pin(async move {
            let Some(authority) = &node.authority else {
                return Err(UpstreamError::Connect {
                    node: node.name.clone(),
                    cause: cause(format!(
                        "bad endpoint {:?}: expected http://host[:port]",
                        node.base
                    )),
                });
            };
            let mut request = Request::builder()
                .method(req.method)
                .uri(req.path)
                .header(header::HOST, &**authority);
            if !req.body.is_empty() {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            let token = node.admin_token.as_ref().filter(|_| req.admin);
            if let Some(v) = token.and_then(|t| HeaderValue::from_str(&format!("Bearer {t}")).ok())
            {
                request = request.header(header::AUTHORIZATION, v);
            }
            let request =
                request
                    .body(Full::new(req.body))
                    .map_err(|e| UpstreamError::Connect {
                        node: node.name.clone(),
                        cause: Arc::new(e),
                    })?;
            match tokio::time::timeout(req.timeout, self.pool.send(authority, request)).await {
                Err(_) => Err(UpstreamError::Timeout {
                    node: node.name.clone(),
                    what: "answer headers",
                }),
                Ok(Ok(resp)) => Ok(resp.map(|b| b.map_err(Into::into).boxed_unsync())),
                Ok(Err(e)) => Err(upstream(node, e)),
            }
        })
    }
}

fn upstream(node: &NodeInfo, e: PoolError) -> UpstreamError {
    let node = node.name.clone();
    match e {
        e if e.nothing_sent() => UpstreamError::Connect {
            node,
            cause: Arc::new(e),
        },
        PoolError::AmbiguousFraming => UpstreamError::Invalid {
            node,
            cause: Arc::new(e),
        },
        e => UpstreamError::Transport {
            node,
            cause: Arc::new(e),
        },
    }
}
