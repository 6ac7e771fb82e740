//! A fleet for the end-to-end tests: `neuron` processes behind a
//! `cortex serve --config cortex.toml` process, each neuron's models dir
//! holding the default GGUF under two names, `alpha.gguf` and `beta.gguf`
//! (two models without downloading anything), with a budget of 1.5
//! footprints (read from a neuron's `/status`), so a neuron holds one model
//! and never two.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

use super::*;

pub const ALPHA: &str = "alpha";
pub const BETA: &str = "beta";

/// Neurons behind one gateway, all killed on drop (gateway first).
pub struct Fleet {
    pub gw: Gateway,
    pub neurons: Vec<Neuron>,
    pub models: Vec<PathBuf>,
    pub budget: u64,
    /// The fleet's folder (configs, state file, models dirs), removed on drop.
    pub tmp: tempfile::TempDir,
}

impl Fleet {
    /// Neurons named `names`, each with `alpha` and `beta` and a budget
    /// that fits one of them; `None` when the model is missing.
    pub fn start(names: &[&str]) -> Option<Self> {
        let source = models_dir()?;
        let tmp = tempdir();
        let budget = footprint(&source) * 3 / 2;
        let mut neurons = Vec::new();
        let mut models = Vec::new();
        for name in names {
            let dir = tmp.path().join(format!("models-{name}"));
            model_links(&source, &dir, &[ALPHA, BETA]);
            neurons.push(spawn_neuron(name, &dir, Some(budget)));
            models.push(dir);
        }
        let endpoints: Vec<(&str, &str)> = neurons
            .iter()
            .map(|n| (n.name.as_str(), n.url.as_str()))
            .collect();
        let config = write_gateway_config(tmp.path(), &endpoints);
        let gw = spawn_gateway(tmp.path(), &["--config".as_ref(), config.as_os_str()]);
        let fleet = Self {
            gw,
            neurons,
            models,
            budget,
            tmp,
        };
        wait_until("every neuron up and both models listed", WAIT, || {
            let f = fleet.view();
            let up = names.iter().all(|n| node_up(&f, n) == Some(true));
            let ids = model_ids(&fleet.gw.api);
            (up && ids.iter().any(|i| i == ALPHA) && ids.iter().any(|i| i == BETA)).then_some(())
        });
        Some(fleet)
    }

    pub fn api(&self) -> &str {
        &self.gw.api
    }

    pub fn view(&self) -> Value {
        fleet(&self.gw.api)
    }

    pub fn neuron(&mut self, name: &str) -> &mut Neuron {
        self.neurons.iter_mut().find(|n| n.name == name).unwrap()
    }

    /// `cortex ARGS… --gateway URL`, which must succeed.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all = args.to_vec();
        all.extend(["--gateway", self.api()]);
        cortex_ok(&all)
    }

    pub fn chat_ok(&self, model: &str) -> Value {
        let (s, v) = chat(self.api(), model, "Say hello.", 4);
        assert_eq!(s, 200, "chat for {model}: {v}");
        v
    }

    pub fn metrics(&self) -> String {
        get_text(&format!("{}/metrics", self.gw.metrics))
    }
}

/// The footprint (weights estimate + KV reserve) of the default model, as
/// a neuron reports it in `available[].estimated_bytes`; probed once.
pub fn footprint(source: &std::path::Path) -> u64 {
    static BYTES: OnceLock<u64> = OnceLock::new();
    *BYTES.get_or_init(|| {
        let tmp = tempdir();
        let dir = tmp.path().join("models");
        model_links(source, &dir, &[ALPHA]);
        let n = spawn_neuron("probe", &dir, None);
        let (s, status) = get(&format!("{}/status", n.url));
        assert_eq!(s, 200, "{status}");
        let a = status["available"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == ALPHA)
            .unwrap_or_else(|| panic!("alpha not available: {status}"));
        let bytes = a["estimated_bytes"].as_u64().unwrap();
        assert!(bytes > a["size_bytes"].as_u64().unwrap(), "{a}");
        bytes
    })
}

/// Ids of the models a neuron reports in its own `/status`, with states.
pub fn neuron_models(n: &Neuron) -> Vec<(String, String)> {
    let (s, v) = get(&format!("{}/status", n.url));
    assert_eq!(s, 200, "{v}");
    v["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                m["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The in-flight count the fleet view reports for `model` (one placement).
pub fn in_flight(view: &Value, model: &str) -> Option<u64> {
    view["models"]
        .as_array()?
        .iter()
        .find(|m| m["id"] == model)?["placements"][0]["in_flight"]
        .as_u64()
}

pub fn pair(id: &str, state: &str) -> (String, String) {
    (id.to_string(), state.to_string())
}
