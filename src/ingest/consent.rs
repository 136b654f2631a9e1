//! Analytics consent: after a withdrawal, a user's events are not stored until consent
//! is granted again. Decided by event time, so late or out-of-order arrivals are judged
//! by when they happened, not when they reached us.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

/// One consent change of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    /// Keyed hash of the user.
    pub user_hash: String,
    /// When the change happened.
    pub at: DateTime<Utc>,
    /// Whether consent was granted (`false`: withdrawn).
    pub granted: bool,
}

/// The consent history of the users of one batch, ordered by time per user.
#[derive(Debug, Default)]
pub struct ConsentLedger {
    by_user: HashMap<String, Vec<(DateTime<Utc>, bool)>>,
}

impl ConsentLedger {
    /// Builds a ledger from changes in any order.
    pub fn new(changes: impl IntoIterator<Item = ConsentChange>) -> Self {
        let mut by_user: HashMap<String, Vec<(DateTime<Utc>, bool)>> = HashMap::new();
        for change in changes {
            by_user
                .entry(change.user_hash)
                .or_default()
                .push((change.at, change.granted));
        }
        for history in by_user.values_mut() {
            // At one instant a withdrawal sorts last, so it wins: the safe side.
            history.sort_unstable_by_key(|(at, granted)| (*at, !*granted));
        }
        Self { by_user }
    }

    /// Whether an event of `user_hash` at `at` may be stored: yes unless the latest change
    /// at or before `at` withdrew consent. A user with no history has not withdrawn.
    pub fn allows(&self, user_hash: &str, at: DateTime<Utc>) -> bool {
        let Some(history) = self.by_user.get(user_hash) else {
            return true;
        };
        let upto = history.partition_point(|(t, _)| *t <= at);
        upto == 0 || history[upto - 1].1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, h, 0, 0).unwrap()
    }

    fn change(user: &str, h: u32, granted: bool) -> ConsentChange {
        ConsentChange {
            user_hash: user.into(),
            at: t(h),
            granted,
        }
    }

    #[test]
    fn withdrawal_blocks_until_granted_again() {
        let ledger = ConsentLedger::new([change("a", 14, true), change("a", 10, false)]);
        assert!(ledger.allows("a", t(9)));
        assert!(!ledger.allows("a", t(10)));
        assert!(!ledger.allows("a", t(13)));
        assert!(ledger.allows("a", t(14)));
        assert!(ledger.allows("b", t(12)), "other users are unaffected");
    }

    proptest! {
        #[test]
        fn the_latest_change_before_the_event_decides(
            changes in proptest::collection::vec((0u32..24, any::<bool>()), 0..12),
            at in 0u32..24,
        ) {
            let latest = changes.iter().map(|(h, _)| *h).filter(|h| *h <= at).max();
            let expected = latest
                .is_none_or(|last| changes.iter().all(|(h, g)| *h != last || *g));
            let ledger = ConsentLedger::new(changes.iter().map(|(h, g)| change("u", *h, *g)));
            prop_assert_eq!(ledger.allows("u", t(at)), expected);
        }
    }
}
