//! `tool_choice`, tool plans and the conversation rewrite.

use cortex_core::openai::{ChatMessage, Role, Tool};
use serde_json::json;

use super::super::fixtures::weather_conversation;
use super::super::prompt::{rewrite, short_id, Forced, ToolChoice, ToolPlan};
use super::super::{ToolFormat, ToolSupport};

fn tools(names: &[&str]) -> Vec<Tool> {
    names
        .iter()
        .map(|n| {
            serde_json::from_value(json!({"type": "function", "function": {
                "name": n, "description": "d", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
            }}))
            .unwrap()
        })
        .collect()
}

#[test]
fn tool_choice_is_read_and_checked() {
    let t = tools(&["get_weather"]);
    let ok = |v: serde_json::Value| ToolChoice::from_request(Some(&v), &t);
    assert_eq!(ToolChoice::from_request(None, &t), Ok(ToolChoice::Auto));
    assert_eq!(ToolChoice::from_request(None, &[]), Ok(ToolChoice::None));
    assert_eq!(ok(json!("none")), Ok(ToolChoice::None));
    assert_eq!(ok(json!("required")), Ok(ToolChoice::Required));
    assert_eq!(
        ok(json!({"type": "function", "function": {"name": "get_weather"}})),
        Ok(ToolChoice::Named("get_weather".into()))
    );
    for bad in [
        json!("sometimes"),
        json!(3),
        json!({"type": "function", "function": {"name": "nope"}}),
        json!({"type": "function"}),
        json!({"type": "tool", "name": "get_weather"}),
    ] {
        assert!(ok(bad.clone()).is_err(), "{bad}");
    }
    assert!(ToolChoice::from_request(Some(&json!("required")), &[]).is_err());
    assert_eq!(
        ToolChoice::from_request(Some(&json!("auto")), &[]),
        Ok(ToolChoice::Auto)
    );
}

#[test]
fn plans_force_calls_only_when_asked() {
    let hermes = ToolSupport {
        format: Some(ToolFormat::Hermes),
        prompted: true,
    };
    let one = tools(&["get_weather"]);
    let two = tools(&["get_weather", "get_time"]);
    let plan = |t: &[Tool], c: ToolChoice, par| ToolPlan::new(hermes, t, &c, par).unwrap();

    let auto = plan(&two, ToolChoice::Auto, None).unwrap();
    assert_eq!((auto.forced, auto.one_call), (None, false));
    assert!(plan(&two, ToolChoice::Auto, Some(false)).unwrap().one_call);
    assert_eq!(plan(&two, ToolChoice::None, None), None);
    assert_eq!(plan(&[], ToolChoice::Auto, None), None);

    let named = plan(&two, ToolChoice::Named("get_time".into()), None).unwrap();
    let forced = named.forced.unwrap();
    // Without required arguments only the object's `{` is certain.
    assert_eq!(
        forced.prefix,
        "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {"
    );
    let args = forced.args.unwrap();
    assert_eq!((args.start.as_str(), args.suffix), ("{", "}\n</tool_call>"));
    assert!(named.one_call);
    // `required` with one tool can only mean that tool.
    assert_eq!(plan(&one, ToolChoice::Required, None).unwrap().forced, {
        let n = plan(&one, ToolChoice::Named("get_weather".into()), None).unwrap();
        n.forced
    });
    let any = plan(&two, ToolChoice::Required, None).unwrap();
    let forced = any.forced.unwrap();
    assert_eq!(forced.prefix, "<tool_call>\n{\"name\": \"");
    assert_eq!(forced.args, None);
    assert!(!any.one_call);

    let unknown = ToolSupport {
        format: None,
        prompted: false,
    };
    assert_eq!(
        ToolPlan::new(unknown, &two, &ToolChoice::Auto, None),
        Ok(None)
    );
    assert!(ToolPlan::new(unknown, &two, &ToolChoice::Required, None).is_err());
}

fn conversation() -> Vec<ChatMessage> {
    weather_conversation()
}

#[test]
fn prompted_hermes_describes_tools_and_rewrites_history() {
    let support = ToolSupport {
        format: Some(ToolFormat::Hermes),
        prompted: true,
    };
    let out = rewrite(&conversation(), &tools(&["get_weather"]), support);
    let roles: Vec<Role> = out.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [Role::System, Role::User, Role::Assistant, Role::User]
    );
    let system = out[0].text_content();
    assert!(system.starts_with("Be brief.\n\n# Tools\n"), "{system}");
    assert!(
        system.contains(r#"{"type":"function","function":{"name":"get_weather""#),
        "{system}"
    );
    assert_eq!(
        out[2].text_content(),
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Rome\"}}\n</tool_call>"
    );
    assert!(out[2].tool_calls.is_none());
    assert_eq!(
        out[3].text_content(),
        "<tool_response>\nSunny\n</tool_response>\n<tool_response>\nRain\n</tool_response>\nThanks, summarise."
    );
    // Without a system message one is added; without tools none is.
    let no_system = &conversation()[1..];
    let out = rewrite(no_system, &tools(&["get_weather"]), support);
    assert_eq!(out[0].role, Role::System);
    assert!(out[0].text_content().starts_with("# Tools\n"));
    let out = rewrite(no_system, &[], support);
    assert_eq!(out[0].role, Role::User);
}

#[test]
fn prompted_gemma_uses_tool_code_and_tool_output_blocks() {
    let support = ToolSupport {
        format: Some(ToolFormat::GemmaToolCode),
        prompted: true,
    };
    let out = rewrite(&conversation(), &tools(&["get_weather"]), support);
    assert!(out[0].text_content().contains("```tool_code"));
    assert_eq!(
        out[2].text_content(),
        "```tool_code\nget_weather(city=\"Paris\")\nget_weather(city=\"Rome\")\n```"
    );
    assert_eq!(
        out[3].text_content(),
        "```tool_output\nSunny\n```\n```tool_output\nRain\n```\nThanks, summarise."
    );
}

#[test]
fn native_templates_get_the_conversation_as_is_but_mistral_gets_short_ids() {
    let hermes = ToolSupport {
        format: Some(ToolFormat::Hermes),
        prompted: false,
    };
    assert_eq!(rewrite(&conversation(), &[], hermes), conversation());
    let mistral = ToolSupport {
        format: Some(ToolFormat::Mistral { v11: false }),
        prompted: false,
    };
    let out = rewrite(&conversation(), &[], mistral);
    let id = &out[2].tool_calls.as_ref().unwrap()[0].id;
    assert_eq!(id.len(), 9);
    assert_eq!(out[3].tool_call_id.as_ref(), Some(id));
    assert_ne!(out[4].tool_call_id.as_ref(), Some(id));
    // Stable across turns, and ids that already fit are kept.
    assert_eq!(short_id("call_1"), short_id("call_1"));
    assert_eq!(short_id("D681PevKs"), "D681PevKs");
}

#[test]
fn the_first_required_argument_is_forced_as_a_schema_grammar_would() {
    let tool: Tool = serde_json::from_value(json!({"type": "function", "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {
            "days": {"type": "integer"}, "city": {"type": "string"}
        }, "required": ["city", "days"]}
    }}))
    .unwrap();
    let prefix = |f| Forced::named(f, &tool).prefix;
    assert_eq!(
        prefix(ToolFormat::Hermes),
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \""
    );
    assert_eq!(
        prefix(ToolFormat::Llama3),
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \""
    );
    assert_eq!(
        prefix(ToolFormat::Mistral { v11: true }),
        "[TOOL_CALLS]get_weather[ARGS]{\"city\": \""
    );
    assert_eq!(
        prefix(ToolFormat::FunctionGemma),
        "<start_function_call>call:get_weather{city:<escape>"
    );
    assert_eq!(
        prefix(ToolFormat::GemmaToolCode),
        "```tool_code\nget_weather(city=\""
    );
    let mut numeric = tool.clone();
    numeric.function.parameters.as_mut().unwrap()["required"] = json!(["days"]);
    assert_eq!(
        Forced::named(ToolFormat::Llama3, &numeric).prefix,
        "{\"name\": \"get_weather\", \"parameters\": {\"days\": "
    );
}
