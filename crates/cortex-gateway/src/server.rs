//! Assembling and running the gateway: the fleet actor, pollers, the
//! evictor, the API and metrics listeners, and graceful shutdown. HTTP/1.1
//! connections are served by [`crate::http_server`].

use std::future::Future;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::api::{self, AppState};
use crate::catalog::Catalog;
use crate::fleet::{FleetHandle, FleetSettings};
use crate::http_server::Connections;
use crate::metrics::GatewayMetrics;
use crate::neuron_client::{NeuronClient, NodeInfo};
use crate::settings::GatewaySettings;

/// Largest body of a request to the metrics listener.
const METRICS_MAX_BODY: usize = 64 * 1024;

/// A built gateway, its background tasks running.
pub struct Gateway {
    state: Arc<AppState>,
    prometheus: Arc<Registry>,
    stop: CancellationToken,
    workers: NonZeroUsize,
}

impl Gateway {
    /// Start the fleet actor, the pollers and the evictor. Needs a Tokio runtime.
    pub fn start(settings: GatewaySettings) -> Self {
        let cfg = settings.config;
        let mut prometheus = Registry::default();
        let metrics = GatewayMetrics::new(&mut prometheus);
        let client = NeuronClient::new(
            cfg.limits.connect_timeout.get(),
            cfg.limits.max_upstream_line.bytes() as usize,
        );
        let nodes: Vec<NodeInfo> = cfg
            .neurons
            .iter()
            .map(|n| NodeInfo::new(&n.name, &n.endpoint, n.admin_token.clone()))
            .collect();
        let fleet = FleetHandle::spawn(
            nodes.clone(),
            Catalog::new(settings.models),
            FleetSettings {
                strategy: cfg.eviction.strategy(),
                min_residency: cfg.eviction.min_residency.get(),
                idle_unload_after: cfg.eviction.idle_unload_after.get(),
                defrag_after_cycles: cfg.eviction.defrag_after_cycles,
                down_after_failures: cfg.gateway.down_after_failures,
                load_timeout: cfg.limits.load_timeout.get(),
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
            client,
            metrics,
            limits: cfg.limits.clone(),
            api_keys: cfg.gateway.api_keys.clone(),
        });
        Self {
            state,
            prometheus: Arc::new(prometheus),
            stop,
            workers: crate::workers::count(cfg.gateway.workers),
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
        let signal = CancellationToken::new();
        let s2 = signal.clone();
        tokio::spawn(async move {
            shutdown.await;
            s2.cancel();
        });
        let api_task = tokio::spawn(crate::workers::serve(
            api,
            api::Api::new(self.state.clone()),
            signal.clone(),
            grace,
            self.workers,
            self.state.limits.max_body.bytes() as usize,
        ));
        let metrics_task =
            tokio::spawn(serve(metrics, self.metrics_router(), signal.clone(), grace));
        // The API ends at shutdown, or early when it cannot go on; either
        // way the metrics listener ends with it.
        let api_result = match api_task.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(format!("the API task failed: {e}"))),
        };
        signal.cancel();
        let _ = metrics_task.await;
        self.stop.cancel();
        tracing::info!("gateway stopped");
        api_result
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

/// Accept HTTP/1.1 connections until `stop`, then drain for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    grace: Duration,
) {
    let conns = Connections::new(METRICS_MAX_BODY);
    while let Some((stream, _)) = crate::http_server::accept(&listener, &stop).await {
        conns.serve(stream, router.clone());
    }
    drop(listener);
    conns.drain(grace).await;
}
