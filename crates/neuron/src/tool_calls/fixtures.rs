//! Recorded model outputs, as the models write them (special tokens as
//! text, the way the detokenizer emits kept tokens), with the calls and
//! text they must give. Sources: the model cards and vendor docs of each
//! family, and the tool parser tests of vLLM (`tests/tool_parsers/`) and
//! llama.cpp (`tests/test-chat.cpp`), which record what the models emit.

use cortex_core::openai::{ChatMessage, Tool};
use serde_json::json;

use super::ToolFormat;

/// One tool, `get_weather(city: string)`, `city` required.
pub fn weather_tools() -> Vec<Tool> {
    serde_json::from_value(json!([{"type": "function", "function": {
        "name": "get_weather",
        "description": "d",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    }}]))
    .unwrap_or_default()
}

/// A conversation with a system prompt, two parallel calls, their results
/// and the user's next words.
pub fn weather_conversation() -> Vec<ChatMessage> {
    serde_json::from_value(json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Rain"},
        {"role": "user", "content": "Thanks, summarise."}
    ]))
    .unwrap_or_default()
}

/// What a fixture must parse into: text and calls in order (text merged).
#[derive(Debug, Clone, Copy)]
pub enum Want {
    Text(&'static str),
    /// Name and arguments (compared as JSON values).
    Call(&'static str, &'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Fixture {
    pub name: &'static str,
    pub format: ToolFormat,
    pub output: &'static str,
    pub want: &'static [Want],
}

use Want::{Call, Text};

const MISTRAL: ToolFormat = ToolFormat::Mistral { v11: false };
const MISTRAL_V11: ToolFormat = ToolFormat::Mistral { v11: true };

pub const FIXTURES: &[Fixture] = &[
    // --- Hermes / Qwen ---
    Fixture {
        name: "qwen2.5 parallel calls (Qwen function-calling guide)",
        format: ToolFormat::Hermes,
        output: "<tool_call>\n{\"name\": \"get_current_temperature\", \"arguments\": {\"location\": \"San Francisco, CA, USA\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_temperature_date\", \"arguments\": {\"location\": \"San Francisco, CA, USA\", \"date\": \"2024-10-01\"}}\n</tool_call>",
        want: &[
            Call("get_current_temperature", r#"{"location": "San Francisco, CA, USA"}"#),
            Call(
                "get_temperature_date",
                r#"{"location": "San Francisco, CA, USA", "date": "2024-10-01"}"#,
            ),
        ],
    },
    Fixture {
        name: "hermes-2-pro, arguments before name (Hermes-Function-Calling README)",
        format: ToolFormat::Hermes,
        output: "<tool_call>\n{\"arguments\": {\"symbol\": \"TSLA\"}, \"name\": \"get_stock_fundamentals\"}\n</tool_call>",
        want: &[Call("get_stock_fundamentals", r#"{"symbol": "TSLA"}"#)],
    },
    Fixture {
        name: "qwen3, boolean argument (vLLM bug 19056)",
        format: ToolFormat::Hermes,
        output: "<tool_call>\n{\"name\": \"final_answer\", \"arguments\": {\"trigger\": true}}\n</tool_call>",
        want: &[Call("final_answer", r#"{"trigger": true}"#)],
    },
    Fixture {
        name: "qwen3, text then a call on one line (vLLM)",
        format: ToolFormat::Hermes,
        output: "Sure, let me check the weather.<tool_call>{\"name\": \"get_weather\", \"arguments\": {\"city\": \"NYC\"}}</tool_call>",
        want: &[
            Text("Sure, let me check the weather."),
            Call("get_weather", r#"{"city": "NYC"}"#),
        ],
    },
    Fixture {
        name: "qwen3, call cut by EOS before the closing tag (vLLM)",
        format: ToolFormat::Hermes,
        output: "<tool_call>\n{\"name\": \"final_answer\", \"arguments\": {\"trigger\": true}}",
        want: &[Call("final_answer", r#"{"trigger": true}"#)],
    },
    Fixture {
        name: "granite4 / hermes, arguments serialised twice (vLLM)",
        format: ToolFormat::Hermes,
        output: "<tool_call>\n{\"name\": \"get_db_config\", \"arguments\": \"{\\\"param\\\": \\\"max_connections\\\"}\"}\n</tool_call>",
        want: &[Call("get_db_config", r#"{"param": "max_connections"}"#)],
    },
    Fixture {
        name: "qwen3, JSON never closes: plain text (vLLM invalid-json case)",
        format: ToolFormat::Hermes,
        output: "<tool_call>\n{\"name\": \"final_answer\", \"arguments\": {\"trigger\": true}",
        want: &[Text(
            "<tool_call>\n{\"name\": \"final_answer\", \"arguments\": {\"trigger\": true}",
        )],
    },
    Fixture {
        name: "hermes, whitespace before the call is not text",
        format: ToolFormat::Hermes,
        output: "\n\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": \"cats\"}}\n</tool_call>\n",
        want: &[Call("search", r#"{"q": "cats"}"#)],
    },
    // --- Llama 3.x ---
    Fixture {
        name: "llama 3.1 JSON call (Meta prompt format docs)",
        format: ToolFormat::Llama3,
        output: "{\"name\": \"get_current_conditions\", \"parameters\": {\"location\": \"San Francisco, CA\", \"unit\": \"Fahrenheit\"}}",
        want: &[Call(
            "get_current_conditions",
            r#"{"location": "San Francisco, CA", "unit": "Fahrenheit"}"#,
        )],
    },
    Fixture {
        name: "llama 3.1 built-in tool (Meta prompt format docs)",
        format: ToolFormat::Llama3,
        output: "<|python_tag|>brave_search.call(query=\"current weather in Menlo Park, California\")",
        want: &[Call(
            "brave_search",
            r#"{"query": "current weather in Menlo Park, California"}"#,
        )],
    },
    Fixture {
        name: "llama 3.1 code interpreter (llama.cpp test-chat)",
        format: ToolFormat::Llama3,
        output: "<|python_tag|>code_interpreter.call(code=\"print('hey')\")",
        want: &[Call("code_interpreter", r#"{"code": "print('hey')"}"#)],
    },
    Fixture {
        name: "llama 3.2 parallel calls with ';' (vLLM)",
        format: ToolFormat::Llama3,
        output: "{\"name\": \"searchTool\", \"parameters\": {\"query\": \"test1\"}}; {\"name\": \"getOpenIncidentsTool\", \"parameters\": {}}; {\"name\": \"searchTool\", \"parameters\": {\"query\": \"test2\"}}",
        want: &[
            Call("searchTool", r#"{"query": "test1"}"#),
            Call("getOpenIncidentsTool", "{}"),
            Call("searchTool", r#"{"query": "test2"}"#),
        ],
    },
    Fixture {
        name: "llama 3.2 typed call object (llama.cpp test-chat)",
        format: ToolFormat::Llama3,
        output: "{\"type\": \"function\", \"name\": \"special_function\", \"parameters\": {\"arg1\": 1}}",
        want: &[Call("special_function", r#"{"arg1": 1}"#)],
    },
    Fixture {
        name: "llama 3.x, JSON without parameters is an answer (vLLM)",
        format: ToolFormat::Llama3,
        output: "{\"name\": \"toolWithoutParams\"}",
        want: &[Text("{\"name\": \"toolWithoutParams\"}")],
    },
    Fixture {
        name: "llama 3.x, JSON in prose is prose",
        format: ToolFormat::Llama3,
        output: "Here is the result: {\"name\": \"getOpenIncidentsTool\", \"parameters\": {}} Would you like to know more?",
        want: &[Text("Here is the result: {\"name\": \"getOpenIncidentsTool\", \"parameters\": {}} Would you like to know more?")],
    },
    // --- Mistral ---
    Fixture {
        name: "mistral nemo call with id (Mistral function calling docs)",
        format: MISTRAL,
        output: "[TOOL_CALLS][{\"name\": \"retrieve_payment_status\", \"arguments\": {\"transaction_id\": \"T1001\"}, \"id\": \"D681PevKs\"}]",
        want: &[Call("retrieve_payment_status", r#"{"transaction_id": "T1001"}"#)],
    },
    Fixture {
        name: "mistral 7b v0.3, two calls after a space (vLLM)",
        format: MISTRAL,
        output: "[TOOL_CALLS] [{\"name\": \"add\", \"arguments\": {\"a\": 3.5, \"b\": 4}}, {\"name\": \"get_current_weather\", \"arguments\":{\"city\": \"San Francisco\", \"state\": \"CA\", \"unit\": \"celsius\"}}]",
        want: &[
            Call("add", r#"{"a": 3.5, "b": 4}"#),
            Call(
                "get_current_weather",
                r#"{"city": "San Francisco", "state": "CA", "unit": "celsius"}"#,
            ),
        ],
    },
    Fixture {
        name: "mistral 7b v0.3, content before and trailing text after (vLLM)",
        format: MISTRAL,
        output: "Hello[TOOL_CALLS] [{\"name\": \"get_current_weather\", \"arguments\":{\"city\": \"Dallas\", \"state\": \"TX\", \"unit\": \"fahrenheit\"}}]\nextra trailing data",
        want: &[
            Text("Hello"),
            Call(
                "get_current_weather",
                r#"{"city": "Dallas", "state": "TX", "unit": "fahrenheit"}"#,
            ),
            Text("extra trailing data"),
        ],
    },
    Fixture {
        name: "mistral small 3.2 (v11) parallel calls (vLLM)",
        format: MISTRAL_V11,
        output: "[TOOL_CALLS]add[ARGS]{\"a\": 3.5, \"b\": 4}[TOOL_CALLS]multiply[ARGS]{\"a\": 3, \"b\": 6}",
        want: &[
            Call("add", r#"{"a": 3.5, "b": 4}"#),
            Call("multiply", r#"{"a": 3, "b": 6}"#),
        ],
    },
    Fixture {
        name: "mistral v11 decoded without [ARGS], content before (vLLM)",
        format: MISTRAL_V11,
        output: "bla[TOOL_CALLS]add_this_and_that{\"a\": 3.5, \"b\": 4}",
        want: &[
            Text("bla"),
            Call("add_this_and_that", r#"{"a": 3.5, "b": 4}"#),
        ],
    },
    Fixture {
        name: "mistral v13 with [CALL_ID]",
        format: MISTRAL_V11,
        output: "[TOOL_CALLS]get_weather[CALL_ID]a1B2c3D4e[ARGS]{\"city\": \"Paris\"}",
        want: &[Call("get_weather", r#"{"city": "Paris"}"#)],
    },
    Fixture {
        name: "mistral, not JSON after the token: text (vLLM)",
        format: MISTRAL,
        output: "[TOOL_CALLS] not json at all",
        want: &[Text("[TOOL_CALLS] not json at all")],
    },
    // --- Gemma ---
    Fixture {
        name: "functiongemma (model card)",
        format: ToolFormat::FunctionGemma,
        output: "<start_function_call>call:get_current_temperature{location:<escape>London<escape>}<end_function_call>",
        want: &[Call("get_current_temperature", r#"{"location": "London"}"#)],
    },
    Fixture {
        name: "functiongemma, text before and two calls (vLLM)",
        format: ToolFormat::FunctionGemma,
        output: "Let me check the weather for you. <start_function_call>call:get_weather{location:<escape>San Francisco<escape>,unit:<escape>celsius<escape>}<end_function_call><start_function_call>call:get_time{timezone:<escape>UTC<escape>}<end_function_call>",
        want: &[
            Text("Let me check the weather for you."),
            Call("get_weather", r#"{"location": "San Francisco", "unit": "celsius"}"#),
            Call("get_time", r#"{"timezone": "UTC"}"#),
        ],
    },
    Fixture {
        name: "functiongemma, bare numbers and lists (template's value syntax)",
        format: ToolFormat::FunctionGemma,
        output: "<start_function_call>call:compose{title:<escape>Quest, {1}<escape>,count:42,ratio:0.5,done:false,tags:[<escape>a<escape>,<escape>b<escape>],opts:{deep:true}}<end_function_call>",
        want: &[Call(
            "compose",
            r#"{"title": "Quest, {1}", "count": 42, "ratio": 0.5, "done": false, "tags": ["a", "b"], "opts": {"deep": true}}"#,
        )],
    },
    Fixture {
        name: "gemma 3 tool_code (Google's Gemma function calling guide)",
        format: ToolFormat::GemmaToolCode,
        output: "```tool_code\nconvert(amount=200000, currency=\"USD\", new_currency=\"EUR\")\n```",
        want: &[Call(
            "convert",
            r#"{"amount": 200000, "currency": "USD", "new_currency": "EUR"}"#,
        )],
    },
    Fixture {
        name: "gemma 3 tool_code, two calls and text before",
        format: ToolFormat::GemmaToolCode,
        output: "I'll look both up.\n```tool_code\nget_weather(city='Paris')\nget_weather(city='Rome', unit=\"celsius\")\n```\n",
        want: &[
            Text("I'll look both up."),
            Call("get_weather", r#"{"city": "Paris"}"#),
            Call("get_weather", r#"{"city": "Rome", "unit": "celsius"}"#),
        ],
    },
    Fixture {
        name: "gemma 3, a python block is not a call",
        format: ToolFormat::GemmaToolCode,
        output: "```python\nprint(1)\n```",
        want: &[Text("```python\nprint(1)\n```")],
    },
];
