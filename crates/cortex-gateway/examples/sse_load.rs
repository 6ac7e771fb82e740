//! A load generator for the LLM load shape: `C` streaming requests at once,
//! each on its own HTTP/1.1 connection, against an upstream that sends one
//! token event every few ms (`examples/canned_upstream.rs` with
//! `"bench_interval_ms"`), timing every event.
//!
//! ```text
//! cargo run --release -p cortex-gateway --example sse_load -- \
//!     http://127.0.0.1:31313/v1/chat/completions [-c 2000] [--ramp-ms 2000] [--body JSON]
//! ```
//!
//! Each event carries `bench_sent_us`, the upstream's clock (unix µs) when
//! it wrote it; the delay of an event is its arrival time minus that (the
//! same machine's clock on both ends). Prints one JSON line: streams
//! started, completed (`[DONE]` seen) and failed, the most open at once,
//! events, and percentiles (ms) of event delay, of the gap between two
//! events of a stream, and of time to first byte.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

const DEFAULT_BODY: &str = r#"{"model":"bench","stream":true,"messages":[{"role":"user","content":"Say hello."}],"max_tokens":500,"bench_interval_ms":20}"#;

struct Args {
    uri: Uri,
    c: usize,
    ramp: Duration,
    body: Bytes,
}

fn args() -> Args {
    let usage = "usage: sse_load URL [-c C] [--ramp-ms MS] [--body JSON]";
    let mut uri = None;
    let (mut c, mut ramp_ms) = (2000usize, 2000u64);
    let mut body = Bytes::from_static(DEFAULT_BODY.as_bytes());
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "-c" => c = it.next().unwrap().parse().unwrap(),
            "--ramp-ms" => ramp_ms = it.next().unwrap().parse().unwrap(),
            "--body" => body = Bytes::from(it.next().unwrap()),
            "-h" | "--help" => {
                println!("{usage}");
                std::process::exit(0);
            }
            u => uri = Some(u.parse::<Uri>().unwrap()),
        }
    }
    Args {
        uri: uri.expect(usage),
        c: c.max(1),
        ramp: Duration::from_millis(ramp_ms),
        body,
    }
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// What one stream measured.
#[derive(Default)]
struct Measured {
    /// Delay of each event, µs.
    delays: Vec<u32>,
    /// Gaps between consecutive token events, µs.
    gaps: Vec<u32>,
    ttfb_us: Option<u32>,
    done: bool,
    failed: bool,
}

/// The `bench_sent_us` numbers in `text`, in order.
fn sent_times(text: &[u8], out: &mut Vec<i64>) {
    const KEY: &[u8] = b"\"bench_sent_us\":";
    let mut at = 0;
    while let Some(i) = text[at..].windows(KEY.len()).position(|w| w == KEY) {
        let start = at + i + KEY.len();
        let end = text[start..]
            .iter()
            .position(|b| !b.is_ascii_digit())
            .map_or(text.len(), |e| start + e);
        if let Some(n) = std::str::from_utf8(&text[start..end])
            .ok()
            .and_then(|s| s.parse().ok())
        {
            out.push(n);
        }
        at = end;
    }
}

async fn stream(uri: Uri, body: Bytes, open: Arc<AtomicUsize>, most: Arc<AtomicUsize>) -> Measured {
    let mut m = Measured::default();
    let authority = uri.authority().unwrap().as_str().to_string();
    let Ok(tcp) = TcpStream::connect(&authority).await else {
        m.failed = true;
        return m;
    };
    let _ = tcp.set_nodelay(true);
    let Ok((mut send, conn)) = http1::handshake(TokioIo::new(tcp)).await else {
        m.failed = true;
        return m;
    };
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::POST)
        .uri(uri.path())
        .header(header::HOST, &authority)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .unwrap();
    let start = Instant::now();
    let resp = match send.send_request(req).await {
        Ok(r) if r.status().is_success() => r,
        _ => {
            m.failed = true;
            return m;
        }
    };
    let now_open = open.fetch_add(1, Ordering::SeqCst) + 1;
    most.fetch_max(now_open, Ordering::SeqCst);
    let mut body = resp.into_body();
    let mut last: Option<i64> = None;
    let mut sent = Vec::new();
    let mut tail = Vec::new();
    // Bytes of an event not complete yet.
    let mut pending = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            m.failed = true;
            break;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let arrived = now_us();
        if m.ttfb_us.is_none() {
            m.ttfb_us = Some(start.elapsed().as_micros() as u32);
        }
        // Only whole events: a number may be cut between two frames.
        pending.extend_from_slice(&data);
        let whole = pending
            .windows(2)
            .rposition(|w| w == b"\n\n")
            .map_or(0, |i| i + 2);
        sent.clear();
        sent_times(&pending[..whole], &mut sent);
        pending.drain(..whole);
        for &s in &sent {
            m.delays.push((arrived - s).max(0) as u32);
            if let Some(l) = last {
                m.gaps.push((arrived - l).max(0) as u32);
            }
        }
        if !sent.is_empty() {
            last = Some(arrived);
        }
        // `[DONE]` may straddle two frames.
        tail.extend_from_slice(&data);
        if tail.len() > 64 {
            tail.drain(..tail.len() - 64);
        }
        if tail.windows(6).any(|w| w == b"[DONE]") {
            m.done = true;
        }
    }
    open.fetch_sub(1, Ordering::SeqCst);
    m
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1e3
}

fn summary(mut v: Vec<u32>) -> serde_json::Value {
    v.sort_unstable();
    serde_json::json!({
        "p50": pct(&v, 0.50),
        "p90": pct(&v, 0.90),
        "p99": pct(&v, 0.99),
        "p999": pct(&v, 0.999),
        "max": pct(&v, 1.0),
    })
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let step = a.ramp / a.c as u32;
    let mut tasks = Vec::with_capacity(a.c);
    for i in 0..a.c {
        tokio::time::sleep_until((started + step * i as u32).into()).await;
        tasks.push(tokio::spawn(stream(
            a.uri.clone(),
            a.body.clone(),
            open.clone(),
            most.clone(),
        )));
    }
    let (mut delays, mut gaps, mut ttfb) = (Vec::new(), Vec::new(), Vec::new());
    let (mut done, mut failed) = (0, 0);
    for t in tasks {
        let m = t.await.unwrap();
        delays.extend(m.delays);
        gaps.extend(m.gaps);
        ttfb.extend(m.ttfb_us);
        done += usize::from(m.done && !m.failed);
        failed += usize::from(m.failed || !m.done);
    }
    let line = serde_json::json!({
        "streams": a.c,
        "completed": done,
        "failed": failed,
        "most_open": most.load(Ordering::SeqCst),
        "events": delays.len(),
        "wall_s": started.elapsed().as_secs_f64(),
        "delay_ms": summary(delays),
        "gap_ms": summary(gaps),
        "ttfb_ms": summary(ttfb),
    });
    println!("{line}");
}
