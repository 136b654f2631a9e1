//! When in the day a user opens the app: a piecewise-constant density over the 24 UTC
//! hours, peaked at the user's preferred local hour and low at night.
//!
//! Session times are drawn from it, and the simulator's ground truth integrates it, so
//! both use the same [`HourProfile::mass_until`].

/// Spread (hours) of app use around the preferred hour.
const SPREAD_HOURS: f64 = 2.5;
/// Weight of local night hours (00:00–06:00) relative to the bell around the peak.
const NIGHT_FACTOR: f64 = 0.15;
/// Floor so that every hour has some chance.
const FLOOR: f64 = 0.03;

/// Session-time density of one user over the UTC day.
#[derive(Debug, Clone, PartialEq)]
pub struct HourProfile {
    /// `cumulative[h]` = share of the day's sessions before UTC hour `h`; `cumulative[24] = 1`.
    cumulative: [f64; 25],
}

impl HourProfile {
    /// The profile of a user whose peak is `preferred_local_hour`, at `utc_offset` hours.
    pub fn new(preferred_local_hour: u8, utc_offset: i32) -> Self {
        let weights: [f64; 24] = std::array::from_fn(|utc_hour| {
            let local = (utc_hour as i32 + utc_offset).rem_euclid(24);
            let d = (local - i32::from(preferred_local_hour)).rem_euclid(24);
            let distance = f64::from(d.min(24 - d));
            let bell = (-distance * distance / (2.0 * SPREAD_HOURS * SPREAD_HOURS)).exp() + FLOOR;
            if local < 6 { bell * NIGHT_FACTOR } else { bell }
        });
        let total: f64 = weights.iter().sum();
        let mut cumulative = [0.0; 25];
        for h in 0..24 {
            cumulative[h + 1] = cumulative[h] + weights[h] / total;
        }
        cumulative[24] = 1.0;
        Self { cumulative }
    }

    /// Share of the day's sessions in [00:00 UTC, `secs`), for `secs` in [0, 86 400].
    pub fn mass_until(&self, secs: f64) -> f64 {
        let hours = (secs / 3600.0).clamp(0.0, 24.0);
        let h = (hours.floor() as usize).min(23);
        let within = hours - h as f64;
        self.cumulative[h] + within * (self.cumulative[h + 1] - self.cumulative[h])
    }

    /// The time of day (seconds after UTC midnight) at quantile `u` in [0, 1): the
    /// inverse of [`HourProfile::mass_until`], so a uniform `u` samples a session time.
    pub fn sample_secs(&self, u: f64) -> f64 {
        let u = u.clamp(0.0, 1.0 - f64::EPSILON);
        let h = self.cumulative[1..].partition_point(|&c| c <= u).min(23);
        let width = self.cumulative[h + 1] - self.cumulative[h];
        let within = if width > 0.0 {
            (u - self.cumulative[h]) / width
        } else {
            0.0
        };
        (h as f64 + within) * 3600.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn mass_peaks_at_the_preferred_hour_and_is_low_at_night() {
        let p = HourProfile::new(20, 0);
        let hour = |h: f64| p.mass_until((h + 1.0) * 3600.0) - p.mass_until(h * 3600.0);
        assert!(hour(20.0) > hour(15.0));
        assert!(hour(15.0) > hour(3.0));
        assert_eq!(p.mass_until(0.0), 0.0);
        assert!((p.mass_until(86_400.0) - 1.0).abs() < 1e-12);
        // The same local peak at UTC+9 sits nine hours earlier in UTC.
        let tokyo = HourProfile::new(20, 9);
        let t_hour = |h: f64| tokyo.mass_until((h + 1.0) * 3600.0) - tokyo.mass_until(h * 3600.0);
        assert!((t_hour(11.0) - hour(20.0)).abs() < 1e-12);
    }

    proptest! {
        #[test]
        fn sampling_inverts_the_mass(pref in 0u8..24, offset in -10i32..10, u in 0.0f64..1.0) {
            let p = HourProfile::new(pref, offset);
            let secs = p.sample_secs(u);
            prop_assert!((0.0..=86_400.0).contains(&secs));
            prop_assert!((p.mass_until(secs) - u).abs() < 1e-9);
        }

        #[test]
        fn mass_is_monotone(pref in 0u8..24, a in 0.0f64..86_400.0, b in 0.0f64..86_400.0) {
            let p = HourProfile::new(pref, 0);
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            prop_assert!(p.mass_until(lo) <= p.mass_until(hi));
        }
    }
}
