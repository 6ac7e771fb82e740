//! The poller: one task per neuron reads its `/status` every
//! `poll_interval` and hands the result to the fleet actor, which decides
//! up and down. A poll has its own timeout, separate from loads: a neuron
//! answers `/status` while it loads, so a slow load is never taken for a
//! dead node.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::fleet::FleetHandle;
use crate::neuron_client::{NeuronClient, NodeInfo};

/// Start one poll loop per node; they stop when `stop` is cancelled.
pub fn spawn(
    nodes: Vec<Arc<NodeInfo>>,
    client: NeuronClient,
    fleet: FleetHandle,
    interval: Duration,
    timeout: Duration,
    stop: CancellationToken,
) {
    for node in nodes {
        let (client, fleet, stop) = (client.clone(), fleet.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let sent_ms = cortex_core::now_unix_ms();
                let result = client
                    .status(&node, timeout)
                    .await
                    .map_err(|e| crate::error::chain(&e));
                fleet.poll_result(&node.name, sent_ms, result);
            }
        });
    }
}
