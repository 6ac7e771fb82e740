//! `models.toml`: placement profiles — the names clients use, where the
//! weights come from, aliases, priority, pinning and node affinity.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::error::parse_toml;
use super::{ConfigError, GatewayConfig};
use crate::model_id::is_valid_model_id;

/// The whole of `models.toml`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsFile {
    #[serde(default)]
    pub models: Vec<ModelProfile>,
}

/// `[[models]]`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelProfile {
    /// The name clients use.
    pub id: String,
    /// A file under a neuron's models dir, or `hf:org/repo/file.gguf`.
    pub source: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Higher survives eviction longer under `strategy = "priority"`.
    #[serde(default)]
    pub priority: i32,
    /// Loaded at start and never evicted.
    #[serde(default)]
    pub pinned: bool,
    /// Affinity: only these neurons (empty = any neuron that has the file).
    #[serde(default)]
    pub neurons: Vec<String>,
}

/// Where a model's weights come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A path relative to one of the neuron's models directories.
    File(String),
    /// A file in a Hugging Face repository: `hf:org/repo/file.gguf`.
    Hub {
        repo: String,
        file: String,
        revision: Option<String>,
    },
}

impl ModelSource {
    /// Parse and check a `source` value. A file source must be relative and
    /// must not contain `..`; a hub source needs `org/repo/file`.
    /// `hf:org/repo/file.gguf@rev` pins a revision.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.contains('\0') {
            return Err("empty source".into());
        }
        if let Some(rest) = s.strip_prefix("hf:") {
            let (path, revision) = match rest.rsplit_once('@') {
                Some((p, r)) if !r.is_empty() && !r.contains('/') => (p, Some(r.to_string())),
                _ => (rest, None),
            };
            let parts: Vec<&str> = path.split('/').collect();
            if parts.len() < 3
                || parts
                    .iter()
                    .any(|p| p.is_empty() || *p == "." || *p == "..")
            {
                return Err("a hub source is hf:ORG/REPO/FILE.gguf".into());
            }
            return Ok(ModelSource::Hub {
                repo: format!("{}/{}", parts[0], parts[1]),
                file: parts[2..].join("/"),
                revision,
            });
        }
        if s.contains("://") {
            return Err("URLs are not sources; use a file name or hf:ORG/REPO/FILE.gguf".into());
        }
        if s.starts_with('/') || s.starts_with('\\') || s.get(1..2) == Some(":") {
            return Err("a file source is relative to the neuron's models directory".into());
        }
        if s.split(['/', '\\']).any(|p| p == "..") {
            return Err("a file source may not contain '..'".into());
        }
        Ok(ModelSource::File(s.to_string()))
    }
}

impl ModelsFile {
    /// Parse `models.toml`. Cross-checks against the gateway config happen in
    /// [`ModelsFile::validate`].
    pub fn from_toml(text: &str, file: &str) -> Result<Self, ConfigError> {
        parse_toml(text, file)
    }

    /// Check ids, aliases, sources, and affinity against the neurons of
    /// `gateway`.
    pub fn validate(&self, file: &str, gateway: &GatewayConfig) -> Result<(), ConfigError> {
        // Every id and alias shares one namespace: a client name resolves to
        // exactly one model.
        let mut names: HashMap<&str, String> = HashMap::new();
        for (i, m) in self.models.iter().enumerate() {
            let key = format!("models[{i}].id");
            if !is_valid_model_id(&m.id) {
                return Err(ConfigError::invalid(
                    file,
                    key,
                    &m.id,
                    "a model id uses letters, digits, '.', '_', '-' and ':' only (no paths or URLs)",
                ));
            }
            if let Some(prev) = names.insert(&m.id, key.clone()) {
                return Err(ConfigError::invalid(
                    file,
                    key,
                    &m.id,
                    format!("duplicate model id or alias (already used by {prev})"),
                ));
            }
            for (j, a) in m.aliases.iter().enumerate() {
                let key = format!("models[{i}].aliases[{j}]");
                if !is_valid_model_id(a) {
                    return Err(ConfigError::invalid(
                        file,
                        key,
                        a,
                        "an alias uses letters, digits, '.', '_', '-' and ':' only",
                    ));
                }
                if let Some(prev) = names.insert(a, key.clone()) {
                    return Err(ConfigError::invalid(
                        file,
                        key,
                        a,
                        format!("duplicate model id or alias (already used by {prev})"),
                    ));
                }
            }
            if let Err(why) = ModelSource::parse(&m.source) {
                return Err(ConfigError::invalid(
                    file,
                    format!("models[{i}].source"),
                    &m.source,
                    why,
                ));
            }
            for (j, n) in m.neurons.iter().enumerate() {
                if !gateway.neurons.iter().any(|g| &g.name == n) {
                    return Err(ConfigError::invalid(
                        file,
                        format!("models[{i}].neurons[{j}]"),
                        n,
                        "affinity to an unknown neuron (not in [[neurons]] of the gateway config)",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "models.toml";

    fn gateway() -> GatewayConfig {
        GatewayConfig::from_toml(
            "[[neurons]]\nname = \"beast\"\nendpoint = \"http://beast:13131\"\n",
            "cortex.toml",
        )
        .unwrap()
    }

    fn check(text: &str) -> Result<ModelsFile, ConfigError> {
        let m = ModelsFile::from_toml(text, FILE)?;
        m.validate(FILE, &gateway())?;
        Ok(m)
    }

    fn assert_invalid(text: &str, key: &str, reason_part: &str) {
        let e = check(text).expect_err("should be invalid");
        let msg = e.to_string();
        assert_eq!(e.key(), Some(key), "{msg}");
        assert!(msg.starts_with("models.toml: "), "{msg}");
        assert!(msg.contains(reason_part), "{msg}");
    }

    #[test]
    fn design_example_parses() {
        let m = check(
            r#"
[[models]]
id = "smollm2-135m"
source = "SmolLM2-135M-Instruct.Q4_1.gguf"
aliases = ["smollm2"]
priority = 10
pinned = false
neurons = ["beast"]
"#,
        )
        .unwrap();
        assert_eq!(m.models[0].aliases, vec!["smollm2"]);
        assert_eq!(m.models[0].priority, 10);
    }

    #[test]
    fn duplicate_ids_and_aliases() {
        let two = |a: &str, b: &str| {
            format!("[[models]]\nid = \"x\"\nsource = \"x.gguf\"\naliases = [{a}]\n[[models]]\nid = \"{b}\"\nsource = \"y.gguf\"\n")
        };
        assert_invalid(&two("", "x"), "models[1].id", "duplicate model id or alias");
        assert_invalid(
            &two("\"y\"", "y"),
            "models[1].id",
            "already used by models[0].aliases[0]",
        );
        assert_invalid(&two("\"x\"", "z"), "models[0].aliases[0]", "duplicate");
    }

    #[test]
    fn unknown_affinity() {
        assert_invalid(
            "[[models]]\nid = \"x\"\nsource = \"x.gguf\"\nneurons = [\"beast\", \"ghost\"]\n",
            "models[0].neurons[1]",
            "unknown neuron",
        );
    }

    #[test]
    fn bad_ids_and_sources() {
        assert_invalid(
            "[[models]]\nid = \"../x\"\nsource = \"x.gguf\"\n",
            "models[0].id",
            "no paths",
        );
        assert_invalid(
            "[[models]]\nid = \"x\"\nsource = \"../x.gguf\"\n",
            "models[0].source",
            "'..'",
        );
        assert_invalid(
            "[[models]]\nid = \"x\"\nsource = \"/etc/x.gguf\"\n",
            "models[0].source",
            "relative",
        );
        assert_invalid(
            "[[models]]\nid = \"x\"\nsource = \"http://h/x.gguf\"\n",
            "models[0].source",
            "URLs",
        );
        assert_invalid(
            "[[models]]\nid = \"x\"\nsource = \"hf:org/x.gguf\"\n",
            "models[0].source",
            "hf:ORG",
        );
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = check("[[models]]\nid = \"x\"\nsource = \"x.gguf\"\npinnned = true\n").unwrap_err();
        assert!(e.to_string().contains("pinnned"), "{e}");
        assert!(e.to_string().starts_with("models.toml:4:"), "{e}");
    }

    #[test]
    fn sources() {
        assert_eq!(
            ModelSource::parse("a/b.gguf"),
            Ok(ModelSource::File("a/b.gguf".into()))
        );
        assert_eq!(
            ModelSource::parse("hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF/smollm2.gguf@main"),
            Ok(ModelSource::Hub {
                repo: "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF".into(),
                file: "smollm2.gguf".into(),
                revision: Some("main".into()),
            })
        );
        assert!(ModelSource::parse("hf:a/../b/c").is_err());
        assert!(ModelSource::parse("C:/x.gguf").is_err());
    }
}
