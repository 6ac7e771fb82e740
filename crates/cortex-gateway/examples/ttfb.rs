//! A small load generator for streamed answers: `N` POSTs over `C`
//! keep-alive HTTP/1.1 connections (one request at a time on each), timing
//! the first body byte and the end of the body of every request. wrk cannot
//! see inside a response, so it cannot measure time to first byte of a
//! stream; this can.
//!
//! ```text
//! cargo run --release -p cortex-gateway --example ttfb -- \
//!     http://127.0.0.1:31313/v1/chat/completions [-n 4000] [-c 8] [--body JSON] [--warmup 200]
//! ```
//!
//! Prints one JSON line: request count, errors, wall time, requests/s, and
//! median / p90 / p99 of time to first body byte and of total time, in ms.
//! The first `--warmup` requests (spread over the connections) are not
//! counted.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const DEFAULT_BODY: &str = r#"{"model":"bench","stream":true,"messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}"#;

struct Args {
    uri: Uri,
    n: usize,
    c: usize,
    warmup: usize,
    body: Bytes,
}

fn args() -> Args {
    let mut uri = None;
    let (mut n, mut c, mut warmup) = (4000, 8, 200);
    let mut body = Bytes::from_static(DEFAULT_BODY.as_bytes());
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-n" => n = it.next().unwrap().parse().unwrap(),
            "-c" => c = it.next().unwrap().parse().unwrap(),
            "--warmup" => warmup = it.next().unwrap().parse().unwrap(),
            "--body" => body = Bytes::from(it.next().unwrap()),
            "-h" | "--help" => {
                println!("ttfb URL [-n N] [-c C] [--warmup W] [--body JSON]");
                std::process::exit(0);
            }
            u => uri = Some(u.parse::<Uri>().unwrap()),
        }
    }
    Args {
        uri: uri.expect("usage: ttfb URL [-n N] [-c C] [--warmup W] [--body JSON]"),
        n,
        c: c.max(1),
        warmup,
        body,
    }
}

/// A keep-alive HTTP/1.1 connection to `authority`, its driver spawned.
async fn connect(authority: &str) -> http1::SendRequest<Full<Bytes>> {
    let stream = TcpStream::connect(authority).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (send, conn) = http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    send
}

/// What one connection measured.
struct Measured {
    /// (time to first body byte, total) of each counted request.
    times: Vec<(Duration, Duration)>,
    errors: usize,
    /// Connections the server closed (nginx does after `keepalive_requests`).
    reconnects: usize,
}

async fn connection(uri: Uri, body: Bytes, warmup: usize, n: usize) -> Measured {
    let authority = uri.authority().unwrap().as_str().to_string();
    let mut send = connect(&authority).await;
    let mut m = Measured {
        times: Vec::with_capacity(n),
        errors: 0,
        reconnects: 0,
    };
    for i in 0..warmup + n {
        if send.ready().await.is_err() {
            send = connect(&authority).await;
            m.reconnects += 1;
        }
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri.path())
            .header(header::HOST, &authority)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .unwrap();
        let start = Instant::now();
        let resp = match send.send_request(req).await {
            Ok(r) => r,
            Err(_) => {
                m.errors += 1;
                continue;
            }
        };
        let mut failed = !resp.status().is_success();
        let mut body = resp.into_body();
        let mut first = None;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if first.is_none() && f.data_ref().is_some_and(|d| !d.is_empty()) {
                        first = Some(start.elapsed());
                    }
                }
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let total = start.elapsed();
        if i < warmup {
            continue;
        }
        match (failed, first) {
            (false, Some(f)) => m.times.push((f, total)),
            _ => m.errors += 1,
        }
    }
    m
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn summary(mut v: Vec<f64>) -> serde_json::Value {
    v.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({
        "p50": pct(&v, 0.50),
        "p90": pct(&v, 0.90),
        "p99": pct(&v, 0.99),
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let per = a.n.div_ceil(a.c);
    let warm = a.warmup.div_ceil(a.c);
    let started = Instant::now();
    let tasks: Vec<_> = (0..a.c)
        .map(|i| {
            let n = per.min(a.n.saturating_sub(i * per));
            tokio::spawn(connection(a.uri.clone(), a.body.clone(), warm, n))
        })
        .collect();
    let mut ttfb = Vec::with_capacity(a.n);
    let mut total = Vec::with_capacity(a.n);
    let (mut errors, mut reconnects) = (0, 0);
    for t in tasks {
        let m = t.await.unwrap();
        errors += m.errors;
        reconnects += m.reconnects;
        for (f, t) in m.times {
            ttfb.push(f.as_secs_f64() * 1e3);
            total.push(t.as_secs_f64() * 1e3);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    let line = serde_json::json!({
        "requests": ttfb.len(),
        "errors": errors,
        "reconnects": reconnects,
        "concurrency": a.c,
        "wall_s": wall,
        "req_per_s": ttfb.len() as f64 / wall,
        "ttfb_ms": summary(ttfb),
        "total_ms": summary(total),
    });
    println!("{line}");
}
