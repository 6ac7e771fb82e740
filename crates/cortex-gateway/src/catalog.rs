//! The model catalogue: placement profiles from `models.toml`, and the
//! rule for files that neurons have but no profile names.
//!
//! Rule: a neuron's file is *covered* by a profile whose `source` is that
//! file; it is then served under the profile's id and aliases only. A file
//! that no profile covers is served under the id the neuron derives from its
//! file name (e.g. `smollm2-135m-instruct-q4_1`), unpinned, priority 0, on
//! any neuron that has it — as Ollama serves whatever it has. Names are
//! looked up exactly; they are never turned into paths.

use std::collections::HashMap;

use cortex_core::config::{ModelProfile, ModelsFile};

/// Profiles by id and alias.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    profiles: Vec<ModelProfile>,
    by_name: HashMap<String, usize>,
    by_source: HashMap<String, usize>,
}

impl Catalog {
    pub fn new(models: ModelsFile) -> Self {
        let mut by_name = HashMap::new();
        let mut by_source = HashMap::new();
        for (i, p) in models.models.iter().enumerate() {
            by_name.insert(p.id.clone(), i);
            for a in &p.aliases {
                by_name.insert(a.clone(), i);
            }
            by_source.entry(p.source.clone()).or_insert(i);
        }
        Self {
            profiles: models.models,
            by_name,
            by_source,
        }
    }

    /// The profile a client name (id or alias) refers to.
    pub fn profile(&self, name: &str) -> Option<&ModelProfile> {
        self.by_name.get(name).map(|&i| &self.profiles[i])
    }

    /// The profile whose `source` is this neuron file.
    pub fn covering(&self, source: &str) -> Option<&ModelProfile> {
        self.by_source.get(source).map(|&i| &self.profiles[i])
    }

    pub fn profiles(&self) -> &[ModelProfile] {
        &self.profiles
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_sources() {
        let m = ModelsFile::from_toml(
            "[[models]]\nid = \"a\"\nsource = \"A.gguf\"\naliases = [\"x\", \"y\"]\n[[models]]\nid = \"b\"\nsource = \"hf:o/r/B.gguf\"\n",
            "models.toml",
        )
        .unwrap();
        let c = Catalog::new(m);
        assert_eq!(c.profile("y").unwrap().id, "a");
        assert_eq!(c.profile("b").unwrap().id, "b");
        assert!(c.profile("A.gguf").is_none());
        assert_eq!(c.covering("A.gguf").unwrap().id, "a");
        assert!(c.covering("other.gguf").is_none());
    }
}
