//! The tests' deterministic generator (xorshift64*): the stress, power-cut,
//! queue and kill -9 tests draw their random choices from it, so that a
//! seed replays them.

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`; `n` > 0.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// In `1..=max`, each power of two about as likely as the next.
    pub fn log_uniform(&mut self, max: u64) -> u64 {
        let exponent = self.below(u64::from(64 - max.leading_zeros()));
        ((1 << exponent) + self.below(1 << exponent)).min(max)
    }
}

/// The environment variable `name` as a number, if set and valid.
pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok()?.parse().ok()
}
