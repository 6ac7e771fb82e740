//! The gateway's HTTP/1.1 server: the API and metrics listeners' connections.
//!
//! Why not hyper's server: on the proxy's hot path its per-request work
//! (a dispatcher state machine, a header-read timer armed and cleared for
//! every request, the body channel, boxed futures) cost more CPU than the
//! rest of the gateway put together; `scripts/bench-gateway` shows the
//! difference. This one reads a request with the task that serves it,
//! parses the head without copying it, and writes an answer that is ready
//! at once (every buffered answer) in one write.
//!
//! Scope: HTTP/1.1 and 1.0, keep-alive and pipelining, `Content-Length` and
//! `chunked` request bodies (read whole before the handler runs, as every
//! handler needs them whole), `Expect: 100-continue`, answers framed by
//! length or by chunks (streams pass each frame on as it comes). Bounds:
//! heads over [`MAX_HEAD_BYTES`] get 431; a head must arrive within
//! [`HEADER_READ_TIMEOUT`] of the connection's opening or going idle
//! (slowloris); a body that stalls for [`BODY_READ_TIMEOUT`] ends the
//! connection; a body over `limits.max_body` is not read, and the handler
//! answers 413 (the API in the caller's dialect). A client that closes its connection
//! while its request is served cancels the request.

mod conn;
mod headers;
mod request;
mod response;

pub use headers::RawHeaders;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use axum::Router;
use bytes::Bytes;
use futures::future::Either;
use http::{header, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

/// Largest request head (request line + headers); larger gets 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A client must send its request head within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);
/// A request body may pause this long between reads.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// A request's body as the server read it.
#[derive(Debug)]
pub enum RequestBody {
    /// All of it.
    Whole(Bytes),
    /// Over the size limit, so not read: the handler answers 413 (and the
    /// connection closes after the answer).
    TooLarge,
}

/// A request as the server read it. Its headers are as they arrived
/// ([`RawHeaders`]); [`Incoming::into_request`] makes the `http::Request`
/// that routers take.
#[derive(Debug)]
pub struct Incoming {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: RawHeaders,
    pub body: RequestBody,
}

impl Incoming {
    /// The request as an `http::Request`, its headers in a `HeaderMap`.
    pub fn into_request(self) -> Request<RequestBody> {
        let mut req = Request::new(self.body);
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.to_map();
        req
    }
}

/// A handler's answer: a response, or a whole body with its status and
/// content type (the proxy's answer to every request not streamed), which
/// is written as it is, without a header map or a boxed body.
#[derive(Debug)]
pub enum Reply {
    Response(Response<Body>),
    Whole(Whole),
}

/// A whole answer: status, content type, `Retry-After` if any, body.
#[derive(Debug)]
pub struct Whole {
    pub status: StatusCode,
    pub content_type: HeaderValue,
    pub retry_after: Option<HeaderValue>,
    pub body: Bytes,
}

impl From<Response<Body>> for Reply {
    fn from(r: Response<Body>) -> Self {
        Reply::Response(r)
    }
}

impl IntoResponse for Whole {
    fn into_response(self) -> axum::response::Response {
        let mut r = Response::new(Body::from(self.body));
        *r.status_mut() = self.status;
        let headers = r.headers_mut();
        headers.insert(header::CONTENT_TYPE, self.content_type);
        if let Some(v) = self.retry_after {
            headers.insert(header::RETRY_AFTER, v);
        }
        r
    }
}

impl IntoResponse for Reply {
    fn into_response(self) -> axum::response::Response {
        match self {
            Reply::Response(r) => r,
            Reply::Whole(w) => w.into_response(),
        }
    }
}

/// What answers a connection's requests.
pub trait Handler: Clone + Send + 'static {
    fn handle(&mut self, req: Incoming) -> impl Future<Output = Reply> + Send + 'static;

    /// The copy one API worker serves with (each of its connections gets a
    /// clone of it): what a handler clones per request should then be that
    /// worker's alone, not shared with the others (see [`crate::workers`]).
    fn for_worker(&self) -> Self {
        self.clone()
    }
}

/// A plain router (the metrics listener, tests): a body over the limit gets
/// an OpenAI-style 413 without reaching it.
impl Handler for Router {
    fn handle(&mut self, req: Incoming) -> impl Future<Output = Reply> + Send + 'static {
        let (parts, body) = req.into_request().into_parts();
        let answer = match body {
            RequestBody::Whole(b) => {
                Either::Left(self.call(Request::from_parts(parts, Body::from(b))))
            }
            RequestBody::TooLarge => Either::Right(std::future::ready(Ok(response::too_large()))),
        };
        async move {
            match answer.await {
                Ok(a) => Reply::Response(a),
                Err(never) => match never {},
            }
        }
    }
}

/// The next connection on `listener`, or `None` once `stop` fires. Accept
/// errors (out of file descriptors, a connection reset before it was
/// accepted) are logged and retried after a short pause.
pub(crate) async fn accept(
    listener: &TcpListener,
    stop: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return None,
            r = listener.accept() => match r {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
        }
    }
}

/// Shutdown as a connection sees it: a token that an idle connection waits
/// on, and a flag read after every answer (a plain load; the token's own
/// check takes a lock).
#[derive(Clone, Default)]
pub(crate) struct Stop {
    token: CancellationToken,
    flag: Arc<AtomicBool>,
}

impl Stop {
    fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Has shutdown begun?
    fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

/// The open connections of one runtime, and their graceful shutdown.
pub(crate) struct Connections {
    tracker: TaskTracker,
    stop: Stop,
    max_body: usize,
}

impl Connections {
    /// Connections whose request bodies are read up to `max_body` bytes.
    pub(crate) fn new(max_body: usize) -> Self {
        Self {
            tracker: TaskTracker::new(),
            stop: Stop::default(),
            max_body,
        }
    }

    /// Serve `stream` on a task of the current runtime.
    pub(crate) fn serve(&self, stream: TcpStream, handler: impl Handler) {
        let _ = stream.set_nodelay(true);
        self.tracker.spawn(conn::serve(
            stream,
            handler,
            self.stop.clone(),
            self.max_body,
        ));
    }

    /// Close idle connections, let the others finish the request under way
    /// and close; wait up to `grace` for them.
    pub(crate) async fn drain(self, grace: Duration) {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                ?grace,
                "grace period over; closing the remaining connections"
            );
        }
    }
}

#[cfg(test)]
mod tests;
