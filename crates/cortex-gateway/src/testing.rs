//! Test helpers shared by unit tests: an [`AppState`] in front of fake
//! neurons (no sockets), and neuron statuses.

use std::sync::Arc;
use std::time::Duration;

use cortex_core::config::{LimitsConfig, ModelsFile};
use cortex_core::neuron_api::{
    AvailableModel, DeviceKind, DeviceStatus, ModelState, ModelStatus, NodeStatus,
};

use crate::admission::Admission;
use crate::catalog::Catalog;
use crate::fleet::{FleetHandle, FleetSettings};
use crate::metrics::GatewayMetrics;
use crate::neuron_client::{NeuronApi, NeuronClient, NodeInfo};
use crate::state::AppState;

/// A neuron's status: one CPU device (budget 1000), the `available`
/// files (id, source, bytes) and the `models` loaded (100 bytes of weights
/// and 10 of KV each).
pub fn status(
    name: &str,
    available: &[(&str, &str, u64)],
    models: &[(&str, ModelState)],
) -> NodeStatus {
    NodeStatus {
        name: name.into(),
        version: "test".into(),
        devices: vec![DeviceStatus {
            index: 0,
            kind: DeviceKind::Cpu,
            name: "cpu".into(),
            memory_total_bytes: 1000,
            memory_free_bytes: 1000,
            memory_budget_bytes: 1000,
            memory_used_bytes: 0,
        }],
        models: models
            .iter()
            .map(|(id, state)| ModelStatus {
                kind: Default::default(),
                id: id.to_string(),
                state: *state,
                device: 0,
                memory_bytes: 100,
                kv_reserve_bytes: 10,
                loaded_at: 1,
                last_used_at: 1,
                in_flight: 0,
                source: format!("{id}.gguf"),
                context_length: 4096,
                error: None,
                cached_prefixes: Vec::new(),
            })
            .collect(),
        available: available
            .iter()
            .map(|(id, source, bytes)| AvailableModel {
                kind: Default::default(),
                id: id.to_string(),
                source: source.to_string(),
                size_bytes: *bytes,
                estimated_bytes: *bytes,
                context_length: None,
                architecture: None,
            })
            .collect(),
    }
}

/// `node`'s status with model `m` (`m.gguf`) loaded and ready.
pub fn m_ready(node: &str) -> NodeStatus {
    status(node, &[("m", "m.gguf", 110)], &[("m", ModelState::Ready)])
}

/// The state of a gateway in front of `nodes` (reached through
/// `neurons`), each reporting `m` ready once, with `limits`.
pub async fn app_state(
    neurons: Arc<dyn NeuronApi>,
    nodes: &[&str],
    limits: LimitsConfig,
) -> AppState {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = GatewayMetrics::new(&mut registry);
    let neurons = NeuronClient::new(neurons, 1 << 20);
    let infos = nodes
        .iter()
        .map(|n| NodeInfo::new(n, &format!("http://{n}:1"), None))
        .collect();
    let fleet = FleetHandle::spawn(
        infos,
        Catalog::new(ModelsFile::default()),
        Default::default(),
        FleetSettings {
            strategy: crate::router::EvictionStrategy::Lru,
            min_residency: Duration::ZERO,
            idle_unload_after: Duration::ZERO,
            defrag_after_cycles: 0,
            down_after_failures: 2,
            load_timeout: Duration::from_secs(1),
            pin_file: None,
        },
        neurons.clone(),
        metrics.clone(),
    );
    let now = cortex_core::now_unix_ms();
    for n in nodes {
        fleet.poll_result(n, now, Ok(m_ready(n)));
    }
    for _ in 0..200 {
        if fleet
            .table()
            .ready
            .get("m")
            .is_some_and(|r| r.len() == nodes.len())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    AppState {
        fleet,
        neurons,
        admission: Admission::new(10, 10, 10),
        metrics,
        limits,
        routing: Default::default(),
        keys: crate::api::guard::Keys::default(),
        responses: std::sync::Mutex::new(crate::translate::responses::store::ResponseStore::new(
            Default::default(),
        )),
    }
}
