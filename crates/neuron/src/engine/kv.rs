//! The KV cache the engine owns: a per-model pool of fixed-size token
//! blocks, allocated once at load, and the bookkeeping of who uses which
//! block.
//!
//! - [`KvCache`] holds the tensors: one K and one V tensor for all layers,
//!   `[layers, blocks · BLOCK_SIZE, kv_heads · head_dim]` on the model's
//!   device. Each layer reads and writes its own `[rows, kv_dim]` view; new
//!   rows are written in place (`scatter_set`), never concatenated. One
//!   allocation per tensor is deliberate: with the neuron's 32 MiB mmap
//!   threshold (`sys`), a pool this size comes zeroed from `mmap`, so pages
//!   are committed only when a block is first written.
//! - [`BlockPool`] is the host-side ledger: a refcount per block (a prefix
//!   block is read by several sequences), the free list (lowest block first,
//!   to keep the touched set small), and the **prefix cache**: a full block
//!   gets a hash-chain id ([`chain_hash`] of its parent's id and its own
//!   token ids); an unreferenced full block stays cached in an LRU until its
//!   room is needed, and a new sequence takes the longest cached prefix of
//!   its prompt ([`BlockPool::lookup_prefix`]).
//!
//! It does not own scheduling (which sequence gets blocks: `scheduler`) nor
//! attention (how rows are read: `attention`).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use candle_core::{DType, Device, Tensor};

use super::EngineError;

/// Tokens per block. 16: the granularity of prefix reuse (a prompt shares
/// whole blocks only) and of waste (half a block per sequence on average:
/// 8 tokens, 368 KB for the default model), against a block table and a
/// gather index that grow with the number of blocks. vLLM uses 16 too.
pub const BLOCK_SIZE: usize = 16;

/// A block's index in its model's pool.
pub type BlockId = u32;

/// Blocks needed for `tokens` positions.
pub fn blocks_for(tokens: usize) -> usize {
    tokens.div_ceil(BLOCK_SIZE)
}

/// The pool row of `position` in a sequence with `table`.
pub fn slot(table: &[BlockId], position: usize) -> Option<u32> {
    let block = *table.get(position / BLOCK_SIZE)?;
    Some(block * BLOCK_SIZE as u32 + (position % BLOCK_SIZE) as u32)
}

/// The id of a full block: FNV-1a over the parent block's id and this
/// block's token ids, so it names every token before it too. Stable across
/// builds and processes (issue 15's routing may compare ids from several
/// neurons); collisions cost nothing but a miss, because a lookup also
/// compares the block's tokens.
pub fn chain_hash(parent: Option<u64>, tokens: &[u32]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h = OFFSET;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(PRIME);
        }
    };
    match parent {
        Some(p) => eat(&p.to_le_bytes()),
        None => eat(b"root"),
    }
    for t in tokens {
        eat(&t.to_le_bytes());
    }
    h
}

/// The shape of one model's pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvGeometry {
    /// Transformer layers.
    pub layers: usize,
    /// `kv_heads · head_dim`: the width of one K (or V) row.
    pub kv_dim: usize,
    /// Blocks in the pool.
    pub blocks: usize,
}

impl KvGeometry {
    /// Bytes one block takes across all layers, K and V (f32).
    pub fn block_bytes(layers: usize, kv_dim: usize) -> u64 {
        (2 * layers * BLOCK_SIZE * kv_dim * std::mem::size_of::<f32>()) as u64
    }

    /// The largest pool that fits `budget` bytes.
    pub fn from_budget(layers: usize, kv_dim: usize, budget: u64) -> Self {
        let per_block = Self::block_bytes(layers, kv_dim).max(1);
        Self {
            layers,
            kv_dim,
            blocks: (budget / per_block) as usize,
        }
    }

    /// Bytes of the whole pool.
    pub fn bytes(&self) -> u64 {
        Self::block_bytes(self.layers, self.kv_dim) * self.blocks as u64
    }

    /// Token positions the pool holds.
    pub fn tokens(&self) -> usize {
        self.blocks * BLOCK_SIZE
    }
}

/// The K and V tensors of one model, on its device.
#[derive(Debug)]
pub struct KvCache {
    k: Tensor,
    v: Tensor,
    geometry: KvGeometry,
}

impl KvCache {
    /// Allocates the pool (zeros; on CPU the pages are committed on first
    /// write). Fails for a pool of no blocks.
    pub fn new(geometry: KvGeometry, device: &Device) -> Result<Self, EngineError> {
        if geometry.blocks == 0 || geometry.blocks > u32::MAX as usize / BLOCK_SIZE {
            return Err(EngineError::KvCacheTooSmall(format!(
                "a KV pool of {} blocks cannot be used (one block of {BLOCK_SIZE} tokens takes {} bytes; raise kv_reserve)",
                geometry.blocks,
                KvGeometry::block_bytes(geometry.layers, geometry.kv_dim)
            )));
        }
        let shape = (geometry.layers, geometry.tokens(), geometry.kv_dim);
        Ok(Self {
            k: Tensor::zeros(shape, DType::F32, device)?,
            v: Tensor::zeros(shape, DType::F32, device)?,
            geometry,
        })
    }

    /// The pool's shape.
    pub fn geometry(&self) -> KvGeometry {
        self.geometry
    }

    /// Layer `layer`'s K rows `[rows, kv_dim]` (a view of the pool).
    pub fn k(&self, layer: usize) -> candle_core::Result<Tensor> {
        self.k.get(layer)
    }

    /// Layer `layer`'s V rows `[rows, kv_dim]` (a view of the pool).
    pub fn v(&self, layer: usize) -> candle_core::Result<Tensor> {
        self.v.get(layer)
    }

    /// Writes `k` and `v` `[rows, kv_dim]` into layer `layer` at the pool rows
    /// named by `index` (`[rows, kv_dim]` u32, each row repeating its slot:
    /// see [`slot_index`]).
    pub fn write(
        &self,
        layer: usize,
        index: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> candle_core::Result<()> {
        self.k(layer)?.scatter_set(index, &k.contiguous()?, 0)?;
        self.v(layer)?.scatter_set(index, &v.contiguous()?, 0)
    }
}

/// The scatter index for [`KvCache::write`]: each slot repeated `kv_dim`
/// times, `[slots, kv_dim]` u32, on `device`.
pub fn slot_index(slots: &[u32], kv_dim: usize, device: &Device) -> candle_core::Result<Tensor> {
    Tensor::new(slots, device)?
        .unsqueeze(1)?
        .broadcast_as((slots.len(), kv_dim))?
        .contiguous()
}

#[derive(Debug, Clone, Default)]
struct BlockMeta {
    refs: u32,
    /// Set when the block is full and registered in the prefix cache.
    hash: Option<u64>,
    /// The block's tokens, kept with its hash to rule out collisions.
    tokens: Vec<u32>,
    /// Position in the LRU while unreferenced and cached.
    lru_stamp: Option<u64>,
}

/// The ledger of one model's blocks.
///
/// Invariants (property-tested): a block is in exactly one of the free set,
/// the LRU (cached, unreferenced) or in use (refcount > 0); the cache map
/// names only blocks with that hash.
#[derive(Debug)]
pub struct BlockPool {
    meta: Vec<BlockMeta>,
    free: BTreeSet<BlockId>,
    cached: HashMap<u64, BlockId>,
    lru: BTreeMap<u64, BlockId>,
    clock: u64,
}

impl BlockPool {
    /// A pool of `blocks` free blocks.
    pub fn new(blocks: usize) -> Self {
        Self {
            meta: vec![BlockMeta::default(); blocks],
            free: (0..blocks as BlockId).collect(),
            cached: HashMap::new(),
            lru: BTreeMap::new(),
            clock: 0,
        }
    }

    /// Blocks in the pool.
    pub fn capacity(&self) -> usize {
        self.meta.len()
    }

    /// Blocks a new allocation could get: free ones plus cached ones nobody
    /// references (evicted on demand).
    pub fn available(&self) -> usize {
        self.free.len() + self.lru.len()
    }

    /// Blocks referenced by at least one sequence.
    pub fn used(&self) -> usize {
        self.capacity() - self.available()
    }

    /// Unreferenced blocks kept for the prefix cache.
    pub fn cached_idle(&self) -> usize {
        self.lru.len()
    }

    /// Whether a block with chain id `hash` is in the prefix cache.
    pub fn holds(&self, hash: u64) -> bool {
        self.cached.contains_key(&hash)
    }

    /// Full blocks registered in the prefix cache (in use or idle).
    pub fn cached_blocks(&self) -> usize {
        self.cached.len()
    }

    /// A block for one sequence (refcount 1): the lowest free block, else the
    /// least recently used cached one (forgetting its prefix). `None` when
    /// every block is in use.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let id = match self.free.pop_first() {
            Some(id) => id,
            None => {
                let (_, id) = self.lru.pop_first()?;
                let m = &mut self.meta[id as usize];
                if let Some(h) = m.hash.take() {
                    self.cached.remove(&h);
                }
                m.tokens.clear();
                m.lru_stamp = None;
                id
            }
        };
        self.meta[id as usize].refs = 1;
        Some(id)
    }

    /// One more reader of `id` (a shared prefix).
    fn retain(&mut self, id: BlockId) {
        let m = &mut self.meta[id as usize];
        if m.refs == 0 {
            if let Some(stamp) = m.lru_stamp.take() {
                self.lru.remove(&stamp);
            }
        }
        m.refs += 1;
    }

    /// One reader fewer. At zero a cached block joins the LRU; any other
    /// block is free again.
    pub fn release(&mut self, id: BlockId) {
        let m = &mut self.meta[id as usize];
        debug_assert!(m.refs > 0, "release of a free block {id}");
        m.refs = m.refs.saturating_sub(1);
        if m.refs > 0 {
            return;
        }
        if m.hash.is_some() {
            self.clock += 1;
            m.lru_stamp = Some(self.clock);
            self.lru.insert(self.clock, id);
        } else {
            self.free.insert(id);
        }
    }

    /// Releases a sequence's blocks, last first, so that its tail leaves the
    /// LRU before its head (a shorter prefix outlives a longer one).
    pub fn release_all(&mut self, table: &[BlockId]) {
        for id in table.iter().rev() {
            self.release(*id);
        }
    }

    /// Registers the full block `id` holding `tokens` after the block whose
    /// id is `parent`; returns its chain id. When another block already holds
    /// the same prefix, `id` stays private (freed at release); a block is
    /// registered once.
    pub fn seal(&mut self, id: BlockId, parent: Option<u64>, tokens: &[u32]) -> u64 {
        let h = chain_hash(parent, tokens);
        if self.meta[id as usize].hash.is_some() {
            return h;
        }
        if let std::collections::hash_map::Entry::Vacant(e) = self.cached.entry(h) {
            e.insert(id);
            let m = &mut self.meta[id as usize];
            m.hash = Some(h);
            m.tokens = tokens.to_vec();
        }
        h
    }

    /// The longest run of cached full blocks that begins `tokens`, each
    /// retained for the caller, with the chain id of the last. Only whole
    /// blocks of `tokens` are considered.
    pub fn lookup_prefix(&mut self, tokens: &[u32]) -> (Vec<BlockId>, Option<u64>) {
        let mut found = Vec::new();
        let mut parent = None;
        for chunk in tokens.chunks_exact(BLOCK_SIZE) {
            let h = chain_hash(parent, chunk);
            let Some(&id) = self.cached.get(&h) else {
                break;
            };
            if self.meta[id as usize].tokens != chunk {
                break;
            }
            self.retain(id);
            found.push(id);
            parent = Some(h);
        }
        (found, parent)
    }

    /// Forgets every cached prefix and takes every block back (after a
    /// failed forward pass, the pool's contents are not to be trusted).
    pub fn reset(&mut self) {
        *self = Self::new(self.capacity());
    }

    #[cfg(test)]
    fn check_invariants(&self) {
        let mut seen = vec![0u8; self.capacity()];
        for id in &self.free {
            seen[*id as usize] += 1;
            assert_eq!(self.meta[*id as usize].refs, 0);
            assert!(self.meta[*id as usize].hash.is_none());
        }
        for (stamp, id) in &self.lru {
            seen[*id as usize] += 1;
            let m = &self.meta[*id as usize];
            assert_eq!(m.refs, 0);
            assert_eq!(m.lru_stamp, Some(*stamp));
            assert!(m.hash.is_some());
        }
        for (i, m) in self.meta.iter().enumerate() {
            if m.refs > 0 {
                seen[i] += 1;
                assert!(m.lru_stamp.is_none());
            }
        }
        assert!(seen.iter().all(|n| *n == 1), "{seen:?}");
        for (h, id) in &self.cached {
            assert_eq!(self.meta[*id as usize].hash, Some(*h));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block(start: u32) -> Vec<u32> {
        (start..start + BLOCK_SIZE as u32).collect()
    }

    #[test]
    fn allocates_lowest_first_and_reuses_released_blocks() {
        let mut p = BlockPool::new(4);
        assert_eq!((p.allocate(), p.allocate()), (Some(0), Some(1)));
        p.release(0);
        assert_eq!(
            p.allocate(),
            Some(0),
            "the lowest free block comes back first"
        );
        assert_eq!((p.allocate(), p.allocate()), (Some(2), Some(3)));
        assert_eq!(p.allocate(), None);
        assert_eq!((p.used(), p.available()), (4, 0));
        p.check_invariants();
    }

    #[test]
    fn cached_prefix_is_found_shared_and_evicted_last_first() {
        let mut p = BlockPool::new(4);
        let (a, b) = (p.allocate().unwrap(), p.allocate().unwrap());
        let ha = p.seal(a, None, &block(0));
        let hb = p.seal(b, Some(ha), &block(16));
        assert_eq!(hb, chain_hash(Some(ha), &block(16)));
        // A second sequence with the same prompt plus more shares both blocks.
        let mut prompt = block(0);
        prompt.extend(block(16));
        prompt.extend([7, 8, 9]);
        let (found, last) = p.lookup_prefix(&prompt);
        assert_eq!((found.as_slice(), last), ([a, b].as_slice(), Some(hb)));
        // The first sequence finishes: still referenced by the second.
        p.release_all(&[a, b]);
        assert_eq!(p.cached_idle(), 0);
        p.release_all(&found);
        assert_eq!((p.cached_idle(), p.available()), (2, 4));
        p.check_invariants();
        // A different first block misses.
        let mut other = block(0);
        other[3] = 99;
        assert!(p.lookup_prefix(&other).0.is_empty());
        // Allocation takes free blocks before evicting, then the tail first.
        assert_eq!((p.allocate(), p.allocate()), (Some(2), Some(3)));
        assert_eq!(p.allocate(), Some(b), "the longer prefix goes first");
        let (found, _) = p.lookup_prefix(&prompt);
        assert_eq!(found, vec![a], "the shorter prefix survives");
        p.check_invariants();
    }

    #[test]
    fn a_duplicate_block_stays_private() {
        let mut p = BlockPool::new(2);
        let (a, b) = (p.allocate().unwrap(), p.allocate().unwrap());
        let h1 = p.seal(a, None, &block(0));
        let h2 = p.seal(b, None, &block(0));
        assert_eq!(h1, h2);
        p.release(b);
        assert_eq!(p.cached_idle(), 0, "b was never registered");
        p.release(a);
        assert_eq!(p.cached_idle(), 1);
        p.check_invariants();
    }

    #[test]
    fn geometry_from_budget() {
        // SmolLM2: 30 layers, 3 KV heads of 64.
        let g = KvGeometry::from_budget(30, 192, 384 << 20);
        assert_eq!(KvGeometry::block_bytes(30, 192), 737_280);
        assert_eq!(g.blocks, 546);
        assert!(g.tokens() >= 8192, "one full context of the default model");
        assert!(g.bytes() <= 384 << 20);
        assert_eq!(KvGeometry::from_budget(30, 192, 1000).blocks, 0);
        assert!(KvCache::new(KvGeometry::from_budget(30, 192, 1000), &Device::Cpu).is_err());
    }

    #[test]
    fn writes_land_in_place() {
        let g = KvGeometry {
            layers: 2,
            kv_dim: 4,
            blocks: 2,
        };
        let kv = KvCache::new(g, &Device::Cpu).unwrap();
        let idx = slot_index(&[17, 3], 4, &Device::Cpu).unwrap();
        let k = Tensor::new(&[[1f32, 2., 3., 4.], [5., 6., 7., 8.]], &Device::Cpu).unwrap();
        let v = (&k * 10.0).unwrap();
        kv.write(1, &idx, &k, &v).unwrap();
        let k1 = kv.k(1).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(k1[17], vec![1., 2., 3., 4.]);
        assert_eq!(k1[3], vec![5., 6., 7., 8.]);
        assert_eq!(
            kv.v(1).unwrap().to_vec2::<f32>().unwrap()[3],
            vec![50., 60., 70., 80.]
        );
        let k0 = kv.k(0).unwrap().to_vec2::<f32>().unwrap();
        assert!(k0.iter().flatten().all(|x| *x == 0.0), "layer 0 untouched");
        assert_eq!(slot(&[1, 0], 17), Some(1));
        assert_eq!(slot(&[1, 0], 3), Some(19));
        assert_eq!(slot(&[1, 0], 40), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate,
        Release(usize),
        Seal(usize, u32),
        Lookup(u32, usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            Just(Op::Allocate),
            (0usize..16).prop_map(Op::Release),
            (0usize..16, 0u32..3).prop_map(|(i, t)| Op::Seal(i, t)),
            (0u32..3, 1usize..4).prop_map(|(t, n)| Op::Lookup(t, n)),
        ]
    }

    proptest! {
        /// Any sequence of operations keeps every block in exactly one state,
        /// and never hands out a block that is in use.
        #[test]
        fn pool_invariants_hold(ops in proptest::collection::vec(op(), 1..200)) {
            let mut p = BlockPool::new(6);
            let mut held: Vec<BlockId> = Vec::new();
            for op in ops {
                match op {
                    Op::Allocate => {
                        if let Some(id) = p.allocate() {
                            prop_assert!(!held.contains(&id), "{id} handed out twice");
                            held.push(id);
                        } else {
                            prop_assert_eq!(p.available(), 0);
                        }
                    }
                    Op::Release(i) if !held.is_empty() => {
                        let id = held.swap_remove(i % held.len());
                        p.release(id);
                    }
                    Op::Seal(i, t) if !held.is_empty() => {
                        let id = held[i % held.len()];
                        p.seal(id, None, &block(t * 16));
                    }
                    Op::Lookup(t, n) => {
                        let tokens: Vec<u32> = (0..n).flat_map(|_| block(t * 16)).collect();
                        let (found, _) = p.lookup_prefix(&tokens);
                        held.extend(found);
                    }
                    _ => {}
                }
                p.check_invariants();
                prop_assert_eq!(p.used(), {
                    let mut u = held.clone();
                    u.sort_unstable();
                    u.dedup();
                    u.len()
                });
            }
        }
    }
}
