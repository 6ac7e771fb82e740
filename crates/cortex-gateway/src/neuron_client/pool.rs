//! Keep-alive connections to neurons over hyper's HTTP/1.1 client
//! connection, with the gateway's policy on reuse:
//!
//! - an idle connection is checked before a request is written on it: one
//!   the neuron closed, or one idle longer than `max_idle_age`, is dropped
//!   and another (or a new one) taken. If hyper still finds the connection
//!   closed when it is about to write, it hands the request back unwritten,
//!   and only then is the request sent on a fresh connection. A request
//!   that was written is never sent again: the caller gets the error;
//! - a connection goes back to the pool only once its answer was read to
//!   the end, over HTTP/1.1, without `Connection: close`, framed by a
//!   length or by chunks, and with unambiguous framing (an answer with both `Transfer-Encoding` and
//!   `Content-Length` is refused and its connection closed);
//! - dropping an answer's body before its end closes the connection, which
//!   is how a neuron learns that its client went away.
//!
//! Why not hyper-util's pooled client: it pools a connection whatever the
//! answer's framing, and its retry of requests canceled before writing is
//! not something the caller can see or bound.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An idle connection older than this is closed rather than reused.
pub const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// How long an idle connection may take to be ready for its next request
/// (at once, unless its last answer has only just ended).
const READY_WAIT: Duration = Duration::from_secs(1);

type Sender = SendRequest<Full<Bytes>>;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection could be made: nothing was sent.
    #[error("cannot connect to {authority}")]
    Connect {
        authority: String,
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A new connection closed before the request was written: nothing
    /// was sent.
    #[error("the connection closed before the request was written")]
    NotSent(#[source] hyper::Error),
    /// The request was (perhaps) written and no usable answer head came.
    #[error("no answer")]
    Failed(#[source] hyper::Error),
    /// The answer's framing is ambiguous: both `Transfer-Encoding` and
    /// `Content-Length` (RFC 9112, 6.3: handle it as an error).
    #[error("the answer has both Transfer-Encoding and Content-Length")]
    AmbiguousFraming,
}

impl PoolError {
    /// True when no byte of the request reached the neuron.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, PoolError::Connect { .. } | PoolError::NotSent(_))
    }
}

struct Idle {
    sender: Sender,
    since: Instant,
}

struct Inner {
    connect_timeout: Duration,
    max_idle_per_node: usize,
    max_idle_age: Duration,
    /// Idle connections by `host:port`, the most recently used last.
    idle: Mutex<HashMap<Arc<str>, Vec<Idle>>>,
}

/// Keep-alive connections to every node, by `host:port`; cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    pub fn new(
        connect_timeout: Duration,
        max_idle_per_node: usize,
        max_idle_age: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                connect_timeout,
                max_idle_per_node,
                max_idle_age,
                idle: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Send `req` to `authority` and wait for the answer's head; the body
    /// is read as the caller polls it. Bound the wait by dropping the
    /// future.
    pub async fn send(
        &self,
        authority: &Arc<str>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<PooledBody>, PoolError> {
        loop {
            let (mut sender, reused) = match self.checkout(authority).await {
                Some(s) => (s, true),
                None => (self.connect(authority).await?, false),
            };
            match sender.try_send_request(req).await {
                Ok(resp) => return self.answer(authority, sender, resp),
                Err(mut e) => match e.take_message() {
                    // Handed back unwritten: the pooled connection had
                    // closed. Nothing reached the neuron; a fresh one gets it.
                    Some(back) if reused => req = back,
                    Some(_) => return Err(PoolError::NotSent(e.into_error())),
                    None => return Err(PoolError::Failed(e.into_error())),
                },
            }
        }
    }

    /// Idle connections to `authority` (tests).
    pub fn idle_count(&self, authority: &str) -> usize {
        self.lock().get(authority).map_or(0, Vec::len)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Idle>>> {
        self.inner.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection to `authority` that is still
    /// open and ready.
    async fn checkout(&self, authority: &str) -> Option<Sender> {
        loop {
            let idle = self.lock().get_mut(authority)?.pop()?;
            if idle.since.elapsed() >= self.inner.max_idle_age || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    async fn connect(&self, authority: &Arc<str>) -> Result<Sender, PoolError> {
        let failed = |cause: Box<dyn std::error::Error + Send + Sync>| PoolError::Connect {
            authority: authority.to_string(),
            cause,
        };
        let tcp = async {
            let tcp = TcpStream::connect(&**authority).await?;
            tcp.set_nodelay(true)?;
            Ok::<_, std::io::Error>(tcp)
        };
        let tcp = match tokio::time::timeout(self.inner.connect_timeout, tcp).await {
            Err(_) => return Err(failed("connect timed out".into())),
            Ok(r) => r.map_err(|e| failed(e.into()))?,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| failed(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "neuron connection ended");
            }
        });
        sender.ready().await.map_err(|e| failed(e.into()))?;
        Ok(sender)
    }

    fn answer(
        &self,
        authority: &Arc<str>,
        sender: Sender,
        resp: Response<Incoming>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let h = resp.headers();
        if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
            // Dropping the sender and the body closes the connection.
            return Err(PoolError::AmbiguousFraming);
        }
        let close = h
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        // An answer with neither length nor chunks runs to the close.
        let framed = h.contains_key(header::TRANSFER_ENCODING)
            || h.contains_key(header::CONTENT_LENGTH)
            || matches!(resp.status().as_u16(), 204 | 304);
        let home = (resp.version() == Version::HTTP_11 && framed && !close).then(|| Home {
            pool: Arc::downgrade(&self.inner),
            authority: Arc::clone(authority),
            sender,
        });
        Ok(resp.map(|body| PooledBody { body, home }))
    }
}

/// Where a connection goes back when its answer has been read.
#[derive(Debug)]
struct Home {
    pool: Weak<Inner>,
    authority: Arc<str>,
    sender: Sender,
}

impl Home {
    fn checkin(self) {
        let Some(inner) = self.pool.upgrade() else {
            return;
        };
        let mut idle = inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(self.authority).or_default();
        let now = Instant::now();
        list.retain(|i| now.duration_since(i.since) < inner.max_idle_age && !i.sender.is_closed());
        if list.len() < inner.max_idle_per_node {
            list.push(Idle {
                sender: self.sender,
                since: now,
            });
        }
    }
}

/// An answer's body; its connection goes back to the pool at its end.
#[derive(Debug)]
pub struct PooledBody {
    body: Incoming,
    home: Option<Home>,
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                if let Some(home) = this.home.take() {
                    home.checkin();
                }
            }
            Poll::Ready(Some(Err(_))) => this.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests;
