//! Conversation fingerprints: how the gateway and the neurons name a
//! conversation's prefix without a tokenizer in the gateway.
//!
//! [`conversation_hashes`] gives one 64-bit id per message of a chat
//! request: the id of message `i` covers the tools and every message up to
//! and including `i` (a hash chain), after the prompt normalisation the
//! neuron applies ([`crate::normalize`]), so per-request noise such as
//! Claude Code's billing header does not change it. A neuron that served a
//! request remembers the id of its whole conversation together with the KV
//! blocks it left in its prefix cache, and reports the ids still backed by
//! cached blocks in `/status` ([`crate::neuron_api::CachedPrefix`]). The
//! next turn of that conversation re-sends those messages and more, so one
//! of its ids matches; the gateway routes it to the neuron that holds the
//! longest match. The ids are FNV-1a over serde_json's encoding of each
//! message: stable across processes and builds of the same version.

use crate::normalize;
use crate::openai::ChatCompletionRequest;

const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(mut h: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(PRIME);
    }
    h
}

/// One id per message of `req` (the id of the prefix ending with it),
/// after normalisation; empty when there are no messages.
pub fn conversation_hashes(req: &ChatCompletionRequest) -> Vec<u64> {
    let mut messages = req.messages.clone();
    normalize::strip_billing_header(&mut messages);
    let tools = serde_json::to_vec(&req.tools).unwrap_or_default();
    let mut h = fnv(fnv(OFFSET, b"cortex-conversation-v1"), &tools);
    messages
        .iter()
        .map(|m| {
            let bytes = serde_json::to_vec(m).unwrap_or_default();
            // The length first, so that two messages cannot run into one.
            h = fnv(fnv(h, &(bytes.len() as u64).to_le_bytes()), &bytes);
            h
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn req(v: serde_json::Value) -> ChatCompletionRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_next_turn_extends_the_chain() {
        let t1 = req(json!({"model": "m", "messages": [
            {"role": "system", "content": "x-anthropic-billing-header: cc_version=2.1.37.3a3; cch=aa11;\nYou are helpful."},
            {"role": "user", "content": "hi"}]}));
        let t2 = req(json!({"model": "m", "messages": [
            {"role": "system", "content": "x-anthropic-billing-header: cc_version=2.1.37.9ff; cch=bb22;\nYou are helpful."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "more"}]}));
        let (h1, h2) = (conversation_hashes(&t1), conversation_hashes(&t2));
        assert_eq!(h1.len(), 2);
        assert_eq!(h2.len(), 4);
        assert_eq!(h1[..], h2[..2], "the billing header's hash does not count");
        // Other tools: another conversation.
        let mut t3 = t2.clone();
        t3.tools = Some(vec![serde_json::from_value(
            json!({"type": "function", "function": {"name": "f"}}),
        )
        .unwrap()]);
        assert!(conversation_hashes(&t3).iter().all(|h| !h2.contains(h)));
    }

    proptest! {
        /// A request that extends another by messages keeps its ids as a
        /// prefix; changing any one message changes its id and every later
        /// one.
        #[test]
        fn prefixes_share_ids_exactly(texts in proptest::collection::vec("[a-z ]{0,12}", 1..8), cut in any::<prop::sample::Index>(), change in any::<prop::sample::Index>()) {
            let msgs = |t: &[String]| -> Vec<serde_json::Value> {
                t.iter().enumerate().map(|(i, s)| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": s})).collect()
            };
            let full = conversation_hashes(&req(json!({"model": "m", "messages": msgs(&texts)})));
            let n = cut.index(texts.len()) + 1;
            let part = conversation_hashes(&req(json!({"model": "m", "messages": msgs(&texts[..n])})));
            prop_assert_eq!(&full[..n], &part[..]);
            let i = change.index(texts.len());
            let mut other = texts.clone();
            other[i].push('!');
            let changed = conversation_hashes(&req(json!({"model": "m", "messages": msgs(&other)})));
            prop_assert_eq!(&full[..i], &changed[..i]);
            for j in i..texts.len() {
                prop_assert_ne!(full[j], changed[j]);
            }
        }
    }
}
