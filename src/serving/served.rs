//! The models nudge-serve runs: a loaded champion whose feature names are resolved once,
//! at load, to where each value comes from (the user's online features or what the
//! request says), and the row it scores, built exactly as the model's training view
//! builds an example (`gold.training_notif_ranker`, `gold.training_churn_14d`,
//! `gold.training_paywall`).

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

use crate::features::catalog::FeatureCatalog;
use crate::features::row::{FeatureRow, FeatureValue};
use crate::models::preprocess::ModelInput;
use crate::models::{Model, ModelError};

/// A model nudge-serve runs, by registry name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// `notif_ranker`: P(return within 24 h) of a notification sent now.
    Ranker,
    /// `churn_14d`: P(no app open in the next 14 days).
    Churn,
    /// `paywall_trial`: P(a trial starts within 24 h of a paywall view).
    PaywallTrial,
    /// `paywall_bounce`: P(no app open within 24 h of a paywall view).
    PaywallBounce,
}

impl Served {
    /// Every served model.
    pub const ALL: [Served; 4] = [
        Served::Ranker,
        Served::Churn,
        Served::PaywallTrial,
        Served::PaywallBounce,
    ];

    /// The registry name.
    pub fn name(self) -> &'static str {
        match self {
            Served::Ranker => "notif_ranker",
            Served::Churn => "churn_14d",
            Served::PaywallTrial => "paywall_trial",
            Served::PaywallBounce => "paywall_bounce",
        }
    }
}

/// Where a numeric input comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Numeric {
    /// Catalog feature at this index.
    Feature(usize),
    /// Hours between the send and the user's usual session hour (catalog index of
    /// `usual_session_hour`), as `gold.hours_from_usual_session` computes it.
    HoursFromUsualSession(usize),
}

/// Where a categorical input comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Categorical {
    /// Catalog feature at this index.
    Feature(usize),
    /// The candidate's type.
    NotifType,
    /// Local hour of the send, "0".."23".
    LocalHour,
    /// ISO weekday of the send, "1" (Monday)..“7”.
    LocalWeekday,
    /// The paywall's placement.
    Placement,
}

/// What a request gives a row beyond the user's features.
#[derive(Debug, Clone, Copy)]
pub enum RequestContext<'a> {
    /// A notification candidate at a send time.
    Notification {
        /// When and where.
        send: &'a SendContext,
        /// The candidate's type.
        notif_type: &'a str,
    },
    /// A paywall view.
    Paywall {
        /// The placement.
        placement: &'a str,
    },
    /// Nothing: the user's features only.
    User,
}

/// A loaded model with its inputs resolved.
#[derive(Debug)]
pub struct ServedModel {
    /// Which model.
    pub served: Served,
    /// The model.
    pub model: Model,
    /// Its registry version.
    pub version: String,
    numeric: Vec<Numeric>,
    categorical: Vec<Categorical>,
}

impl ServedModel {
    /// Resolves `model`'s inputs against the catalog and what requests for `served`
    /// provide; a feature it cannot get refuses the model.
    pub fn new(
        served: Served,
        model: Model,
        version: String,
        catalog: &FeatureCatalog,
    ) -> Result<Self, ModelError> {
        let ranker = served == Served::Ranker;
        let paywall = matches!(served, Served::PaywallTrial | Served::PaywallBounce);
        let unknown = |name: &str| {
            ModelError::Invalid(format!(
                "{} needs {name}, which neither the feature catalog nor the request provides",
                served.name()
            ))
        };
        let numeric = model
            .numeric_features()
            .map(|name| match name {
                "hours_from_usual_session" if ranker => catalog
                    .index("usual_session_hour")
                    .map(Numeric::HoursFromUsualSession)
                    .ok_or_else(|| unknown(name)),
                _ => catalog
                    .index(name)
                    .map(Numeric::Feature)
                    .ok_or_else(|| unknown(name)),
            })
            .collect::<Result<_, _>>()?;
        let categorical = model
            .categorical_features()
            .map(|name| match name {
                "notif_type" if ranker => Ok(Categorical::NotifType),
                "local_hour" if ranker => Ok(Categorical::LocalHour),
                "local_weekday" if ranker => Ok(Categorical::LocalWeekday),
                "placement" if paywall => Ok(Categorical::Placement),
                _ => catalog
                    .index(name)
                    .map(Categorical::Feature)
                    .ok_or_else(|| unknown(name)),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            served,
            model,
            version,
            numeric,
            categorical,
        })
    }

    /// The calibrated probability of one row: the user's `features` (`None` = a cold
    /// start, every feature missing) and what the request gives.
    pub fn score(&self, features: Option<&FeatureRow>, request: RequestContext<'_>) -> f64 {
        self.score_all(features, [request])[0]
    }

    /// The calibrated probabilities of one user's rows, one per request context, scored
    /// together (a forest walks its trees once for all of them).
    pub fn score_all<'a>(
        &self,
        features: Option<&FeatureRow>,
        requests: impl IntoIterator<Item = RequestContext<'a>>,
    ) -> Vec<f64> {
        let rows: Vec<ServedRow> = requests
            .into_iter()
            .map(|request| ServedRow {
                model: self,
                features,
                request,
            })
            .collect();
        self.model.score_all(&rows)
    }
}

/// When and where a send would happen: shared by a request's candidates.
#[derive(Debug, Clone)]
pub struct SendContext {
    /// The send time.
    pub now: DateTime<Utc>,
    /// Local hour as text, as the training view has it.
    pub local_hour: String,
    /// Local ISO weekday as text.
    pub local_weekday: String,
    /// Minutes after local midnight (for quiet hours).
    pub local_minute: u16,
}

impl SendContext {
    /// The context of a send at `now` to a user in `timezone` (UTC when unknown).
    pub fn new(now: DateTime<Utc>, timezone: Option<Tz>) -> Self {
        let local = now.with_timezone(&timezone.unwrap_or(Tz::UTC));
        Self {
            now,
            local_hour: local.hour().to_string(),
            local_weekday: local.weekday().number_from_monday().to_string(),
            local_minute: (local.hour() * 60 + local.minute()) as u16,
        }
    }
}

/// Circular distance in hours (0..=12) between the UTC time of day of `at` and
/// `usual_hour`, step by step as `gold.hours_from_usual_session` computes it (migration
/// 0012), so trainer and server agree to the bit.
pub fn hours_from_usual_session(at: DateTime<Utc>, usual_hour: f64) -> f64 {
    let seconds_of_day = at.timestamp_micros().rem_euclid(86_400_000_000) as f64 / 1e6;
    let x = seconds_of_day / 3600.0 - usual_hour + 48.0;
    let d = x - 24.0 * (x / 24.0).floor();
    f64::from((12.0 - (12.0 - d).abs()) as f32)
}

/// One row's model input.
struct ServedRow<'a> {
    model: &'a ServedModel,
    features: Option<&'a FeatureRow>,
    request: RequestContext<'a>,
}

impl ServedRow<'_> {
    fn feature(&self, index: usize) -> Option<&FeatureValue> {
        self.features.and_then(|row| row.values.get(index))
    }
}

impl ModelInput for ServedRow<'_> {
    fn numeric(&self, index: usize) -> Option<f64> {
        match (self.model.numeric[index], self.request) {
            (Numeric::Feature(i), _) => self.feature(i)?.as_number(),
            (Numeric::HoursFromUsualSession(i), RequestContext::Notification { send, .. }) => {
                let usual = self.feature(i)?.as_number()?;
                Some(hours_from_usual_session(send.now, usual))
            }
            // Resolution at load only asks a request for what its kind provides.
            (Numeric::HoursFromUsualSession(_), _) => None,
        }
    }

    fn categorical(&self, index: usize) -> Option<&str> {
        use RequestContext::{Notification, Paywall};
        match (self.model.categorical[index], self.request) {
            (Categorical::Feature(i), _) => self.feature(i)?.as_category(),
            (Categorical::NotifType, Notification { notif_type, .. }) => Some(notif_type),
            (Categorical::LocalHour, Notification { send, .. }) => Some(&send.local_hour),
            (Categorical::LocalWeekday, Notification { send, .. }) => Some(&send.local_weekday),
            (Categorical::Placement, Paywall { placement }) => Some(placement),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_is_the_local_hour_weekday_and_minute() {
        let now = DateTime::parse_from_rfc3339("2026-11-22T18:05:00Z")
            .unwrap()
            .to_utc();
        let berlin = SendContext::new(now, Some(chrono_tz::Europe::Berlin));
        assert_eq!(
            (
                berlin.local_hour.as_str(),
                berlin.local_weekday.as_str(),
                berlin.local_minute
            ),
            ("19", "7", 19 * 60 + 5)
        );
        let utc = SendContext::new(now, None);
        assert_eq!(
            (utc.local_hour.as_str(), utc.local_minute),
            ("18", 18 * 60 + 5)
        );
    }

    #[test]
    fn hours_from_usual_session_wraps_around_midnight() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        assert_eq!(
            hours_from_usual_session(at("2026-01-09T23:00:00Z"), 1.0),
            2.0
        );
        assert_eq!(
            hours_from_usual_session(at("2026-01-09T05:00:00Z"), 23.5),
            5.5
        );
        assert_eq!(
            hours_from_usual_session(at("2026-01-09T18:30:00Z"), 6.5),
            12.0
        );
        assert_eq!(
            hours_from_usual_session(at("2026-01-09T12:00:00Z"), 12.0),
            0.0
        );
    }
}
