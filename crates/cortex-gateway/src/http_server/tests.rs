//! The server over real sockets, with raw requests: framing, keep-alive,
//! pipelining, streams, limits, timeouts, cancellation and draining.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use super::{Connections, HEADER_READ_TIMEOUT};

const MAX_BODY: usize = 1024;

/// Sets its flag when dropped (a handler's work was cancelled).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Server {
    addr: SocketAddr,
    /// Chunks for `/stream`, one channel per request in order.
    streams: mpsc::UnboundedSender<mpsc::UnboundedReceiver<Bytes>>,
    /// Set when a `/hang` request is dropped.
    hung_dropped: Arc<AtomicBool>,
    /// Signals `/slow` to answer.
    slow: mpsc::UnboundedSender<()>,
    drain: Option<oneshot::Sender<Duration>>,
    done: Option<oneshot::Receiver<()>>,
}

fn router(
    streams: mpsc::UnboundedReceiver<mpsc::UnboundedReceiver<Bytes>>,
    hung_dropped: Arc<AtomicBool>,
    slow: mpsc::UnboundedReceiver<()>,
) -> Router {
    let streams = Arc::new(tokio::sync::Mutex::new(streams));
    let slow = Arc::new(tokio::sync::Mutex::new(slow));
    Router::new()
        .route("/hello", get(|| async { "hello" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
            "/stream",
            get(move || {
                let streams = streams.clone();
                async move {
                    let rx = streams.lock().await.recv().await.unwrap();
                    let s = futures::stream::unfold(rx, |mut rx| async move {
                        rx.recv()
                            .await
                            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
                    });
                    Body::from_stream(s)
                }
            }),
        )
        .route(
            "/hang",
            get(move || {
                let flag = DropFlag(hung_dropped.clone());
                async move {
                    std::future::pending::<()>().await;
                    drop(flag);
                    ""
                }
            }),
        )
        .route(
            "/slow",
            get(move || {
                let slow = slow.clone();
                async move {
                    slow.lock().await.recv().await;
                    "slow done"
                }
            }),
        )
        .route(
            "/empty",
            get(|| async { StatusCode::NO_CONTENT.into_response() }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY))
}

async fn start() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (streams_tx, streams_rx) = mpsc::unbounded_channel();
    let (slow_tx, slow_rx) = mpsc::unbounded_channel();
    let hung_dropped = Arc::new(AtomicBool::new(false));
    let app = router(streams_rx, hung_dropped.clone(), slow_rx);
    let (drain_tx, drain_rx) = oneshot::channel::<Duration>();
    let (done_tx, done_rx) = oneshot::channel();
    tokio::spawn(async move {
        let conns = Connections::new(MAX_BODY);
        let mut drain_rx = drain_rx;
        let grace = loop {
            tokio::select! {
                g = &mut drain_rx => break g.unwrap_or(Duration::ZERO),
                r = listener.accept() => conns.serve(r.unwrap().0, app.clone()),
            }
        };
        drop(listener);
        conns.drain(grace).await;
        let _ = done_tx.send(());
    });
    Server {
        addr,
        streams: streams_tx,
        hung_dropped,
        slow: slow_tx,
        drain: Some(drain_tx),
        done: Some(done_rx),
    }
}

/// Write `bytes` to the server.
async fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).await.unwrap();
}

/// Read from `s` until `text` holds `want` answers' worth of `needle`, or
/// the connection ends.
async fn read_until(s: &mut TcpStream, needle: &str, want: usize) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&all).matches(needle).count() < want {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no answer: {}", String::from_utf8_lossy(&all)),
        }
    }
    String::from_utf8(all).unwrap()
}

/// Everything until the server closes the connection.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
        .await
        .expect("the server did not close the connection")
        .unwrap();
    String::from_utf8(all).unwrap()
}

#[tokio::test]
async fn keep_alive_and_pipelining() {
    let srv = start().await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    send(&mut s, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let one = read_until(&mut s, "hello", 1).await;
    assert!(one.starts_with("HTTP/1.1 200 OK\r\n"), "{one}");
    assert!(one.contains("content-length: 5\r\n"), "{one}");
    assert!(!one.contains("connection: close"), "{one}");
    // Two requests in one write, the second with a body: two answers, in
    // order, on the same connection.
    send(
        &mut s,
        b"GET /hello HTTP/1.1\r\n\r\nPOST /echo HTTP/1.1\r\nContent-Length: 4\r\n\r\nping",
    )
    .await;
    let two = read_until(&mut s, "HTTP/1.1 200", 2).await;
    let hello = two.find("hello").unwrap();
    let ping = two.find("ping").unwrap();
    assert!(hello < ping, "{two}");
    // The client asks to close: the answer says so and the server closes.
    send(&mut s, b"GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    let last = read_to_close(&mut s).await;
    assert!(last.contains("connection: close\r\n"), "{last}");
    assert!(last.ends_with("hello"), "{last}");
}

#[tokio::test]
async fn bodies_in_pieces_chunked_and_after_100_continue() {
    let srv = start().await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    send(
        &mut s,
        b"POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut s, b"defghij").await;
    let a = read_until(&mut s, "abcdefghij", 1).await;
    assert!(a.contains("content-length: 10\r\n"), "{a}");

    send(
        &mut s,
        b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nfoo\r\n",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    send(&mut s, b"4;ext=1\r\nbar!\r\n0\r\nTrailer: x\r\n\r\n").await;
    let b = read_until(&mut s, "foobar!", 1).await;
    assert!(b.contains("content-length: 7\r\n"), "{b}");

    send(
        &mut s,
        b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
    )
    .await;
    let go = read_until(&mut s, "100 Continue", 1).await;
    assert_eq!(go, "HTTP/1.1 100 Continue\r\n\r\n");
    send(&mut s, b"hello").await;
    let c = read_until(&mut s, "hello", 1).await;
    assert!(c.starts_with("HTTP/1.1 200 OK\r\n"), "{c}");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_unread_then_close() {
    let srv = start().await;
    // Declared too large: refused unread, even after `Expect`.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    send(
        &mut s,
        b"POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5000\r\n\r\n",
    )
    .await;
    let a = read_to_close(&mut s).await;
    assert!(a.starts_with("HTTP/1.1 413 "), "{a}");
    assert!(a.contains("\"code\":\"request_too_large\""), "{a}");
    assert!(!a.contains("100 Continue"), "{a}");
    assert!(a.contains("connection: close\r\n"), "{a}");
    // Sent anyway, in full: the client still reads the answer (no reset).
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut req = b"POST /echo HTTP/1.1\r\nContent-Length: 5000\r\n\r\n".to_vec();
    req.extend_from_slice(&[b'x'; 5000]);
    send(&mut s, &req).await;
    let b = read_to_close(&mut s).await;
    assert!(b.starts_with("HTTP/1.1 413 "), "{b}");
    // Chunked and growing too large.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let chunk = format!("400\r\n{}\r\n", "y".repeat(1024));
    let req = format!("POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}");
    send(&mut s, req.as_bytes()).await;
    let c = read_to_close(&mut s).await;
    assert!(c.starts_with("HTTP/1.1 413 "), "{c}");
}

#[tokio::test]
async fn refused_heads_get_a_json_error_and_close() {
    let srv = start().await;
    for (req, status) in [
        ("GET /hello HTTP/1.1\r\nX\x01: y\r\n\r\n", 400),
        (
            "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
        ),
        (
            "POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
        (
            "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
    ] {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        send(&mut s, req.as_bytes()).await;
        let a = read_to_close(&mut s).await;
        assert!(
            a.starts_with(&format!("HTTP/1.1 {status} ")),
            "{req:?}: {a}"
        );
        let body: serde_json::Value =
            serde_json::from_str(a.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert!(body["error"]["message"].is_string(), "{a}");
    }
    let big = format!(
        "GET /hello HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    send(&mut s, big.as_bytes()).await;
    assert!(read_to_close(&mut s).await.starts_with("HTTP/1.1 431 "));
}

#[tokio::test]
async fn http_1_0_and_head_and_bodiless_answers() {
    let srv = start().await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    send(&mut s, b"GET /hello HTTP/1.0\r\n\r\n").await;
    let a = read_to_close(&mut s).await;
    assert!(
        a.contains("content-length: 5\r\nconnection: close\r\n\r\nhello"),
        "{a}"
    );
    // An HTTP/1.0 client that asks to keep the connection is told so.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    for _ in 0..2 {
        send(
            &mut s,
            b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        )
        .await;
        let a = read_until(&mut s, "hello", 1).await;
        assert!(a.contains("connection: keep-alive\r\n\r\nhello"), "{a}");
    }

    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    send(
        &mut s,
        b"HEAD /hello HTTP/1.1\r\n\r\nGET /empty HTTP/1.1\r\n\r\n",
    )
    .await;
    let b = read_until(&mut s, "HTTP/1.1", 2).await;
    assert_eq!(
        b,
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 5\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"
    );

    // A stream to an HTTP/1.0 client runs to the connection's close.
    let (tx, rx) = mpsc::unbounded_channel();
    srv.streams.send(rx).unwrap();
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    send(&mut s, b"GET /stream HTTP/1.0\r\n\r\n").await;
    tx.send(Bytes::from_static(b"data: 1\n\n")).unwrap();
    drop(tx);
    let c = read_to_close(&mut s).await;
    assert!(!c.contains("transfer-encoding"), "{c}");
    assert!(c.ends_with("\r\n\r\ndata: 1\n\n"), "{c}");
}

#[tokio::test]
async fn a_stream_reaches_the_client_chunk_by_chunk() {
    let srv = start().await;
    let (tx, rx) = mpsc::unbounded_channel();
    srv.streams.send(rx).unwrap();
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    send(&mut s, b"GET /stream HTTP/1.1\r\n\r\n").await;
    let head = read_until(&mut s, "\r\n\r\n", 1).await;
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    tx.send(Bytes::from_static(b"data: 1\n\n")).unwrap();
    let one = read_until(&mut s, "data: 1", 1).await;
    assert_eq!(one, "9\r\ndata: 1\n\n\r\n");
    tx.send(Bytes::from_static(b"data: 2\n\n")).unwrap();
    drop(tx);
    let two = read_until(&mut s, "0\r\n\r\n", 1).await;
    assert_eq!(two, "9\r\ndata: 2\n\n\r\n0\r\n\r\n");
    // Still open for the next request.
    send(&mut s, b"GET /hello HTTP/1.1\r\n\r\n").await;
    assert!(read_until(&mut s, "hello", 1).await.ends_with("hello"));
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_request() {
    let srv = start().await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    send(&mut s, b"GET /hang HTTP/1.1\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!srv.hung_dropped.load(Ordering::SeqCst));
    drop(s);
    for _ in 0..100 {
        if srv.hung_dropped.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the request went on after its client left");
}

#[tokio::test(start_paused = true)]
async fn an_idle_or_slow_head_times_out_but_a_busy_connection_does_not() {
    let srv = start().await;
    // A request every 6 s for a minute: each head arrives in time, so the
    // connection stays, though the first deadline was long ago.
    let mut busy = TcpStream::connect(srv.addr).await.unwrap();
    for i in 0..10 {
        send(&mut busy, b"GET /hello HTTP/1.1\r\n\r\n").await;
        assert!(
            read_until(&mut busy, "hello", 1).await.ends_with("hello"),
            "request {i}"
        );
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    // Half a head, then nothing: closed at the timeout, not before.
    let mut slow = TcpStream::connect(srv.addr).await.unwrap();
    send(&mut slow, b"GET /hello HTTP/1.1\r\nX-Slow: a").await;
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    slow.read_to_end(&mut buf).await.unwrap();
    assert!(buf.is_empty());
    let waited = started.elapsed();
    assert!(
        waited >= HEADER_READ_TIMEOUT - Duration::from_millis(10),
        "{waited:?}"
    );
    assert!(
        waited < HEADER_READ_TIMEOUT + Duration::from_secs(1),
        "{waited:?}"
    );
}

#[tokio::test]
async fn draining_closes_idle_connections_and_finishes_the_rest() {
    let mut srv = start().await;
    let mut idle = TcpStream::connect(srv.addr).await.unwrap();
    send(&mut idle, b"GET /hello HTTP/1.1\r\n\r\n").await;
    read_until(&mut idle, "hello", 1).await;
    let mut busy = TcpStream::connect(srv.addr).await.unwrap();
    send(&mut busy, b"GET /slow HTTP/1.1\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    srv.drain
        .take()
        .unwrap()
        .send(Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        read_to_close(&mut idle).await,
        "",
        "the idle one just closes"
    );
    srv.slow.send(()).unwrap();
    let a = read_to_close(&mut busy).await;
    assert!(a.contains("connection: close\r\n"), "{a}");
    assert!(a.ends_with("slow done"), "{a}");
    tokio::time::timeout(Duration::from_secs(5), srv.done.take().unwrap())
        .await
        .expect("drain did not finish")
        .unwrap();
}

/// Answers every request with a whole reply: 503, JSON, `Retry-After: 7`.
#[derive(Clone)]
struct WholeReplies;

impl super::Handler for WholeReplies {
    fn handle(
        &mut self,
        _req: super::Incoming,
    ) -> impl std::future::Future<Output = super::Reply> + Send + 'static {
        std::future::ready(super::Reply::Whole(super::Whole {
            status: StatusCode::SERVICE_UNAVAILABLE,
            content_type: http::HeaderValue::from_static("application/json"),
            retry_after: Some(http::HeaderValue::from_static("7")),
            body: Bytes::from_static(b"{\"busy\":1}"),
        }))
    }
}

#[tokio::test]
async fn whole_replies_are_framed_like_any_answer() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let conns = Connections::new(MAX_BODY);
        loop {
            conns.serve(listener.accept().await.unwrap().0, WholeReplies);
        }
    });
    let expected = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                    retry-after: 7\r\ncontent-length: 10\r\n\r\n{\"busy\":1}";
    // Kept alive, twice on one connection; then HEAD: the length, no body.
    let mut s = TcpStream::connect(addr).await.unwrap();
    send(
        &mut s,
        b"POST /x HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}GET /y HTTP/1.1\r\n\r\n",
    )
    .await;
    let two = read_until(&mut s, "{\"busy\":1}", 2).await;
    assert_eq!(two, format!("{expected}{expected}"));
    send(&mut s, b"HEAD /z HTTP/1.1\r\nconnection: close\r\n\r\n").await;
    let head = read_to_close(&mut s).await;
    assert_eq!(
        head,
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 7\r\ncontent-length: 10\r\nconnection: close\r\n\r\n"
    );
    // HTTP/1.0 asking to keep the connection: told so.
    let mut s = TcpStream::connect(addr).await.unwrap();
    send(&mut s, b"GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n").await;
    let kept = read_until(&mut s, "{\"busy\":1}", 1).await;
    assert!(kept.contains("\r\nconnection: keep-alive\r\n"), "{kept}");
}
