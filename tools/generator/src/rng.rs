//! Small, fast, seedable random number generation.
//!
//! Test data needs speed and reproducibility, not cryptographic strength, so this is wyrand
//! seeded through splitmix64. Every chunk of events gets its own generator derived from
//! `(seed, chunk index)`, which is what keeps output identical for any thread count.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// One round of splitmix64: a good bijective mixer for turning structured input into seeds.
#[inline]
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The wyrand generator: one 64-bit state word, a multiply and an xor per output.
#[derive(Clone, Debug)]
pub struct WyRand {
    state: u64,
}

impl WyRand {
    pub fn new(seed: u64) -> Self {
        Self { state: splitmix64(seed) }
    }

    /// The generator for one chunk of a run; depends only on the run seed and the chunk index.
    pub fn for_chunk(seed: u64, chunk: u64) -> Self {
        Self::new(seed ^ splitmix64(chunk.wrapping_add(0x6a09_e667_f3bc_c908)))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = u128::from(self.state) * u128::from(self.state ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    }

    /// A value in `0..n` by multiply-shift; the bias is below 2^-40 for the small `n` used here.
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// An index into a slice of length `len`.
    #[inline]
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }
}

/// A seed for runs without `--seed`: std's per-process random hash keys mixed with the clock.
pub fn random_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or_default();
    hasher.write_u128(nanos);
    hasher.write_u32(std::process::id());
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_sequence_and_chunks_differ() {
        let (mut a, mut b) = (WyRand::new(7), WyRand::new(7));
        for _ in 0..8 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut c0 = WyRand::for_chunk(7, 0);
        let mut c1 = WyRand::for_chunk(7, 1);
        assert_ne!(c0.next_u64(), c1.next_u64());
    }

    #[test]
    fn below_stays_in_range_and_hits_every_value() {
        let mut rng = WyRand::new(1);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = rng.below(7);
            assert!(v < 7);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[test]
    fn random_seeds_differ_between_calls() {
        assert_ne!(random_seed(), random_seed());
    }
}
