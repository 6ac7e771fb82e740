//! Assembling and running the gateway: the fleet actor, pollers, the
//! evictor, and the API and metrics listeners, each connection served by
//! hyper's HTTP/1.1 server, with graceful shutdown.
//!
//! The server's bounds, all hyper's own: a request head larger than
//! [`MAX_HEAD_BYTES`] gets 431; a head must arrive within
//! [`HEADER_READ_TIMEOUT`] of the connection opening or going idle, which
//! closes slowloris connections and idle keep-alive ones alike (uvicorn,
//! in front of vLLM, closes them after 5 s; clients' pools expect this).
//! The body limits are the API's ([`crate::api::app`]). At shutdown the
//! listeners close, idle connections close, answers in progress finish
//! with `connection: close` for up to the grace period, and whatever is
//! left is then cut.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::api;
use crate::catalog::Catalog;
use crate::fleet::{FleetHandle, FleetSettings};
use crate::metrics::GatewayMetrics;
use crate::neuron_client::{HttpNeurons, NeuronApi, NeuronClient, NodeInfo};
use crate::settings::GatewaySettings;
use crate::state::AppState;

/// Largest request head (request line and headers); larger gets 431.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// A client must send its request head within this time.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed accept (out of file descriptors, say).
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A built gateway, its background tasks running.
pub struct Gateway {
    state: Arc<AppState>,
    prometheus: Arc<Registry>,
    stop: CancellationToken,
}

impl Gateway {
    /// Start the fleet actor, the pollers and the evictor, talking to the
    /// neurons over HTTP. Needs a Tokio runtime.
    pub fn start(settings: GatewaySettings) -> Self {
        let connect = settings.config.limits.connect_timeout.get();
        Self::start_with(settings, Arc::new(HttpNeurons::new(connect)))
    }

    /// [`Gateway::start`] with the neurons reached through `neurons`.
    pub fn start_with(settings: GatewaySettings, neurons: Arc<dyn NeuronApi>) -> Self {
        let cfg = settings.config;
        let mut prometheus = Registry::default();
        let metrics = GatewayMetrics::new(&mut prometheus);
        let client = NeuronClient::new(neurons, cfg.limits.max_upstream_line.bytes() as usize);
        let nodes: Vec<NodeInfo> = cfg
            .neurons
            .iter()
            .map(|n| NodeInfo::new(&n.name, &n.endpoint, n.admin_token.clone()))
            .collect();
        let fleet = FleetHandle::spawn(
            nodes.clone(),
            Catalog::new(settings.models),
            settings.pins,
            FleetSettings {
                strategy: cfg.eviction.strategy(),
                min_residency: cfg.eviction.min_residency.get(),
                idle_unload_after: cfg.eviction.idle_unload_after.get(),
                defrag_after_cycles: cfg.eviction.defrag_after_cycles,
                down_after_failures: cfg.gateway.down_after_failures,
                load_timeout: cfg.limits.load_timeout.get(),
                pin_file: settings.pin_file,
            },
            client.clone(),
            metrics.clone(),
        );
        let stop = CancellationToken::new();
        crate::poller::spawn(
            nodes.into_iter().map(Arc::new).collect(),
            client.clone(),
            fleet.clone(),
            cfg.gateway.poll_interval.get(),
            cfg.gateway.poll_timeout.get(),
            stop.clone(),
        );
        crate::evictor::spawn(fleet.clone(), cfg.eviction.interval.get(), stop.clone());
        let l = &cfg.limits;
        let state = Arc::new(AppState {
            admission: Admission::new(
                l.max_in_flight_total,
                l.max_in_flight_per_model,
                l.max_queued_per_model,
            ),
            fleet,
            neurons: client,
            metrics,
            limits: cfg.limits.clone(),
            routing: cfg.routing.clone(),
            keys: crate::api::guard::Keys::new(&cfg.gateway),
            responses: std::sync::Mutex::new(
                crate::translate::responses::store::ResponseStore::new(Default::default()),
            ),
        });
        Self {
            state,
            prometheus: Arc::new(prometheus),
            stop,
        }
    }

    pub fn fleet(&self) -> &FleetHandle {
        &self.state.fleet
    }

    /// The API routes (for tests with `oneshot`).
    pub fn router(&self) -> Router {
        api::app(self.state.clone())
    }

    /// `GET /metrics`.
    pub fn metrics_router(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .with_state(self.prometheus.clone())
    }

    /// Serve both listeners until `shutdown` resolves, then stop accepting
    /// and give open requests `grace` to finish.
    pub async fn run(
        self,
        api: TcpListener,
        metrics: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> std::io::Result<()> {
        tracing::info!(api = %api.local_addr()?, metrics = %metrics.local_addr()?, "gateway listening");
        tracing::info!("{}", self.state.keys.admin_policy());
        let signal = CancellationToken::new();
        let s2 = signal.clone();
        tokio::spawn(async move {
            shutdown.await;
            s2.cancel();
        });
        tokio::join!(
            serve(api, self.router(), signal.clone(), grace),
            serve(metrics, self.metrics_router(), signal, grace),
        );
        self.stop.cancel();
        tracing::info!("gateway stopped");
        Ok(())
    }
}

async fn metrics(State(registry): State<Arc<Registry>>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
        return (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

/// Serve HTTP/1.1 connections on `listener` with `router` until `stop`;
/// then close the listener and drain open connections for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    grace: Duration,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_header_size(MAX_HEAD_BYTES)
        // A head that has not ended within twice the limit is refused
        // unread to its end (its size is known to be over the limit).
        .max_buf_size(2 * MAX_HEAD_BYTES);
    let graceful = GracefulShutdown::new();
    let mut conns = JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
        };
        // Forget the connections that ended.
        while conns.try_join_next().is_some() {}
        let _ = tcp.set_nodelay(true);
        let svc = TowerToHyperService::new(router.clone());
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), svc));
        conns.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::info!(
            open = conns.len(),
            "grace period over; closing the connections still open"
        );
    }
    conns.shutdown().await;
}

#[cfg(test)]
mod tests;
