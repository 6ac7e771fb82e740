//! The server over real sockets, with raw requests: cancellation when a
//! client leaves, the header-read timeout (slowloris and idle keep-alive),
//! a stalled body, and draining at shutdown.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::routing::get;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::*;
use crate::neuron_client::{Answer, NeuronRequest, UpstreamError};

/// Sets its flag when dropped (a handler's work was cancelled).
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A router: `/hello`; `/hang` (never answers; sets the flag when
/// dropped); `/slow` (answers when told).
fn router(hung_dropped: Arc<AtomicBool>, slow: mpsc::UnboundedReceiver<()>) -> Router {
    let slow = Arc::new(tokio::sync::Mutex::new(slow));
    Router::new()
        .route("/hello", get(|| async { "hello" }))
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
}

/// `router` served on a fresh port until `stop`; the task ends once drained.
async fn start(
    router: Router,
    grace: Duration,
) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let served = tokio::spawn(serve(listener, router, stop.clone(), grace));
    (addr, stop, served)
}

async fn send(s: &mut TcpStream, bytes: &[u8]) {
    s.write_all(bytes).await.unwrap();
}

/// Read until `needle` is in what was read, or the connection ends.
async fn read_until(s: &mut TcpStream, needle: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(needle) {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Everything until the server closes the connection.
async fn read_to_close(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_client_that_goes_away_cancels_its_request() {
    let flag = Arc::new(AtomicBool::new(false));
    let (_tx, rx) = mpsc::unbounded_channel();
    let (addr, _stop, _served) = start(router(flag.clone(), rx), Duration::ZERO).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    send(&mut s, b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!flag.load(Ordering::SeqCst));
    drop(s);
    for _ in 0..100 {
        if flag.load(Ordering::SeqCst) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the request went on after its client left");
}

#[tokio::test(start_paused = true)]
async fn an_idle_or_slow_head_times_out_but_a_busy_connection_does_not() {
    let (_tx, rx) = mpsc::unbounded_channel();
    let app = router(Arc::new(AtomicBool::new(false)), rx);
    let (addr, _stop, _served) = start(app, Duration::ZERO).await;
    // A request every 6 s for a minute: each head arrives in time, so the
    // connection stays.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    for i in 0..10 {
        send(&mut busy, b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await;
        assert!(
            read_until(&mut busy, "hello").await.ends_with("hello"),
            "request {i}"
        );
        tokio::time::sleep(Duration::from_secs(6)).await;
    }
    // Half a head, then nothing: closed at the timeout, not before.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    send(&mut slow, b"GET /hello HTTP/1.1\r\nX-Slow: a").await;
    let started = tokio::time::Instant::now();
    let text = read_to_close(&mut slow).await;
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= HEADER_READ_TIMEOUT - Duration::from_millis(10),
        "{waited:?}"
    );
    assert!(
        waited < HEADER_READ_TIMEOUT + Duration::from_secs(1),
        "{waited:?}"
    );
    // An idle keep-alive connection goes the same way.
    let started = tokio::time::Instant::now();
    assert_eq!(read_to_close(&mut busy).await, "");
    assert!(
        started.elapsed() < HEADER_READ_TIMEOUT,
        "it had been idle 6 s"
    );
}

#[tokio::test]
async fn draining_closes_idle_connections_and_finishes_the_rest() {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = router(Arc::new(AtomicBool::new(false)), rx);
    let (addr, stop, served) = start(app, Duration::from_secs(5)).await;
    let mut idle = TcpStream::connect(addr).await.unwrap();
    send(&mut idle, b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await;
    read_until(&mut idle, "hello").await;
    let mut busy = TcpStream::connect(addr).await.unwrap();
    send(&mut busy, b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    assert_eq!(
        read_to_close(&mut idle).await,
        "",
        "the idle one just closes"
    );
    tx.send(()).unwrap();
    let a = read_to_close(&mut busy).await;
    assert!(a.contains("connection: close\r\n"), "{a}");
    assert!(a.ends_with("slow done"), "{a}");
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("drain did not finish")
        .unwrap();
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn what_is_still_open_after_the_grace_period_is_cut() {
    let flag = Arc::new(AtomicBool::new(false));
    let (_tx, rx) = mpsc::unbounded_channel();
    let app = router(flag.clone(), rx);
    let (addr, stop, served) = start(app, Duration::from_millis(200)).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    send(&mut s, b"GET /hang HTTP/1.1\r\nhost: x\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), served)
        .await
        .expect("serve ends after the grace period")
        .unwrap();
    assert!(flag.load(Ordering::SeqCst), "the hung request was dropped");
    assert_eq!(read_to_close(&mut s).await, "");
}

/// Neurons never reached in these tests.
struct Unreachable;

impl crate::neuron_client::NeuronApi for Unreachable {
    fn send<'a>(
        &'a self,
        node: &'a NodeInfo,
        _req: NeuronRequest,
    ) -> BoxFuture<'a, Result<Answer, UpstreamError>> {
        Box::pin(async move {
            Err(UpstreamError::Connect {
                node: node.name.clone(),
                cause: crate::neuron_client::cause("unreachable"),
            })
        })
    }
}

/// A body that stops coming for [`api::BODY_READ_TIMEOUT`] ends the
/// request: 400 in the route's dialect, and the connection closes.
#[tokio::test(start_paused = true)]
async fn a_stalled_body_ends_the_request() {
    let state = crate::testing::app_state(
        Arc::new(Unreachable),
        &["a"],
        cortex_core::config::LimitsConfig::default(),
    )
    .await;
    let app = api::app(Arc::new(state));
    let (addr, _stop, _served) = start(app, Duration::ZERO).await;
    for (path, anthropic) in [("/v1/chat/completions", false), ("/v1/messages", true)] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let head = format!("POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n");
        send(&mut s, head.as_bytes()).await;
        send(&mut s, b"{\"model\":").await;
        let started = tokio::time::Instant::now();
        let a = read_to_close(&mut s).await;
        assert!(started.elapsed() >= api::BODY_READ_TIMEOUT, "{path}");
        assert!(a.starts_with("HTTP/1.1 400 "), "{path}: {a}");
        let body: serde_json::Value =
            serde_json::from_str(a.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        if anthropic {
            assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
            assert_eq!(body["type"], "error", "{body}");
        } else {
            assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }
}
