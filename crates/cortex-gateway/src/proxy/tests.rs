//! The retry policy of [`dispatch`], against fake neurons behind the
//! [`NeuronApi`] seam (no sockets): what is tried again elsewhere, what is
//! never sent twice, and the cap on attempts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cortex_core::config::LimitsConfig;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};

use super::*;
use crate::neuron_client::{cause, NeuronApi, NodeInfo};

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

/// A gateway's state in front of nodes `a` and `b` (doing what `does`
/// says), both with `m` ready, and `max_attempts`.
async fn state(does: [Does; 2], max_attempts: u32) -> (AppState, Arc<Fake>) {
    let fake = Arc::new(Fake {
        does: HashMap::from([("a".into(), does[0]), ("b".into(), does[1])]),
        ..Fake::default()
    });
    let limits = LimitsConfig {
        max_attempts,
        ..LimitsConfig::default()
    };
    let state = crate::testing::app_state(fake.clone(), &["a", "b"], limits).await;
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
    let e = send(&s).await.expect_err("an error");
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
        let e = send(&s).await.expect_err("an error");
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
    let e = send(&s).await.expect_err("an error");
    assert_eq!(crate::error::openai_status(&e), 503, "{e:?}");
    assert_eq!(fake.asked(), ["a"]);
    let (s, fake) = state([Does::Refuse, Does::Refuse], 5).await;
    assert!(send(&s).await.is_err());
    assert_eq!(fake.asked(), ["a", "b"], "each neuron once");
}
