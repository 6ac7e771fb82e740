//! A chat request's prompt, the same for `/v1/chat/completions` and
//! `/tokenize`: the conversation normalised (see [`crate::normalize`]),
//! rewritten for tools (see [`crate::tool_calls::prompt`]), rendered with
//! the model's chat template and tokenized, plus what decoding the answer
//! needs (the tool plan, special tokens to keep, extra stops).

use cortex_core::openai::{ChatMessage, Tool};
use serde_json::Value;

use super::error::ApiError;
use crate::engine::{EngineError, ModelAssets};
use crate::normalize;
use crate::tool_calls::prompt::{rewrite, ToolChoice, ToolPlan};
use crate::tool_calls::{self, ToolSupport};

/// What a prompt is built from.
#[derive(Debug, Clone, Copy)]
pub struct PromptInput<'a> {
    pub messages: &'a [ChatMessage],
    pub tools: Option<&'a [Tool]>,
    pub tool_choice: Option<&'a Value>,
    pub parallel_tool_calls: Option<bool>,
}

/// How prompts are normalised (from `neuron.toml`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PromptOptions {
    /// Keep Claude Code's `x-anthropic-billing-header:` line.
    pub keep_billing_header: bool,
}

/// A prompt ready to generate from.
#[derive(Debug, Clone)]
pub struct Prompt {
    pub ids: Vec<u32>,
    /// How many ids at the end are the forced start of the answer.
    pub forced: usize,
    /// How the answer is read when the request has tools.
    pub tools: Option<ToolPlan>,
    /// Special tokens the detokenizer must write out.
    pub keep_special: Vec<u32>,
    /// Stop strings the tool format adds.
    pub stops: Vec<String>,
}

/// Why there is no prompt.
#[derive(Debug)]
pub enum PromptError {
    /// The request is wrong (answered 400 as it is).
    Request(ApiError),
    /// Templating or tokenizing failed (classified as a tokenize-site error).
    Engine(EngineError),
}

/// Builds the prompt of `input` for the model of `assets`.
pub fn build(
    assets: &ModelAssets,
    input: PromptInput<'_>,
    options: PromptOptions,
) -> Result<Prompt, PromptError> {
    let mut messages = input.messages.to_vec();
    if !options.keep_billing_header {
        let removed = normalize::strip_billing_header(&mut messages);
        if removed > 0 {
            tracing::debug!(removed, "billing header lines dropped from the prompt");
        }
    }
    let tools = input.tools.unwrap_or_default();
    let bad_choice = |m: String| PromptError::Request(ApiError::bad_param("tool_choice", m));
    let choice = ToolChoice::from_request(input.tool_choice, tools).map_err(bad_choice)?;
    let support = tool_support(assets);
    let plan =
        ToolPlan::new(support, tools, &choice, input.parallel_tool_calls).map_err(bad_choice)?;
    let messages = rewrite(&messages, tools, support);
    let mut ids = assets
        .encode_chat(&messages, input.tools)
        .map_err(PromptError::Engine)?;
    let mut forced = 0;
    let mut keep_special = Vec::new();
    let mut stops = Vec::new();
    if let Some(plan) = &plan {
        if let Some(f) = &plan.forced {
            let start = assets.encode(&f.prefix).map_err(PromptError::Engine)?;
            forced = start.len();
            ids.extend(start);
        }
        keep_special = plan
            .format
            .special_tokens()
            .iter()
            .filter_map(|t| assets.token_id(t))
            // Only tokens the decoder would otherwise skip.
            .filter(|id| assets.decode(&[*id]).is_ok_and(|s| s.is_empty()))
            .collect();
        stops = plan.format.stops().iter().map(|s| s.to_string()).collect();
    }
    Ok(Prompt {
        ids,
        forced,
        tools: plan,
        keep_special,
        stops,
    })
}

/// The model's tool support, from its template and architecture.
pub fn tool_support(assets: &ModelAssets) -> ToolSupport {
    tool_calls::detect(assets.template.source(), &assets.meta.architecture)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! Prompts with tools for the two real models, whose templates have no
    //! tool support: their templates accept the rewritten conversation.

    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::engine::test_model;
    use crate::tool_calls::fixtures::{weather_conversation, weather_tools};
    use crate::tool_calls::ToolFormat;

    /// The prompt's text, special tokens included.
    fn text(assets: &ModelAssets, ids: &[u32]) -> String {
        assets.tokenizer.decode(ids, false).unwrap()
    }

    fn build_named(assets: &ModelAssets) -> Prompt {
        let (messages, tools) = (weather_conversation(), weather_tools());
        let choice = json!({"type": "function", "function": {"name": "get_weather"}});
        let input = PromptInput {
            messages: &messages,
            tools: Some(&tools),
            tool_choice: Some(&choice),
            parallel_tool_calls: None,
        };
        build(assets, input, PromptOptions::default()).unwrap()
    }

    #[test]
    fn smollm2_is_prompted_in_the_hermes_style() {
        let Some(w) = test_model::weights() else {
            return;
        };
        let p = build_named(&w.assets);
        let plan = p.tools.as_ref().unwrap();
        assert_eq!(plan.format, ToolFormat::Hermes);
        let prompt = text(&w.assets, &p.ids);
        assert!(
            prompt.starts_with("<|im_start|>system\nBe brief.\n\n# Tools\n"),
            "{prompt}"
        );
        assert!(prompt.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\":\"Paris\"}}\n</tool_call>"), "{prompt}");
        assert!(prompt.contains("<|im_start|>user\n<tool_response>\nSunny\n</tool_response>\n<tool_response>\nRain\n</tool_response>\nThanks, summarise.<|im_end|>"), "{prompt}");
        let forced = "<|im_start|>assistant\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"";
        assert!(prompt.ends_with(forced), "{prompt}");
        assert_eq!(
            w.assets
                .encode(&plan.forced.as_ref().unwrap().prefix)
                .unwrap()
                .len(),
            p.forced
        );
    }

    #[test]
    fn gemma3_is_prompted_with_tool_code_and_its_template_accepts_the_turns() {
        let Some(assets) = test_model::gemma3_assets() else {
            return;
        };
        let assets: Arc<ModelAssets> = assets;
        // Gemma's template raises unless user and model turns alternate:
        // the results and the user's next words must be one turn.
        let p = build_named(&assets);
        let plan = p.tools.as_ref().unwrap();
        assert_eq!(plan.format, ToolFormat::GemmaToolCode);
        assert!(p.keep_special.is_empty());
        let prompt = text(&assets, &p.ids);
        assert!(
            prompt.contains("Be brief.\n\nYou can call functions"),
            "{prompt}"
        );
        assert!(prompt.contains("<start_of_turn>model\n```tool_code\nget_weather(city=\"Paris\")\nget_weather(city=\"Rome\")\n```<end_of_turn>"), "{prompt}");
        assert!(prompt.contains("<start_of_turn>user\n```tool_output\nSunny\n```\n```tool_output\nRain\n```\nThanks, summarise.<end_of_turn>"), "{prompt}");
        assert!(
            prompt.ends_with("<start_of_turn>model\n```tool_code\nget_weather(city=\""),
            "{prompt}"
        );
    }
}
