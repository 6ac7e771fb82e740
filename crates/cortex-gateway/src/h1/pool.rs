//! The pool of keep-alive connections, and one request's exchange on a
//! connection: write the request, read the answer's head.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::body::Body;
use super::head::{parse_head, Framing, Head};
use super::Answer;
use super::{Conn, H1Error, Home, READ_CHUNK};

/// Largest answer head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// An idle connection older than this is closed rather than reused.
pub const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One pool's idle connections to one node, on one thread.
struct IdleList {
    pool: Weak<PoolInner>,
    authority: Arc<str>,
    /// Oldest first.
    conns: VecDeque<Idle>,
}

impl IdleList {
    /// Is this the list of `pool`'s connections to `authority`?
    fn is(&self, pool: *const PoolInner, authority: &str) -> bool {
        std::ptr::eq(self.pool.as_ptr(), pool) && &*self.authority == authority
    }
}

thread_local! {
    /// Idle connections are kept by the thread that used them last, never
    /// shared: a connection is registered with the reactor of the runtime
    /// that opened it, so it is only reused there, and an API worker (see
    /// [`crate::workers`]) takes and returns connections without a lock or
    /// a write to memory another worker writes. Few pools and nodes: a list.
    static IDLE: RefCell<Vec<IdleList>> = const { RefCell::new(Vec::new()) };
}

pub(super) struct PoolInner {
    connect_timeout: Duration,
    max_idle_per_node: usize,
    max_idle_age: Duration,
}

/// Keep-alive connections to every node, by `host:port`.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

impl Pool {
    /// Connections idle longer than `max_idle_age` are closed, not reused
    /// ([`MAX_IDLE_AGE`] suits neurons).
    pub fn new(
        connect_timeout: Duration,
        max_idle_per_node: usize,
        max_idle_age: Duration,
    ) -> Self {
        Self {
            inner: Arc::new(PoolInner {
                connect_timeout,
                max_idle_per_node,
                max_idle_age,
            }),
        }
    }

    /// Send one request to `authority` (`host:port`) and read the answer's
    /// head, which must come within `timeout` (a new connection first has
    /// the pool's connect timeout); the body is read as the caller polls it.
    /// A pooled connection that turns out to be closed is replaced by a new
    /// one transparently.
    pub async fn send(
        &self,
        authority: &Arc<str>,
        method: &Method,
        path: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<Answer, H1Error> {
        loop {
            let (mut conn, reused) = match self.checkout(authority) {
                Some(c) => (c, true),
                None => (self.connect(authority).await?, false),
            };
            conn.deadline.set(timeout);
            conn.head.clear();
            encode_head(&mut conn.head, authority, method, path, headers, body.len());
            match exchange(&mut conn, body).await {
                Ok(head) => return Ok(answer(conn, head, method)),
                // A kept-alive connection the node closed while it sat idle:
                // the request never reached it, so try again on a fresh one.
                Err(Exchange::Stale) if reused => continue,
                Err(Exchange::Stale) => return Err(H1Error::Closed),
                Err(Exchange::Failed(e)) => return Err(e),
            }
        }
    }

    #[cfg(test)]
    pub(super) fn idle_count(&self, authority: &str) -> usize {
        IDLE.with_borrow(|lists| {
            lists
                .iter()
                .find(|l| l.is(Arc::as_ptr(&self.inner), authority))
                .map_or(0, |l| l.conns.len())
        })
    }

    /// This thread's most recently used idle connection to `authority` that
    /// is still open.
    fn checkout(&self, authority: &str) -> Option<Conn> {
        IDLE.with_borrow_mut(|lists| {
            let list = lists
                .iter_mut()
                .find(|l| l.is(Arc::as_ptr(&self.inner), authority))?;
            while let Some(i) = list.conns.pop_back() {
                if i.since.elapsed() < self.inner.max_idle_age && still_open(&i.conn.io) {
                    return Some(i.conn);
                }
            }
            None
        })
    }

    async fn connect(&self, authority: &Arc<str>) -> Result<Conn, H1Error> {
        let inner = &self.inner;
        let io = match tokio::time::timeout(inner.connect_timeout, TcpStream::connect(&**authority))
            .await
        {
            Err(_) => return Err(H1Error::Connect("connect timed out".into())),
            Ok(Err(e)) => return Err(H1Error::Connect(e.to_string())),
            Ok(Ok(io)) => io,
        };
        io.set_nodelay(true)
            .map_err(|e| H1Error::Connect(e.to_string()))?;
        Ok(Conn {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            deadline: crate::deadline::Deadline::new(inner.connect_timeout),
            head: Vec::with_capacity(256),
            home: Home {
                pool: Arc::downgrade(inner),
                authority: Arc::clone(authority),
                max_idle: inner.max_idle_per_node,
                max_age: inner.max_idle_age,
            },
        })
    }
}

/// Put a connection whose answer was read to its end back with this
/// thread's idle ones (unless its pool was dropped or has enough idle).
pub(super) fn checkin(conn: Conn) {
    if conn.home.pool.strong_count() == 0 {
        return;
    }
    IDLE.with_borrow_mut(|lists| {
        let home = &conn.home;
        let at = match lists
            .iter()
            .position(|l| l.is(home.pool.as_ptr(), &home.authority))
        {
            Some(at) => at,
            None => {
                // A new list: forget those of pools that were dropped.
                lists.retain(|l| l.pool.strong_count() > 0);
                lists.push(IdleList {
                    pool: home.pool.clone(),
                    authority: Arc::clone(&home.authority),
                    conns: VecDeque::new(),
                });
                lists.len() - 1
            }
        };
        let list = &mut lists[at];
        let now = Instant::now();
        // Close the ones that sat unused too long (the oldest come first).
        while list
            .conns
            .front()
            .is_some_and(|i| now.duration_since(i.since) >= home.max_age)
        {
            list.conns.pop_front();
        }
        if list.conns.len() < home.max_idle {
            list.conns.push_back(Idle { conn, since: now });
        }
    });
}

/// The answer to a request on `conn`, whose head was `head`.
fn answer(mut conn: Conn, head: Head, method: &Method) -> Answer {
    // Consume the head in place: the buffer stays this connection's own, to
    // be reused for the next answer.
    conn.buf.advance(head.len);
    let framing = head.framing(method);
    let reuse = head.keep_alive && !matches!(framing, Framing::ToClose);
    let body = Body {
        conn: Some(conn),
        framing,
        reuse,
    };
    let mut answer = Answer {
        status: head.status,
        content_type: head.content_type,
        headers: head.headers,
        body,
    };
    // An empty body is complete at once: the connection can go back now.
    answer.body.settle();
    answer
}

/// Has the peer closed (or written to) this idle connection? Costs a system
/// call only when the reactor saw it become readable.
fn still_open(io: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Append a request's head to `w`; its body (`body_len` bytes) follows it on
/// the wire.
pub(super) fn encode_head(
    w: &mut Vec<u8>,
    authority: &str,
    method: &Method,
    path: &str,
    headers: &[(HeaderName, HeaderValue)],
    body_len: usize,
) {
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
    w.extend_from_slice(b"\r\ncontent-length: ");
    crate::ascii::push_decimal(w, body_len as u64);
    w.extend_from_slice(b"\r\n\r\n");
}

/// Write `head` and `body` with as few system calls as the socket allows
/// (one, usually), without copying the body.
async fn write_request(io: &mut TcpStream, head: &[u8], body: &[u8]) -> io::Result<()> {
    let mut parts = [IoSlice::new(head), IoSlice::new(body)];
    let mut parts = &mut parts[..];
    while !parts.is_empty() {
        let n = io.write_vectored(parts).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut parts, n);
    }
    Ok(())
}

enum Exchange {
    /// The connection was closed before any byte of an answer.
    Stale,
    Failed(H1Error),
}

/// Write the request (its head is in `conn.head`) and read the answer's
/// head, within the connection's deadline.
async fn exchange(conn: &mut Conn, body: &[u8]) -> Result<Head, Exchange> {
    let written = tokio::select! {
        biased;
        r = write_request(&mut conn.io, &conn.head, body) => r,
        _ = conn.deadline.passed() => return Err(Exchange::Failed(H1Error::TimedOut)),
    };
    if let Err(e) = written {
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
        let read = tokio::select! {
            biased;
            r = conn.io.read_buf(&mut conn.buf) => r,
            _ = conn.deadline.passed() => return Err(Exchange::Failed(H1Error::TimedOut)),
        };
        match read {
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
