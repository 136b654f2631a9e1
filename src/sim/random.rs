//! Deterministic random streams.
//!
//! Every draw of the simulation comes from a stream named by (seed, user, day, purpose), so
//! the same seed gives the same events whatever order users are processed in, and swapping
//! the notification policy does not shift any user's own behaviour.

use rand::SeedableRng;
use rand_pcg::Pcg64Mcg;

/// The purpose of a stream; keeps streams of one user-day independent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// A user's latent traits and initial state.
    Traits = 1,
    /// A user's behaviour on one day.
    Behaviour = 2,
    /// The logging policy's choice for one user-day.
    Policy = 3,
    /// Whether the scheduler has a fresh suggestion for one user-day.
    Suggestion = 4,
    /// Notification ids.
    NotificationId = 5,
    /// A user's device: how often the app crashes on it (drawn once, as of day 0).
    Device = 6,
    /// Whether the app crashes in each of one user-day's sessions.
    Crash = 7,
}

/// SplitMix64's finaliser: a bijective mix of 64 bits.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit key for (seed, stream, user, day).
pub fn key(seed: u64, stream: Stream, user: u32, day: i32) -> u64 {
    let a = mix(seed ^ mix(stream as u64));
    let b = mix(a ^ u64::from(user));
    mix(b ^ (day as i64 as u64).rotate_left(32))
}

/// A uniform number in [0, 1) for (seed, stream, user, day), without an RNG object.
pub fn unit(seed: u64, stream: Stream, user: u32, day: i32) -> f64 {
    (key(seed, stream, user, day) >> 11) as f64 / (1u64 << 53) as f64
}

/// A random number generator for (seed, stream, user, day).
pub fn rng(seed: u64, stream: Stream, user: u32, day: i32) -> Pcg64Mcg {
    Pcg64Mcg::seed_from_u64(key(seed, stream, user, day))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |s, u, d| rng(7, s, u, d).random::<u64>();
        assert_eq!(draw(Stream::Behaviour, 3, 4), draw(Stream::Behaviour, 3, 4));
        assert_ne!(draw(Stream::Behaviour, 3, 4), draw(Stream::Behaviour, 3, 5));
        assert_ne!(draw(Stream::Behaviour, 3, 4), draw(Stream::Behaviour, 4, 4));
        assert_ne!(draw(Stream::Behaviour, 3, 4), draw(Stream::Policy, 3, 4));
        assert_ne!(
            rng(7, Stream::Traits, 0, 0).random::<u64>(),
            rng(8, Stream::Traits, 0, 0).random::<u64>()
        );
    }

    #[test]
    fn unit_is_in_range_and_roughly_uniform() {
        let n = 20_000;
        let mean = (0..n)
            .map(|u| unit(1, Stream::Policy, u, 2))
            .inspect(|x| assert!((0.0..1.0).contains(x)))
            .sum::<f64>()
            / f64::from(n);
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
    }
}
