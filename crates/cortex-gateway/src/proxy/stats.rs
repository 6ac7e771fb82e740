//! Metrics tapped from a request as it passes: time to first token,
//! inter-token latency, tokens, tokens per second, duration and status,
//! per model and node. Recorded once, when the request ends (also when the
//! client goes away).

use std::time::Instant;

use cortex_core::openai::Usage;
use serde::Deserialize;

use std::sync::Arc;

use crate::metrics::{Api, ReplicaMetrics};

/// The parts of an OpenAI chunk or answer the tap reads.
#[derive(Debug, Default, Deserialize)]
pub struct Probe {
    #[serde(default)]
    pub choices: Vec<ProbeChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

/// The `usage` of a whole (not streamed) answer, read without parsing the
/// rest of it.
pub fn usage_of(answer: &[u8]) -> Option<Usage> {
    // Usually the last field; anywhere else, found from the start.
    let usage = crate::json_scan::last_field(answer, "usage")
        .or_else(|| crate::json_scan::field(answer, "usage"))?;
    let (mut prompt, mut completion, mut total) = (None, None, None);
    for (name, value) in crate::json_scan::fields(usage) {
        let slot = match name {
            b"prompt_tokens" => &mut prompt,
            b"completion_tokens" => &mut completion,
            b"total_tokens" => &mut total,
            _ => continue,
        };
        *slot = Some(crate::ascii::parse_decimal(value)?);
    }
    Some(Usage {
        prompt_tokens: prompt?,
        completion_tokens: completion?,
        total_tokens: total?,
        prompt_tokens_details: None,
    })
}

#[derive(Debug, Default, Deserialize)]
pub struct ProbeChoice {
    #[serde(default)]
    pub delta: Option<ProbeDelta>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ProbeDelta {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<serde_json::Value>,
}

impl Probe {
    /// Does this chunk carry generated output?
    pub fn has_output(&self) -> bool {
        self.choices.iter().any(|c| {
            c.delta.as_ref().is_some_and(|d| {
                d.content.as_deref().is_some_and(|s| !s.is_empty()) || d.tool_calls.is_some()
            })
        })
    }
}

/// One request's measurements.
pub struct Stats {
    metrics: Arc<ReplicaMetrics>,
    api: Api,
    started: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    pub usage: Option<Usage>,
    pub status: u16,
    recorded: bool,
}

impl Stats {
    /// Start measuring a request that reached a neuron; it counts as in
    /// flight until [`Stats::finish`].
    pub fn new(metrics: Arc<ReplicaMetrics>, api: Api, started: Instant) -> Self {
        metrics.in_flight.inc();
        Self {
            metrics,
            api,
            started,
            first: None,
            last: None,
            usage: None,
            status: 200,
            recorded: false,
        }
    }

    /// A chunk with output arrived.
    pub fn token(&mut self) {
        let now = Instant::now();
        match self.last {
            None => {
                self.first = Some(now);
                self.metrics
                    .ttft
                    .observe(now.duration_since(self.started).as_secs_f64());
            }
            Some(prev) => self
                .metrics
                .inter_token
                .observe(now.duration_since(prev).as_secs_f64()),
        }
        self.last = Some(now);
    }

    /// Record everything; later calls do nothing. `status` 499 = the client
    /// went away.
    pub fn finish(&mut self, status: u16) {
        if self.recorded {
            return;
        }
        self.recorded = true;
        self.status = status;
        let m = &self.metrics;
        m.in_flight.dec();
        m.request_duration
            .observe(self.started.elapsed().as_secs_f64());
        m.request(self.api, status);
        if let Some(u) = self.usage {
            m.prompt_tokens.inc_by(u.prompt_tokens);
            m.completion_tokens.inc_by(u.completion_tokens);
            let gen_secs = match (self.first, self.last) {
                (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
                _ => 0.0,
            };
            if u.completion_tokens > 1 && gen_secs > 0.0 {
                m.tokens_per_second
                    .observe((u.completion_tokens - 1) as f64 / gen_secs);
            }
        }
    }
}

impl Drop for Stats {
    fn drop(&mut self) {
        // A stream dropped before its end: the client went away.
        self.finish(499);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    #[test]
    fn usage_is_read_whole_or_not_at_all() {
        let with = |usage: Value| {
            serde_json::to_vec(&json!({"id": "x", "choices": [{"message": {"content": "\"usage\""}}], "usage": usage}))
                .unwrap()
        };
        let u = json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11});
        assert_eq!(usage_of(&with(u)), Some(Usage::new(9, 2)));
        for bad in [
            json!(null),
            json!({"prompt_tokens": 9, "completion_tokens": 2}),
            json!({"prompt_tokens": -9, "completion_tokens": 2, "total_tokens": 11}),
            json!({"prompt_tokens": 9.5, "completion_tokens": 2, "total_tokens": 11}),
            json!({"prompt_tokens": "9", "completion_tokens": 2, "total_tokens": 11}),
            json!([9, 2, 11]),
        ] {
            assert_eq!(usage_of(&with(bad.clone())), None, "{bad}");
        }
        assert_eq!(usage_of(b"{\"id\":1}"), None);
        assert_eq!(usage_of(b"not json"), None);
    }

    proptest! {
        #[test]
        fn usage_of_reads_what_serde_writes(
            p in 0u64..1_000_000_000_000,
            c in 0u64..1_000_000_000_000,
            extra in prop::collection::btree_map("[a-z_]{1,8}", "[ -~]{0,12}", 0..4),
            first in any::<bool>(),
        ) {
            let usage = Usage::new(p, c);
            let mut doc = serde_json::Map::new();
            if first {
                doc.insert("usage".into(), serde_json::to_value(usage).unwrap());
            }
            for (k, v) in &extra {
                if k != "usage" {
                    doc.insert(k.clone(), Value::from(v.clone()));
                }
            }
            if !first {
                doc.insert("usage".into(), serde_json::to_value(usage).unwrap());
            }
            let text = serde_json::to_vec_pretty(&Value::Object(doc)).unwrap();
            prop_assert_eq!(usage_of(&text), Some(usage));
        }

        #[test]
        fn usage_of_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = usage_of(&bytes);
        }
    }
}
