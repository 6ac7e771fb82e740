//! One client connection: read a request, hand it to the router, write the
//! answer, and again while the client keeps the connection.

use std::future::Future;
use std::pin::{pin, Pin};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http::{header, Method, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::WaitForCancellationFuture;

use super::request::{self, Framing as In, Head, Refusal};
use super::response::{self, Framing as Out, Persistence};
use super::{
    Handler, Incoming, Reply, RequestBody, Whole, BODY_READ_TIMEOUT, HEADER_READ_TIMEOUT,
    MAX_HEAD_BYTES,
};
use crate::deadline::Deadline;
use crate::h1::chunked::ChunkedDecoder;

/// Read buffer growth step.
const READ_CHUNK: usize = 8 * 1024;
/// Bytes of a pipelined next request kept while one is answered; beyond
/// that the connection is no longer read until the answer is out.
const MAX_AHEAD: usize = MAX_HEAD_BYTES;
/// Answer bytes gathered before a write while frames keep coming.
const MAX_GATHER: usize = 64 * 1024;
/// How long a connection refused mid-request keeps reading (and dropping)
/// what the client still sends, so that it gets the answer and not a reset.
const LINGER: Duration = Duration::from_secs(2);

/// Why a connection ends.
enum End {
    /// The client closed it, or it failed.
    Closed,
    /// Shutting down, and no request was under way.
    Stopped,
    /// A head or body did not arrive in time.
    TimedOut,
    /// The request cannot be served; answer it and close.
    Refused(Refusal),
}

struct Conn {
    io: TcpStream,
    /// Read and not yet consumed.
    buf: BytesMut,
    /// To be written.
    out: Vec<u8>,
    deadline: Deadline,
}

/// Serve requests on `io` until the client closes, asks to close, or
/// `stop` (then the request under way, if any, is finished first).
pub(super) async fn serve(
    io: TcpStream,
    mut handler: impl Handler,
    stop: super::Stop,
    max_body: usize,
) {
    let mut c = Conn {
        io,
        buf: BytesMut::with_capacity(READ_CHUNK),
        out: Vec::with_capacity(READ_CHUNK),
        deadline: Deadline::new(HEADER_READ_TIMEOUT),
    };
    let mut stopped = pin!(stop.token.cancelled());
    loop {
        let head = match c.read_head(stopped.as_mut()).await {
            Ok(h) => h,
            Err(End::Refused(r)) => return c.refuse(r).await,
            Err(End::Closed | End::Stopped | End::TimedOut) => return,
        };
        let body = match c.read_body(&head, max_body).await {
            Ok(b) => b,
            Err(End::Refused(r)) => return c.refuse(r).await,
            Err(_) => return,
        };
        let read_whole = body.is_some();
        let head_request = head.method == Method::HEAD;
        let version = head.version;
        let keep = head.keep_alive && read_whole;
        let req = Incoming {
            method: head.method,
            uri: head.uri,
            version,
            headers: head.headers,
            body: match body {
                Some(bytes) => RequestBody::Whole(bytes),
                None => RequestBody::TooLarge,
            },
        };
        // Pinned where it is made, and watched through a reference: the
        // handler's future is large (kilobytes), and each move would copy
        // it; boxing it instead costs an allocation of that size per request.
        let answering = pin!(handler.handle(req));
        let Some(answer) = unless_gone(&mut c.io, &mut c.buf, answering).await else {
            return;
        };
        let keep = keep && !stop.is_set();
        match c.write_answer(answer, head_request, version, keep).await {
            Ok(true) => {}
            Ok(false) if !read_whole => return c.linger().await,
            Ok(false) | Err(()) => return,
        }
    }
}

impl Conn {
    /// Make room for a read.
    fn reserve(&mut self) {
        make_room(&mut self.buf);
    }

    /// Read until a whole head is in, within the header-read timeout; stop
    /// waiting for one that has not started when `stopped` fires.
    async fn read_head(
        &mut self,
        mut stopped: Pin<&mut WaitForCancellationFuture<'_>>,
    ) -> Result<Head, End> {
        let mut armed = false;
        loop {
            if !self.buf.is_empty() {
                if let Some(h) =
                    request::parse(&mut self.buf, MAX_HEAD_BYTES).map_err(End::Refused)?
                {
                    return Ok(h);
                }
            }
            if !armed {
                self.deadline.set(HEADER_READ_TIMEOUT);
                armed = true;
            }
            self.reserve();
            let idle = self.buf.is_empty();
            tokio::select! {
                biased;
                r = self.io.read_buf(&mut self.buf) => match r {
                    Ok(0) | Err(_) => return Err(End::Closed),
                    Ok(_) => {}
                },
                _ = stopped.as_mut(), if idle => return Err(End::Stopped),
                _ = self.deadline.passed() => return Err(End::TimedOut),
            }
        }
    }

    /// Read more bytes, each read within the body-read timeout.
    async fn read_more(&mut self) -> Result<(), End> {
        self.deadline.set(BODY_READ_TIMEOUT);
        self.reserve();
        tokio::select! {
            biased;
            r = self.io.read_buf(&mut self.buf) => match r {
                Ok(0) | Err(_) => Err(End::Closed),
                Ok(_) => Ok(()),
            },
            _ = self.deadline.passed() => Err(End::TimedOut),
        }
    }

    /// The whole body, or `None` when it is over `max_body` (then it is not
    /// read, or not to its end).
    async fn read_body(&mut self, head: &Head, max_body: usize) -> Result<Option<Bytes>, End> {
        match head.framing {
            In::Empty => Ok(Some(Bytes::new())),
            In::Length(n) if n > max_body as u64 => Ok(None),
            In::Length(n) => {
                let n = n as usize;
                if head.expect_continue && self.buf.len() < n {
                    self.go_ahead().await?;
                }
                while self.buf.len() < n {
                    self.read_more().await?;
                }
                Ok(Some(self.buf.split_to(n).freeze()))
            }
            In::Chunked => {
                if head.expect_continue && self.buf.is_empty() {
                    self.go_ahead().await?;
                }
                let mut decoder = ChunkedDecoder::new();
                let mut body = BytesMut::new();
                loop {
                    let data = decoder
                        .decode(&mut self.buf)
                        .map_err(|_| End::Refused(Refusal::Bad("invalid chunked body")))?;
                    if body.is_empty() {
                        body = data;
                    } else {
                        body.extend_from_slice(&data);
                    }
                    if body.len() > max_body {
                        return Ok(None);
                    }
                    if decoder.is_done() {
                        return Ok(Some(body.freeze()));
                    }
                    self.read_more().await?;
                }
            }
        }
    }

    /// `100 Continue`: the client may send its body.
    async fn go_ahead(&mut self) -> Result<(), End> {
        self.io
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .map_err(|_| End::Closed)
    }

    /// Write `out` to the client.
    async fn flush(&mut self) -> Result<(), ()> {
        let r = self.io.write_all(&self.out).await;
        self.out.clear();
        r.map_err(|_| ())
    }

    /// Write the answer, its body as it comes (everything ready at once in
    /// one write). `Ok(true)` when the connection can take another request.
    async fn write_answer(
        &mut self,
        answer: Reply,
        head_request: bool,
        version: Version,
        keep: bool,
    ) -> Result<bool, ()> {
        let answer = match answer {
            Reply::Response(r) => r,
            Reply::Whole(w) => return self.write_whole(w, head_request, version, keep).await,
        };
        let (parts, mut body) = answer.into_parts();
        // A HEAD answer's body is gone; its length is what the handler said.
        let exact = if head_request {
            parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok())
        } else {
            body.size_hint().exact()
        };
        let framing = Out::choose(parts.status, head_request, version, exact);
        let keep = keep && !framing.ends_connection();
        self.out.clear();
        let persistence = Persistence::of(version, keep);
        response::write_head(
            &mut self.out,
            parts.status,
            &parts.headers,
            framing,
            persistence,
        );
        if let Out::None(_) = framing {
            self.flush().await?;
            return Ok(keep);
        }
        loop {
            let next = match body.frame().now_or_never() {
                Some(next) => next,
                None => {
                    self.flush().await?;
                    match unless_gone(&mut self.io, &mut self.buf, pin!(body.frame())).await {
                        Some(next) => next,
                        None => return Err(()),
                    }
                }
            };
            match next {
                None => break,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        response::write_data(&mut self.out, framing, &data);
                    }
                    if self.out.len() >= MAX_GATHER {
                        self.flush().await?;
                    }
                }
                Some(Err(e)) => {
                    // The client sees the body cut short (no last chunk).
                    tracing::debug!(error = %e, "answer body failed");
                    let _ = self.flush().await;
                    return Err(());
                }
            }
        }
        response::write_end(&mut self.out, framing);
        self.flush().await?;
        Ok(keep)
    }

    /// Write a whole answer in one write; `Ok(true)` when the connection
    /// can take another request.
    async fn write_whole(
        &mut self,
        w: Whole,
        head_request: bool,
        version: Version,
        keep: bool,
    ) -> Result<bool, ()> {
        let framing = Out::choose(w.status, head_request, version, Some(w.body.len() as u64));
        let keep = keep && !framing.ends_connection();
        self.out.clear();
        let content_type = (&header::CONTENT_TYPE, &w.content_type);
        let retry_after = w.retry_after.as_ref().map(|v| (&header::RETRY_AFTER, v));
        response::write_head(
            &mut self.out,
            w.status,
            std::iter::once(content_type).chain(retry_after),
            framing,
            Persistence::of(version, keep),
        );
        response::write_data(&mut self.out, framing, &w.body);
        response::write_end(&mut self.out, framing);
        self.flush().await?;
        Ok(keep)
    }

    /// Answer a request refused before any handler saw it, and close.
    async fn refuse(mut self, why: Refusal) {
        let (status, message) = match why {
            Refusal::TooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "request headers are too large",
            ),
            Refusal::Bad(m) => (StatusCode::BAD_REQUEST, m),
            Refusal::NotImplemented(m) => (StatusCode::NOT_IMPLEMENTED, m),
        };
        self.out = response::refusal(status, message);
        if self.flush().await.is_ok() {
            self.linger().await;
        }
    }

    /// Close after an answer sent before the request was read to its end:
    /// stop writing, then drop what the client still sends for a while, so
    /// that closing with unread bytes does not reset the connection before
    /// the client has read the answer.
    async fn linger(mut self) {
        if self.io.shutdown().await.is_err() {
            return;
        }
        let drain = async {
            loop {
                self.buf.clear();
                self.reserve();
                match self.io.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
}

/// Make room in `buf` for a read.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < READ_CHUNK / 2 {
        buf.reserve(READ_CHUNK);
    }
}

/// Await `fut` while watching the connection: `None` if the client closes
/// it first (so the request is dropped, which cancels its work upstream).
/// Bytes of a next request that arrive meanwhile are kept in `buf`.
async fn unless_gone<F: Future>(
    io: &mut TcpStream,
    buf: &mut BytesMut,
    mut fut: Pin<&mut F>,
) -> Option<F::Output> {
    loop {
        if buf.len() >= MAX_AHEAD {
            return Some(fut.as_mut().await);
        }
        make_room(buf);
        tokio::select! {
            biased;
            out = fut.as_mut() => return Some(out),
            r = io.read_buf(buf) => match r {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
        }
    }
}
