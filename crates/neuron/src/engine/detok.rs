//! Incremental detokenization for streaming.
//!
//! Owns the decode window of one stream. A token may carry only part of a
//! UTF-8 character (byte-level BPE splits emoji and CJK across tokens;
//! SentencePiece writes a character it has no token for as `<0xNN>` byte
//! tokens), and some decoders change a token's text depending on what
//! precedes it, so each step decodes a small window of recent ids and emits
//! only the text that is new and complete (the same prefix/read offsets as
//! `tokenizers`' `DecodeStream`, which cannot be used here because it
//! borrows the tokenizer). A run of byte-fallback tokens is held back until
//! it ends, because the SentencePiece decoder decodes the run as a whole.
//! Special tokens are skipped. The concatenation of all outputs equals
//! [`ModelAssets::decode`] of all ids.

use super::tokenizer::{token_text, TokenText};
use super::{EngineError, ModelAssets};
use std::sync::Arc;

/// Decodes one stream of token ids into text pieces; `Send + 'static`.
pub struct IncrementalDecoder {
    assets: Arc<ModelAssets>,
    /// The window: `ids[..read]` is the last emitted piece, kept as context
    /// for the decoder; `ids[read..]` is not emitted yet.
    ids: Vec<u32>,
    read: usize,
}

impl IncrementalDecoder {
    /// A decoder for a new stream.
    pub fn new(assets: Arc<ModelAssets>) -> Self {
        Self {
            assets,
            ids: Vec::new(),
            read: 0,
        }
    }

    /// Adds one token; returns the new text, or `""` while a UTF-8 sequence
    /// or a run of byte-fallback tokens is incomplete (or the token is
    /// special).
    pub fn push(&mut self, id: u32) -> Result<String, EngineError> {
        self.ids.push(id);
        if self.byte_run_open() {
            return Ok(String::new());
        }
        let before = self.assets.decode(&self.ids[..self.read])?;
        let now = self.assets.decode(&self.ids)?;
        if now.len() <= before.len() || now.ends_with(char::REPLACEMENT_CHARACTER) {
            return Ok(String::new());
        }
        let Some(new) = now.strip_prefix(before.as_str()) else {
            // The decoder rewrote earlier text; wait for more context.
            return Ok(String::new());
        };
        let new = new.to_string();
        // Keep the just-emitted ids as context for the next step.
        self.ids.drain(..self.read);
        self.read = self.ids.len();
        Ok(new)
    }

    /// Whether the last token the decode renders (special tokens are
    /// skipped, so byte tokens on both sides of one form a single run) is a
    /// byte-fallback token: a later byte token may still change the run's
    /// text, even the part that is valid UTF-8 now.
    fn byte_run_open(&self) -> bool {
        let tokenizer = &self.assets.tokenizer;
        self.ids[self.read..]
            .iter()
            .rev()
            .map(|id| token_text(tokenizer, *id))
            .find(|t| *t != TokenText::Special)
            == Some(TokenText::Byte)
    }

    /// Ends the stream: the text still held back (an incomplete UTF-8
    /// sequence decodes to U+FFFD, as in the full decode).
    pub fn finish(&mut self) -> Result<String, EngineError> {
        let before = self.assets.decode(&self.ids[..self.read])?;
        let now = self.assets.decode(&self.ids)?;
        self.ids.clear();
        self.read = 0;
        Ok(match now.strip_prefix(before.as_str()) {
            Some(rest) => rest.to_string(),
            None => now,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::engine::test_model;
    use proptest::prelude::*;

    fn incremental(assets: &Arc<ModelAssets>, ids: &[u32]) -> (String, Vec<String>) {
        let mut d = IncrementalDecoder::new(assets.clone());
        let pieces: Vec<String> = ids.iter().map(|id| d.push(*id).unwrap()).collect();
        let tail = d.finish().unwrap();
        let mut all = pieces.concat();
        all.push_str(&tail);
        (all, pieces)
    }

    /// Streams `text`'s ids: the pieces hold no partial character and add
    /// up to the full decode, which is returned.
    fn streams_whole(assets: &Arc<ModelAssets>, text: &str) -> String {
        let ids = assets.encode(text).unwrap();
        let (all, pieces) = incremental(assets, &ids);
        assert_eq!(all, assets.decode(&ids).unwrap());
        assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
        all
    }

    #[test]
    fn decoder_is_send_static() {
        fn check<T: Send + 'static>() {}
        check::<IncrementalDecoder>();
    }

    #[test]
    fn emoji_and_cjk_are_emitted_whole() {
        let Some(w) = test_model::weights() else {
            return;
        };
        for text in [
            "I ❤️ 🦀",
            "你好，世界",
            "naïve café",
            "<|im_start|>user\nHi<|im_end|>\n",
        ] {
            streams_whole(&w.assets, text);
        }
        // 🦀 is four byte tokens: nothing comes out until the last one.
        let crab = w.assets.encode("🦀").unwrap();
        assert!(crab.len() > 1);
        let (_, pieces) = incremental(&w.assets, &crab);
        assert!(pieces[..crab.len() - 1].iter().all(String::is_empty));
        assert_eq!(pieces[crab.len() - 1], "🦀");
    }

    #[test]
    fn incomplete_tail_is_flushed_by_finish() {
        let Some(w) = test_model::weights() else {
            return;
        };
        let crab = w.assets.encode("🦀").unwrap();
        let ids = &crab[..crab.len() - 1];
        let (all, _) = incremental(&w.assets, ids);
        assert_eq!(all, w.assets.decode(ids).unwrap());
        assert!(all.contains('\u{FFFD}'));
    }

    #[test]
    fn gemma3_byte_fallback_is_emitted_whole() {
        let Some(assets) = test_model::gemma3_assets() else {
            return;
        };
        // U+13000 and U+0007 are no tokens of Gemma's: byte-fallback tokens.
        for text in [
            "\u{13000} and \u{7}",
            "I ❤️ 🦀",
            "你好，世界",
            "<b>x</b>\n\n  y",
        ] {
            assert_eq!(streams_whole(&assets, text), text);
        }
        // Four byte tokens (F0 93 80 80), held until the run ends: with the
        // next token, or at the end of the stream.
        let crab = assets.encode("\u{13000}").unwrap();
        assert_eq!(crab, vec![478, 385, 366, 366]);
        let (all, pieces) = incremental(&assets, &crab);
        assert_eq!(all, "\u{13000}");
        assert_eq!(pieces, [""; 4]);
        let ids = [&crab[..], &assets.encode(" x").unwrap()].concat();
        let (_, pieces) = incremental(&assets, &ids);
        assert_eq!(pieces[..4], ["", "", "", ""]);
        assert_eq!(pieces[4..].concat(), "\u{13000} x");
        // A truncated character comes out as U+FFFD at the end, as in the
        // full decode.
        let (all, _) = incremental(&assets, &crab[..2]);
        assert_eq!(all, assets.decode(&crab[..2]).unwrap());
        assert!(all.contains('\u{FFFD}'));
    }

    #[test]
    fn gemma3_incremental_equals_full_decode_on_random_ids() {
        let Some(assets) = test_model::gemma3_assets() else {
            return;
        };
        let vocab = assets.meta.vocab_size as u32;
        // Byte tokens (238..494), specials and user-defined tokens, any.
        let id = prop_oneof![238u32..494, 0u32..238, 0u32..vocab];
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
        runner
            .run(&proptest::collection::vec(id, 0..40), |ids| {
                let (all, _) = incremental(&assets, &ids);
                prop_assert_eq!(all, assets.decode(&ids).unwrap());
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn incremental_equals_full_decode_on_random_ids() {
        let Some(w) = test_model::weights() else {
            return;
        };
        let vocab = w.assets.meta.vocab_size as u32;
        // Mostly byte tokens and specials, where splitting is hardest.
        let id = prop_oneof![0u32..300, 0u32..vocab];
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(256));
        runner
            .run(&proptest::collection::vec(id, 0..40), |ids| {
                let (all, _) = incremental(&w.assets, &ids);
                prop_assert_eq!(all, w.assets.decode(&ids).unwrap());
                Ok(())
            })
            .unwrap();
    }
}
