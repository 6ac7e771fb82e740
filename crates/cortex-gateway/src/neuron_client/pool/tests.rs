//! The pool over real sockets, against a raw HTTP/1.1 server whose answers
//! are written by hand: reuse, stale connections, the rule that a written
//! request is never sent again, and the framing cases that are refused.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// What the server saw: connections and whole requests.
#[derive(Clone, Default)]
struct Seen {
    conns: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Seen {
    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A server that answers the n-th request (0-based, over all connections)
/// with the parts `answer(n)` gives, then closes the connection if
/// `close_after` says so (or at once, with no answer, when `answer(n)` is
/// empty: a neuron that died after reading the request).
async fn server<F>(answer: F, close_after: bool) -> (Arc<str>, Seen)
where
    F: Fn(usize) -> Vec<&'static [u8]> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: Arc<str> = listener.local_addr().unwrap().to_string().into();
    let seen = Seen::default();
    let answer = Arc::new(answer);
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            s2.conns.fetch_add(1, Ordering::SeqCst);
            let answer = Arc::clone(&answer);
            let seen = s2.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one request: head, then content-length bytes.
                    let mut tmp = [0u8; 4096];
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + len {
                        match s.read(&mut tmp).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    buf.drain(..end + len);
                    let n = seen.requests.fetch_add(1, Ordering::SeqCst);
                    let parts = answer(n);
                    if parts.is_empty() {
                        return;
                    }
                    for part in parts {
                        if s.write_all(part).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    if close_after {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A kept-alive answer with the body `ok`.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

fn pool() -> Pool {
    Pool::new(Duration::from_secs(2), 8, MAX_IDLE_AGE)
}

fn request(addr: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method(Method::POST)
        .uri("/x")
        .header(header::HOST, addr)
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

/// One request; the answer's status and whole body.
async fn get(pool: &Pool, addr: &Arc<str>) -> Result<(StatusCode, Bytes), String> {
    let resp = pool
        .send(addr, request(addr))
        .await
        .map_err(|e| crate::error::chain(&e))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// Wait (bounded) until `f` is true.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..250 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn a_content_length_answer_and_the_connection_is_reused() {
    let (addr, seen) = server(
        |_| vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"],
        false,
    )
    .await;
    let p = pool();
    for _ in 0..3 {
        let (status, body) = get(&p, &addr).await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(&body[..], b"hello");
        assert_eq!(p.idle_count(&addr), 1);
    }
    assert_eq!(seen.conns(), 1, "one connection for three requests");
}

#[tokio::test]
async fn a_chunked_answer_is_read_whole_and_its_connection_reused() {
    let (addr, seen) = server(
        |_| {
            vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                b"3\r\nabc\r\n",
                b"2\r\nde\r\n0\r\n\r\n",
            ]
        },
        false,
    )
    .await;
    let p = pool();
    for _ in 0..2 {
        assert_eq!(&get(&p, &addr).await.unwrap().1[..], b"abcde");
    }
    assert_eq!(seen.conns(), 1);
}

#[tokio::test]
async fn connection_close_and_read_to_close_are_not_reused() {
    let (addr, seen) = server(
        |n| {
            if n % 2 == 0 {
                vec![b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"]
            } else {
                vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end"]
            }
        },
        true,
    )
    .await;
    let p = pool();
    assert_eq!(&get(&p, &addr).await.unwrap().1[..], b"ok");
    assert_eq!(p.idle_count(&addr), 0);
    assert_eq!(&get(&p, &addr).await.unwrap().1[..], b"until the end");
    assert_eq!(p.idle_count(&addr), 0);
    assert_eq!(seen.conns(), 2);
}

#[tokio::test]
async fn connections_idle_too_long_are_closed_not_reused() {
    let (addr, seen) = server(|_| vec![OK], false).await;
    let age = Duration::from_secs(1);
    let p = Pool::new(Duration::from_secs(2), 8, age);
    // Two connections, idle since now.
    let (a, b) = tokio::join!(get(&p, &addr), get(&p, &addr));
    assert_eq!(&a.unwrap().1[..], b"ok");
    assert_eq!(&b.unwrap().1[..], b"ok");
    assert_eq!(p.idle_count(&addr), 2);
    assert_eq!(seen.conns(), 2);
    // One of them keeps working; the other only ages.
    tokio::time::sleep(age / 2).await;
    get(&p, &addr).await.unwrap();
    tokio::time::sleep(age * 2 / 3).await;
    get(&p, &addr).await.unwrap();
    assert_eq!(
        p.idle_count(&addr),
        1,
        "the connection idle past its age was closed when another came back"
    );
    // And one idle past its age is not taken again.
    tokio::time::sleep(age * 2).await;
    get(&p, &addr).await.unwrap();
    assert_eq!(seen.conns(), 3);
}

/// A stale idle connection (the neuron closed it after its answer) is
/// found before the next request is written, and replaced: each request
/// reaches the neuron once.
#[tokio::test]
async fn a_pooled_connection_the_node_closed_is_replaced_before_writing() {
    let (addr, seen) = server(|_| vec![OK], true).await;
    let p = pool();
    for _ in 0..3 {
        assert_eq!(&get(&p, &addr).await.unwrap().1[..], b"ok");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.conns(), 3);
    assert_eq!(seen.requests(), 3, "no request was sent twice");
}

/// A request that was written is never sent again: a kept-alive connection
/// that closes after reading the whole request, without a byte of answer
/// (a neuron that died mid-generation), is an error, and the neuron saw
/// that request once. The next request goes on a new connection.
#[tokio::test]
async fn a_written_request_is_never_sent_again() {
    let (addr, seen) = server(
        |n| match n {
            1 => vec![],
            _ => vec![OK],
        },
        false,
    )
    .await;
    let p = pool();
    assert_eq!(&get(&p, &addr).await.unwrap().1[..], b"ok");
    let resp = p.send(&addr, request(&addr)).await;
    let err = resp.expect_err("no answer is an error");
    assert!(matches!(err, PoolError::Failed(_)), "{err:?}");
    assert!(!err.nothing_sent(), "the request was written");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(seen.requests(), 2, "the written request was not sent again");
    assert_eq!(seen.conns(), 1);
    assert_eq!(&get(&p, &addr).await.unwrap().1[..], b"ok");
    assert_eq!((seen.requests(), seen.conns()), (3, 2));
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_and_its_connection_is_not_pooled() {
    let (addr, _) = server(
        |_| vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"],
        true,
    )
    .await;
    let p = pool();
    assert!(get(&p, &addr).await.is_err());
    assert_eq!(p.idle_count(&addr), 0);
}

#[tokio::test]
async fn dropping_a_body_early_closes_the_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: Arc<str> = listener.local_addr().unwrap().to_string().into();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut tmp = [0u8; 4096];
        let _ = s.read(&mut tmp).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
            .await
            .unwrap();
        // The client drops the body: the next read sees the close.
        let n = s.read(&mut tmp).await.unwrap_or(0);
        let _ = tx.send(n);
    });
    let p = pool();
    let resp = p.send(&addr, request(&addr)).await.unwrap();
    let mut body = resp.into_body();
    assert_eq!(
        &body.frame().await.unwrap().unwrap().into_data().unwrap()[..],
        b"abc"
    );
    drop(body);
    let n = tokio::time::timeout(Duration::from_secs(5), rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the server saw the connection close");
    assert_eq!(p.idle_count(&addr), 0);
}

#[tokio::test]
async fn nobody_listening_is_a_connect_error_and_nothing_was_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: Arc<str> = listener.local_addr().unwrap().to_string().into();
    drop(listener);
    let err = pool().send(&addr, request(&addr)).await.unwrap_err();
    assert!(matches!(err, PoolError::Connect { .. }), "{err:?}");
    assert!(err.nothing_sent());
}

#[tokio::test]
async fn a_garbage_answer_is_an_error() {
    let (addr, _) = server(|_| vec![b"SMTP ready\r\n\r\n"], true).await;
    let err = pool().send(&addr, request(&addr)).await.unwrap_err();
    assert!(matches!(err, PoolError::Failed(_)), "{err:?}");
}

/// The framing cases a neuron's answer must not get away with: each is an
/// error, and the connection is closed, never pooled.
#[tokio::test]
async fn ambiguous_or_malformed_framing_is_refused_and_the_connection_closed() {
    let cases: [(&str, &'static [u8]); 4] = [
        (
            "a length with a sign",
            b"HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\nhello",
        ),
        (
            "both Transfer-Encoding and Content-Length",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "a bare LF after a chunk size",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
        ),
        (
            "a bare LF ending the chunks",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\n\n",
        ),
    ];
    for (what, answer) in cases {
        let (addr, seen) = server(move |_| vec![answer], false).await;
        let p = pool();
        assert!(get(&p, &addr).await.is_err(), "{what}: accepted");
        assert_eq!(p.idle_count(&addr), 0, "{what}: pooled");
        // The server's connection ends: its read loop returns.
        let conns = Arc::clone(&seen.conns);
        assert_eq!(conns.load(Ordering::SeqCst), 1);
        assert!(get(&p, &addr).await.is_err(), "{what}: accepted");
        assert_eq!(seen.conns(), 2, "{what}: a connection was reused");
        eventually(&format!("{what}: requests counted"), || {
            seen.requests() == 2
        })
        .await;
    }
}

/// The answer head must come within the caller's bound; a connection
/// whose answer timed out is not pooled.
#[tokio::test]
async fn an_answer_head_that_does_not_come_is_bounded_by_the_caller() {
    let (addr, _) = server(|_| vec![], false).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent: Arc<str> = listener.local_addr().unwrap().to_string().into();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut tmp = [0u8; 4096];
        while s.read(&mut tmp).await.is_ok_and(|n| n > 0) {}
    });
    let p = pool();
    let sent = tokio::time::timeout(
        Duration::from_millis(200),
        p.send(&silent, request(&silent)),
    );
    assert!(sent.await.is_err(), "no answer head: still waiting");
    assert_eq!(p.idle_count(&silent), 0);
    drop(addr);
}
