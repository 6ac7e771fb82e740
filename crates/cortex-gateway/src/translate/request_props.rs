//! Round-trip properties for [`super`]: Anthropic → OpenAI → Anthropic
//! (an inverse written only for the test) keeps everything the translation
//! promises to keep.
#![allow(clippy::unwrap_used)]

use super::*;
use cortex_core::anthropic::{Message, Metadata};
use proptest::prelude::*;
use serde_json::Map;

use crate::json_strategy::json_value;

fn text_block(text: String) -> ContentBlock {
    ContentBlock::Text {
        text,
        extra: Map::new(),
    }
}

fn user_block() -> impl Strategy<Value = ContentBlock> {
    prop_oneof![
        "[a-z ]{0,8}".prop_map(text_block),
        (
            "toolu_[a-z0-9]{1,6}",
            prop::option::of("[a-z ]{0,8}"),
            prop::option::of(any::<bool>())
        )
            .prop_map(|(id, text, is_error)| ContentBlock::ToolResult {
                tool_use_id: id,
                content: text.map(ToolResultContent::Text),
                is_error,
            }),
    ]
}

fn assistant_block() -> impl Strategy<Value = ContentBlock> {
    prop_oneof![
        "[a-z ]{0,8}".prop_map(text_block),
        ("toolu_[a-z0-9]{1,6}", "[a-z_]{1,8}", json_value())
            .prop_map(|(id, name, input)| { ContentBlock::ToolUse { id, name, input } }),
        "[a-z]{0,8}".prop_map(|t| ContentBlock::Thinking {
            thinking: t,
            signature: None
        }),
    ]
}

/// Content Anthropic accepts: never empty (`translate::checks`).
fn content(block: BoxedStrategy<ContentBlock>) -> impl Strategy<Value = MessageContent> {
    prop_oneof![
        "[a-z ]{1,8}".prop_map(MessageContent::Text),
        prop::collection::vec(block, 1..5).prop_map(MessageContent::Blocks),
    ]
}

/// Alternating turns, user first.
fn conversation() -> impl Strategy<Value = Vec<Message>> {
    prop::collection::vec(
        (
            content(user_block().boxed()),
            content(assistant_block().boxed()),
        ),
        1..5,
    )
    .prop_map(|turns| {
        turns
            .into_iter()
            .flat_map(|(u, a)| {
                [
                    Message {
                        role: ARole::User,
                        content: u,
                    },
                    Message {
                        role: ARole::Assistant,
                        content: a,
                    },
                ]
            })
            .collect()
    })
}

/// What the translation promises to keep: tool results first in a user
/// turn, user texts joined by `\n`, assistant texts joined, thinking gone,
/// `is_error` spelled out in the text.
fn normalise(messages: Vec<Message>) -> Vec<Message> {
    let mut out = Vec::new();
    for message in messages {
        let blocks = message.content.blocks();
        let mut keep = Vec::new();
        let texts: Vec<String> = blocks
            .iter()
            .filter_map(|b| match b {
                ContentBlock::Text { text, .. } => Some(text.clone()),
                _ => None,
            })
            .collect();
        match message.role {
            ARole::User => {
                for b in blocks {
                    if let ContentBlock::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    } = b
                    {
                        let text = tool_result_text(content, is_error == Some(true));
                        keep.push(tool_result(tool_use_id, text));
                    }
                }
                if !texts.is_empty() || keep.is_empty() {
                    keep.push(text_block(texts.join("\n")));
                }
            }
            ARole::Assistant => {
                let calls: Vec<_> = blocks
                    .into_iter()
                    .filter(|b| matches!(b, ContentBlock::ToolUse { .. }))
                    .collect();
                let text = texts.concat();
                if !text.is_empty() || calls.is_empty() {
                    keep.push(text_block(text));
                }
                keep.extend(calls);
            }
            ARole::System => keep.push(text_block(texts.join("\n"))),
        }
        out.push(Message {
            role: message.role,
            content: MessageContent::Blocks(keep),
        });
    }
    out
}

fn tool_result(id: String, text: String) -> ContentBlock {
    ContentBlock::ToolResult {
        tool_use_id: id,
        content: Some(ToolResultContent::Text(text)),
        is_error: None,
    }
}

/// OpenAI messages back to Anthropic turns (the inverse the gateway never
/// needs, written here to check that nothing was lost).
fn back(messages: &[ChatMessage]) -> (Option<String>, Vec<Message>) {
    let mut system = None;
    let mut out = Vec::new();
    let mut results = Vec::new();
    let user = |blocks| Message {
        role: ARole::User,
        content: MessageContent::Blocks(blocks),
    };
    for m in messages {
        match m.role {
            Role::System | Role::Developer => system = Some(m.text_content()),
            Role::Tool => results.push(tool_result(
                m.tool_call_id.clone().unwrap(),
                m.text_content(),
            )),
            Role::User => {
                let mut blocks = std::mem::take(&mut results);
                blocks.push(text_block(m.text_content()));
                out.push(user(blocks));
            }
            Role::Assistant => {
                if !results.is_empty() {
                    out.push(user(std::mem::take(&mut results)));
                }
                let mut blocks = Vec::new();
                if m.content.is_some() {
                    blocks.push(text_block(m.text_content()));
                }
                for call in m.tool_calls.iter().flatten() {
                    blocks.push(ContentBlock::ToolUse {
                        id: call.id.clone(),
                        name: call.function.name.clone(),
                        input: serde_json::from_str(&call.function.arguments).unwrap(),
                    });
                }
                out.push(Message {
                    role: ARole::Assistant,
                    content: MessageContent::Blocks(blocks),
                });
            }
        }
    }
    if !results.is_empty() {
        out.push(user(results));
    }
    (system, out)
}

proptest! {
    #[test]
    fn conversations_survive_the_round_trip(
        system in prop::option::of("[a-z ]{0,12}"),
        messages in conversation(),
        max_tokens in 1i64..100_000,
        temperature in prop::option::of(0.0f64..1.0),
        stop in prop::option::of(prop::collection::vec("[a-z]{1,4}", 1..4)),
        user_id in prop::option::of("[a-z0-9-]{1,12}"),
    ) {
        let req = MessagesRequest {
            model: "m".into(),
            max_tokens: Some(max_tokens),
            messages: messages.clone(),
            system: system.clone().map(SystemPrompt::Text),
            stop_sequences: stop.clone(),
            temperature,
            metadata: Some(Metadata { user_id: user_id.clone() }),
            ..Default::default()
        };
        let chat = messages_to_chat(req).unwrap();
        let (got_system, got_messages) = back(&chat.messages);
        prop_assert_eq!(got_system, system.filter(|s| !s.is_empty()));
        prop_assert_eq!(got_messages, normalise(messages));
        prop_assert_eq!(chat.max_tokens, Some(max_tokens));
        prop_assert_eq!(chat.temperature, temperature);
        prop_assert_eq!(chat.stop.map(Stop::into_vec), stop);
        prop_assert_eq!(chat.user, user_id);
    }

    #[test]
    fn tools_survive_the_round_trip(
        tools in prop::collection::vec(
            ("[a-z_]{1,8}", prop::option::of("[a-z ]{0,12}"), json_value()),
            1..4,
        ),
    ) {
        let tools: Vec<Tool> = tools
            .into_iter()
            .map(|(name, description, input_schema)| Tool { name, description, input_schema })
            .collect();
        let req = MessagesRequest {
            model: "m".into(),
            max_tokens: Some(1),
            messages: vec![Message { role: ARole::User, content: MessageContent::Text("x".into()) }],
            tools: Some(tools.clone()),
            ..Default::default()
        };
        let chat = messages_to_chat(req).unwrap();
        let back: Vec<Tool> = chat
            .tools
            .unwrap()
            .into_iter()
            .map(|t| Tool {
                name: t.function.name,
                description: t.function.description,
                input_schema: t.function.parameters.unwrap(),
            })
            .collect();
        prop_assert_eq!(back, tools);
    }
}
