//! What the prompt needs for tools, before the chat template renders it.
//!
//! - [`ToolChoice`]: the request's `tool_choice`, checked against its tools.
//! - [`rewrite`]: the conversation as the template should see it. For a
//!   template without tool support (see [`super::detect`]) cortex does what
//!   the template would have done: it describes the tools in the system
//!   prompt and asks for calls in the format's syntax, writes earlier calls
//!   into the assistant turns in that syntax, and turns tool results into
//!   user turns (templates without tool support know no `tool` role, and
//!   some demand alternating roles). Mistral templates refuse tool call ids
//!   that are not nine letters and digits; other ids are mapped to such ids,
//!   the same id to the same one every turn.
//! - [`ToolPlan`]: how the answer is read — the format, whether it must be a
//!   call, and the text it is forced to start with.
//!
//! A named `tool_choice` (or `required`) is honoured as llama.cpp and vLLM
//! honour it, by making the call happen rather than hoping for it. Their
//! guided generation forces every token the call's grammar leaves no choice
//! about; cortex forces the same tokens as text around the model's own:
//! - before: the format's call prefix with the function's name, the `{` of
//!   the arguments, and — from the tool's JSON schema — the first required
//!   argument's key (and the `"` that opens it when it is a string), as
//!   llama.cpp's schema grammars write required properties first, in order;
//! - the model writes the rest of the arguments;
//! - after (JSON formats): once the arguments object closes, the call's
//!   closing text (`}` and `</tool_call>`, …) is the only continuation, so
//!   generation stops and the closing is appended.
//!
//! The result goes through the same parser as any other call; arguments
//! that are not valid come back as text. With `required` and several tools
//! the prefix ends where the name begins, and the model picks the function.

use cortex_core::openai::{ChatMessage, MessageContent, Role, Tool};
use serde_json::Value;

use super::{gemma, hermes, ToolFormat, ToolSupport};

/// The request's `tool_choice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

impl ToolChoice {
    /// Reads `tool_choice` (absent: `auto` with tools, `none` without).
    /// The error says what is wrong, for a 400 on `tool_choice`.
    pub fn from_request(choice: Option<&Value>, tools: &[Tool]) -> Result<Self, String> {
        let choice = match choice {
            None | Some(Value::Null) => {
                return Ok(if tools.is_empty() {
                    ToolChoice::None
                } else {
                    ToolChoice::Auto
                })
            }
            Some(Value::String(s)) => match s.as_str() {
                "none" => ToolChoice::None,
                "auto" => ToolChoice::Auto,
                "required" => ToolChoice::Required,
                other => {
                    return Err(format!(
                        "tool_choice must be \"none\", \"auto\", \"required\" or a named function, got {other:?}"
                    ))
                }
            },
            Some(v @ Value::Object(_)) => {
                let name = v
                    .pointer("/function/name")
                    .and_then(Value::as_str)
                    .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
                    .ok_or_else(|| {
                        "a named tool_choice is {\"type\": \"function\", \"function\": {\"name\": NAME}}"
                            .to_string()
                    })?;
                ToolChoice::Named(name.to_string())
            }
            Some(other) => return Err(format!("tool_choice must be a string or an object, got {other}")),
        };
        match &choice {
            ToolChoice::Required | ToolChoice::Named(_) if tools.is_empty() => {
                Err("tool_choice requires tools: the request has no `tools`".to_string())
            }
            ToolChoice::Named(name) if !tools.iter().any(|t| &t.function.name == name) => Err(
                format!("tool_choice names the function {name:?}, which is not among the tools"),
            ),
            _ => Ok(choice),
        }
    }
}

/// How an answer with tools is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPlan {
    pub format: ToolFormat,
    /// The answer is a forced call.
    pub forced: Option<Forced>,
    /// Stop at the first complete call (a named choice, or
    /// `parallel_tool_calls: false`).
    pub one_call: bool,
}

/// The forced parts of a call (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forced {
    /// The answer starts with this text; the model writes what follows.
    pub prefix: String,
    /// Set when the prefix ends inside a JSON arguments object.
    pub args: Option<ForcedArgs>,
}

/// A JSON arguments object the model is writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForcedArgs {
    /// The object's forced start (the end of the prefix): `{"city": "`.
    pub start: String,
    /// What completes the call once the object is closed.
    pub suffix: &'static str,
}

impl Forced {
    /// A forced call to `tool` in `format`.
    pub fn named(format: ToolFormat, tool: &Tool) -> Self {
        let name = tool.function.name.as_str();
        let first = first_argument(tool);
        let base = format.forced_prefix(Some(name));
        let json = |suffix: &'static str| {
            let start = match &first {
                Some((key, string)) => {
                    format!(
                        "{{{}: {}",
                        Value::String(key.clone()),
                        if *string { "\"" } else { "" }
                    )
                }
                None => "{".to_string(),
            };
            Forced {
                prefix: format!("{base}{start}"),
                args: Some(ForcedArgs { start, suffix }),
            }
        };
        match format {
            ToolFormat::Hermes => json("}\n</tool_call>"),
            ToolFormat::Llama3 => json("}"),
            ToolFormat::Mistral { v11: false } => json("}]"),
            ToolFormat::Mistral { v11: true } => json(""),
            ToolFormat::FunctionGemma => {
                let arg = first
                    .map(|(k, s)| format!("{k}:{}", if s { gemma::FG_ESCAPE } else { "" }))
                    .unwrap_or_default();
                Forced {
                    prefix: format!("{base}{arg}"),
                    args: None,
                }
            }
            ToolFormat::GemmaToolCode => {
                let arg = first
                    .map(|(k, s)| format!("{k}={}", if s { "\"" } else { "" }))
                    .unwrap_or_default();
                Forced {
                    prefix: format!("{base}{arg}"),
                    args: None,
                }
            }
        }
    }

    /// A forced call to a function the model picks.
    fn any(format: ToolFormat) -> Self {
        Forced {
            prefix: format.forced_prefix(None),
            args: None,
        }
    }
}

/// The first required argument of `tool` and whether it is a string.
fn first_argument(tool: &Tool) -> Option<(String, bool)> {
    let schema = tool.function.parameters.as_ref()?;
    let key = schema.get("required")?.as_array()?.first()?.as_str()?;
    // Only keys a call can write bare in every syntax.
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return None;
    }
    let string = schema
        .pointer(&format!("/properties/{key}/type"))
        .and_then(Value::as_str)
        == Some("string");
    Some((key.to_string(), string))
}

impl ToolPlan {
    /// `None` when the answer is plain text: no tools, `tool_choice: none`,
    /// or a model whose call syntax is unknown. A forced choice on such a
    /// model is an error (the message is for a 400).
    pub fn new(
        support: ToolSupport,
        tools: &[Tool],
        choice: &ToolChoice,
        parallel_tool_calls: Option<bool>,
    ) -> Result<Option<Self>, String> {
        let forced_tool = match choice {
            ToolChoice::None => return Ok(None),
            ToolChoice::Auto => None,
            ToolChoice::Named(name) => Some(tools.iter().find(|t| &t.function.name == name)),
            // One tool: `required` can only mean that one.
            ToolChoice::Required if tools.len() == 1 => Some(tools.first()),
            ToolChoice::Required => Some(None),
        };
        let Some(format) = support.format else {
            return match forced_tool {
                None => Ok(None),
                Some(_) => Err(
                    "this model's chat template uses a tool call syntax cortex cannot read, so tool_choice cannot force a call"
                        .to_string(),
                ),
            };
        };
        if tools.is_empty() {
            return Ok(None);
        }
        Ok(Some(ToolPlan {
            format,
            forced: forced_tool.map(|t| match t {
                Some(tool) => Forced::named(format, tool),
                None => Forced::any(format),
            }),
            one_call: matches!(forced_tool, Some(Some(_))) || parallel_tool_calls == Some(false),
        }))
    }
}

/// The conversation as the template should see it (see the module doc).
pub fn rewrite(messages: &[ChatMessage], tools: &[Tool], support: ToolSupport) -> Vec<ChatMessage> {
    match support.format {
        Some(format) if support.prompted => prompted(messages, tools, format),
        Some(format) if format.wants_short_ids() => short_ids(messages),
        _ => messages.to_vec(),
    }
}

fn prompted(messages: &[ChatMessage], tools: &[Tool], format: ToolFormat) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len() + 1);
    if !tools.is_empty() {
        let text = instructions(tools, format);
        match messages.first() {
            Some(first) if matches!(first.role, Role::System | Role::Developer) => {
                let body = first.text_content();
                let joined = if body.is_empty() {
                    text
                } else {
                    format!("{body}\n\n{text}")
                };
                out.push(ChatMessage::text(Role::System, joined));
            }
            _ => out.push(ChatMessage::text(Role::System, text)),
        }
    }
    let skip = usize::from(!tools.is_empty() && starts_with_system(messages));
    // Whether the last turn out holds tool results: more results, and the
    // user's text after them, join it.
    let mut in_results = false;
    for m in &messages[skip..] {
        let results = match m.role {
            Role::Assistant if m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) => {
                out.push(assistant_with_calls(m, format));
                false
            }
            Role::Tool => {
                let text = tool_result(&m.text_content(), format);
                push_user(&mut out, text, in_results);
                true
            }
            Role::User if in_results => {
                push_user(&mut out, m.text_content(), true);
                false
            }
            _ => {
                out.push(m.clone());
                false
            }
        };
        in_results = results;
    }
    out
}

fn starts_with_system(messages: &[ChatMessage]) -> bool {
    messages
        .first()
        .is_some_and(|m| matches!(m.role, Role::System | Role::Developer))
}

/// A user turn with `text`, or `text` joined to the last turn.
fn push_user(out: &mut Vec<ChatMessage>, text: String, join: bool) {
    if let Some(last) = out.last_mut().filter(|_| join) {
        let joined = format!("{}\n{text}", last.text_content());
        last.content = Some(MessageContent::Text(joined));
        return;
    }
    out.push(ChatMessage::text(Role::User, text));
}

fn tool_result(text: &str, format: ToolFormat) -> String {
    match format {
        ToolFormat::GemmaToolCode => gemma::render_tool_output(text),
        _ => format!("<tool_response>\n{text}\n</tool_response>"),
    }
}

fn assistant_with_calls(m: &ChatMessage, format: ToolFormat) -> ChatMessage {
    let calls: Vec<(String, Value)> = m
        .tool_calls
        .iter()
        .flatten()
        .map(|c| {
            let args = serde_json::from_str::<Value>(&c.function.arguments)
                .unwrap_or_else(|_| Value::String(c.function.arguments.clone()));
            (c.function.name.clone(), args)
        })
        .collect();
    let rendered = match format {
        ToolFormat::GemmaToolCode => gemma::render_tool_code(&calls),
        _ => calls
            .iter()
            .map(|(name, args)| hermes::render(name, args))
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let text = m.text_content();
    let content = if text.trim().is_empty() {
        rendered
    } else {
        format!("{}\n{rendered}", text.trim_end())
    };
    ChatMessage::text(Role::Assistant, content)
}

/// The tool instructions for a template without tool support.
fn instructions(tools: &[Tool], format: ToolFormat) -> String {
    let listed: Vec<String> = tools
        .iter()
        .map(|t| serde_json::to_string(t).unwrap_or_default())
        .collect();
    match format {
        ToolFormat::GemmaToolCode => format!(
            "You can call functions to help with the user's request. To call one, write a Python call with keyword arguments in a ```tool_code``` block:\n\
             ```tool_code\nfunction_name(argument=\"value\")\n```\n\
             Only call the functions listed below. A call's result comes back in a ```tool_output``` block; use it to answer.\n\n\
             The functions, as JSON:\n{}",
            listed.join("\n")
        ),
        _ => format!(
            "# Tools\n\nYou can call functions to help with the user's request. They are described as JSON, one per line, between <tools> and </tools>:\n<tools>\n{}\n</tools>\n\n\
             To call a function, write its name and arguments as a JSON object between <tool_call> and </tool_call>:\n\
             <tool_call>\n{{\"name\": \"function_name\", \"arguments\": {{\"argument\": \"value\"}}}}\n</tool_call>\n\
             Write one block per call. A call's result comes back between <tool_response> and </tool_response>.",
            listed.join("\n")
        ),
    }
}

fn short_ids(messages: &[ChatMessage]) -> Vec<ChatMessage> {
    messages
        .iter()
        .map(|m| {
            let mut m = m.clone();
            if let Some(calls) = m.tool_calls.as_mut() {
                for c in calls.iter_mut() {
                    c.id = short_id(&c.id);
                }
            }
            if let Some(id) = m.tool_call_id.as_mut() {
                *id = short_id(id);
            }
            m
        })
        .collect()
}

/// `id` if it is nine letters and digits, else nine derived from it
/// (FNV-1a, base 62): stable across turns, so the prompt prefix is too.
pub fn short_id(id: &str) -> String {
    if id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return id.to_string();
    }
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (0..9)
        .map(|_| {
            let d = DIGITS[(h % 62) as usize] as char;
            h /= 62;
            d
        })
        .collect()
}
