//! Tests of the parent module.

use super::*;
use crate::engine::test_model;
use cortex_core::openai::{FunctionCall, FunctionDef, ToolCall};

fn msg(role: Role, text: &str) -> ChatMessage {
    ChatMessage::text(role, text)
}

#[test]
fn real_template_system_and_user() {
    let Some(w) = test_model::weights() else {
        return;
    };
    let t = &w.assets.template;
    let out = t
        .render(
            &[
                msg(Role::System, "You are terse."),
                msg(Role::User, "Hi there"),
            ],
            None,
            true,
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are terse.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n"
    );
    let out = t
        .render(&[msg(Role::Developer, "Be brief.")], None, false)
        .unwrap();
    assert_eq!(out, "<|im_start|>system\nBe brief.<|im_end|>\n");
}

#[test]
fn real_template_default_system_prompt() {
    let Some(w) = test_model::weights() else {
        return;
    };
    let out = w
        .assets
        .template
        .render(&[msg(Role::User, "Hello")], None, true)
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn fallback_is_chatml() {
    let t = ChatTemplate::new(None, None, None).unwrap();
    let out = t
        .render(
            &[msg(Role::Developer, "sys"), msg(Role::User, "u")],
            None,
            true,
        )
        .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nu<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn gemma3_template_folds_the_system_message() {
    assert_eq!(builtin_for("gemma3"), Some(GEMMA3_TEMPLATE));
    assert_eq!(builtin_for("llama"), None);
    let t = ChatTemplate::new(Some(GEMMA3_TEMPLATE), Some("<bos>"), Some("<eos>")).unwrap();
    // The system (or developer) message heads the first user turn; the
    // assistant is "model"; contents are trimmed.
    let out = t
        .render(
            &[
                msg(Role::Developer, "Be brief."),
                msg(Role::User, "  Hi there \n"),
                msg(Role::Assistant, "Hello."),
                msg(Role::User, "Bye"),
            ],
            None,
            true,
        )
        .unwrap();
    assert_eq!(
        out,
        "<bos><start_of_turn>user\nBe brief.\n\nHi there<end_of_turn>\n\
         <start_of_turn>model\nHello.<end_of_turn>\n\
         <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    );
    // No system message, no generation prompt.
    let out = t.render(&[msg(Role::User, "Hi")], None, false).unwrap();
    assert_eq!(out, "<bos><start_of_turn>user\nHi<end_of_turn>\n");
    // Roles must alternate: the template's raise_exception is an error.
    let err = t
        .render(&[msg(Role::User, "a"), msg(Role::User, "b")], None, true)
        .unwrap_err();
    assert!(
        matches!(&err, EngineError::Template(text) if text.contains("must alternate")),
        "{err:?}"
    );
}

#[test]
fn broken_templates_are_errors() {
    let err = ChatTemplate::new(Some("{% for x in %}"), None, None).unwrap_err();
    assert!(matches!(err, EngineError::Template(_)), "{err:?}");
    let t = ChatTemplate::new(
        Some("{{ raise_exception('roles must alternate') }}"),
        None,
        None,
    )
    .unwrap();
    let err = t.render(&[msg(Role::User, "x")], None, true).unwrap_err();
    assert!(
        matches!(&err, EngineError::Template(m) if m.contains("roles must alternate")),
        "{err:?}"
    );
    let t =
        ChatTemplate::new(Some("{{ messages[0].content.nosuchmethod() }}"), None, None).unwrap();
    assert!(matches!(
        t.render(&[msg(Role::User, "x")], None, true),
        Err(EngineError::Template(_))
    ));
    let t = ChatTemplate::new(Some("{{ 1 / 0 }}"), None, None).unwrap();
    assert!(t.render(&[], None, true).is_err());
}

#[test]
fn exposes_tokens_tools_and_tool_calls() {
    let src = "{{ bos_token }}|{{ eos_token }}|{{ tools | tojson }}|\
        {% for m in messages %}{{ m.role }}:{{ m.content }}:{{ m.name }}:{{ m.tool_call_id }}\
        {% for c in m.tool_calls or [] %}[{{ c.function.name }} {{ c.function.arguments.city }}]{% endfor %};{% endfor %}";
    let t = ChatTemplate::new(Some(src), Some("<s>"), Some("</s>")).unwrap();
    let tools = [Tool {
        kind: "function".into(),
        function: FunctionDef {
            name: "weather".into(),
            description: Some("the user's weather".into()),
            parameters: Some(serde_json::json!({"type": "object"})),
            strict: None,
        },
    }];
    let mut assistant = ChatMessage::text(Role::Assistant, "");
    assistant.tool_calls = Some(vec![ToolCall {
        id: "c1".into(),
        kind: "function".into(),
        function: FunctionCall {
            name: "weather".into(),
            arguments: r#"{"city": "Paris"}"#.into(),
        },
    }]);
    let mut tool = ChatMessage::text(Role::Tool, "sunny");
    tool.tool_call_id = Some("c1".into());
    let out = t.render(&[assistant, tool], Some(&tools), false).unwrap();
    assert_eq!(
        out,
        "<s>|</s>|[{\"function\": {\"description\": \"the user's weather\", \"name\": \"weather\", \"parameters\": {\"type\": \"object\"}}, \"type\": \"function\"}]|\
         assistant:::[weather Paris];tool:sunny::c1;"
    );
    let none = ChatTemplate::new(Some("{{ tools is none }}"), None, None).unwrap();
    assert_eq!(none.render(&[], None, true).unwrap(), "True");
}

#[test]
fn python_methods_and_strftime() {
    let src = "{{ '  a b  '.strip() }}|{{ 'xhix'.strip('x') }}|{{ 'abc'.startswith('ab') }}|\
        {{ 'a,b,c'.split(',') | join('+') }}|{{ 'hello world'.title() }}|{{ 'a-b'.replace('-', '+').upper() }}|{{ {'k': 1}.get('z', 7) }}|\
        {% for k, v in {'k': 1}.items() %}{{ k }}={{ v }}{% endfor %}|{{ ', '.join(['x', 'y']) }}|\
        {{ 'é<&' | tojson(ensure_ascii=False) }}|{{ {'a': [1, 2]} | tojson(indent=2) }}";
    let t = ChatTemplate::new(Some(src), None, None).unwrap();
    assert_eq!(
        t.render(&[], None, true).unwrap(),
        "a b|hi|True|a+b+c|Hello World|A+B|7|k=1|x, y|\"é<&\"|{\n  \"a\": [\n    1,\n    2\n  ]\n}"
    );
    assert_eq!(
        strftime("%d %B %Y %H:%M:%S %a", 0),
        "01 January 1970 00:00:00 Thu"
    );
    assert_eq!(
        strftime("%Y-%m-%d %b %A %%", 1_709_251_200),
        "2024-03-01 Mar Friday %"
    );
    assert_eq!(strftime("%y %e", 951_782_400), "00 29");
}

#[test]
fn template_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<ChatTemplate>();
}
