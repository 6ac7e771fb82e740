//! Which conversations a model's prefix cache holds, for cache-aware
//! routing in the gateway.
//!
//! When a sequence leaves, the conversation it belonged to (the id the API
//! computed with [`cortex_core::prefix::conversation_hashes`]) is recorded
//! with the chain ids of its full KV blocks. [`Conversations::report`] says,
//! for each recorded conversation, how many of its leading blocks the pool
//! still holds (blocks are evicted by the pool's LRU, not here), and drops
//! those with none. Bounded: past [`CAPACITY`] conversations the least
//! recently used one is forgotten.

use std::collections::HashMap;

use cortex_core::neuron_api::CachedPrefix;

use super::kv::{BlockPool, BLOCK_SIZE};

/// Conversations remembered per model.
pub const CAPACITY: usize = 256;

#[derive(Debug, Default)]
pub struct Conversations {
    entries: HashMap<u64, (Vec<u64>, u64)>,
}

impl Conversations {
    /// `conversation` (last used at `now_ms`) has its KV in blocks `chain`.
    pub fn record(&mut self, conversation: u64, chain: &[u64], now_ms: u64) {
        if chain.is_empty() {
            return;
        }
        self.entries.insert(conversation, (chain.to_vec(), now_ms));
        if self.entries.len() > CAPACITY {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
    }

    /// The conversations with KV still cached in `pool`, most recently used
    /// first; those with none are forgotten.
    pub fn report(&mut self, pool: &BlockPool) -> Vec<CachedPrefix> {
        let mut out = Vec::new();
        self.entries.retain(|hash, (chain, used)| {
            let held = chain.iter().take_while(|h| pool.holds(**h)).count();
            if held == 0 {
                return false;
            }
            out.push(CachedPrefix {
                hash: *hash,
                tokens: (held * BLOCK_SIZE) as u64,
                last_used_ms: *used,
            });
            true
        });
        out.sort_by(|a, b| {
            b.last_used_ms
                .cmp(&a.last_used_ms)
                .then(a.hash.cmp(&b.hash))
        });
        out
    }

    /// Forgets everything (the pool was reset).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::kv::chain_hash;

    /// A pool holding one sequence's `n` full blocks of `tokens`, released.
    fn pool_with(tokens: &[u32]) -> (BlockPool, Vec<u64>) {
        let mut pool = BlockPool::new(8);
        let mut chain: Vec<u64> = Vec::new();
        let mut blocks = Vec::new();
        for chunk in tokens.chunks_exact(BLOCK_SIZE) {
            let b = pool.allocate().unwrap();
            chain.push(pool.seal(b, chain.last().copied(), chunk));
            blocks.push(b);
        }
        pool.release_all(&blocks);
        (pool, chain)
    }

    #[test]
    fn reports_what_the_pool_still_holds() {
        let tokens: Vec<u32> = (0..48).collect();
        let (mut pool, chain) = pool_with(&tokens);
        assert_eq!(chain[0], chain_hash(None, &tokens[..16]));
        let mut c = Conversations::default();
        c.record(7, &chain, 100);
        c.record(8, &chain[..1], 200);
        let r = c.report(&pool);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].hash, r[0].tokens), (8, 16), "most recent first");
        assert_eq!((r[1].hash, r[1].tokens), (7, 48));
        // The pool evicts the tail first (released first): 7 keeps 32.
        for _ in 0..5 {
            pool.allocate().unwrap(); // the free blocks
        }
        pool.allocate().unwrap();
        let r = c.report(&pool);
        let seven = r.iter().find(|p| p.hash == 7).map(|p| p.tokens);
        assert_eq!(seven, Some(32), "{r:?}");
        // Everything evicted: nothing reported, and forgotten.
        pool.reset();
        assert!(c.report(&pool).is_empty());
        assert!(c.entries.is_empty());
    }

    #[test]
    fn bounded() {
        let (pool, chain) = pool_with(&(0..16).collect::<Vec<u32>>());
        let mut c = Conversations::default();
        for i in 0..(CAPACITY as u64 + 10) {
            c.record(i, &chain, i);
        }
        let r = c.report(&pool);
        assert_eq!(r.len(), CAPACITY);
        assert_eq!(r.last().map(|p| p.hash), Some(10), "the oldest went first");
    }
}
