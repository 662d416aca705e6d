//! Seeded randomness that does not depend on thread scheduling: SplitMix64 for augmentation and
//! shuffles, and seed mixing for the seeds handed to libtorch (per training step, per MC sample).

/// SplitMix64 (Steele et al. 2014): small, and cheap to seed once per example.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Combines two values into a seed (e.g. `mix_seed(mix_seed(seed, epoch), index)`).
pub(crate) fn mix_seed(a: u64, b: u64) -> u64 {
    SplitMix64::new(a ^ SplitMix64::new(b).next_u64()).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        // The first outputs for seed 1234567 of Vigna's splitmix64.c.
        let mut r = SplitMix64::new(1234567);
        let got: Vec<u64> = (0..3).map(|_| r.next_u64()).collect();
        assert_eq!(
            got,
            [
                6457827717110365317,
                3203168211198807973,
                9817491932198370423
            ]
        );
    }

    #[test]
    fn mixed_seeds_differ_by_either_part() {
        let seeds = [
            mix_seed(1, 0),
            mix_seed(1, 1),
            mix_seed(2, 0),
            mix_seed(0, 1),
        ];
        for (i, a) in seeds.iter().enumerate() {
            assert!(seeds[i + 1..].iter().all(|b| a != b), "{seeds:?}");
        }
        assert_eq!(mix_seed(7, 9), mix_seed(7, 9));
    }
}
