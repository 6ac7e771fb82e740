//! The chat template: a GGUF file's `tokenizer.chat_template` (Jinja),
//! rendered with `minijinja` the way Hugging Face `transformers` renders it.
//!
//! Owns the translation of OpenAI messages and tools into template values,
//! the Jinja environment (`trim_blocks`, `lstrip_blocks`, `raise_exception`,
//! `strftime_now`, a Python-style `tojson`, and the common Python `str` /
//! `dict` methods through the unknown-method callback, since
//! `minijinja-contrib` is not a dependency), and the ChatML fallback for files
//! without a template. Tokenizing the rendered text is not its job.

use super::EngineError;
use cortex_core::openai::{ChatMessage, Role, Tool};
use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{Environment, Error, ErrorKind, State, Value};
use std::collections::BTreeMap;

/// Used when the model file has no chat template.
pub const CHATML_FALLBACK: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Gemma 3's chat template (`chat_template` of `google/gemma-3-270m-it` and
/// the other Gemma 3 checkpoints), for Gemma files that carry none. A system
/// message becomes the head of the first user turn; the assistant's role is
/// `model`; roles must alternate.
pub const GEMMA3_TEMPLATE: &str = r#"{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '

' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '

' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '
' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>
' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model
'}}
{%- endif -%}
"#;

/// The template for a file without one, by `general.architecture`; `None`
/// means [`CHATML_FALLBACK`]. Gemma files often ship without a template, and
/// ChatML is not a format Gemma was trained on.
pub fn builtin_for(architecture: &str) -> Option<&'static str> {
    match architecture {
        "gemma" | "gemma2" | "gemma3" => Some(GEMMA3_TEMPLATE),
        _ => None,
    }
}

const TEMPLATE_NAME: &str = "chat_template";

/// A compiled chat template; `Send + Sync`.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The template text (tool support is detected from it).
    source: String,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source` (or [`CHATML_FALLBACK`] when `None`).
    /// A syntax error is [`EngineError::Template`].
    pub fn new(
        source: Option<&str>,
        bos_token: Option<&str>,
        eos_token: Option<&str>,
    ) -> Result<Self, EngineError> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(template_error)?;
        env.set_syntax(syntax);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_filter("tojson", tojson);
        env.set_unknown_method_callback(pycompat::call_method);
        let source = source.unwrap_or(CHATML_FALLBACK).to_string();
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(template_error)?;
        Ok(Self {
            env,
            source,
            bos_token: bos_token.unwrap_or_default().to_string(),
            eos_token: eos_token.unwrap_or_default().to_string(),
        })
    }

    /// The template's source text (what tool support is detected from).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Renders a conversation. Errors (including `raise_exception` from the
    /// template) are [`EngineError::Template`], never a panic.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        tools: Option<&[Tool]>,
        add_generation_prompt: bool,
    ) -> Result<String, EngineError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(template_error)?;
        let messages: Vec<Value> = messages.iter().map(message_value).collect();
        let tools = tools.map(|t| t.iter().map(tool_value).collect::<Vec<_>>());
        let ctx = minijinja::context! {
            messages => messages,
            tools => tools,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.as_str(),
            eos_token => self.eos_token.as_str(),
        };
        template.render(ctx).map_err(template_error)
    }
}

/// The error with its sources; minijinja puts the interesting part (what the
/// template raised, which filter failed) in the detail and the source.
fn template_error(err: Error) -> EngineError {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(&err);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    EngineError::Template(text)
}

fn message_value(m: &ChatMessage) -> Value {
    use serde_json::json;
    let role = match m.role {
        Role::Developer => "system",
        other => other.as_str(),
    };
    let mut v = json!({ "role": role, "content": m.text_content() });
    if let Some(name) = &m.name {
        v["name"] = json!(name);
    }
    if let Some(id) = &m.tool_call_id {
        v["tool_call_id"] = json!(id);
    }
    if let Some(calls) = &m.tool_calls {
        let calls: Vec<serde_json::Value> = calls
            .iter()
            .map(|c| {
                // HF templates expect the arguments as a mapping; keep the
                // string when it is not valid JSON.
                let arguments = serde_json::from_str::<serde_json::Value>(&c.function.arguments)
                    .unwrap_or_else(|_| json!(c.function.arguments));
                json!({
                    "id": c.id,
                    "type": c.kind,
                    "function": { "name": c.function.name, "arguments": arguments },
                })
            })
            .collect();
        v["tool_calls"] = json!(calls);
    }
    json_value(v)
}

fn tool_value(t: &Tool) -> Value {
    serde_json::to_value(t).map_or_else(|_| Value::from(()), json_value)
}

fn json_value(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::from(()),
        J::Bool(b) => Value::from(b),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::from(i),
            (_, Some(u), _) => Value::from(u),
            (_, _, Some(f)) => Value::from(f),
            _ => Value::from(n.to_string()),
        },
        J::String(s) => Value::from(s),
        J::Array(a) => Value::from(a.into_iter().map(json_value).collect::<Vec<_>>()),
        J::Object(o) => Value::from(
            o.into_iter()
                .map(|(k, v)| (k, json_value(v)))
                .collect::<BTreeMap<String, Value>>(),
        ),
    }
}

fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)`: the current UTC time; `%Y %y %m %d %e %B %b %A %a
/// %H %M %S %%` are supported, other specifiers are kept as written.
fn strftime_now(format: String) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    strftime(&format, secs)
}

fn strftime(format: &str, unix_secs: i64) -> String {
    const MONTHS: &str =
        "January February March April May June July August September October November December";
    const DAYS: &str = "Sunday Monday Tuesday Wednesday Thursday Friday Saturday";
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = cortex_core::time::civil_from_days(days);
    let weekday = DAYS.split(' ').nth((days + 4).rem_euclid(7) as usize);
    let weekday = weekday.unwrap_or_default();
    let month_name = MONTHS
        .split(' ')
        .nth(month as usize - 1)
        .unwrap_or_default();

    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(month_name.get(..3).unwrap_or_default()),
            Some('A') => out.push_str(weekday),
            Some('a') => out.push_str(weekday.get(..3).unwrap_or_default()),
            Some('H') => out.push_str(&format!("{:02}", secs / 3600)),
            Some('M') => out.push_str(&format!("{:02}", secs / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", secs % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// `tojson` as `transformers` defines it: `json.dumps(value,
/// ensure_ascii=False, indent=indent)` — Python separators, no HTML escaping
/// (minijinja's own filter escapes `<`, `>`, `&` and `'`).
fn tojson(value: &Value, indent: Option<usize>, kwargs: Kwargs) -> Result<Value, Error> {
    let indent = match indent {
        Some(i) => Some(i),
        None => kwargs.get::<Option<usize>>("indent")?,
    };
    let mut out = String::new();
    write_json(&mut out, value, indent, 0)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    out: &mut String,
    v: &Value,
    indent: Option<usize>,
    depth: usize,
) -> Result<(), Error> {
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let item_sep = if indent.is_some() { "," } else { ", " };
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => out.push_str(&v.to_string()),
        ValueKind::String => {
            let s = serde_json::to_string(v.as_str().unwrap_or_default())
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            out.push_str(&s);
        }
        ValueKind::Map => {
            let keys: Vec<Value> = v.try_iter()?.collect();
            if keys.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            out.push('{');
            for (i, key) in keys.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(out, &Value::from(key.to_string()), None, 0)?;
                out.push_str(": ");
                write_json(out, &v.get_item(key)?, indent, depth + 1)?;
            }
            newline(out, depth);
            out.push('}');
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                newline(out, depth + 1);
                write_json(out, item, indent, depth + 1)?;
            }
            newline(out, depth);
            out.push(']');
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("cannot serialize {} to JSON", v.kind()),
            ))
        }
    }
    Ok(())
}

/// The Python `str` and `dict` methods HF chat templates use.
mod pycompat {
    use super::{Error, ErrorKind, State, Value, ValueKind};

    fn arg_str(args: &[Value], i: usize) -> Option<&str> {
        args.get(i).and_then(Value::as_str)
    }

    /// The unknown-method callback: `value.method(args)`.
    pub fn call_method(
        state: &mut State,
        value: &Value,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        if let Some(s) = value.as_str() {
            return string_method(state, s, method, args);
        }
        if value.kind() == ValueKind::Map {
            return match method {
                "items" => state.apply_filter("items", std::slice::from_ref(value)),
                "keys" => Ok(Value::from(value.try_iter()?.collect::<Vec<_>>())),
                "values" => Ok(Value::from(
                    value
                        .try_iter()?
                        .map(|k| value.get_item(&k))
                        .collect::<Result<Vec<_>, _>>()?,
                )),
                "get" => {
                    let key = args.first().cloned().unwrap_or_default();
                    let found = value.get_item(&key)?;
                    Ok(if found.is_undefined() {
                        args.get(1).cloned().unwrap_or(Value::from(()))
                    } else {
                        found
                    })
                }
                _ => Err(Error::from(ErrorKind::UnknownMethod)),
            };
        }
        Err(Error::from(ErrorKind::UnknownMethod))
    }

    fn strip_set<'a>(chars: Option<&'a str>) -> impl Fn(char) -> bool + 'a {
        move |c| match chars {
            Some(set) => set.contains(c),
            None => c.is_whitespace(),
        }
    }

    fn any_affix(args: &[Value], test: impl Fn(&str) -> bool) -> bool {
        match args.first() {
            Some(v) if v.as_str().is_some() => v.as_str().is_some_and(&test),
            Some(v) => v
                .try_iter()
                .map(|mut it| it.any(|a| a.as_str().is_some_and(&test)))
                .unwrap_or(false),
            None => false,
        }
    }

    fn string_method(
        state: &mut State,
        s: &str,
        method: &str,
        args: &[Value],
    ) -> Result<Value, Error> {
        Ok(match method {
            "strip" => Value::from(s.trim_matches(strip_set(arg_str(args, 0)))),
            "lstrip" => Value::from(s.trim_start_matches(strip_set(arg_str(args, 0)))),
            "rstrip" => Value::from(s.trim_end_matches(strip_set(arg_str(args, 0)))),
            "startswith" => Value::from(any_affix(args, |p| s.starts_with(p))),
            "endswith" => Value::from(any_affix(args, |p| s.ends_with(p))),
            // Same semantics as the built-in filters of the same name.
            "upper" | "lower" | "title" | "replace" => {
                let mut filter_args = vec![Value::from(s)];
                filter_args.extend_from_slice(args);
                return state.apply_filter(method, &filter_args);
            }
            "split" => {
                let max = args.get(1).and_then(Value::as_i64).filter(|n| *n >= 0);
                let parts: Vec<Value> = match (arg_str(args, 0), max) {
                    (Some(sep), Some(n)) => {
                        s.splitn(n as usize + 1, sep).map(Value::from).collect()
                    }
                    (Some(sep), None) => s.split(sep).map(Value::from).collect(),
                    (None, _) => s.split_whitespace().map(Value::from).collect(),
                };
                Value::from(parts)
            }
            "join" => {
                let items = args.first().map(|v| v.try_iter()).transpose()?;
                let parts: Vec<String> =
                    items.into_iter().flatten().map(|v| v.to_string()).collect();
                Value::from(parts.join(s))
            }
            "isdigit" => Value::from(!s.is_empty() && s.chars().all(|c| c.is_ascii_digit())),
            "isspace" => Value::from(!s.is_empty() && s.chars().all(char::is_whitespace)),
            _ => return Err(Error::from(ErrorKind::UnknownMethod)),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
#[path = "template_tests.rs"]
mod tests;
