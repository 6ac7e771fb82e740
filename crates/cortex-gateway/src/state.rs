//! What every request handler shares: the fleet, the neurons, admission,
//! the metrics and the limits. Built once by [`crate::server::Gateway`]
//! and handed to the router with `with_state`.

use cortex_core::config::{LimitsConfig, RoutingConfig};

use crate::admission::Admission;
use crate::fleet::FleetHandle;
use crate::metrics::GatewayMetrics;
use crate::neuron_client::NeuronClient;

/// The state of the API.
#[derive(Debug)]
pub struct AppState {
    pub fleet: FleetHandle,
    pub neurons: NeuronClient,
    pub admission: Admission,
    pub metrics: GatewayMetrics,
    pub limits: LimitsConfig,
    pub routing: RoutingConfig,
    pub keys: crate::api::guard::Keys,
    /// Conversations behind `previous_response_id` (Responses API).
    pub responses: std::sync::Mutex<crate::translate::responses::store::ResponseStore>,
}
