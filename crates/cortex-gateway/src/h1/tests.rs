use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http_body_util::BodyExt;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::head::{parse_head, Framing};
use super::pool::encode_head;
use super::*;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use std::time::Duration;

/// A server that answers every request on every connection with what
/// `answer(n)` gives for the n-th request (0-based, over all connections),
/// then closes the connection if `close_after` says so (or at once, with no
/// answer, when `answer(n)` is empty). Counts connections.
async fn server<F>(answer: F, close_after: bool) -> (Arc<str>, Arc<AtomicUsize>)
where
    F: Fn(usize) -> Vec<Vec<u8>> + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: Arc<str> = listener.local_addr().unwrap().to_string().into();
    let conns = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let answer = Arc::new(answer);
    let counted = Arc::clone(&conns);
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            let answer = Arc::clone(&answer);
            let requests = Arc::clone(&requests);
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
                    let n = requests.fetch_add(1, Ordering::SeqCst);
                    let parts = answer(n);
                    if parts.is_empty() {
                        // No answer at all: close, like a node that dropped
                        // an idle connection just as the request came.
                        return;
                    }
                    for part in parts {
                        if s.write_all(&part).await.is_err() {
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
    (addr, conns)
}

/// The answer-head timeout in these tests.
const SECOND: Duration = Duration::from_secs(1);

/// A kept-alive answer with the body `ok`.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

fn pool() -> Pool {
    Pool::new(Duration::from_secs(2), 8, MAX_IDLE_AGE)
}

async fn get(pool: &Pool, addr: &Arc<str>) -> Result<(StatusCode, Bytes), H1Error> {
    let resp = pool
        .send(addr, &Method::POST, "/x", &[], b"{}", SECOND)
        .await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

#[tokio::test]
async fn a_content_length_answer_and_the_connection_is_reused() {
    let (addr, conns) = server(
        |_| vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".to_vec()],
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
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "one connection for three requests"
    );
}

#[tokio::test]
async fn each_worker_reuses_only_the_connections_it_opened() {
    let (addr, conns) = server(|_| vec![OK.to_vec()], false).await;
    let p = pool();
    // `n` requests on worker `id` (its own thread and runtime, while this
    // runtime keeps serving); the idle count there after each.
    let on = |id: usize, n: usize| {
        let (p, a) = (p.clone(), Arc::clone(&addr));
        tokio::task::spawn_blocking(move || {
            crate::workers::on_worker(id, async move {
                let mut idle = Vec::new();
                for _ in 0..n {
                    get(&p, &a).await.unwrap();
                    idle.push(p.idle_count(&a));
                }
                idle
            })
        })
    };
    // Worker 1 opens a connection and then reuses it.
    assert_eq!(on(1, 2).await.unwrap(), [1, 1]);
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    // Worker 2 (another runtime, another reactor) opens its own.
    assert_eq!(on(2, 1).await.unwrap(), [1]);
    assert_eq!(conns.load(Ordering::SeqCst), 2, "worker 2 opened its own");
    // Outside the workers (worker 0) nothing is idle yet.
    assert_eq!(p.idle_count(&addr), 0);
}

#[tokio::test]
async fn chunks_that_arrived_together_come_out_as_one_frame() {
    let (addr, _) = server(
        |_| {
            vec![
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec(),
                b"3\r\nab\n\r\n3\r\ncd\n\r\n3\r\nef\n\r\n".to_vec(),
                b"3\r\ngh\n\r\n0\r\n\r\n".to_vec(),
            ]
        },
        false,
    )
    .await;
    let p = pool();
    let resp = p
        .send(&addr, &Method::POST, "/x", &[], b"", SECOND)
        .await
        .unwrap();
    let mut body = resp.into_body();
    let mut frames = Vec::new();
    while let Some(f) = body.frame().await {
        frames.push(f.unwrap().into_data().unwrap());
    }
    assert_eq!(frames, vec![&b"ab\ncd\nef\n"[..], &b"gh\n"[..]]);
    assert_eq!(
        p.idle_count(&addr),
        1,
        "a complete chunked answer frees the connection"
    );
}

#[tokio::test]
async fn connection_close_and_read_to_close_are_not_reused() {
    let (addr, conns) = server(
        |n| {
            if n % 2 == 0 {
                vec![
                    b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                ]
            } else {
                vec![b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec()]
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
    assert_eq!(conns.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn connections_idle_too_long_are_closed_not_reused() {
    let (addr, conns) = server(|_| vec![OK.to_vec()], false).await;
    let age = Duration::from_secs(1);
    let p = Pool::new(Duration::from_secs(2), 8, age);
    // Two connections, idle since now.
    let (a, b) = tokio::join!(get(&p, &addr), get(&p, &addr));
    assert_eq!(&a.unwrap().1[..], b"ok");
    assert_eq!(&b.unwrap().1[..], b"ok");
    assert_eq!(p.idle_count(&addr), 2);
    assert_eq!(conns.load(Ordering::SeqCst), 2);
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
    assert_eq!(conns.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_pooled_connection_the_node_closed_is_replaced() {
    // The server answers keep-alive but closes after each answer.
    let (addr, conns) = server(|_| vec![OK.to_vec()], true).await;
    let p = pool();
    for _ in 0..3 {
        assert_eq!(&get(&p, &addr).await.unwrap().1[..], b"ok");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(conns.load(Ordering::SeqCst), 3);
}

/// A kept-alive connection that closes without a byte of answer (the node
/// dropped it as the request arrived) is retried once on a new connection;
/// a new connection that does the same is an error.
#[tokio::test]
async fn a_reused_connection_closed_without_an_answer_is_retried_fresh() {
    let (addr, conns) = server(
        |n| match n {
            1 => vec![],
            _ => vec![OK.to_vec()],
        },
        false,
    )
    .await;
    let p = pool();
    assert_eq!(&get(&p, &addr).await.unwrap().1[..], b"ok");
    // Request 1 goes out on the pooled connection, which closes unanswered;
    // request 2 is the same request again, on a new one.
    assert_eq!(&get(&p, &addr).await.unwrap().1[..], b"ok");
    assert_eq!(conns.load(Ordering::SeqCst), 2);
    // A new connection closed without an answer is an error, not retried.
    let (addr2, _) = server(|_| vec![], false).await;
    let err = get(&p, &addr2).await.unwrap_err();
    assert!(matches!(err, H1Error::Closed), "{err}");
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_and_errors_are_not_pooled() {
    let (addr, _) = server(
        |_| vec![b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort".to_vec()],
        true,
    )
    .await;
    let p = pool();
    let err = get(&p, &addr).await.unwrap_err();
    assert!(matches!(err, H1Error::Closed), "{err}");
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
    let resp = p
        .send(&addr, &Method::POST, "/x", &[], b"", SECOND)
        .await
        .unwrap();
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
async fn nobody_listening_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: Arc<str> = listener.local_addr().unwrap().to_string().into();
    drop(listener);
    let err = pool()
        .send(&addr, &Method::GET, "/", &[], b"", SECOND)
        .await
        .unwrap_err();
    assert!(matches!(err, H1Error::Connect(_)), "{err}");
}

#[tokio::test]
async fn a_garbage_answer_is_invalid() {
    let (addr, _) = server(|_| vec![b"SMTP ready\r\n\r\n".to_vec()], true).await;
    let err = get(&pool(), &addr).await.unwrap_err();
    assert!(matches!(err, H1Error::Invalid(_)), "{err}");
}

#[test]
fn the_request_carries_host_headers_and_length() {
    let mut head = b"left as it was; ".to_vec();
    encode_head(
        &mut head,
        "10.0.0.1:13131",
        &Method::POST,
        "/models/load",
        &[(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t"),
        )],
        2,
    );
    assert_eq!(
        String::from_utf8(head).unwrap(),
        "left as it was; POST /models/load HTTP/1.1\r\nhost: 10.0.0.1:13131\r\nauthorization: Bearer t\r\ncontent-length: 2\r\n\r\n"
    );
}

#[test]
fn head_framing_rules() {
    let head = |s: &str| parse_head(s.as_bytes()).unwrap().unwrap();
    let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
    assert!(h.chunked && h.keep_alive);
    let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n");
    assert!(!h.chunked && !h.keep_alive);
    assert!(matches!(h.framing(&Method::GET), Framing::ToClose));
    let h = head("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n");
    assert!(!h.keep_alive);
    let h = head("HTTP/1.1 204 No Content\r\n\r\n");
    assert!(matches!(h.framing(&Method::GET), Framing::Length(0)));
    assert!(
        parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n").is_err()
    );
    assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n").is_err());
    assert!(parse_head(b"HTTP/1.1 100 Continue\r\n\r\n").is_err());
    assert!(parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
        .unwrap()
        .is_none());
}

#[test]
fn an_answer_keeps_its_content_type_apart_and_drops_framing_and_server_headers() {
    let h = parse_head(
        b"HTTP/1.1 503 Busy\r\nContent-Type: application/json\r\nRetry-After: 3\r\n\
          X-Neuron-Internal: 1\r\nDate: today\r\nServer: neuron\r\nContent-Length: 2\r\n\
          Content-Type: text/plain\r\n\r\n",
    )
    .unwrap()
    .unwrap();
    assert_eq!(h.content_type.as_ref().unwrap(), "application/json");
    assert_eq!(h.headers.len(), 3, "{:?}", h.headers);
    assert_eq!(h.headers["retry-after"], "3");
    assert_eq!(h.headers["x-neuron-internal"], "1");
    assert_eq!(
        h.headers["content-type"], "text/plain",
        "a second one stays"
    );
    let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        .unwrap()
        .unwrap();
    assert!(h.content_type.is_none() && h.headers.is_empty());
}

proptest! {
    /// Any bytes as an answer head: parsed, incomplete, or refused; never a
    /// panic.
    #[test]
    fn parse_head_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let _ = parse_head(&bytes);
    }

    /// A generated head is read back with its status, length and
    /// keep-alive as written, whatever the header case.
    #[test]
    fn parse_head_reads_what_was_written(
        status in 200u16..600,
        len in proptest::option::of(0u64..1_000_000),
        close in any::<bool>(),
        upper in any::<bool>(),
        extra in prop::collection::vec(("x-[a-z]{1,10}", "[ -~]{0,20}"), 0..5),
    ) {
        let mut s = format!("HTTP/1.1 {status} Whatever\r\n");
        let name = |n: &str| if upper { n.to_uppercase() } else { n.to_string() };
        if let Some(n) = len {
            s.push_str(&format!("{}: {n}\r\n", name("content-length")));
        }
        if close {
            s.push_str(&format!("{}: close\r\n", name("connection")));
        }
        for (k, v) in &extra {
            s.push_str(&format!("{k}: {v}\r\n"));
        }
        s.push_str("\r\n");
        let h = parse_head(s.as_bytes()).unwrap().unwrap();
        prop_assert_eq!(h.len, s.len());
        prop_assert_eq!(h.status.as_u16(), status);
        prop_assert_eq!(h.content_length, len);
        prop_assert_eq!(h.keep_alive, !close);
        prop_assert!(!h.chunked);
    }
}

/// The answer head must come within the timeout, on a new connection and
/// on a reused one whose earlier deadlines are long past.
#[tokio::test(start_paused = true)]
async fn an_answer_head_that_does_not_come_in_time_is_a_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: Arc<str> = listener.local_addr().unwrap().to_string().into();
    // Answers the first three requests of a connection, then goes silent.
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        for _ in 0..3 {
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(OK).await.unwrap();
        }
        let _ = s.read(&mut buf).await;
        std::future::pending::<()>().await;
    });
    let p = pool();
    for i in 0..3 {
        assert_eq!(get(&p, &addr).await.unwrap().1, "ok", "request {i}");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert_eq!(p.idle_count(&addr), 1);
    let started = tokio::time::Instant::now();
    let err = get(&p, &addr).await.unwrap_err();
    assert!(matches!(err, H1Error::TimedOut), "{err}");
    assert_eq!(started.elapsed(), SECOND);
}
