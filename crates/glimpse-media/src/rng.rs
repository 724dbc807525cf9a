//! A tiny deterministic random number generator, glimpse's only one.
//!
//! The procedural world must produce identical bytes for a seed on every platform and with every
//! version of every dependency, and ZeroTA's seeded mask placement must too, so glimpse carries
//! its own generator (SplitMix64) instead of relying on `rand`, whose algorithms and stream
//! layouts may change between releases.

/// SplitMix64: one `u64` of state, a fixed increment and a strong output mix. Statistically good
/// enough for sampling scenes, trivially portable, and cheap to create many of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng {
    state: u64,
}

/// The golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a bijective mix in which every input bit affects every output bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        mix(self.state)
    }

    /// A uniform index in `0..n`, by Lemire's multiply-shift (bias below 2^-40 for any `n` this
    /// crate uses, and no loop, so the number of draws per call is always one).
    ///
    /// # Panics
    /// If `n == 0`: there is no index to return, which is a programmer error.
    pub fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "Rng::below needs a non-empty range");
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// A uniform `f64` in `[0, 1)`, with the 53 bits a double can hold exactly.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform `f64` between `lo` and `hi` (`lo` included; either order works).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// `true` with probability `p` (never for `p <= 0` or NaN, always for `p >= 1`).
    pub fn chance(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// A uniformly chosen element of `items`.
    ///
    /// # Panics
    /// If `items` is empty (a programmer error, like [`Rng::below`] with zero).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// A seed for an independent stream `stream` of the experiment seeded by `seed`, so that, say, the
/// training images and the evaluation videos of one seed never share random numbers, and adding
/// draws to one stream never shifts another.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    mix(mix(seed ^ 0xD1B5_4A32_D192_ED03).wrapping_add(stream.wrapping_mul(GAMMA)) ^ stream.rotate_left(32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_reference_splitmix64() {
        // Reference values of SplitMix64 seeded with 1234567 (from the algorithm's C reference).
        let mut rng = Rng::new(1234567);
        assert_eq!(rng.next_u64(), 6457827717110365317);
        assert_eq!(rng.next_u64(), 3203168211198807973);
    }

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn below_is_in_range_and_covers_it() {
        let mut rng = Rng::new(1);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[rng.below(7)] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn uniform_and_range_stay_in_bounds() {
        let mut rng = Rng::new(2);
        let mut sum = 0.0;
        for _ in 0..10_000 {
            let u = rng.uniform();
            assert!((0.0..1.0).contains(&u));
            sum += u;
            let r = rng.range(3.0, 5.0);
            assert!((3.0..5.0).contains(&r));
        }
        assert!((sum / 10_000.0 - 0.5).abs() < 0.02);
    }

    #[test]
    fn chance_handles_extremes() {
        let mut rng = Rng::new(3);
        assert!((0..100).all(|_| !rng.chance(0.0) && rng.chance(1.0) && !rng.chance(f64::NAN)));
        let hits = (0..10_000).filter(|_| rng.chance(0.3)).count();
        assert!((2800..3200).contains(&hits), "{hits}");
    }

    #[test]
    fn pick_returns_an_element() {
        let mut rng = Rng::new(4);
        let items = ["a", "b", "c"];
        for _ in 0..50 {
            assert!(items.contains(rng.pick(&items)));
        }
    }

    #[test]
    fn derived_seeds_differ_by_stream_and_seed() {
        let seeds: Vec<u64> = (0..4).flat_map(|s| (0..4).map(move |t| derive_seed(s, t))).collect();
        for (i, a) in seeds.iter().enumerate() {
            for b in &seeds[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(derive_seed(9, 3), derive_seed(9, 3));
        assert_ne!(derive_seed(0, 1), derive_seed(1, 0));
    }
}
