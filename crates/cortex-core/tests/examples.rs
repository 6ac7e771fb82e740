//! The example configs at the repository root (`cortex.example.toml`,
//! `models.example.toml`, `neuron.example.toml`) parse, validate, show every
//! key of their structs and show the real defaults. These tests are what
//! keeps the examples from falling behind the code: a new config field fails
//! here until the example documents it.

use std::collections::BTreeSet;
use std::path::Path;

use cortex_core::config::{
    EvictionConfig, GatewayConfig, GatewaySection, LimitsConfig, ModelProfile, ModelsFile,
    NeuronConfig, NeuronEndpoint, NeuronModelSettings,
};
use cortex_core::ByteSize;
use serde::de::{self, DeserializeOwned, Visitor};

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn gateway_example() -> GatewayConfig {
    GatewayConfig::from_toml(&example("cortex.example.toml"), "cortex.example.toml")
        .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn cortex_example_parses() {
    let c = gateway_example();
    assert_eq!(c.gateway.listen, "0.0.0.0:31313");
    assert_eq!(c.gateway.metrics_listen, "0.0.0.0:31314");
    assert_eq!(c.gateway.models, "models.toml");
    assert_eq!(c.eviction.strategy, "lru");
    assert_eq!(c.limits.max_body, ByteSize::mib(32));
    assert_eq!(c.neurons.len(), 1);
    assert_eq!(c.neurons[0].name, "local");
    assert_eq!(c.neurons[0].endpoint, "http://127.0.0.1:13131");
    assert_eq!(c.neurons[0].admin_token, None);
}

#[test]
fn models_example_parses_and_validates_against_the_cortex_example() {
    let text = example("models.example.toml");
    let m = ModelsFile::from_toml(&text, "models.example.toml").unwrap_or_else(|e| panic!("{e}"));
    m.validate("models.example.toml", &gateway_example())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.models.len(), 1);
    let smol = &m.models[0];
    assert_eq!(smol.id, "smollm2-135m");
    assert_eq!(smol.source, "SmolLM2-135M-Instruct.Q4_1.gguf");
    assert_eq!(smol.aliases, vec!["smollm2"]);
    assert!(!smol.pinned);
    assert!(smol.neurons.is_empty());
}

#[test]
fn neuron_example_parses() {
    let c = NeuronConfig::from_toml(&example("neuron.example.toml"), "neuron.example.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listen, "0.0.0.0:13131");
    assert_eq!(c.models_dirs, vec!["/var/lib/cortex/models"]);
    assert_eq!(c.memory_budget, None);
    assert_eq!(c.admin_token, None);
    assert_eq!(c.kv_reserve("smollm2-135m"), ByteSize::mib(128));
    assert_eq!(c.kv_reserve("anything-else"), ByteSize::mib(384));
    assert_eq!((c.max_batch_tokens, c.prefill_chunk), (256, 32));
}

/// The commented-out examples (`# key = value`, `# [[neurons]]`) are valid
/// too: uncommented, every file still parses and validates.
#[test]
fn commented_out_examples_are_valid() {
    let cortex = uncomment(&example("cortex.example.toml"));
    let gateway = GatewayConfig::from_toml(&cortex, "cortex.example.toml (uncommented)")
        .unwrap_or_else(|e| panic!("{e}\n{cortex}"));
    assert_eq!(gateway.neurons.len(), 2);
    assert!(gateway.neurons[0].admin_token.is_some());

    let models = uncomment(&example("models.example.toml"));
    let m = ModelsFile::from_toml(&models, "models.example.toml (uncommented)")
        .unwrap_or_else(|e| panic!("{e}\n{models}"));
    m.validate("models.example.toml (uncommented)", &gateway)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(m.models.len(), 2);
    assert!(m.models[1].source.starts_with("hf:"));

    let neuron = uncomment(&example("neuron.example.toml"));
    let n = NeuronConfig::from_toml(&neuron, "neuron.example.toml (uncommented)")
        .unwrap_or_else(|e| panic!("{e}\n{neuron}"));
    assert!(n.name.is_some() && n.memory_budget.is_some() && n.admin_token.is_some());
    assert!(n.threads.is_some() && n.hf_cache.is_some());
}

/// Every field of every config struct is shown in its example, in the right
/// section (commented out counts, for keys without a default).
#[test]
fn every_key_appears_in_its_example() {
    let cortex = Entries::of(&example("cortex.example.toml"));
    let mut missing = Vec::new();
    let default_gateway = toml_table(&default_gateway());
    let mut want = keys_of_table(&default_gateway);
    want.extend(section("", fields::<GatewayConfig>()));
    want.extend(section("gateway", fields::<GatewaySection>()));
    want.extend(section("eviction", fields::<EvictionConfig>()));
    want.extend(section("limits", fields::<LimitsConfig>()));
    want.extend(section("neurons", fields::<NeuronEndpoint>()));
    missing.extend(cortex.missing("cortex.example.toml", &want));

    let models = Entries::of(&example("models.example.toml"));
    let mut want = keys_of_table(&toml_table(&ModelsFile::default()));
    want.extend(section("", fields::<ModelsFile>()));
    want.extend(section("models", fields::<ModelProfile>()));
    missing.extend(models.missing("models.example.toml", &want));

    let neuron = Entries::of(&example("neuron.example.toml"));
    let mut want = keys_of_table(&toml_table(&NeuronConfig::default()));
    want.extend(section("", fields::<NeuronConfig>()));
    want.extend(section("models", fields::<NeuronModelSettings>()));
    missing.extend(neuron.missing("neuron.example.toml", &want));

    assert!(
        missing.is_empty(),
        "keys missing from the examples:\n  {}",
        missing.join("\n  ")
    );
}

/// Keys that are set in the examples show the default, so that a changed
/// default cannot leave a stale example behind. The listed exceptions are
/// deliberate realistic values.
#[test]
fn examples_show_the_defaults() {
    let mut wrong = Vec::new();

    let ex = toml_table(&gateway_example());
    // [[neurons]] has no default: the example lists one.
    wrong.extend(compare(
        "cortex.example.toml",
        &toml_table(&default_gateway()),
        &ex,
        &["neurons"],
    ));

    let ex = toml_table(
        &NeuronConfig::from_toml(&example("neuron.example.toml"), "neuron.example.toml")
            .unwrap_or_else(|e| panic!("{e}")),
    );
    let def = toml_table(&NeuronConfig::default());
    // Packaged installs keep models under /var/lib/cortex (the default,
    // "models", is relative to the working directory); [[models]] is an
    // example entry.
    wrong.extend(compare(
        "neuron.example.toml",
        &def,
        &ex,
        &["models_dirs", "models"],
    ));

    // A profile's defaults are what a minimal [[models]] entry gets.
    let minimal = ModelsFile::from_toml("[[models]]\nid = \"x\"\nsource = \"x.gguf\"\n", "m")
        .unwrap_or_else(|e| panic!("{e}"));
    let full = ModelsFile::from_toml(&example("models.example.toml"), "models.example.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let def = toml_table(&minimal.models[0]);
    let ex = toml_table(&full.models[0]);
    wrong.extend(compare(
        "models.example.toml [[models]]",
        &def,
        &ex,
        &["id", "source", "aliases"],
    ));

    assert!(
        wrong.is_empty(),
        "examples differ from the defaults:\n  {}",
        wrong.join("\n  ")
    );
}

fn default_gateway() -> GatewayConfig {
    GatewayConfig::from_toml("", "defaults").unwrap_or_else(|e| panic!("{e}"))
}

fn toml_table<T: serde::Serialize>(v: &T) -> toml::Table {
    toml::Table::try_from(v).unwrap_or_else(|e| panic!("serialize: {e}"))
}

fn section(name: &str, fields: &[&str]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|f| (name.to_string(), f.to_string()))
        .collect()
}

/// (section, key) of every value in a serialized config: top-level keys have
/// section "", keys of `[s]` and of the first `[[s]]` have section `s`.
fn keys_of_table(t: &toml::Table) -> Vec<(String, String)> {
    flatten(t).into_iter().map(|(s, k, _)| (s, k)).collect()
}

fn flatten(t: &toml::Table) -> Vec<(String, String, toml::Value)> {
    let mut out = Vec::new();
    for (k, v) in t {
        match v {
            toml::Value::Table(inner) => {
                out.push((String::new(), k.clone(), v.clone()));
                for (ik, iv) in inner {
                    out.push((k.clone(), ik.clone(), iv.clone()));
                }
            }
            toml::Value::Array(items)
                if !items.is_empty() && items.iter().all(toml::Value::is_table) =>
            {
                out.push((String::new(), k.clone(), v.clone()));
                if let Some(toml::Value::Table(first)) = items.first() {
                    for (ik, iv) in first {
                        out.push((k.clone(), ik.clone(), iv.clone()));
                    }
                }
            }
            _ => out.push((String::new(), k.clone(), v.clone())),
        }
    }
    out
}

/// Values of `def` that differ in `ex`, skipping whole tables and the keys in
/// `except`.
fn compare(file: &str, def: &toml::Table, ex: &toml::Table, except: &[&str]) -> Vec<String> {
    let ex: Vec<_> = flatten(ex);
    flatten(def)
        .into_iter()
        .filter(|(_, k, v)| !v.is_table() && !except.contains(&k.as_str()))
        .filter(|(s, _, _)| s.is_empty() || def.get(s).is_some_and(toml::Value::is_table))
        .filter_map(|(s, k, v)| {
            let got = ex.iter().find(|(es, ek, _)| *es == s && *ek == k);
            match got {
                Some((_, _, g)) if *g == v => None,
                Some((_, _, g)) => Some(format!("{file}: {s}.{k} = {g}, default is {v}")),
                None => Some(format!("{file}: {s}.{k} missing, default is {v}")),
            }
        })
        .collect()
}

/// Uncomment `# key = value` and `# [section]` lines (prose comments stay).
fn uncomment(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if entry(rest).is_some() => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

enum Entry<'a> {
    Header(&'a str),
    Key(&'a str),
}

/// A line (comment marker already removed) that is a `[header]`,
/// `[[header]]` or `key = …`.
fn entry(line: &str) -> Option<Entry<'_>> {
    let line = line.trim();
    let ident = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    if let Some(inner) = line.strip_prefix('[') {
        let name = inner
            .trim_start_matches('[')
            .trim_end_matches(']')
            .trim_end_matches(']');
        return ident(name).then_some(Entry::Header(name));
    }
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    ident(key).then_some(Entry::Key(key))
}

/// The headers and (section, key) pairs a file shows, commented or not.
struct Entries {
    found: BTreeSet<(String, String)>,
}

impl Entries {
    fn of(text: &str) -> Self {
        let mut found = BTreeSet::new();
        let mut current = String::new();
        for line in text.lines() {
            let line = line.trim_start();
            let line = line.strip_prefix('#').unwrap_or(line);
            match entry(line) {
                Some(Entry::Header(h)) => {
                    found.insert((String::new(), h.to_string()));
                    current = h.to_string();
                }
                Some(Entry::Key(k)) => {
                    found.insert((current.clone(), k.to_string()));
                }
                None => {}
            }
        }
        Self { found }
    }

    fn missing(&self, file: &str, want: &[(String, String)]) -> Vec<String> {
        want.iter()
            .filter(|w| !self.found.contains(*w))
            .map(|(s, k)| match s.as_str() {
                "" => format!("{file}: top-level key or section `{k}`"),
                s => format!("{file}: `{k}` in [{s}]"),
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }
}

/// The field names serde knows for `T`, optional ones included: a
/// deserializer that records what `deserialize_struct` is asked for.
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut seen = None;
    let _ = T::deserialize(Introspect(&mut seen));
    seen.unwrap_or_else(|| panic!("{} is not a struct", std::any::type_name::<T>()))
}

struct Introspect<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> de::Deserializer<'de> for Introspect<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("fields recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}
