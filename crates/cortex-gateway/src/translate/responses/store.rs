//! The bounded in-memory store behind `previous_response_id`: for each
//! stored response, the whole conversation up to and including its output,
//! as input items, so that the next request can be rebuilt from it.
//!
//! Bounds: at most `capacity` responses and `max_bytes` of conversation
//! (measured as JSON), each kept at most `ttl`; the oldest go first. The
//! store is plain data told the time by its caller (no clock, no lock): the
//! HTTP layer keeps it behind a mutex and passes `Instant::now()`. A missing
//! or expired id is [`StoreError::NotFound`], which the HTTP layer answers
//! with 404 in OpenAI's error envelope ([`StoreError::to_openai`]).
//!
//! Each entry holds its whole conversation (not a link to its parent), so
//! evicting an old response never breaks a newer one that continued it; the
//! byte bound keeps the copies in check.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cortex_core::openai::ErrorResponse;
use cortex_core::responses::{
    FunctionCallItem, FunctionCallTag, InputContent, InputItem, InputMessage, InputPart, InputRole,
    MessageTag, OutputContent, OutputItem,
};

/// How much the store may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Most responses kept.
    pub capacity: usize,
    /// Most conversation bytes (as JSON) kept, all entries together.
    pub max_bytes: usize,
    /// How long a response stays retrievable.
    pub ttl: Duration,
}

impl Default for StoreLimits {
    /// 1,000 responses, 64 MiB, one hour.
    fn default() -> Self {
        Self {
            capacity: 1000,
            max_bytes: 64 << 20,
            ttl: Duration::from_secs(3600),
        }
    }
}

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Never stored, stored with `store: false`, evicted or expired.
    #[error("Previous response with id '{id}' not found.")]
    NotFound { id: String },
}

impl StoreError {
    /// The 404 body in OpenAI's envelope.
    pub fn to_openai(&self) -> ErrorResponse {
        ErrorResponse::new(
            "invalid_request_error",
            self.to_string(),
            Some("previous_response_id"),
            Some("previous_response_not_found"),
        )
    }
}

#[derive(Debug)]
struct Entry {
    conversation: Arc<[InputItem]>,
    bytes: usize,
    stored_at: Instant,
}

/// Stored conversations by response id.
#[derive(Debug)]
pub struct ResponseStore {
    limits: StoreLimits,
    entries: HashMap<String, Entry>,
    /// Ids in the order they were stored (oldest first).
    order: VecDeque<String>,
    bytes: usize,
}

impl ResponseStore {
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            limits,
            entries: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    /// The conversation stored for `id` (to pass to `responses_to_chat` as
    /// its history), if it is there and younger than the TTL at `now`.
    pub fn get(&mut self, id: &str, now: Instant) -> Result<Arc<[InputItem]>, StoreError> {
        self.expire(now);
        self.entries
            .get(id)
            .map(|e| Arc::clone(&e.conversation))
            .ok_or_else(|| StoreError::NotFound {
                id: id.chars().take(128).collect(),
            })
    }

    /// Keep `conversation` as response `id`, made at `now`. Older entries
    /// leave as needed to stay within the limits; a conversation larger than
    /// `max_bytes` on its own is not kept. Storing an id again replaces it.
    pub fn put(&mut self, id: String, conversation: Vec<InputItem>, now: Instant) {
        self.expire(now);
        self.remove(&id);
        let bytes = serde_json::to_vec(&conversation).map_or(usize::MAX, |v| v.len());
        if bytes > self.limits.max_bytes || self.limits.capacity == 0 {
            tracing::warn!(
                response = %id,
                bytes,
                max_bytes = self.limits.max_bytes,
                "conversation too large to store for previous_response_id"
            );
            return;
        }
        while self.entries.len() >= self.limits.capacity
            || self.bytes + bytes > self.limits.max_bytes
        {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            self.drop_entry(&oldest);
        }
        self.bytes += bytes;
        self.order.push_back(id.clone());
        self.entries.insert(
            id,
            Entry {
                conversation: conversation.into(),
                bytes,
                stored_at: now,
            },
        );
    }

    /// Responses held now (expired ones may still count until the next
    /// call that is told the time).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Conversation bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drop every entry at least `ttl` old at `now`. Entries are stored in
    /// time order, so only the front needs looking at.
    fn expire(&mut self, now: Instant) {
        while let Some(id) = self.order.front() {
            let expired = self
                .entries
                .get(id)
                .is_none_or(|e| now.saturating_duration_since(e.stored_at) >= self.limits.ttl);
            if !expired {
                break;
            }
            if let Some(id) = self.order.pop_front() {
                self.drop_entry(&id);
            }
        }
    }

    fn remove(&mut self, id: &str) {
        if self.entries.contains_key(id) {
            self.order.retain(|o| o != id);
            self.drop_entry(id);
        }
    }

    fn drop_entry(&mut self, id: &str) {
        if let Some(e) = self.entries.remove(id) {
            self.bytes -= e.bytes;
        }
    }
}

/// The conversation to store for a response: the stored `history` it
/// continued, its own input, then its output as input items.
pub fn conversation(
    history: &[InputItem],
    input: Vec<InputItem>,
    output: &[OutputItem],
) -> Vec<InputItem> {
    let mut items = Vec::with_capacity(history.len() + input.len() + output.len());
    items.extend_from_slice(history);
    items.extend(input);
    items.extend(output.iter().map(output_as_input));
    items
}

/// An output item as the input item that replays it.
pub fn output_as_input(item: &OutputItem) -> InputItem {
    match item {
        OutputItem::Message { id, content, .. } => InputItem::Message(InputMessage {
            kind: Some(MessageTag::Message),
            role: InputRole::Assistant,
            content: InputContent::Parts(
                content
                    .iter()
                    .map(
                        |OutputContent::OutputText { text, annotations }| InputPart::OutputText {
                            text: text.clone(),
                            annotations: annotations.clone(),
                        },
                    )
                    .collect(),
            ),
            id: Some(id.clone()),
        }),
        OutputItem::FunctionCall {
            id,
            call_id,
            name,
            arguments,
            status,
        } => InputItem::FunctionCall(FunctionCallItem {
            kind: FunctionCallTag::FunctionCall,
            call_id: call_id.clone(),
            name: name.clone(),
            arguments: arguments.clone(),
            id: Some(id.clone()),
            status: Some(*status),
        }),
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
