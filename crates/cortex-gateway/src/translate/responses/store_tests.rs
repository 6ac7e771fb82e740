//! Tests for [`super`]: limits, expiry, the 404 envelope, and a stored
//! conversation rebuilding the next request.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::translate::responses::request::responses_to_chat;
use crate::translate::responses::response::chat_to_response;
use crate::translate::responses::response::tests::seed;
use cortex_core::openai::{ChatCompletion, Role};
use cortex_core::responses::ResponsesRequest;
use proptest::prelude::*;
use serde_json::json;

fn user(text: &str) -> InputItem {
    InputItem::Message(InputMessage::text(InputRole::User, text))
}

fn limits(capacity: usize, max_bytes: usize, ttl_s: u64) -> StoreLimits {
    StoreLimits {
        capacity,
        max_bytes,
        ttl: Duration::from_secs(ttl_s),
    }
}

#[test]
fn stored_conversations_come_back_until_they_expire() {
    let t0 = Instant::now();
    let mut s = ResponseStore::new(limits(10, 1 << 20, 60));
    s.put("resp_1".into(), vec![user("a")], t0);
    assert_eq!(&*s.get("resp_1", t0).unwrap(), &[user("a")]);
    let just_before = t0 + Duration::from_secs(60) - Duration::from_millis(1);
    assert!(s.get("resp_1", just_before).is_ok());
    assert_eq!(
        s.get("resp_1", t0 + Duration::from_secs(60)),
        Err(StoreError::NotFound {
            id: "resp_1".into()
        })
    );
    assert!(s.is_empty() && s.bytes() == 0);
}

#[test]
fn the_oldest_leave_first_when_full() {
    let t0 = Instant::now();
    let mut s = ResponseStore::new(limits(2, 1 << 20, 60));
    for (i, id) in ["r1", "r2", "r3"].into_iter().enumerate() {
        s.put(
            id.into(),
            vec![user(id)],
            t0 + Duration::from_secs(i as u64),
        );
    }
    let now = t0 + Duration::from_secs(3);
    assert!(s.get("r1", now).is_err());
    assert!(s.get("r2", now).is_ok() && s.get("r3", now).is_ok());
    assert_eq!(s.len(), 2);
}

#[test]
fn the_byte_bound_holds_and_huge_conversations_are_not_kept() {
    let t0 = Instant::now();
    let one = serde_json::to_vec(&vec![user("0123456789")]).unwrap().len();
    let mut s = ResponseStore::new(limits(100, 2 * one + 1, 60));
    s.put("a".into(), vec![user("0123456789")], t0);
    s.put("b".into(), vec![user("0123456789")], t0);
    s.put("c".into(), vec![user("0123456789")], t0);
    assert!(s.get("a", t0).is_err());
    assert_eq!((s.len(), s.bytes()), (2, 2 * one));
    s.put("huge".into(), vec![user(&"x".repeat(10 * one))], t0);
    assert!(s.get("huge", t0).is_err());
    assert_eq!(s.len(), 2, "a huge conversation evicts nothing");
}

#[test]
fn storing_an_id_again_replaces_it() {
    let t0 = Instant::now();
    let mut s = ResponseStore::new(limits(10, 1 << 20, 60));
    s.put("r".into(), vec![user("old")], t0);
    s.put("r".into(), vec![user("new"), user("er")], t0);
    assert_eq!(&*s.get("r", t0).unwrap(), &[user("new"), user("er")]);
    assert_eq!(s.len(), 1);
    let want = serde_json::to_vec(&vec![user("new"), user("er")])
        .unwrap()
        .len();
    assert_eq!(s.bytes(), want);
}

#[test]
fn not_found_is_openais_envelope() {
    let err = ResponseStore::new(StoreLimits::default())
        .get("resp_gone", Instant::now())
        .unwrap_err();
    assert_eq!(
        serde_json::to_value(err.to_openai()).unwrap(),
        json!({"error": {
            "message": "Previous response with id 'resp_gone' not found.",
            "type": "invalid_request_error",
            "param": "previous_response_id",
            "code": "previous_response_not_found"
        }})
    );
}

#[test]
fn a_stored_turn_rebuilds_the_next_request() {
    // Turn 1: a question answered with a tool call.
    let first: ResponsesRequest = serde_json::from_value(json!({
        "model": "m", "instructions": "be brief", "input": "weather in Paris?",
        "tools": [{"type": "function", "name": "get_weather"}]
    }))
    .unwrap();
    let completion: ChatCompletion = serde_json::from_value(json!({
        "id": "c", "object": "chat.completion", "created": 1, "model": "m",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": null, "message": {
            "role": "assistant", "content": "Checking.", "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}
    }))
    .unwrap();
    let response = chat_to_response(completion, &seed());
    let t0 = Instant::now();
    let mut store = ResponseStore::new(StoreLimits::default());
    store.put(
        response.id.clone(),
        conversation(&[], first.input_items(), &response.output),
        t0,
    );
    // Turn 2: the tool's output, continuing turn 1.
    let second: ResponsesRequest = serde_json::from_value(json!({
        "model": "m", "previous_response_id": response.id,
        "input": [{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}]
    }))
    .unwrap();
    let history = store.get(&response.id, t0).unwrap();
    let chat = responses_to_chat(&second, &history).unwrap();
    let got: Vec<_> = chat
        .messages
        .iter()
        .map(|m| {
            (
                m.role,
                m.text_content(),
                m.tool_calls.as_ref().map(Vec::len),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (Role::User, "weather in Paris?".to_string(), None),
            (Role::Assistant, "Checking.".to_string(), Some(1)),
            (Role::Tool, "sunny".to_string(), None),
        ]
    );
    assert_eq!(chat.messages[2].tool_call_id.as_deref(), Some("call_1"));
}

/// One thing the HTTP layer may do to the store.
#[derive(Debug, Clone)]
enum Op {
    Put { id: u8, len: usize },
    Get { id: u8 },
    Wait { secs: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6, 0usize..40).prop_map(|(id, len)| Op::Put { id, len }),
        (0u8..6).prop_map(|id| Op::Get { id }),
        (0u64..30).prop_map(|secs| Op::Wait { secs }),
    ]
}

proptest! {
    /// Whatever happens, the limits hold; a hit returns what was last put
    /// under that id, never anything older than the TTL; the newest put that
    /// fits is always there.
    #[test]
    fn limits_hold_and_hits_are_fresh(
        ops in prop::collection::vec(op(), 0..60),
        capacity in 1usize..5,
        max_bytes in 20usize..300,
    ) {
        let t0 = Instant::now();
        let ttl = Duration::from_secs(40);
        let mut s = ResponseStore::new(StoreLimits { capacity, max_bytes, ttl });
        let mut now = t0;
        // id → (conversation, when) of its last put.
        let mut last: HashMap<String, (Vec<InputItem>, Instant)> = HashMap::new();
        for op in ops {
            match op {
                Op::Put { id, len } => {
                    let id = format!("resp_{id}");
                    let conv = vec![user(&"x".repeat(len))];
                    let size = serde_json::to_vec(&conv).unwrap().len();
                    s.put(id.clone(), conv.clone(), now);
                    if size <= max_bytes {
                        prop_assert_eq!(&*s.get(&id, now).unwrap(), &conv[..]);
                    }
                    last.insert(id, (conv, now));
                }
                Op::Get { id } => {
                    let id = format!("resp_{id}");
                    if let Ok(conv) = s.get(&id, now) {
                        let (want, when) = last.get(&id).unwrap();
                        prop_assert_eq!(&*conv, &want[..]);
                        prop_assert!(now.duration_since(*when) < ttl);
                    }
                }
                Op::Wait { secs } => now += Duration::from_secs(secs),
            }
            prop_assert!(s.len() <= capacity);
            prop_assert!(s.bytes() <= max_bytes);
        }
    }
}
