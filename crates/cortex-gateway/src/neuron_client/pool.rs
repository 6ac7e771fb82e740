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
//!   is how a neuron learns that its client went away;
//! - a connection's I/O is driven by the task that uses it (the request's
//!   own task, polling the answer's head and then its body), not by a task
//!   of its own: an SSE event then wakes one task, not two in turn (on a
//!   busy 2-core machine the hand-over between the two tasks put
//!   milliseconds on time to first byte and tens on the slowest events).
//!   An idle connection in the pool is driven by nobody; whether the neuron
//!   closed it is seen when it is checked out.
//!
//! Why not hyper-util's pooled client: it pools a connection whatever the
//! answer's framing, drives each connection from a task of its own, and
//! its retry of requests canceled before writing is not something the
//! caller can see or bound.

use std::collections::HashMap;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An idle connection older than this is closed rather than reused.
pub const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// How long an idle connection may take to be ready for its next request
/// (at once, unless its last answer has only just ended).
const READY_WAIT: Duration = Duration::from_secs(1);

/// One connection: the handle requests go through, and the connection's
/// I/O, driven by whoever uses it.
struct Link {
    sender: SendRequest<Full<Bytes>>,
    conn: Pin<Box<Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
    /// The connection has ended (its future must not be polled again).
    ended: bool,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link").field("ended", &self.ended).finish()
    }
}

impl Link {
    /// Drive the connection's reads and writes as far as they go; true
    /// once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ended {
            if let Poll::Ready(r) = self.conn.as_mut().poll(cx) {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "neuron connection ended");
                }
                self.ended = true;
            }
        }
        self.ended
    }

    /// Ready for a request: `false` when the connection has ended.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            if self.drive(cx) {
                return Poll::Ready(false);
            }
            self.sender.poll_ready(cx).map(|r| r.is_ok())
        })
        .await
    }
}

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
    link: Link,
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
            let (mut link, reused) = match self.checkout(authority).await {
                Some(l) => (l, true),
                None => (self.connect(authority).await?, false),
            };
            let mut answer = std::pin::pin!(link.sender.try_send_request(req));
            let answered = poll_fn(|cx| {
                link.drive(cx);
                answer.as_mut().poll(cx)
            })
            .await;
            match answered {
                Ok(resp) => return self.answer(authority, link, resp),
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
    async fn checkout(&self, authority: &str) -> Option<Link> {
        loop {
            let idle = self.lock().get_mut(authority)?.pop()?;
            if idle.since.elapsed() >= self.inner.max_idle_age || idle.link.sender.is_closed() {
                continue;
            }
            // Driving it reads what the neuron sent meanwhile: its close.
            let mut link = idle.link;
            if let Ok(true) = tokio::time::timeout(READY_WAIT, link.ready()).await {
                return Some(link);
            }
        }
    }

    async fn connect(&self, authority: &Arc<str>) -> Result<Link, PoolError> {
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
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| failed(e.into()))?;
        let mut link = Link {
            sender,
            conn: Box::pin(conn),
            ended: false,
        };
        if !link.ready().await {
            return Err(failed("the connection closed at once".into()));
        }
        Ok(link)
    }

    fn answer(
        &self,
        authority: &Arc<str>,
        link: Link,
        resp: Response<Incoming>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let h = resp.headers();
        if h.contains_key(header::TRANSFER_ENCODING) && h.contains_key(header::CONTENT_LENGTH) {
            // Dropping the link and the body closes the connection.
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
        let home = Home {
            pool: Arc::downgrade(&self.inner),
            authority: Arc::clone(authority),
            reuse: resp.version() == Version::HTTP_11 && framed && !close,
            link,
        };
        Ok(resp.map(|body| PooledBody {
            body,
            home: Some(home),
        }))
    }
}

/// Where a connection goes back when its answer has been read.
#[derive(Debug)]
struct Home {
    pool: Weak<Inner>,
    authority: Arc<str>,
    /// May the connection serve another request after this answer?
    reuse: bool,
    link: Link,
}

impl Home {
    fn checkin(self) {
        let Some(inner) = self.pool.upgrade() else {
            return;
        };
        if !self.reuse || self.link.ended {
            return;
        }
        let mut idle = inner.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.entry(self.authority).or_default();
        let now = Instant::now();
        list.retain(|i| {
            now.duration_since(i.since) < inner.max_idle_age && !i.link.sender.is_closed()
        });
        if list.len() < inner.max_idle_per_node {
            list.push(Idle {
                link: self.link,
                since: now,
            });
        }
    }
}

/// An answer's body; polling it drives its connection, which goes back to
/// the pool at the body's end.
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
        let mut polled = Pin::new(&mut this.body).poll_frame(cx);
        if polled.is_pending() {
            // Nothing received yet: let the connection read (the poll above
            // told it the body is wanted), then look again.
            if let Some(home) = &mut this.home {
                home.link.drive(cx);
            }
            polled = Pin::new(&mut this.body).poll_frame(cx);
        }
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
