//! An answer's body, read from its connection by whoever polls it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::Frame;

use super::head::Framing;
use super::{Conn, H1Error, READ_CHUNK};

/// An answer's body, read from the connection as it is polled. Each frame
/// is everything that arrived so far.
pub struct Body {
    pub(super) conn: Option<Conn>,
    pub(super) framing: Framing,
    /// The connection goes back to its pool when the body is complete
    /// (keep-alive).
    pub(super) reuse: bool,
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
    pub(super) fn settle(&mut self) {
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
        if let Some(conn) = conn.filter(|_| std::mem::take(&mut self.reuse)) {
            // Bytes past the answer's end would be a protocol error.
            if conn.buf.is_empty() {
                super::pool::checkin(conn);
            }
        }
    }

    /// Stop reading: the connection is closed, not pooled.
    fn end(&mut self) {
        self.conn = None;
        self.framing = Framing::Done;
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
                // Not copied: the buffer is shared with the frame until it is
                // dropped (an answer passed on is, once written), and is then
                // the connection's own again when it next reads.
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
                    this.end();
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
                this.end();
                return Poll::Ready(Some(Err(e.into())));
            }
            conn.buf.reserve(READ_CHUNK);
            match conn.io.try_read_buf(&mut conn.buf) {
                Ok(0) => {
                    let to_close = matches!(this.framing, Framing::ToClose);
                    this.end();
                    if to_close {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Err(H1Error::Closed)));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    this.end();
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done)
    }
}
