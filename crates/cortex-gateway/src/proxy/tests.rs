//! The retry policy of [`dispatch`], against fake neurons behind the
//! [`NeuronApi`] seam (no sockets): what is tried again elsewhere, what is
//! never sent twice, and the cap on attempts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cortex_core::config::{LimitsConfig, ModelsFile};
use cortex_core::neuron_api::{
    AvailableModel, DeviceKind, DeviceStatus, ModelState, ModelStatus, NodeStatus,
};
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};

use super::*;
use crate::admission::Admission;
use crate::catalog::Catalog;
use crate::fleet::{FleetHandle, FleetSettings};
use crate::metrics::GatewayMetrics;
use crate::neuron_client::{cause, NeuronApi, NeuronClient, NodeInfo};

/// What a fake node does with a chat request.
#[derive(Clone, Copy)]
enum Does {
    /// Refuses the connection: nothing sent.
    Refuse,
    /// Takes the request, then the connection fails: it may have run it.
    FailAfterWriting,
    /// Answers this status and body.
    Answer(u16, &'static str),
}

#[derive(Default)]
struct Fake {
    does: HashMap<String, Does>,
    /// The nodes asked, in order.
    asked: Mutex<Vec<String>>,
}

impl Fake {
    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

impl NeuronApi for Fake {
    fn send<'a>(
        &'a self,
        node: &'a NodeInfo,
        _req: NeuronRequest,
    ) -> BoxFuture<'a, Result<Answer, UpstreamError>> {
        self.asked.lock().unwrap().push(node.name.clone());
        let does = self.does[&node.name];
        Box::pin(async move {
            let name = node.name.clone();
            match does {
                Does::Refuse => Err(UpstreamError::Connect {
                    node: name,
                    cause: cause("connection refused"),
                }),
                Does::FailAfterWriting => Err(UpstreamError::Transport {
                    node: name,
                    cause: cause("connection reset"),
                }),
                Does::Answer(status, body) => Ok(http::Response::builder()
                    .status(status)
                    .body(
                        Full::new(Bytes::from_static(body.as_bytes()))
                            .map_err(|e| match e {})
                            .boxed_unsync(),
                    )
                    .unwrap()),
            }
        })
    }
}

fn ready_status(node: &str) -> NodeStatus {
    NodeStatus {
        name: node.into(),
        version: "test".into(),
        devices: vec![DeviceStatus {
            index: 0,
            kind: DeviceKind::Cpu,
            name: "cpu".into(),
            memory_total_bytes: 1000,
            memory_free_bytes: 1000,
            memory_budget_bytes: 1000,
            memory_used_bytes: 0,
        }],
        models: vec![ModelStatus {
            id: "m".into(),
            state: ModelState::Ready,
            device: 0,
            memory_bytes: 100,
            kv_reserve_bytes: 10,
            loaded_at: 1,
            last_used_at: 1,
            in_flight: 0,
            source: "m.gguf".into(),
            context_length: 4096,
            error: None,
        }],
        available: vec![AvailableModel {
            id: "m".into(),
            source: "m.gguf".into(),
            size_bytes: 100,
            estimated_bytes: 110,
        }],
    }
}

/// A gateway's state in front of nodes `a` and `b` (doing what `does`
/// says), both with `m` ready, and `max_attempts`.
async fn state(does: [Does; 2], max_attempts: u32) -> (AppState, Arc<Fake>) {
    let fake = Arc::new(Fake {
        does: HashMap::from([("a".into(), does[0]), ("b".into(), does[1])]),
        ..Fake::default()
    });
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = GatewayMetrics::new(&mut registry);
    let neurons = NeuronClient::new(fake.clone(), 1 << 20);
    let nodes = vec![
        NodeInfo::new("a", "http://a:1", None),
        NodeInfo::new("b", "http://b:1", None),
    ];
    let fleet = FleetHandle::spawn(
        nodes,
        Catalog::new(ModelsFile::default()),
        FleetSettings {
            strategy: crate::router::EvictionStrategy::Lru,
            min_residency: Duration::ZERO,
            idle_unload_after: Duration::ZERO,
            defrag_after_cycles: 0,
            down_after_failures: 2,
            load_timeout: Duration::from_secs(1),
        },
        neurons.clone(),
        metrics.clone(),
    );
    let now = cortex_core::now_unix_ms();
    for n in ["a", "b"] {
        fleet.poll_result(n, now, Ok(ready_status(n)));
    }
    for _ in 0..100 {
        if fleet.table().ready.get("m").is_some_and(|r| r.len() == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let limits = LimitsConfig {
        max_attempts,
        ..LimitsConfig::default()
    };
    let state = AppState {
        fleet,
        neurons,
        admission: Admission::new(10, 10, 10),
        metrics,
        limits,
        api_keys: Vec::new(),
    };
    (state, fake)
}

async fn send(state: &AppState) -> Result<Dispatched, GatewayError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    dispatch(state, "m", "/v1/chat/completions", Bytes::new(), deadline).await
}

fn retries(state: &AppState) -> u64 {
    state
        .metrics
        .retries
        .get_or_create(&ModelLabel { model: "m".into() })
        .get()
}

#[tokio::test]
async fn a_refused_connection_is_tried_once_on_another_neuron() {
    let (s, fake) = state([Does::Refuse, Does::Answer(200, "{}")], 2).await;
    let d = send(&s).await.unwrap();
    assert_eq!(d.replica.node.name, "b");
    assert_eq!(fake.asked(), ["a", "b"]);
    assert_eq!(retries(&s), 1);
}

#[tokio::test]
async fn a_request_that_may_have_run_is_never_sent_again() {
    let (s, fake) = state([Does::FailAfterWriting, Does::Answer(200, "{}")], 2).await;
    let e = send(&s).await.err().expect("an error");
    assert!(
        matches!(e, GatewayError::Neuron(UpstreamError::Transport { .. })),
        "{e:?}"
    );
    assert_eq!(crate::error::openai_status(&e), 502);
    assert_eq!(fake.asked(), ["a"]);
    assert_eq!(retries(&s), 0);
}

#[tokio::test]
async fn a_neuron_that_refused_before_running_anything_is_passed_over() {
    for code in [
        "model_loading",
        "model_unloading",
        "model_not_found",
        "model_poisoned",
    ] {
        let body: &'static str = Box::leak(
            format!(r#"{{"error":{{"message":"no","type":"x","code":"{code}"}}}}"#)
                .into_boxed_str(),
        );
        let (s, fake) = state([Does::Answer(503, body), Does::Answer(200, "{}")], 2).await;
        let d = send(&s).await.unwrap();
        assert_eq!(d.replica.node.name, "b", "{code}");
        assert_eq!(fake.asked(), ["a", "b"], "{code}");
    }
}

#[tokio::test]
async fn other_error_answers_are_passed_on_not_retried() {
    let body = r#"{"error":{"message":"bad","type":"invalid_request_error","code":"x"}}"#;
    for status in [404, 503] {
        let (s, fake) = state([Does::Answer(status, body), Does::Answer(200, "{}")], 2).await;
        let e = send(&s).await.err().expect("an error");
        assert!(
            matches!(&e, GatewayError::Upstream { status: st, .. } if *st == status),
            "{e:?}"
        );
        assert_eq!(fake.asked(), ["a"]);
    }
    let (s, fake) = state([Does::Answer(500, body), Does::Answer(200, "{}")], 2).await;
    let d = send(&s).await.unwrap();
    assert_eq!(d.resp.status(), 500, "answered: the caller passes it on");
    assert_eq!(fake.asked(), ["a"]);
}

#[tokio::test]
async fn attempts_are_capped() {
    let (s, fake) = state([Does::Refuse, Does::Answer(200, "{}")], 1).await;
    let e = send(&s).await.err().expect("an error");
    assert_eq!(crate::error::openai_status(&e), 503, "{e:?}");
    assert_eq!(fake.asked(), ["a"]);
    let (s, fake) = state([Does::Refuse, Does::Refuse], 5).await;
    assert!(send(&s).await.is_err());
    assert_eq!(fake.asked(), ["a", "b"], "each neuron once");
}
