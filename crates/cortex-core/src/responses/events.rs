//! The Responses API's stream events (`response.created` …
//! `response.completed`), as SSE `data` objects whose `type` is also the SSE
//! event name.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{OutputContent, OutputItem, Response};

/// One stream event. The SSE event name is [`StreamEvent::name`], equal to
/// the JSON `type`; `sequence_number` rises by one per event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum StreamEvent {
    #[serde(rename = "response.created")]
    Created {
        response: Response,
        sequence_number: u64,
    },
    #[serde(rename = "response.in_progress")]
    InProgress {
        response: Response,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded {
        output_index: u32,
        item: OutputItem,
        sequence_number: u64,
    },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded {
        item_id: String,
        output_index: u32,
        content_index: u32,
        part: OutputContent,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta {
        item_id: String,
        output_index: u32,
        content_index: u32,
        delta: String,
        logprobs: Vec<Value>,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone {
        item_id: String,
        output_index: u32,
        content_index: u32,
        text: String,
        logprobs: Vec<Value>,
        sequence_number: u64,
    },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone {
        item_id: String,
        output_index: u32,
        content_index: u32,
        part: OutputContent,
        sequence_number: u64,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta {
        item_id: String,
        output_index: u32,
        delta: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone {
        item_id: String,
        output_index: u32,
        name: String,
        arguments: String,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone {
        output_index: u32,
        item: OutputItem,
        sequence_number: u64,
    },
    #[serde(rename = "response.completed")]
    Completed {
        response: Response,
        sequence_number: u64,
    },
    #[serde(rename = "response.incomplete")]
    Incomplete {
        response: Response,
        sequence_number: u64,
    },
    #[serde(rename = "response.failed")]
    Failed {
        response: Response,
        sequence_number: u64,
    },
    #[serde(rename = "error")]
    Error {
        code: Option<String>,
        message: String,
        param: Option<String>,
        sequence_number: u64,
    },
}

impl StreamEvent {
    /// The SSE event name (the JSON `type`).
    pub fn name(&self) -> &'static str {
        match self {
            StreamEvent::Created { .. } => "response.created",
            StreamEvent::InProgress { .. } => "response.in_progress",
            StreamEvent::OutputItemAdded { .. } => "response.output_item.added",
            StreamEvent::ContentPartAdded { .. } => "response.content_part.added",
            StreamEvent::OutputTextDelta { .. } => "response.output_text.delta",
            StreamEvent::OutputTextDone { .. } => "response.output_text.done",
            StreamEvent::ContentPartDone { .. } => "response.content_part.done",
            StreamEvent::FunctionCallArgumentsDelta { .. } => {
                "response.function_call_arguments.delta"
            }
            StreamEvent::FunctionCallArgumentsDone { .. } => {
                "response.function_call_arguments.done"
            }
            StreamEvent::OutputItemDone { .. } => "response.output_item.done",
            StreamEvent::Completed { .. } => "response.completed",
            StreamEvent::Incomplete { .. } => "response.incomplete",
            StreamEvent::Failed { .. } => "response.failed",
            StreamEvent::Error { .. } => "error",
        }
    }

    pub fn sequence_number(&self) -> u64 {
        match self {
            StreamEvent::Created {
                sequence_number, ..
            }
            | StreamEvent::InProgress {
                sequence_number, ..
            }
            | StreamEvent::OutputItemAdded {
                sequence_number, ..
            }
            | StreamEvent::ContentPartAdded {
                sequence_number, ..
            }
            | StreamEvent::OutputTextDelta {
                sequence_number, ..
            }
            | StreamEvent::OutputTextDone {
                sequence_number, ..
            }
            | StreamEvent::ContentPartDone {
                sequence_number, ..
            }
            | StreamEvent::FunctionCallArgumentsDelta {
                sequence_number, ..
            }
            | StreamEvent::FunctionCallArgumentsDone {
                sequence_number, ..
            }
            | StreamEvent::OutputItemDone {
                sequence_number, ..
            }
            | StreamEvent::Completed {
                sequence_number, ..
            }
            | StreamEvent::Incomplete {
                sequence_number, ..
            }
            | StreamEvent::Failed {
                sequence_number, ..
            }
            | StreamEvent::Error {
                sequence_number, ..
            } => *sequence_number,
        }
    }

    /// True for the events that end a stream.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            StreamEvent::Completed { .. }
                | StreamEvent::Incomplete { .. }
                | StreamEvent::Failed { .. }
                | StreamEvent::Error { .. }
        )
    }
}
