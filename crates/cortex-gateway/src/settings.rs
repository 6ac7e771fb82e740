//! Reading the gateway's configuration files: `cortex.toml` and the models
//! file and state file it names (relative to its own directory). Parsing
//! and validation rules live in `cortex_core::config` and [`crate::pins`];
//! this module only does the I/O.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cortex_core::config::{ConfigError, GatewayConfig, ModelsFile};

use crate::pins::{PinFile, PinFileError};

/// Everything the gateway is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySettings {
    pub config: GatewayConfig,
    pub models: ModelsFile,
    /// Where runtime pins are kept (none: in memory only), and the pins
    /// read from it at start.
    pub pin_file: Option<PinFile>,
    pub pins: HashMap<String, bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Pins(#[from] PinFileError),
}

impl GatewaySettings {
    /// Read and validate `cortex.toml` at `path` and its models file. A
    /// missing models file is an empty catalogue (models are then discovered
    /// on the neurons), not an error.
    pub fn load(path: &Path) -> Result<Self, SettingsError> {
        let text = read(path)?;
        let config = GatewayConfig::from_toml(&text, &path.display().to_string())?;
        let models_file = models_path(path, &config.gateway.models);
        let models = if models_file.exists() {
            let text = read(&models_file)?;
            let file = models_file.display().to_string();
            let models = ModelsFile::from_toml(&text, &file)?;
            models.validate(&file, &config)?;
            models
        } else {
            tracing::info!(path = %models_file.display(), "no models file; serving the models the neurons have");
            ModelsFile::default()
        };
        let pin_file = (!config.gateway.state_file.is_empty())
            .then(|| PinFile::new(models_path(path, &config.gateway.state_file)));
        let pins = match &pin_file {
            Some(f) => f.load()?,
            None => HashMap::new(),
        };
        Ok(Self {
            config,
            models,
            pin_file,
            pins,
        })
    }

    /// Settings without files: the catalogue `models`, pins in memory.
    pub fn new(config: GatewayConfig, models: ModelsFile) -> Self {
        Self {
            config,
            models,
            pin_file: None,
            pins: HashMap::new(),
        }
    }
}

/// A file named in `cortex.toml` (the models file, the state file):
/// relative to the directory of `cortex.toml`.
pub fn models_path(config_path: &Path, models: &str) -> PathBuf {
    let m = Path::new(models);
    if m.is_absolute() {
        m.to_path_buf()
    } else {
        config_path.parent().unwrap_or(Path::new(".")).join(m)
    }
}

fn read(path: &Path) -> Result<String, SettingsError> {
    std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_both_files_and_names_them_in_errors() {
        let t = tempfile::tempdir().unwrap();
        let cfg = t.path().join("cortex.toml");
        std::fs::write(
            &cfg,
            "[[neurons]]\nname = \"a\"\nendpoint = \"http://127.0.0.1:1\"\n",
        )
        .unwrap();
        let s = GatewaySettings::load(&cfg).unwrap();
        assert!(
            s.models.models.is_empty(),
            "missing models.toml is an empty catalogue"
        );

        std::fs::write(
            t.path().join("models.toml"),
            "[[models]]\nid = \"m\"\nsource = \"m.gguf\"\nneurons = [\"b\"]\n",
        )
        .unwrap();
        let e = GatewaySettings::load(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("models.toml") && e.contains("models[0].neurons[0]"),
            "{e}"
        );

        let e = GatewaySettings::load(&t.path().join("nope.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read") && e.contains("nope.toml"), "{e}");
    }

    #[test]
    fn models_path_is_relative_to_the_config() {
        assert_eq!(
            models_path(Path::new("/etc/cortex/cortex.toml"), "models.toml"),
            PathBuf::from("/etc/cortex/models.toml")
        );
        assert_eq!(
            models_path(Path::new("/etc/cortex/cortex.toml"), "/x/m.toml"),
            PathBuf::from("/x/m.toml")
        );
    }
}
