//! One user's features from one snapshot: the values in catalog order, typed by kind.
//!
//! The same [`FeatureRow`] is read from Postgres (training sets, materialisation, the
//! embedded store), encoded for the online store, and returned by `GET /v1/features`, so
//! the trainer and nudge-serve see the same values, bit for bit.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use serde::ser::SerializeMap;
use serde_json::value::RawValue;
use sqlx::Row;
use sqlx::postgres::PgRow;

use super::catalog::{FeatureCatalog, FeatureKind};

/// One feature's value.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue {
    /// No value (e.g. hours since the last session, before any session).
    Missing,
    /// A count.
    Count(i32),
    /// Hours, days, a rate or a score (Postgres `real`).
    Real(f32),
    /// A flag.
    Flag(bool),
    /// A text value: a band name, a timezone.
    Text(String),
}

impl FeatureValue {
    /// Parses one JSON value of a feature of `kind` exactly: reals are read straight
    /// into `f32`, so the shortest form written by [`Serialize`] reads back bit for bit.
    pub fn parse(kind: FeatureKind, json: &str) -> Option<Self> {
        if json == "null" {
            return Some(FeatureValue::Missing);
        }
        match kind {
            FeatureKind::Count => json.parse().ok().map(FeatureValue::Count),
            FeatureKind::Hours
            | FeatureKind::Days
            | FeatureKind::Rate
            | FeatureKind::Score
            | FeatureKind::HourOfDay => json.parse().ok().map(FeatureValue::Real),
            FeatureKind::Flag => json.parse().ok().map(FeatureValue::Flag),
            FeatureKind::Band | FeatureKind::Timezone => {
                serde_json::from_str(json).ok().map(FeatureValue::Text)
            }
        }
    }

    /// The value as the trainer reads a numeric column: counts and reals widened to
    /// `f64`, flags as 0 or 1; `None` for a missing value or a band.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            FeatureValue::Count(v) => Some(f64::from(*v)),
            FeatureValue::Real(v) => Some(f64::from(*v)),
            FeatureValue::Flag(v) => Some(f64::from(u8::from(*v))),
            FeatureValue::Missing | FeatureValue::Text(_) => None,
        }
    }

    /// The value as a category: a band's name; `None` otherwise.
    pub fn as_category(&self) -> Option<&str> {
        match self {
            FeatureValue::Text(v) => Some(v),
            _ => None,
        }
    }

    /// Reads column `name` of a feature of `kind` from a Postgres row.
    fn from_column(row: &PgRow, name: &str, kind: FeatureKind) -> Result<Self, sqlx::Error> {
        let value = match kind {
            FeatureKind::Count => row
                .try_get::<Option<i32>, _>(name)?
                .map(FeatureValue::Count),
            FeatureKind::Hours
            | FeatureKind::Days
            | FeatureKind::Rate
            | FeatureKind::Score
            | FeatureKind::HourOfDay => row
                .try_get::<Option<f32>, _>(name)?
                .filter(|v| v.is_finite())
                .map(FeatureValue::Real),
            FeatureKind::Flag => row
                .try_get::<Option<bool>, _>(name)?
                .map(FeatureValue::Flag),
            FeatureKind::Band | FeatureKind::Timezone => row
                .try_get::<Option<String>, _>(name)?
                .map(FeatureValue::Text),
        };
        Ok(value.unwrap_or(FeatureValue::Missing))
    }
}

impl Serialize for FeatureValue {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            FeatureValue::Missing => serializer.serialize_none(),
            FeatureValue::Count(v) => serializer.serialize_i32(*v),
            FeatureValue::Real(v) => serializer.serialize_f32(*v),
            FeatureValue::Flag(v) => serializer.serialize_bool(*v),
            FeatureValue::Text(v) => serializer.serialize_str(v),
        }
    }
}

/// One user's features as of a snapshot, in catalog order.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRow {
    /// The snapshot's day: the values cover events strictly before its midnight (UTC).
    pub as_of: NaiveDate,
    /// One value per catalog feature, in catalog order.
    pub values: Vec<FeatureValue>,
}

/// Why an online-store entry could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum RowDecodeError {
    /// Not a JSON array.
    #[error("feature row is not a JSON array: {0}")]
    Json(#[from] serde_json::Error),
    /// Written with another catalog.
    #[error("feature row has {got} entries, the catalog needs {expected}")]
    Length {
        /// 1 + the catalog's features.
        expected: usize,
        /// What the entry holds.
        got: usize,
    },
    /// A value does not fit its feature's kind.
    #[error("feature row: bad value for {0}")]
    Value(String),
}

impl FeatureRow {
    /// Reads a row holding `as_of` and a column per catalog feature (a snapshot, or an
    /// example joined to one). `None` when `as_of` is null: no snapshot yet (cold start).
    pub fn from_pg_row(catalog: &FeatureCatalog, row: &PgRow) -> Result<Option<Self>, sqlx::Error> {
        let Some(as_of) = row.try_get::<Option<NaiveDate>, _>("as_of")? else {
            return Ok(None);
        };
        let values = catalog
            .features()
            .iter()
            .map(|f| FeatureValue::from_column(row, &f.name, f.kind))
            .collect::<Result<_, _>>()?;
        Ok(Some(Self { as_of, values }))
    }

    /// The instant the snapshot stands for: midnight UTC starting `as_of`.
    pub fn as_of_time(&self) -> DateTime<Utc> {
        self.as_of.and_time(chrono::NaiveTime::MIN).and_utc()
    }

    /// The online-store encoding: a JSON array `[as_of, value, …]` in catalog order.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 + 8 * self.values.len());
        out.push_str(&format!("[\"{}\"", self.as_of));
        for value in &self.values {
            out.push(',');
            // Serialising a plain value into a String cannot fail.
            out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".into()));
        }
        out.push(']');
        out
    }

    /// Reads back what [`FeatureRow::encode`] wrote under the same catalog.
    pub fn decode(catalog: &FeatureCatalog, encoded: &str) -> Result<Self, RowDecodeError> {
        let raw: Vec<&RawValue> = serde_json::from_str(encoded)?;
        let expected = 1 + catalog.features().len();
        if raw.len() != expected {
            return Err(RowDecodeError::Length {
                expected,
                got: raw.len(),
            });
        }
        let as_of: NaiveDate = serde_json::from_str(raw[0].get())?;
        let values = catalog
            .features()
            .iter()
            .zip(&raw[1..])
            .map(|(f, json)| {
                FeatureValue::parse(f.kind, json.get())
                    .ok_or_else(|| RowDecodeError::Value(f.name.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { as_of, values })
    }

    /// The values keyed by feature name, serialised in catalog order.
    pub fn named<'a>(&'a self, catalog: &'a FeatureCatalog) -> NamedFeatures<'a> {
        NamedFeatures { row: self, catalog }
    }
}

/// A [`FeatureRow`] serialised as a JSON object `{name: value}` in catalog order.
pub struct NamedFeatures<'a> {
    row: &'a FeatureRow,
    catalog: &'a FeatureCatalog,
}

impl Serialize for NamedFeatures<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.row.values.len()))?;
        for (name, value) in self.catalog.names().zip(&self.row.values) {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn catalog() -> FeatureCatalog {
        FeatureCatalog::builtin().unwrap()
    }

    /// A strategy for a value of `kind`, missing one time in five.
    fn value(kind: FeatureKind) -> BoxedStrategy<FeatureValue> {
        let present = match kind {
            FeatureKind::Count => any::<i32>().prop_map(FeatureValue::Count).boxed(),
            FeatureKind::Flag => any::<bool>().prop_map(FeatureValue::Flag).boxed(),
            FeatureKind::Band | FeatureKind::Timezone => {
                "[a-z \"\\\\é/_]{0,8}".prop_map(FeatureValue::Text).boxed()
            }
            _ => any::<f32>()
                .prop_filter("finite", |v| v.is_finite())
                .prop_map(FeatureValue::Real)
                .boxed(),
        };
        prop_oneof![1 => Just(FeatureValue::Missing), 4 => present].boxed()
    }

    fn row() -> impl Strategy<Value = FeatureRow> {
        let values: Vec<_> = catalog().features().iter().map(|f| value(f.kind)).collect();
        (0i64..40_000, values).prop_map(|(day, values)| FeatureRow {
            as_of: NaiveDate::from_num_days_from_ce_opt(700_000 + day as i32).unwrap(),
            values,
        })
    }

    proptest! {
        #[test]
        fn encoding_round_trips_bit_for_bit(row in row()) {
            let decoded = FeatureRow::decode(&catalog(), &row.encode()).unwrap();
            // f32 equality by bits: -0.0 and 0.0 must not pass for each other.
            for (a, b) in decoded.values.iter().zip(&row.values) {
                match (a, b) {
                    (FeatureValue::Real(x), FeatureValue::Real(y)) => prop_assert_eq!(x.to_bits(), y.to_bits()),
                    _ => prop_assert_eq!(a, b),
                }
            }
            prop_assert_eq!(decoded.as_of, row.as_of);
        }
    }

    #[test]
    fn entries_of_another_catalog_are_refused() {
        let catalog = catalog();
        assert!(matches!(
            FeatureRow::decode(&catalog, "[\"2026-01-05\", 1]"),
            Err(RowDecodeError::Length { got: 2, .. })
        ));
        let mut row = FeatureRow {
            as_of: NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
            values: vec![FeatureValue::Missing; catalog.features().len()],
        };
        // A real where the catalog has a band.
        let band = catalog
            .features()
            .iter()
            .position(|f| f.kind == FeatureKind::Band)
            .unwrap();
        row.values[band] = FeatureValue::Real(0.5);
        assert!(matches!(
            FeatureRow::decode(&catalog, &row.encode()),
            Err(RowDecodeError::Value(name)) if name == "magnetism_band"
        ));
    }

    #[test]
    fn named_features_keep_the_catalog_order() {
        let catalog = catalog();
        let row = FeatureRow {
            as_of: NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
            values: vec![FeatureValue::Missing; catalog.features().len()],
        };
        let json = serde_json::to_string(&row.named(&catalog)).unwrap();
        let first = catalog.names().next().unwrap();
        assert!(json.starts_with(&format!("{{\"{first}\":null")));
        let positions: Vec<_> = catalog
            .names()
            .map(|n| json.find(&format!("\"{n}\":")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(row.as_of_time().to_rfc3339(), "2026-01-05T00:00:00+00:00");
    }
}
