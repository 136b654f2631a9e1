//! The notification ranker as nudge-serve runs it: a loaded champion whose feature names
//! are resolved once, at load, to where each value comes from (the user's online
//! features or the candidate's context), and the row it scores, built exactly as
//! `gold.training_notif_ranker` builds a training example.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;

use crate::features::catalog::FeatureCatalog;
use crate::features::row::FeatureRow;
use crate::models::preprocess::ModelInput;
use crate::models::{Model, ModelError};

/// The registry name of the ranker.
pub const RANKER: &str = "notif_ranker";

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
}

/// A loaded ranker with its inputs resolved.
#[derive(Debug)]
pub struct Ranker {
    /// The model.
    pub model: Model,
    /// Its registry version.
    pub version: String,
    numeric: Vec<Numeric>,
    categorical: Vec<Categorical>,
}

impl Ranker {
    /// Resolves `model`'s inputs against the catalog and the context the server knows;
    /// a feature it cannot provide refuses the model.
    pub fn new(
        model: Model,
        version: String,
        catalog: &FeatureCatalog,
    ) -> Result<Self, ModelError> {
        let index = |name: &str| catalog.index(name);
        let unknown = |name: &str| {
            ModelError::Invalid(format!(
                "the ranker needs {name}, which neither the feature catalog nor the request provides"
            ))
        };
        let numeric = model
            .numeric_features()
            .map(|name| match name {
                "hours_from_usual_session" => index("usual_session_hour")
                    .map(Numeric::HoursFromUsualSession)
                    .ok_or_else(|| unknown(name)),
                _ => index(name)
                    .map(Numeric::Feature)
                    .ok_or_else(|| unknown(name)),
            })
            .collect::<Result<_, _>>()?;
        let categorical = model
            .categorical_features()
            .map(|name| match name {
                "notif_type" => Ok(Categorical::NotifType),
                "local_hour" => Ok(Categorical::LocalHour),
                "local_weekday" => Ok(Categorical::LocalWeekday),
                _ => index(name)
                    .map(Categorical::Feature)
                    .ok_or_else(|| unknown(name)),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            model,
            version,
            numeric,
            categorical,
        })
    }

    /// The row of one candidate.
    pub fn row<'a>(
        &'a self,
        features: Option<&'a FeatureRow>,
        context: &'a SendContext,
        notif_type: &'a str,
    ) -> RankerRow<'a> {
        RankerRow {
            ranker: self,
            features,
            context,
            notif_type,
        }
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

/// One candidate's model input.
pub struct RankerRow<'a> {
    ranker: &'a Ranker,
    features: Option<&'a FeatureRow>,
    context: &'a SendContext,
    notif_type: &'a str,
}

impl RankerRow<'_> {
    fn feature(&self, index: usize) -> Option<&crate::features::row::FeatureValue> {
        self.features.and_then(|row| row.values.get(index))
    }
}

impl ModelInput for RankerRow<'_> {
    fn numeric(&self, index: usize) -> Option<f64> {
        match self.ranker.numeric[index] {
            Numeric::Feature(i) => self.feature(i)?.as_number(),
            Numeric::HoursFromUsualSession(i) => {
                let usual = self.feature(i)?.as_number()?;
                Some(hours_from_usual_session(self.context.now, usual))
            }
        }
    }

    fn categorical(&self, index: usize) -> Option<&str> {
        match self.ranker.categorical[index] {
            Categorical::Feature(i) => self.feature(i)?.as_category(),
            Categorical::NotifType => Some(self.notif_type),
            Categorical::LocalHour => Some(&self.context.local_hour),
            Categorical::LocalWeekday => Some(&self.context.local_weekday),
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
