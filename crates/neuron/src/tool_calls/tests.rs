//! The parser on recorded model outputs, and its properties: text without
//! markers passes through unchanged, any chunking gives the same result,
//! valid calls round-trip in every format.

use proptest::prelude::*;
use serde_json::{json, Map, Value};

use cortex_core::openai::Tool;

use super::fixtures::{Want, FIXTURES};
use super::*;

/// Parser output with text merged and arguments parsed.
#[derive(Debug, Clone, PartialEq)]
enum Out {
    Text(String),
    Call(String, Value),
}

fn normalise(events: impl IntoIterator<Item = Event>) -> Vec<Out> {
    let mut out: Vec<Out> = Vec::new();
    for e in events {
        match e {
            Event::Text(t) if t.is_empty() => {}
            Event::Text(t) => match out.last_mut() {
                Some(Out::Text(last)) => last.push_str(&t),
                _ => out.push(Out::Text(t)),
            },
            Event::Call(c) => {
                let args = serde_json::from_str(&c.arguments)
                    .unwrap_or_else(|e| panic!("arguments {:?} are not JSON: {e}", c.arguments));
                out.push(Out::Call(c.name, args));
            }
        }
    }
    out
}

fn parse_chunks<S: AsRef<str>>(format: ToolFormat, chunks: &[S]) -> Vec<Out> {
    let mut p = ToolCallParser::new(format);
    let mut events = Vec::new();
    for c in chunks {
        events.extend(p.push(c.as_ref()));
    }
    events.extend(p.finish());
    normalise(events)
}

fn parse(format: ToolFormat, text: &str) -> Vec<Out> {
    parse_chunks(format, &[text])
}

/// `text` cut at the given char positions (any order, any range).
fn split(text: &str, cuts: &[usize]) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (chars.len() + 1)).collect();
    at.sort_unstable();
    at.dedup();
    let mut out = Vec::new();
    let mut prev = 0;
    for c in at.into_iter().chain([chars.len()]) {
        out.push(chars[prev..c].iter().collect());
        prev = c;
    }
    out
}

fn want(w: &[Want]) -> Vec<Out> {
    w.iter()
        .map(|w| match w {
            Want::Text(t) => Out::Text(t.to_string()),
            Want::Call(n, a) => Out::Call(n.to_string(), serde_json::from_str(a).unwrap()),
        })
        .collect()
}

#[test]
fn recorded_outputs_parse_whole_and_char_by_char() {
    for f in FIXTURES {
        let expected = want(f.want);
        assert_eq!(parse(f.format, f.output), expected, "{} (whole)", f.name);
        let chars: Vec<String> = f.output.chars().map(String::from).collect();
        assert_eq!(
            parse_chunks(f.format, &chars),
            expected,
            "{} (chars)",
            f.name
        );
    }
}

proptest! {
    #[test]
    fn recorded_outputs_parse_in_any_chunking(
        i in 0..FIXTURES.len(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let f = &FIXTURES[i];
        prop_assert_eq!(parse_chunks(f.format, &split(f.output, &cuts)), want(f.want), "{}", f.name);
    }
}

const FORMATS: [ToolFormat; 6] = [
    ToolFormat::Hermes,
    ToolFormat::Llama3,
    ToolFormat::Mistral { v11: false },
    ToolFormat::Mistral { v11: true },
    ToolFormat::FunctionGemma,
    ToolFormat::GemmaToolCode,
];

fn has_marker(format: ToolFormat, text: &str) -> bool {
    format.markers().iter().any(|m| text.contains(m))
}

/// Prose with the characters markers are made of, and marker fragments.
fn prose() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[ -~]{0,12}",
        "[\n\t ]{1,3}",
        Just("é🦀ü".to_string()),
        Just("<tool_".to_string()),
        Just("[TOOL_CALL".to_string()),
        Just("<|python_".to_string()),
        Just("```tool_co".to_string()),
        Just("<start_function_".to_string()),
        Just("</tool_call>".to_string()),
        Just("{\"a\": 1}".to_string()),
    ];
    proptest::collection::vec(piece, 0..10).prop_map(|v| v.concat())
}

proptest! {
    #[test]
    fn text_without_markers_passes_through_unchanged(
        f in 0..FORMATS.len(),
        text in prose(),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let format = FORMATS[f];
        prop_assume!(!has_marker(format, &text));
        // Llama 3 reads JSON at the very start of an answer as a call.
        prop_assume!(format != ToolFormat::Llama3 || !text.trim_start().starts_with('{'));
        let expected = if text.is_empty() { vec![] } else { vec![Out::Text(text.clone())] };
        prop_assert_eq!(parse_chunks(format, &split(&text, &cuts)), expected);
    }
}

/// Arguments objects of the kinds models write.
fn arguments() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ,.:{}\\[\\]\"'<>/()=-]{0,12}".prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        Just(json!(0.5)),
        any::<bool>().prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            proptest::collection::btree_map("[a-z]{1,5}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    proptest::collection::btree_map("[a-z][a-z_]{0,5}", value, 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>()))
}

fn calls() -> impl Strategy<Value = Vec<(String, Value)>> {
    proptest::collection::vec(("[a-z_][a-z0-9_]{0,12}", arguments()), 1..4)
}

/// FunctionGemma's value syntax, as its template writes it.
fn fg_value(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{}{s}{}", gemma::FG_ESCAPE, gemma::FG_ESCAPE),
        Value::Array(a) => format!("[{}]", a.iter().map(fg_value).collect::<Vec<_>>().join(",")),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{k}:{}", fg_value(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// Calls written the way each format's models write them.
fn render(format: ToolFormat, calls: &[(String, Value)]) -> String {
    match format {
        ToolFormat::Hermes => calls
            .iter()
            .map(|(n, a)| hermes::render(n, a))
            .collect::<Vec<_>>()
            .join("\n"),
        ToolFormat::Llama3 => calls
            .iter()
            .map(|(n, a)| format!("{{\"name\": {}, \"parameters\": {a}}}", json!(n)))
            .collect::<Vec<_>>()
            .join("; "),
        ToolFormat::Mistral { v11: false } => format!(
            "[TOOL_CALLS][{}]",
            calls
                .iter()
                .map(|(n, a)| format!("{{\"name\": {}, \"arguments\": {a}}}", json!(n)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        ToolFormat::Mistral { v11: true } => calls
            .iter()
            .map(|(n, a)| format!("[TOOL_CALLS]{n}[ARGS]{a}"))
            .collect(),
        ToolFormat::FunctionGemma => calls
            .iter()
            .map(|(n, a)| {
                format!(
                    "{}call:{n}{}{}",
                    gemma::FG_OPEN,
                    fg_value(a),
                    gemma::FG_CLOSE
                )
            })
            .collect(),
        ToolFormat::GemmaToolCode => gemma::render_tool_code(calls),
    }
}

proptest! {
    #[test]
    fn valid_calls_round_trip(
        f in 0..FORMATS.len(),
        before in "[a-zA-Z ,.!?]{0,20}",
        calls in calls(),
        cuts in proptest::collection::vec(any::<usize>(), 0..10),
    ) {
        let format = FORMATS[f];
        // Llama 3's JSON calls come first in an answer.
        let before = if format == ToolFormat::Llama3 { String::new() } else { before };
        let text = format!("{before}{}", render(format, &calls));
        prop_assume!(!text.contains("<escape>") || format == ToolFormat::FunctionGemma);
        let mut expected = Vec::new();
        if !before.trim().is_empty() {
            expected.push(Out::Text(before.trim_end().to_string()));
        }
        expected.extend(calls.iter().map(|(n, a)| Out::Call(n.clone(), a.clone())));
        prop_assert_eq!(parse_chunks(format, &split(&text, &cuts)), expected, "{}", text);
    }

    #[test]
    fn any_chunking_gives_the_same_result(
        f in 0..FORMATS.len(),
        parts in proptest::collection::vec(
            prop_oneof![
                prose().prop_map(|t| (t, None)),
                calls().prop_map(|c| (String::new(), Some((c, None)))),
                // A call cut short: the text it leaves must come out whole.
                (calls(), any::<usize>()).prop_map(|(c, cut)| (String::new(), Some((c, Some(cut))))),
            ],
            0..5,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let format = FORMATS[f];
        let mut text = String::new();
        for (prose, call) in &parts {
            text.push_str(prose);
            if let Some((calls, cut)) = call {
                let rendered = render(format, calls);
                match cut {
                    Some(c) => {
                        let chars: Vec<char> = rendered.chars().collect();
                        text.extend(&chars[..c % chars.len()]);
                    }
                    None => text.push_str(&rendered),
                }
            }
        }
        let whole = parse(format, &text);
        prop_assert_eq!(parse_chunks(format, &split(&text, &cuts)), whole.clone());
        // Nothing is lost or repeated: with calls written back, the text
        // is what went in, up to dropped whitespace.
        let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        if whole.iter().all(|o| matches!(o, Out::Text(_))) {
            let got: String = whole.iter().map(|o| match o { Out::Text(t) => t.as_str(), _ => "" }).collect();
            prop_assert_eq!(strip(&got), strip(&text));
        }
    }
}

proptest! {
    /// Anything at all: no panic, and without calls nothing is lost.
    #[test]
    fn arbitrary_text_is_never_a_panic(
        f in 0..FORMATS.len(),
        parts in proptest::collection::vec(
            prop_oneof![
                any::<String>(),
                "[{}\\[\\]\":,<>`=()|a-z0-9 \n]{0,10}",
                Just("<tool_call>".to_string()),
                Just("[TOOL_CALLS]".to_string()),
                Just("[ARGS]".to_string()),
                Just("<|python_tag|>".to_string()),
                Just("<start_function_call>call:".to_string()),
                Just("<escape>".to_string()),
                Just("```tool_code\n".to_string()),
            ],
            0..12,
        ),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let format = FORMATS[f];
        let text = parts.concat();
        let out = parse_chunks(format, &split(&text, &cuts));
        if out.iter().all(|o| matches!(o, Out::Text(_))) {
            let got: String = out.iter().map(|o| match o { Out::Text(t) => t.as_str(), _ => "" }).collect();
            prop_assert_eq!(got, text);
        }
    }
}

#[test]
fn a_marker_split_across_pieces_is_held_back() {
    let mut p = ToolCallParser::new(ToolFormat::Hermes);
    assert_eq!(
        p.push("Let me look. <tool"),
        [Event::Text("Let me look.".into())]
    );
    assert_eq!(p.push("_ca"), []);
    assert_eq!(p.push("ll>\n{\"name\": \"f\", \"arguments\": {}}"), []);
    let call = Event::Call(ParsedCall {
        name: "f".into(),
        arguments: "{}".into(),
    });
    assert_eq!(p.push("\n</tool_call>\n"), [call]);
    assert_eq!(p.finish(), []);
    assert_eq!(p.calls(), 1);
}

#[test]
fn a_false_start_comes_out_as_text() {
    let mut p = ToolCallParser::new(ToolFormat::Hermes);
    assert_eq!(p.push("a <tool"), [Event::Text("a".into())]);
    assert_eq!(p.push("box> b"), [Event::Text(" <toolbox> b".into())]);
    assert_eq!(p.finish(), []);
}

#[test]
fn text_after_a_call_is_kept() {
    let out = parse(
        ToolFormat::Hermes,
        "<tool_call>{\"name\": \"f\", \"arguments\": {}}</tool_call>\n\nDone. ",
    );
    assert_eq!(
        out,
        [Out::Call("f".into(), json!({})), Out::Text("Done.".into())]
    );
}

#[test]
fn arguments_keep_the_model_s_key_order() {
    let mut p = ToolCallParser::new(ToolFormat::Hermes);
    let mut ev =
        p.push("<tool_call>{\"name\": \"f\", \"arguments\": {\"z\": 1, \"a\": 2}}</tool_call>");
    ev.extend(p.finish());
    assert_eq!(
        ev,
        [Event::Call(ParsedCall {
            name: "f".into(),
            arguments: "{\"z\": 1, \"a\": 2}".into()
        })]
    );
}

#[test]
fn calls_whose_arguments_are_not_an_object_are_text() {
    for text in [
        "<tool_call>{\"name\": \"f\", \"arguments\": \"Paris\"}</tool_call>",
        "<tool_call>{\"name\": \"\", \"arguments\": {}}</tool_call>",
        "<tool_call>[1, 2]</tool_call>",
    ] {
        assert_eq!(
            parse(ToolFormat::Hermes, text),
            [Out::Text(text.into())],
            "{text}"
        );
    }
}

#[test]
fn forced_prefixes_are_held_and_completed() {
    let args = json!({"city": "Paris"});
    let tool: Tool =
        serde_json::from_value(json!({"type": "function", "function": {"name": "get_weather"}}))
            .unwrap();
    for format in FORMATS {
        let prefix = prompt::Forced::named(format, &tool).prefix;
        let mut p = ToolCallParser::new(format);
        assert_eq!(p.push(&prefix), [], "{format:?}");
        let full = render(format, &[("get_weather".into(), args.clone())]);
        let rest = full
            .strip_prefix(prefix.as_str())
            .unwrap_or_else(|| panic!("{format:?}: {full:?} does not start with {prefix:?}"));
        let mut events = p.push(rest);
        events.extend(p.finish());
        assert_eq!(
            normalise(events),
            [Out::Call("get_weather".into(), args.clone())],
            "{format:?}"
        );
        // Without a name, the model writes it.
        let prefix = format.forced_prefix(None);
        assert!(full.starts_with(&prefix), "{format:?}: {prefix:?}");
    }
}

mod detection {
    use super::*;

    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
    const QWEN25: &str = "{%- if tools %}\n    {{- '<|im_start|>system\\n' }}\n    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": <args-json-object>}\\n</tool_call><|im_end|>\\n\" }}{%- endif %}";
    const QWEN3_CODER: &str = "{%- if tools %}<tools>{%- endif %}{{- '<tool_call>\\n<function=' + tool_call.name + '>\\n' }}";
    const LLAMA32: &str = "{%- if tools is not none %}\n    {{- \"Environment: ipython\\n\" }}\n{%- endif %}{{- '{\"name\": \"' + tool_call.name + '\", ' }}{{- '\"parameters\": ' }}";
    const LLAMA31: &str = "{%- if builtin_tools is defined or tools is not none %}{{- \"Environment: ipython\\n\" }}{%- endif %}{{- \"<|python_tag|>\" + tool_call.name + \".call(\" }}";
    const MISTRAL_NEMO: &str = "{%- if tools is not none and (message == user_messages[-1]) %}{{- \"[AVAILABLE_TOOLS][\" }}{%- endif %}{{- \"[TOOL_CALLS][\" }}";
    const MISTRAL_SMALL_32: &str = "{%- if tools is defined %}[AVAILABLE_TOOLS]{{ tools|tojson }}[/AVAILABLE_TOOLS]{%- endif %}{{- '[TOOL_CALLS]' + tool.function.name + '[ARGS]' + arguments }}";
    const FUNCTION_GEMMA: &str = "{%- if tools %}{{- '<start_function_declaration>' }}{%- endif %}{{- '<start_function_call>call:' + function.name + '{' }}";
    const GEMMA3: &str = "{{ bos_token }}{%- if messages[0]['role'] == 'system' -%}{%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}{%- endif -%}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}";
    const COMMAND_R: &str = "{%- if tools %}## Available Tools\nHere is a list of tools that you have available to you:\n{%- endif %}Action: ```json";

    #[test]
    fn formats_come_from_templates_and_architecture() {
        let native = |f| ToolSupport {
            format: Some(f),
            prompted: false,
        };
        let prompted = |f| ToolSupport {
            format: Some(f),
            prompted: true,
        };
        let none = ToolSupport {
            format: None,
            prompted: false,
        };
        for (template, arch, want) in [
            (SMOLLM2, "llama", prompted(ToolFormat::Hermes)),
            (GEMMA3, "gemma3", prompted(ToolFormat::GemmaToolCode)),
            (QWEN25, "qwen2", native(ToolFormat::Hermes)),
            (QWEN3_CODER, "qwen3moe", none),
            (LLAMA32, "llama", native(ToolFormat::Llama3)),
            (LLAMA31, "llama", native(ToolFormat::Llama3)),
            (
                MISTRAL_NEMO,
                "llama",
                native(ToolFormat::Mistral { v11: false }),
            ),
            (
                MISTRAL_SMALL_32,
                "llama",
                native(ToolFormat::Mistral { v11: true }),
            ),
            (FUNCTION_GEMMA, "gemma3", native(ToolFormat::FunctionGemma)),
            (COMMAND_R, "command-r", none),
        ] {
            assert_eq!(detect(template, arch), want, "{template}");
        }
    }

    #[test]
    fn mistral_ids_are_nine_alphanumerics() {
        let id = call_id(Some(ToolFormat::Mistral { v11: false }));
        assert!(
            id.len() == 9 && id.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{id}"
        );
        let id = call_id(Some(ToolFormat::Hermes));
        assert!(id.starts_with("call_") && id.len() == 29, "{id}");
    }
}

#[path = "prompt_tests.rs"]
mod prompt_tests;
