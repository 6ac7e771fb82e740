//! The API's worker threads: one per core, each running its own
//! single-threaded Tokio runtime, as nginx runs one worker process per core.
//! One acceptor hands each new connection to the next worker in turn; the
//! connection and every request on it then stay on that worker, together with
//! the neuron connections they use (the h1 pool keeps idle connections per
//! worker). Nothing on the request path wakes another thread, which is what
//! the work-stealing runtime paid for on every request.

use std::cell::Cell;
use std::num::NonZeroUsize;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::http_server::Handler;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker this thread is: `1..=n` on an API worker thread, 0 anywhere
/// else (the main runtime: pollers, the fleet actor, tests).
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// How many API workers to run: `configured`, or with 0 one per core the
/// process may use.
pub fn count(configured: u32) -> NonZeroUsize {
    NonZeroUsize::new(configured as usize)
        .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
}

/// A connection accepted by the acceptor, on its way to a worker.
type Handoff = std::net::TcpStream;

/// Accept on `listener` until `stop` and serve each connection on one of
/// `count` worker threads (request bodies up to `max_body`); then drain
/// every worker for up to `grace`. An error when a worker cannot start, or
/// stops before `stop`.
pub async fn serve(
    listener: TcpListener,
    handler: impl Handler,
    stop: CancellationToken,
    grace: Duration,
    count: NonZeroUsize,
    max_body: usize,
) -> std::io::Result<()> {
    let mut workers = Vec::with_capacity(count.get());
    let mut done = Vec::with_capacity(count.get());
    for id in 1..=count.get() {
        let (tx, rx) = mpsc::unbounded_channel::<Handoff>();
        let (finished, finished_rx) = oneshot::channel::<()>();
        let handler = handler.for_worker();
        let stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("cortex-api-{id}"))
            .spawn(move || {
                WORKER.with(|w| w.set(id));
                // Sockets and timers; signals are the main runtime's.
                match tokio::runtime::Builder::new_current_thread()
                    .enable_io()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(run_worker(rx, handler, stop, grace, max_body)),
                    Err(e) => {
                        tracing::error!(error = %e, worker = id, "cannot start an API worker")
                    }
                }
                let _ = finished.send(());
            })?;
        workers.push(tx);
        done.push(finished_rx);
    }
    let mut next = 0usize;
    let mut result = Ok(());
    while let Some((stream, peer)) = crate::http_server::accept(&listener, &stop).await {
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "cannot hand a connection over");
                continue;
            }
        };
        if workers[next % workers.len()].send(stream).is_err() {
            result = Err(std::io::Error::other(format!(
                "API worker {} stopped",
                next % workers.len() + 1
            )));
            break;
        }
        next = next.wrapping_add(1);
    }
    drop(listener);
    drop(workers);
    for d in done {
        let _ = d.await;
    }
    result
}

/// One worker: serve the connections it is handed until `stop` (or the
/// acceptor goes), then drain.
async fn run_worker(
    mut rx: mpsc::UnboundedReceiver<Handoff>,
    handler: impl Handler,
    stop: CancellationToken,
    grace: Duration,
    max_body: usize,
) {
    let conns = crate::http_server::Connections::new(max_body);
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            s = rx.recv() => match s {
                Some(s) => s,
                None => break,
            },
        };
        match tokio::net::TcpStream::from_std(stream) {
            Ok(s) => conns.serve(s, handler.clone()),
            Err(e) => tracing::debug!(error = %e, "cannot register a connection"),
        }
    }
    conns.drain(grace).await;
}

/// Run `fut` to completion on a fresh thread with its own runtime, marked as
/// worker `id` (tests of the per-worker pool).
#[cfg(test)]
pub(crate) fn on_worker<F, T>(id: usize, fut: F) -> T
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        WORKER.with(|w| w.set(id));
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(fut)
    })
    .join()
    .expect("worker thread")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use axum::routing::get;
    use axum::Router;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A router whose answers name the worker and thread that served them;
    /// `/slow` takes 300 ms.
    fn router() -> Router {
        let who = || {
            format!(
                "{} {}",
                current(),
                std::thread::current().name().unwrap_or("?")
            )
        };
        Router::new()
            .route("/", get(move || async move { who() }))
            .route(
                "/slow",
                get(move || async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    who()
                }),
            )
    }

    /// One GET on a fresh connection; the answer's body.
    async fn get_body(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        out.split("\r\n\r\n").nth(1).unwrap().to_string()
    }

    #[test]
    fn zero_means_one_per_core() {
        assert_eq!(count(3).get(), 3);
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(count(0).get(), cores);
    }

    /// `serve` with `workers` workers on a fresh port: its address, its stop
    /// token, and its task.
    async fn start(
        workers: usize,
        grace: Duration,
    ) -> (
        std::net::SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let n = NonZeroUsize::new(workers).unwrap();
        let served = tokio::spawn(serve(listener, router(), stop.clone(), grace, n, 1 << 20));
        (addr, stop, served)
    }

    #[tokio::test]
    async fn connections_go_to_the_workers_in_turn_and_are_served_there() {
        let (addr, stop, served) = start(3, Duration::from_secs(1)).await;
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(get_body(addr, "/").await);
        }
        let want: Vec<String> = [1, 2, 3, 1, 2, 3]
            .iter()
            .map(|i| format!("{i} cortex-api-{i}"))
            .collect();
        assert_eq!(seen, want);
        stop.cancel();
        served.await.unwrap().unwrap();
    }

    /// A router that counts the worker copies made of it.
    #[derive(Clone)]
    struct Copies {
        router: Router,
        made: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Handler for Copies {
        fn handle(
            &mut self,
            req: crate::http_server::Incoming,
        ) -> impl std::future::Future<Output = crate::http_server::Reply> + Send + 'static {
            self.router.handle(req)
        }

        fn for_worker(&self) -> Self {
            self.made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.clone()
        }
    }

    #[tokio::test]
    async fn each_worker_serves_with_a_copy_of_its_own() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let handler = Copies {
            router: router(),
            made: made.clone(),
        };
        let n = NonZeroUsize::new(3).unwrap();
        let served = tokio::spawn(serve(
            listener,
            handler,
            stop.clone(),
            Duration::from_secs(1),
            n,
            1 << 20,
        ));
        for i in 1..=3 {
            assert_eq!(get_body(addr, "/").await, format!("{i} cortex-api-{i}"));
        }
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 3);
        stop.cancel();
        served.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn stopping_drains_requests_in_flight_on_every_worker() {
        let (addr, stop, served) = start(2, Duration::from_secs(5)).await;
        let slow: Vec<_> = (0..2)
            .map(|_| tokio::spawn(get_body(addr, "/slow")))
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
        let mut answers = Vec::new();
        for s in slow {
            answers.push(s.await.unwrap());
        }
        answers.sort();
        assert_eq!(answers, ["1 cortex-api-1", "2 cortex-api-2"]);
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("serve returns once drained")
            .unwrap()
            .unwrap();
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "the listener is closed"
        );
    }
}
