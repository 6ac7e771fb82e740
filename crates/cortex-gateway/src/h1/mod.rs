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

mod answer;
mod body;
mod head;
mod pool;

use std::io;

use bytes::BytesMut;
use tokio::net::TcpStream;

pub use answer::Answer;
pub use body::Body;
pub use chunked::ChunkError;
pub use pool::{Pool, MAX_IDLE_AGE};

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
    /// No answer head in time.
    #[error("no answer in time")]
    TimedOut,
}

/// One connection to a node, with what was read from it and not consumed.
struct Conn {
    io: TcpStream,
    /// Bytes read but not consumed yet.
    buf: BytesMut,
    /// Bounds the wait for each answer's head.
    deadline: crate::deadline::Deadline,
    /// The request head being written (kept for its capacity).
    head: Vec<u8>,
    /// Where it goes back when an answer was read to its end.
    home: Home,
}

/// A connection's pool and node, with the pool's limits on idle ones.
struct Home {
    pool: std::sync::Weak<pool::PoolInner>,
    authority: std::sync::Arc<str>,
    max_idle: usize,
    max_age: std::time::Duration,
}

#[cfg(test)]
mod tests;
