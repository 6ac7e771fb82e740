//! The evictor's clock: every `interval` it asks the fleet actor for one
//! cycle (idle and poisoned unloads; every `defrag_after_cycles` cycles a
//! defragmentation pass). The rules themselves are in `router::evict`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::fleet::FleetHandle;

pub fn spawn(fleet: FleetHandle, interval: Duration, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick fires at once; skip it so the first cycle sees polls.
        tick.tick().await;
        let mut cycle = 0u64;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            cycle += 1;
            fleet.evictor_tick(cycle);
        }
    });
}
