//! Offset generators and the random number generator of the hot path.
//!
//! Random patterns visit every block of the region exactly once per pass, in
//! an order given by a keyed bijection on `[0, 2^k)` (odd multiplications,
//! additions and xor-shifts, each invertible modulo `2^k`); values at or above
//! the block count are skipped, which costs at most one skip per block. No
//! memory per block, no allocation.

/// xorshift64* (Vigna): fast, good enough for offsets, mixes and data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(splitmix(seed) | 1)
    }
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in `0..100`.
    #[inline]
    pub fn percent(&mut self) -> u8 {
        ((self.next_u64() >> 32) % 100) as u8
    }
}

/// splitmix64 finaliser: turns related seeds into unrelated ones.
#[inline]
pub fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A keyed permutation of `0..2^bits`.
#[derive(Debug, Clone)]
struct Permutation {
    mask: u64,
    s1: u32,
    s2: u32,
    m1: u64,
    m2: u64,
    m3: u64,
    a1: u64,
    a2: u64,
}

impl Permutation {
    fn new(bits: u32, key: u64) -> Self {
        let mask = if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        };
        let k1 = splitmix(key);
        let k2 = splitmix(k1);
        let k3 = splitmix(k2);
        let k4 = splitmix(k3);
        let k5 = splitmix(k4);
        Permutation {
            mask,
            s1: (bits / 2).max(1),
            s2: (bits / 3).max(1),
            m1: k1 | 1,
            m2: k2 | 1,
            m3: k3 | 1,
            a1: k4,
            a2: k5,
        }
    }

    #[inline]
    fn apply(&self, mut x: u64) -> u64 {
        let m = self.mask;
        x = x.wrapping_mul(self.m1).wrapping_add(self.a1) & m;
        x ^= x >> self.s1;
        x = x.wrapping_mul(self.m2).wrapping_add(self.a2) & m;
        x ^= x >> self.s2;
        x = x.wrapping_mul(self.m3) & m;
        x ^= x >> self.s1;
        x
    }
}

/// Yields block indices `0..blocks`, one pass at a time.
#[derive(Debug, Clone)]
pub struct OffsetGen {
    blocks: u64,
    random: bool,
    key: u64,
    /// Next index into the pass (`0..=mask` for random, `0..blocks` for seq).
    pos: u64,
    /// Passes started so far.
    pass: u64,
    perm: Permutation,
    bits: u32,
}

impl OffsetGen {
    pub fn new(blocks: u64, random: bool, key: u64) -> Self {
        let bits = if blocks <= 1 {
            0
        } else {
            64 - (blocks - 1).leading_zeros()
        };
        OffsetGen {
            blocks,
            random,
            key,
            pos: 0,
            pass: 1,
            perm: Permutation::new(bits, key),
            bits,
        }
    }

    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Passes started (1 during the first pass).
    pub fn pass(&self) -> u64 {
        self.pass
    }

    /// Next block of the current pass, or `None` when the pass is complete.
    #[inline]
    pub fn next_block(&mut self) -> Option<u64> {
        if !self.random {
            if self.pos >= self.blocks {
                return None;
            }
            self.pos += 1;
            return Some(self.pos - 1);
        }
        while self.pos <= self.perm.mask {
            let v = self.perm.apply(self.pos);
            self.pos += 1;
            if v < self.blocks {
                return Some(v);
            }
        }
        None
    }

    /// Start the next pass (a fresh permutation for random patterns).
    pub fn next_pass(&mut self) {
        self.pos = 0;
        self.pass += 1;
        if self.random {
            self.perm = Permutation::new(self.bits, self.key ^ splitmix(self.pass));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one_pass(g: &mut OffsetGen) -> Vec<u64> {
        let mut v = Vec::new();
        while let Some(b) = g.next_block() {
            v.push(b);
        }
        v
    }

    #[test]
    fn sequential_in_order() {
        let mut g = OffsetGen::new(5, false, 1);
        assert_eq!(one_pass(&mut g), vec![0, 1, 2, 3, 4]);
        assert_eq!(g.next_block(), None);
        g.next_pass();
        assert_eq!(one_pass(&mut g), vec![0, 1, 2, 3, 4]);
        assert_eq!(g.pass(), 2);
    }

    #[test]
    fn random_covers_every_block_exactly_once() {
        for &n in &[
            1u64, 2, 3, 7, 8, 9, 100, 1000, 4096, 4097, 65_535, 262_144, 300_001,
        ] {
            for key in [0u64, 1, 0xdead_beef] {
                let mut g = OffsetGen::new(n, true, key);
                for _pass in 0..2 {
                    let v = one_pass(&mut g);
                    assert_eq!(v.len() as u64, n, "n={n} key={key}");
                    let mut seen = vec![false; n as usize];
                    for b in v {
                        assert!(!seen[b as usize], "block {b} twice (n={n})");
                        seen[b as usize] = true;
                    }
                    g.next_pass();
                }
            }
        }
    }

    #[test]
    fn random_is_shuffled_and_passes_differ() {
        let mut g = OffsetGen::new(10_000, true, 42);
        let a = one_pass(&mut g);
        g.next_pass();
        let b = one_pass(&mut g);
        let in_place = a
            .iter()
            .enumerate()
            .filter(|(i, &x)| *i as u64 == x)
            .count();
        assert!(in_place < 100, "{in_place} blocks stayed in place");
        assert_ne!(a, b);
        // Neighbours in the order are rarely neighbours on disk.
        let adjacent = a.windows(2).filter(|w| w[0].abs_diff(w[1]) == 1).count();
        assert!(adjacent < 100, "{adjacent} sequential steps");
        // Different keys, different orders.
        let mut h = OffsetGen::new(10_000, true, 43);
        assert_ne!(a, one_pass(&mut h));
    }

    #[test]
    fn rng_percent_is_roughly_uniform() {
        let mut r = Rng::new(7);
        let reads = (0..100_000).filter(|_| r.percent() < 30).count();
        assert!((28_000..32_000).contains(&reads), "{reads}");
    }
}
