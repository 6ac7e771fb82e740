//! A small HTTP/1.1 client for talking to neurons: one pool of keep-alive
//! connections per node, and answer bodies read from the socket by the task
//! that consumes them.
//!
//! Why not hyper's client: it reads each connection in a task of its own and
//! hands the body over one frame at a time, so a burst of SSE events the
//! neuron wrote together costs a wake-up and a write to the client per event
//! (measured: 7.7 `writev` per streamed request against nginx's 2), and its
//! pool takes a mutex and spawns a task per returned connection. Here the
//! request's own task reads the socket, everything already received comes
//! out as one frame, and a finished connection goes back to its pool inline.
//!
//! Scope: what the neuron API needs. Requests always carry a
//! `Content-Length`; answers may use `Content-Length`, `chunked`, or run to
//! the connection's close. A connection is reused only after its answer was
//! read to the end and when the answer allows it (HTTP/1.1, no
//! `Connection: close`, known length). Dropping a body early closes the
//! connection, which is how a neuron learns that a client went away.

pub mod chunked;

use std::collections::HashMap;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use http_body::Frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use chunked::{ChunkError, ChunkedDecoder};

/// Largest answer head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Most answer headers accepted.
const MAX_HEADERS: usize = 64;
/// An idle connection older than this is closed rather than reused.
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);
/// Read buffer growth step.
const READ_CHUNK: usize = 16 * 1024;

/// What went wrong on a connection.
#[derive(Debug, thiserror::Error)]
pub enum H1Error {
    /// No connection was made: nothing was sent.
    #[error("{0}")]
    Connect(String),
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("invalid answer: {0}")]
    Invalid(String),
    #[error("invalid chunked body: {0}")]
    Chunked(#[from] ChunkError),
    #[error("the connection closed before the answer was complete")]
    Closed,
}

struct Conn {
    io: TcpStream,
    /// Bytes read but not consumed yet.
    buf: BytesMut,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

struct PoolInner {
    idle: Mutex<HashMap<Arc<str>, Vec<Idle>>>,
    connect_timeout: Duration,
    max_idle_per_node: usize,
}

/// Keep-alive connections to every node, by `host:port`.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl Pool {
    pub fn new(connect_timeout: Duration, max_idle_per_node: usize) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                idle: Mutex::new(HashMap::new()),
                connect_timeout,
                max_idle_per_node,
            }),
        }
    }

    /// Send one request to `authority` (`host:port`) and read the answer's
    /// head; the body is read as the caller polls it. A pooled connection
    /// that turns out to be closed is replaced by a new one transparently.
    pub async fn send(
        &self,
        authority: &Arc<str>,
        method: &Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: &[u8],
    ) -> Result<http::Response<Body>, H1Error> {
        let wire = encode_request(authority, method, path, headers, body);
        loop {
            let (mut conn, reused) = match self.inner.checkout(authority) {
                Some(c) => (c, true),
                None => (self.inner.connect(authority).await?, false),
            };
            match exchange(&mut conn, &wire).await {
                Ok(head) => return Ok(self.inner.answer(conn, authority, head, method)),
                // A kept-alive connection the node closed while it sat idle:
                // the request never reached it, so try again on a fresh one.
                Err(Exchange::Stale) if reused => continue,
                Err(Exchange::Stale) => return Err(H1Error::Closed),
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }
    }

    #[cfg(test)]
    fn idle_count(&self, authority: &str) -> usize {
        self.inner.lock().get(authority).map_or(0, Vec::len)
    }
}

impl PoolInner {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Vec<Idle>>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The most recently used idle connection that is still open.
    fn checkout(&self, authority: &str) -> Option<Conn> {
        let mut idle = self.lock();
        let list = idle.get_mut(authority)?;
        while let Some(i) = list.pop() {
            if i.since.elapsed() < MAX_IDLE_AGE && still_open(&i.conn.io) {
                return Some(i.conn);
            }
        }
        None
    }

    fn checkin(&self, authority: &Arc<str>, conn: Conn) {
        let mut idle = self.lock();
        let list = idle.entry(Arc::clone(authority)).or_default();
        if list.len() < self.max_idle_per_node {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    async fn connect(&self, authority: &str) -> Result<Conn, H1Error> {
        let io =
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(authority)).await {
                Err(_) => return Err(H1Error::Connect("connect timed out".into())),
                Ok(Err(e)) => return Err(H1Error::Connect(e.to_string())),
                Ok(Ok(io)) => io,
            };
        io.set_nodelay(true)
            .map_err(|e| H1Error::Connect(e.to_string()))?;
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
        })
    }

    fn answer(
        self: &Arc<Self>,
        mut conn: Conn,
        authority: &Arc<str>,
        head: Head,
        method: &Method,
    ) -> http::Response<Body> {
        conn.buf = conn.buf.split_off(head.len);
        let framing = head.framing(method);
        let reuse = head.keep_alive && !matches!(framing, Framing::ToClose);
        let body = Body {
            conn: Some(conn),
            framing,
            home: reuse.then(|| (Arc::clone(self), Arc::clone(authority))),
        };
        let mut resp = http::Response::new(body);
        *resp.status_mut() = head.status;
        *resp.headers_mut() = head.headers;
        let body = resp.body_mut();
        // An empty body is complete at once: the connection can go back now.
        body.settle();
        resp
    }
}

/// Has the peer closed (or written to) this idle connection? Costs a system
/// call only when the reactor saw it become readable.
fn still_open(io: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

fn encode_request(
    authority: &str,
    method: &Method,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: &[u8],
) -> Vec<u8> {
    let mut w = Vec::with_capacity(128 + body.len());
    w.extend_from_slice(method.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(path.as_bytes());
    w.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    w.extend_from_slice(authority.as_bytes());
    for (name, value) in headers {
        w.extend_from_slice(b"\r\n");
        w.extend_from_slice(name.as_str().as_bytes());
        w.extend_from_slice(b": ");
        w.extend_from_slice(value.as_bytes());
    }
    // Writing to a Vec cannot fail.
    let _ = write!(w, "\r\ncontent-length: {}\r\n\r\n", body.len());
    w.extend_from_slice(body);
    w
}

enum Exchange {
    /// The connection was closed before any byte of an answer.
    Stale,
    Failed(H1Error),
}

/// Write the request and read the answer's head.
async fn exchange(conn: &mut Conn, wire: &[u8]) -> Result<Head, Exchange> {
    if let Err(e) = conn.io.write_all(wire).await {
        return Err(match e.kind() {
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Exchange::Stale,
            _ => Exchange::Failed(e.into()),
        });
    }
    loop {
        if !conn.buf.is_empty() {
            if let Some(head) = parse_head(&conn.buf).map_err(Exchange::Failed)? {
                return Ok(head);
            }
            if conn.buf.len() > MAX_HEAD {
                return Err(Exchange::Failed(H1Error::Invalid(
                    "answer head too large".into(),
                )));
            }
        }
        conn.buf.reserve(READ_CHUNK);
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) if conn.buf.is_empty() => return Err(Exchange::Stale),
            Ok(0) => return Err(Exchange::Failed(H1Error::Closed)),
            Ok(_) => {}
            Err(e) if conn.buf.is_empty() && e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(Exchange::Stale)
            }
            Err(e) => return Err(Exchange::Failed(e.into())),
        }
    }
}

/// An answer's head, parsed.
#[derive(Debug)]
struct Head {
    /// Bytes of the head, blank line included.
    len: usize,
    status: StatusCode,
    headers: HeaderMap,
    keep_alive: bool,
    content_length: Option<u64>,
    chunked: bool,
}

impl Head {
    fn framing(&self, method: &Method) -> Framing {
        let no_body = *method == Method::HEAD
            || self.status.is_informational()
            || self.status == StatusCode::NO_CONTENT
            || self.status == StatusCode::NOT_MODIFIED;
        if no_body {
            Framing::Length(0)
        } else if self.chunked {
            Framing::Chunked(ChunkedDecoder::new())
        } else if let Some(n) = self.content_length {
            Framing::Length(n)
        } else {
            Framing::ToClose
        }
    }
}

/// Parse an answer head from the start of `buf`; `None` while incomplete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, H1Error> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut r = httparse::Response::new(&mut slots);
    let len = match r.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(H1Error::Invalid(e.to_string())),
    };
    let status = r
        .code
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| H1Error::Invalid("bad status code".into()))?;
    if status.is_informational() {
        return Err(H1Error::Invalid(format!("unexpected {status}")));
    }
    let mut keep_alive = r.version == Some(1);
    let mut content_length = None;
    let mut chunked = false;
    let mut headers = HeaderMap::with_capacity(r.headers.len());
    for h in r.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| H1Error::Invalid(format!("bad header name {:?}", h.name)))?;
        let value = HeaderValue::from_bytes(h.value)
            .map_err(|_| H1Error::Invalid(format!("bad value for header {name}")))?;
        if name == http::header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| H1Error::Invalid("bad content-length".into()))?;
            if content_length.is_some_and(|m| m != n) {
                return Err(H1Error::Invalid("conflicting content-length".into()));
            }
            content_length = Some(n);
        } else if name == http::header::TRANSFER_ENCODING {
            // Only the last coding frames the body; anything but chunked
            // there means "read to the close".
            chunked = value
                .to_str()
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            if !chunked {
                keep_alive = false;
            }
        } else if name == http::header::CONNECTION {
            let v = value.to_str().unwrap_or_default();
            if v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")) {
                keep_alive = false;
            }
        }
        headers.append(name, value);
    }
    Ok(Some(Head {
        len,
        status,
        headers,
        keep_alive,
        content_length,
        chunked,
    }))
}

/// How the body's end is known.
#[derive(Debug)]
enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
    ToClose,
    Done,
}

/// An answer's body, read from the connection as it is polled. Each frame
/// is everything that arrived so far.
pub struct Body {
    conn: Option<Conn>,
    framing: Framing,
    /// Where the connection goes when the body is complete (keep-alive).
    home: Option<(Arc<PoolInner>, Arc<str>)>,
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body")
            .field("framing", &self.framing)
            .finish()
    }
}

impl Body {
    /// If the body is complete, mark it done and return the connection.
    fn settle(&mut self) {
        let complete = match &self.framing {
            Framing::Length(0) => true,
            Framing::Chunked(d) => d.is_done(),
            _ => false,
        };
        if !complete {
            return;
        }
        self.framing = Framing::Done;
        let conn = self.conn.take();
        if let (Some(conn), Some((pool, authority))) = (conn, self.home.take()) {
            // Bytes past the answer's end would be a protocol error.
            if conn.buf.is_empty() {
                pool.checkin(&authority, conn);
            }
        }
    }

    /// Decode what is buffered; `None` when more bytes are needed.
    fn decode(&mut self) -> Result<Option<Bytes>, H1Error> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let data = match &mut self.framing {
            Framing::Done => return Ok(None),
            Framing::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(conn.buf.len());
                *left -= n as u64;
                conn.buf.split_to(n)
            }
            Framing::Chunked(d) => d.decode(&mut conn.buf)?,
            Framing::ToClose => conn.buf.split(),
        };
        self.settle();
        Ok((!data.is_empty()).then(|| data.freeze()))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        loop {
            match this.decode() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
                Err(e) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            if matches!(this.framing, Framing::Done) {
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if let Err(e) = ready!(conn.io.poll_read_ready(cx)) {
                this.conn = None;
                this.framing = Framing::Done;
                return Poll::Ready(Some(Err(e.into())));
            }
            conn.buf.reserve(READ_CHUNK);
            match conn.io.try_read_buf(&mut conn.buf) {
                Ok(0) => {
                    let to_close = matches!(this.framing, Framing::ToClose);
                    this.conn = None;
                    this.framing = Framing::Done;
                    if to_close {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(H1Error::Closed)));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    this.conn = None;
                    this.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }
}

#[cfg(test)]
mod tests;
