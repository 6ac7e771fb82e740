//! Checks of a chat request's messages, tools and penalties that its types
//! cannot express, answered as OpenAI answers them: content required on
//! every message but an assistant's that calls tools, a tool message naming
//! a call of the message before it, content arrays not empty, penalties in
//! [-2, 2], tools of type `function` with a usable name. Ranges of the
//! sampling values are checked in [`super::chat`].

use std::collections::HashSet;

use cortex_core::openai::{ChatCompletionRequest, ChatMessage, MessageContent, Role};

use super::error::ApiError;

/// OpenAI's pattern for function names: `^[a-zA-Z0-9_-]{1,64}$`.
fn valid_function_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

pub(super) fn request(req: &ChatCompletionRequest) -> Result<(), ApiError> {
    if req.model.is_empty() {
        return Err(ApiError::bad_param(
            "model",
            "you must provide a model parameter",
        ));
    }
    messages(&req.messages)?;
    for (param, value) in [
        ("frequency_penalty", req.frequency_penalty),
        ("presence_penalty", req.presence_penalty),
    ] {
        if let Some(v) = value {
            if !(-2.0..=2.0).contains(&v) {
                return Err(ApiError::bad_param(
                    param,
                    format!("{param} must be between -2 and 2, got {v}"),
                ));
            }
        }
    }
    for (i, t) in req.tools.iter().flatten().enumerate() {
        if t.kind != "function" {
            return Err(ApiError::bad_param(
                "tools",
                format!("tools[{i}].type must be \"function\", got {:?}", t.kind),
            ));
        }
        if !valid_function_name(&t.function.name) {
            return Err(ApiError::bad_param(
                "tools",
                format!(
                    "tools[{i}].function.name must be 1-64 letters, digits, '_' or '-', got {:?}",
                    t.function.name
                ),
            ));
        }
    }
    Ok(())
}

fn messages(messages: &[ChatMessage]) -> Result<(), ApiError> {
    // Tool call ids of the latest assistant message, which tool messages
    // answer.
    let mut open_calls: HashSet<&str> = HashSet::new();
    for (i, m) in messages.iter().enumerate() {
        let calls = m.tool_calls.as_deref().unwrap_or_default();
        match (&m.content, m.role) {
            (None, Role::Assistant) if !calls.is_empty() => {}
            (None, Role::Assistant) => {
                return Err(ApiError::bad_param(
                    "messages",
                    format!("messages[{i}]: an assistant message needs content or tool_calls"),
                ))
            }
            (None, _) => {
                return Err(ApiError::bad_param(
                    "messages",
                    format!("Missing required parameter: 'messages[{i}].content'."),
                )
                .code("missing_required_parameter"))
            }
            (Some(MessageContent::Parts(p)), _) if p.is_empty() => {
                return Err(ApiError::bad_param(
                    "messages",
                    format!(
                        "Invalid 'messages[{i}].content': empty array. Expected an array with minimum length 1."
                    ),
                ))
            }
            _ => {}
        }
        if m.role != Role::Assistant && m.tool_calls.is_some() {
            return Err(ApiError::bad_param(
                "messages",
                format!("messages[{i}]: only assistant messages may carry tool_calls"),
            ));
        }
        match m.role {
            Role::Assistant => {
                open_calls = calls.iter().map(|c| c.id.as_str()).collect();
                for (j, c) in calls.iter().enumerate() {
                    if c.id.is_empty() || c.function.name.is_empty() {
                        return Err(ApiError::bad_param(
                            "messages",
                            format!(
                                "messages[{i}].tool_calls[{j}] needs an id and a function name"
                            ),
                        ));
                    }
                }
            }
            Role::Tool => {
                let Some(id) = m.tool_call_id.as_deref() else {
                    return Err(ApiError::bad_param(
                        "messages",
                        format!("Missing required parameter: 'messages[{i}].tool_call_id'."),
                    )
                    .code("missing_required_parameter"));
                };
                if !open_calls.contains(id) {
                    return Err(ApiError::bad_param(
                        "messages",
                        format!(
                            "messages[{i}]: a message with role 'tool' must answer a tool call of the assistant message before it (no call {id:?})"
                        ),
                    ));
                }
            }
            _ => open_calls.clear(),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    fn check(v: Value) -> Result<(), ApiError> {
        request(&serde_json::from_value(v).unwrap())
    }

    fn with_messages(m: Value) -> Value {
        json!({"model": "m", "messages": m})
    }

    #[test]
    fn conversations_openai_accepts_pass() {
        let call =
            json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
        for ok in [
            json!([{"role": "user", "content": "hi"}]),
            json!([{"role": "user", "content": ""}]),
            json!([{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "x"}]}]),
            json!([{"role": "user", "content": "q"}, {"role": "assistant", "content": null, "tool_calls": [call]},
                   {"role": "tool", "tool_call_id": "c1", "content": "42"}]),
            json!([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call]},
                   {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "42"}]},
                   {"role": "assistant", "content": "it is 42"}]),
        ] {
            check(with_messages(ok.clone())).unwrap_or_else(|e| panic!("{ok}: {}", e.message));
        }
    }

    /// Each case, what OpenAI answers (400), and the message's gist.
    #[test]
    fn bad_conversations_are_400_naming_the_message() {
        let call =
            json!({"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}});
        let cases = [
            (json!([{"role": "user"}]), "messages[0].content"),
            (
                json!([{"role": "user", "content": null}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "system"}, {"role": "user", "content": "x"}]),
                "messages[0].content",
            ),
            (
                json!([{"role": "user", "content": "x"}, {"role": "developer"}]),
                "messages[1].content",
            ),
            (json!([{"role": "user", "content": []}]), "empty array"),
            (
                json!([{"role": "user", "content": "x"}, {"role": "assistant"}]),
                "content or tool_calls",
            ),
            (
                json!([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call]},
                    {"role": "tool", "content": "42"}]),
                "messages[2].tool_call_id",
            ),
            (
                json!([{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "c1", "content": "42"}]),
                "must answer a tool call",
            ),
            (
                json!([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": "other", "content": "42"}]),
                "no call \"other\"",
            ),
            (
                json!([{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": "c1"}]),
                "messages[2].content",
            ),
            (
                json!([{"role": "user", "content": "q", "tool_calls": [call]}]),
                "only assistant",
            ),
        ];
        for (m, gist) in cases {
            let e = check(with_messages(m.clone()))
                .err()
                .unwrap_or_else(|| panic!("{m} accepted"));
            assert_eq!(e.status, 400, "{m}");
            assert_eq!(e.param, Some("messages"), "{m}");
            assert!(e.message.contains(gist), "{m}: {}", e.message);
        }
    }

    #[test]
    fn model_penalties_and_tools() {
        let base = || json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        let tool = |kind: &str, name: &str| json!([{"type": kind, "function": {"name": name, "parameters": {}}}]);
        let cases = [
            ("model", json!(""), "model"),
            ("frequency_penalty", json!(2.5), "frequency_penalty"),
            ("presence_penalty", json!(-2.01), "presence_penalty"),
            ("tools", tool("function", ""), "tools"),
            ("tools", tool("function", "has space"), "tools"),
            ("tools", tool("function", &"n".repeat(65)), "tools"),
            ("tools", tool("retrieval", "f"), "tools"),
        ];
        for (k, v, param) in cases {
            let mut b = base();
            b[k] = v.clone();
            let e = check(b).err().unwrap_or_else(|| panic!("{k}={v} accepted"));
            assert_eq!(e.param, Some(param), "{k}={v}");
        }
        let mut b = base();
        b["presence_penalty"] = json!(2);
        b["tools"] = tool("function", "get_weather-2");
        assert!(check(b).is_ok());
    }

    proptest! {
        /// Any conversation of user/assistant text messages with content
        /// passes; dropping one's content is always refused.
        #[test]
        fn text_conversations(texts in proptest::collection::vec(".{0,12}", 1..6), drop in any::<prop::sample::Index>()) {
            let msgs: Vec<Value> = texts.iter().enumerate().map(|(i, t)| {
                json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": t})
            }).collect();
            prop_assert!(check(with_messages(json!(msgs.clone()))).is_ok());
            let mut broken = msgs;
            let i = drop.index(broken.len());
            broken[i].as_object_mut().unwrap().remove("content");
            prop_assert!(check(with_messages(json!(broken))).is_err());
        }
    }
}
