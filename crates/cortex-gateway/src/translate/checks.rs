//! Checks of an Anthropic Messages body that its types cannot express,
//! answered as Anthropic answers them (400 `invalid_request_error`):
//! non-empty content on every message but a final assistant one (the
//! prefill), `tool_use` blocks with an id and a name, `tool_result` blocks
//! naming their call, and the sampling ranges (`temperature` and `top_p`
//! in [0, 1], `top_k` ≥ 0).

use cortex_core::anthropic::{ContentBlock, Message, MessageContent, MessagesRequest, Role};

use super::TranslateError;

/// The sampling fields (`/v1/messages` only; `count_tokens` has none).
pub fn sampling(req: &MessagesRequest) -> Result<(), TranslateError> {
    for (param, value) in [("temperature", req.temperature), ("top_p", req.top_p)] {
        if let Some(v) = value {
            if !(0.0..=1.0).contains(&v) {
                return Err(TranslateError::invalid(
                    param,
                    format!("{param}: must be between 0 and 1, got {v}"),
                ));
            }
        }
    }
    if let Some(k) = req.top_k {
        if k < 0 {
            return Err(TranslateError::invalid(
                "top_k",
                format!("top_k: must be greater than or equal to 0, got {k}"),
            ));
        }
    }
    Ok(())
}

/// The messages (both routes).
pub fn messages(messages: &[Message]) -> Result<(), TranslateError> {
    let last = messages.len().saturating_sub(1);
    for (i, m) in messages.iter().enumerate() {
        let empty = match &m.content {
            MessageContent::Text(t) => t.is_empty(),
            MessageContent::Blocks(b) => b.is_empty(),
        };
        if empty && !(i == last && m.role == Role::Assistant) {
            return Err(TranslateError::invalid(
                "messages",
                format!("messages.{i}: all messages must have non-empty content except for the optional final assistant message"),
            ));
        }
        let MessageContent::Blocks(blocks) = &m.content else {
            continue;
        };
        for (j, b) in blocks.iter().enumerate() {
            match b {
                ContentBlock::ToolUse { id, name, .. } if id.is_empty() || name.is_empty() => {
                    return Err(TranslateError::invalid(
                        "messages",
                        format!("messages.{i}.content.{j}: a tool_use block needs a non-empty id and name"),
                    ))
                }
                ContentBlock::ToolResult { tool_use_id, .. } if tool_use_id.is_empty() => {
                    return Err(TranslateError::invalid(
                        "messages",
                        format!("messages.{i}.content.{j}.tool_use_id: must not be empty"),
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn req(v: Value) -> MessagesRequest {
        serde_json::from_value(v).unwrap()
    }

    fn msgs(m: Value) -> Result<(), TranslateError> {
        messages(&req(json!({"model": "m", "messages": m})).messages)
    }

    fn gist(r: Result<(), TranslateError>) -> String {
        match r {
            Err(TranslateError::Invalid { message, .. }) => message,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn messages_table() {
        let use_block =
            |id: &str, name: &str| json!({"type": "tool_use", "id": id, "name": name, "input": {}});
        for ok in [
            json!([{"role": "user", "content": "hi"}]),
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]),
            json!([{"role": "user", "content": "hi"}, {"role": "assistant", "content": []}]),
            json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": [use_block("t1", "f")]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "42"}]}]),
        ] {
            msgs(ok.clone()).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for (bad, want) in [
            (
                json!([{"role": "user", "content": ""}]),
                "messages.0: all messages must have non-empty content",
            ),
            (
                json!([{"role": "user", "content": []}]),
                "messages.0: all messages",
            ),
            (
                json!([{"role": "assistant", "content": ""}, {"role": "user", "content": "x"}]),
                "messages.0: all messages",
            ),
            (
                json!([{"role": "user", "content": "x"}, {"role": "assistant", "content": [use_block("", "f")]}]),
                "messages.1.content.0: a tool_use block",
            ),
            (
                json!([{"role": "user", "content": "x"}, {"role": "assistant", "content": [use_block("t", "")]}]),
                "a tool_use block",
            ),
            (
                json!([{"role": "user", "content": [{"type": "tool_result", "tool_use_id": ""}]}]),
                "messages.0.content.0.tool_use_id",
            ),
        ] {
            assert!(gist(msgs(bad.clone())).contains(want), "{bad}");
        }
    }

    #[test]
    fn sampling_table() {
        let with = |k: &str, v: Value| {
            let mut b = json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]});
            b[k] = v;
            sampling(&req(b))
        };
        for (k, v) in [
            ("temperature", json!(1.01)),
            ("temperature", json!(-0.5)),
            ("top_p", json!(1.5)),
            ("top_p", json!(-0.1)),
            ("top_k", json!(-1)),
        ] {
            match with(k, v.clone()) {
                Err(TranslateError::Invalid { param, .. }) => assert_eq!(param.as_deref(), Some(k)),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
        for (k, v) in [
            ("temperature", json!(0)),
            ("top_p", json!(1)),
            ("top_k", json!(0)),
        ] {
            assert!(with(k, v).is_ok());
        }
    }

    proptest! {
        /// Alternating non-empty text messages pass; emptying any but a
        /// final assistant one is refused.
        #[test]
        fn empty_content_is_refused_but_the_prefill(texts in proptest::collection::vec(".{1,10}", 1..6), at in any::<prop::sample::Index>()) {
            let mut m: Vec<Value> = texts.iter().enumerate().map(|(i, t)| {
                json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": t})
            }).collect();
            prop_assert!(msgs(json!(m.clone())).is_ok());
            let i = at.index(m.len());
            m[i]["content"] = json!("");
            let prefill = i == m.len() - 1 && i % 2 == 1;
            prop_assert_eq!(msgs(json!(m)).is_ok(), prefill);
        }
    }
}
