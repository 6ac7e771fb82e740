//! Prompt normalisation: per-request noise removed from a conversation
//! before it is templated, so the same conversation gives the same prompt
//! tokens every turn (and a prefix cache can hit).
//!
//! Owns one rule today. Claude Code (2.1.36 and later) sends as its first
//! system block `x-anthropic-billing-header: cc_version=…; cc_entrypoint=…;
//! cch=…;`, where `cch` (and the version suffix) is recomputed for every
//! request. It means nothing to the model. In system and developer
//! messages, every line that starts with `x-anthropic-billing-header:` is
//! dropped, with the blank lines right after it; a text part or a message
//! left empty goes too. User and assistant turns are never touched.
//! `keep_billing_header = true` in `neuron.toml` turns this off.
//!
//! Other per-request noise looked for in Claude Code, Codex and Zed traffic
//! is documented in the README ("Prompt normalisation"); none of it is
//! both per-request and meaningless, so nothing else is removed.

use crate::openai::{ChatMessage, ContentPart, MessageContent, Role};

/// The line prefix Claude Code's billing block starts with.
pub const BILLING_HEADER: &str = "x-anthropic-billing-header:";

/// Removes billing-header lines from the system and developer messages.
/// Returns how many lines were removed.
pub fn strip_billing_header(messages: &mut Vec<ChatMessage>) -> usize {
    let mut removed = 0;
    for m in messages.iter_mut() {
        if !matches!(m.role, Role::System | Role::Developer) {
            continue;
        }
        match &mut m.content {
            Some(MessageContent::Text(text)) => removed += strip_text(text),
            Some(MessageContent::Parts(parts)) => {
                for part in parts.iter_mut() {
                    if let ContentPart::Text { text } = part {
                        removed += strip_text(text);
                    }
                }
                parts.retain(|p| !matches!(p, ContentPart::Text { text } if text.is_empty()));
            }
            None => {}
        }
    }
    if removed > 0 {
        messages.retain(|m| {
            !(matches!(m.role, Role::System | Role::Developer)
                && m.tool_calls.is_none()
                && match &m.content {
                    Some(MessageContent::Text(t)) => t.is_empty(),
                    Some(MessageContent::Parts(p)) => p.is_empty(),
                    None => false,
                })
        });
    }
    removed
}

/// Drops the header lines of one text; returns how many.
fn strip_text(text: &mut String) -> usize {
    if !text.contains(BILLING_HEADER) {
        return 0;
    }
    let mut removed = 0;
    let mut out = String::with_capacity(text.len());
    let mut after_header = false;
    for line in text.split_inclusive('\n') {
        if line.starts_with(BILLING_HEADER) {
            removed += 1;
            after_header = true;
            continue;
        }
        if after_header && line.trim().is_empty() {
            continue;
        }
        after_header = false;
        out.push_str(line);
    }
    if removed > 0 {
        *text = out;
    }
    removed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn msgs(v: serde_json::Value) -> Vec<ChatMessage> {
        serde_json::from_value(v).unwrap()
    }

    const HEADER: &str =
        "x-anthropic-billing-header: cc_version=2.1.37.3a3; cc_entrypoint=cli; cch=9f2c1;";

    #[test]
    fn the_header_line_goes_and_the_rest_stays() {
        // The gateway joins Anthropic system blocks with "\n"; folded system
        // messages with a blank line.
        for (system, want) in [
            (
                format!("{HEADER}\nYou are Claude Code."),
                "You are Claude Code.",
            ),
            (
                format!("{HEADER}\n\nYou are Claude Code."),
                "You are Claude Code.",
            ),
            (
                format!("You are Claude Code.\n{HEADER}\nMore."),
                "You are Claude Code.\nMore.",
            ),
        ] {
            let mut m = msgs(json!([
                {"role": "system", "content": system},
                {"role": "user", "content": format!("{HEADER}\nhi")},
            ]));
            assert_eq!(strip_billing_header(&mut m), 1);
            assert_eq!(m[0].text_content(), want);
            // User turns are the user's words.
            assert_eq!(m[1].text_content(), format!("{HEADER}\nhi"));
        }
    }

    #[test]
    fn emptied_parts_and_messages_are_dropped() {
        let mut m = msgs(json!([
            {"role": "system", "content": HEADER},
            {"role": "developer", "content": [
                {"type": "text", "text": HEADER},
                {"type": "text", "text": "Be brief."}
            ]},
            {"role": "user", "content": "hi"},
        ]));
        assert_eq!(strip_billing_header(&mut m), 2);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].role, Role::Developer);
        assert_eq!(m[0].text_content(), "Be brief.");
    }

    #[test]
    fn no_header_no_change() {
        let orig = msgs(json!([
            {"role": "system", "content": "The x-anthropic-billing-header: line is mid-line here.\n"},
            {"role": "system", "content": ""},
            {"role": "user", "content": "hi"},
        ]));
        let mut m = orig.clone();
        assert_eq!(strip_billing_header(&mut m), 0);
        assert_eq!(m, orig);
    }

    proptest! {
        /// Two requests that differ only in the header's hash normalise to
        /// the same conversation, and text without the header is untouched.
        #[test]
        fn hash_does_not_matter(a in "[0-9a-f]{5}", b in "[0-9a-f]{5}", rest in "[a-zA-Z .\n]{0,60}") {
            let with = |h: &str| msgs(json!([
                {"role": "system", "content": format!("x-anthropic-billing-header: cc_version=2.1.37.{h}; cc_entrypoint=cli; cch={h};\n{rest}")},
                {"role": "user", "content": "hi"},
            ]));
            let (mut x, mut y) = (with(&a), with(&b));
            strip_billing_header(&mut x);
            strip_billing_header(&mut y);
            prop_assert_eq!(&x, &y);
            let mut plain = msgs(json!([{"role": "system", "content": rest.clone()}]));
            let before = plain.clone();
            strip_billing_header(&mut plain);
            prop_assert_eq!(plain, before);
        }
    }
}
