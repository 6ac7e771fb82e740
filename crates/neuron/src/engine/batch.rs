//! What one forward pass computes: [`BatchInput`], the new tokens of several
//! sequences (decode tokens and prompt chunks, each at its own positions)
//! with the blocks their KV lives in, and which rows need logits.
//!
//! Built on the host by the scheduler, read by a [`super::model::Model`].
//! Owns the derived per-row data (positions, pool slots) and its checks; it
//! holds no tensors, so it is cheap to build and to test.

use super::kv::{self, BlockId, BLOCK_SIZE};
use super::EngineError;

/// The new tokens of one sequence in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqChunk {
    /// First row of this chunk in [`BatchInput::tokens`].
    pub start: usize,
    /// Number of new tokens (rows).
    pub len: usize,
    /// Position of the first new token: tokens already in the cache.
    pub pos: usize,
    /// The sequence's block table, covering at least `pos + len` positions.
    pub blocks: Vec<BlockId>,
}

impl SeqChunk {
    /// Positions the chunk's last token attends over: `pos + len`.
    pub fn context(&self) -> usize {
        self.pos + self.len
    }
}

/// One forward pass's input.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchInput {
    /// The new token ids, chunk after chunk.
    pub tokens: Vec<u32>,
    /// The chunks, in row order, without gaps.
    pub chunks: Vec<SeqChunk>,
    /// Rows whose logits the caller wants, in the order it wants them.
    pub logit_rows: Vec<usize>,
}

impl BatchInput {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `tokens` of a sequence whose cache holds `pos` positions in
    /// `blocks`; when `logits`, its last row joins [`BatchInput::logit_rows`].
    pub fn push(&mut self, tokens: &[u32], pos: usize, blocks: Vec<BlockId>, logits: bool) {
        let start = self.tokens.len();
        self.tokens.extend_from_slice(tokens);
        if logits && !tokens.is_empty() {
            self.logit_rows.push(start + tokens.len() - 1);
        }
        self.chunks.push(SeqChunk {
            start,
            len: tokens.len(),
            pos,
            blocks,
        });
    }

    /// Number of new tokens.
    pub fn rows(&self) -> usize {
        self.tokens.len()
    }

    /// Whether there is nothing to compute.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The position of every row.
    pub fn positions(&self) -> Vec<u32> {
        self.chunks
            .iter()
            .flat_map(|c| (c.pos..c.pos + c.len).map(|p| p as u32))
            .collect()
    }

    /// The pool row each new token's K and V go to.
    pub fn slots(&self) -> Result<Vec<u32>, EngineError> {
        let mut out = Vec::with_capacity(self.rows());
        for c in &self.chunks {
            for p in c.pos..c.pos + c.len {
                out.push(kv::slot(&c.blocks, p).ok_or_else(|| {
                    EngineError::Batch(format!(
                        "position {p} has no block ({} blocks of {BLOCK_SIZE})",
                        c.blocks.len()
                    ))
                })?);
            }
        }
        Ok(out)
    }

    /// Checks the batch is well formed for a pool of `pool_blocks` blocks and
    /// a model of `max_positions` positions: chunks in row order without
    /// gaps, non-empty, covered by their blocks, logit rows in range.
    /// A malformed batch is a host-side error, found before any kernel runs.
    pub fn validate(&self, pool_blocks: usize, max_positions: usize) -> Result<(), EngineError> {
        let bad = |m: String| Err(EngineError::Batch(m));
        let mut row = 0;
        for c in &self.chunks {
            if c.start != row || c.len == 0 {
                return bad(format!(
                    "chunk at row {} of {} rows breaks the row order",
                    c.start, c.len
                ));
            }
            row += c.len;
            if c.context() > max_positions {
                return bad(format!(
                    "a chunk reaches position {}, the model has {max_positions}",
                    c.context()
                ));
            }
            if kv::blocks_for(c.context()) > c.blocks.len() {
                return bad(format!(
                    "{} positions need {} blocks, the table has {}",
                    c.context(),
                    kv::blocks_for(c.context()),
                    c.blocks.len()
                ));
            }
            if let Some(b) = c.blocks.iter().find(|b| **b as usize >= pool_blocks) {
                return bad(format!("block {b} is outside the pool of {pool_blocks}"));
            }
        }
        if row != self.tokens.len() {
            return bad(format!(
                "{} tokens, the chunks cover {row}",
                self.tokens.len()
            ));
        }
        if let Some(r) = self.logit_rows.iter().find(|r| **r >= row) {
            return bad(format!("logits asked for row {r} of {row}"));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rows_positions_and_slots() {
        let mut b = BatchInput::new();
        // A decode token at position 20 (block table [5, 2]: slot 2*16 + 4).
        b.push(&[9], 20, vec![5, 2], true);
        // A prompt chunk of 3 tokens at positions 14..17, crossing a block.
        b.push(&[1, 2, 3], 14, vec![0, 7], false);
        assert_eq!(b.rows(), 4);
        assert_eq!(b.positions(), vec![20, 14, 15, 16]);
        assert_eq!(b.slots().unwrap(), vec![36, 14, 15, 112]);
        assert_eq!(b.logit_rows, vec![0]);
        assert_eq!(b.chunks[1].start, 1);
        b.validate(8, 100).unwrap();
        assert!(
            b.validate(7, 100).is_err(),
            "block 7 is outside a pool of 7"
        );
        assert!(b.validate(8, 20).is_err(), "past the model's positions");
    }

    #[test]
    fn malformed_batches_are_refused() {
        let mut b = BatchInput::new();
        b.push(&[1, 2], 15, vec![0], true);
        assert!(b.validate(4, 100).is_err(), "position 16 has no block");
        assert!(b.slots().is_err());
        let mut b = BatchInput::new();
        b.push(&[1], 0, vec![0], true);
        b.logit_rows.push(5);
        assert!(b.validate(4, 100).is_err());
        let mut b = BatchInput::new();
        b.push(&[], 0, vec![0], false);
        assert!(b.validate(4, 100).is_err(), "an empty chunk");
    }
}
