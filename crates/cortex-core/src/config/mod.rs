//! Configuration files: `cortex.toml` (gateway), `models.toml` (placement
//! profiles) and `neuron.toml` (one node). Each is a serde struct with
//! `deny_unknown_fields` and defaults, plus a `validate()` whose errors name
//! the file, the key and the reason. Reading files is the caller's job: this
//! module only turns text into checked values.

mod error;
mod gateway;
mod models;
mod neuron;

pub use error::ConfigError;
pub use gateway::{
    EvictionConfig, EvictionStrategy, GatewayConfig, GatewaySection, LimitsConfig, NeuronEndpoint,
    RoutingConfig,
};
pub use models::{ModelProfile, ModelSource, ModelsFile};
pub use neuron::{NeuronConfig, NeuronModelSettings};

use std::net::SocketAddr;

/// Check a `host:port` listen address.
pub(crate) fn check_listen(file: &str, key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse::<SocketAddr>().map_err(|_| {
        ConfigError::invalid(
            file,
            key,
            value,
            "not a listen address; expected IP:PORT such as \"0.0.0.0:31313\" or \"127.0.0.1:13131\"",
        )
    })
}
