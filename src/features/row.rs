//! One user's features from one snapshot: the values in catalog order, typed by kind.
//!
//! The same [`FeatureRow`] is read from Postgres (training sets, materialisation, the
//! embedded store), encoded for the online store, and returned by `GET /v1/features`, so
//! the trainer and nudge-serve see the same values, bit for bit.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use serde::Serialize;
use serde::ser::SerializeMap;
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
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RowDecodeError {
    /// Not a row of this build's encoding.
    #[error("feature row is not in encoding {ROW_FORMAT} (first byte {0:?})")]
    Format(Option<u8>),
    /// Ended before every catalog feature had its value: written with another catalog.
    #[error("feature row ends after {got} of the catalog's {expected} values")]
    Truncated {
        /// The catalog's features.
        expected: usize,
        /// Values read.
        got: usize,
    },
    /// Bytes left after the catalog's values: written with another catalog.
    #[error("feature row has {0} bytes after the catalog's values")]
    Trailing(usize),
    /// A value does not fit its feature's kind.
    #[error("feature row: bad value for {0}")]
    Value(String),
}

/// The online store's row encoding, first byte of every row. The catalog's fingerprint
/// covers it, so rows of another encoding are refused as another catalog's.
pub const ROW_FORMAT: u8 = 1;

/// A value's tag in the row encoding.
mod tag {
    pub const MISSING: u8 = 0;
    /// Followed by the `i32`, little-endian.
    pub const COUNT: u8 = 1;
    /// Followed by the `f32`'s bits, little-endian.
    pub const REAL: u8 = 2;
    pub const FALSE: u8 = 3;
    pub const TRUE: u8 = 4;
    /// Followed by the length (`u32`, little-endian) and the UTF-8 bytes.
    pub const TEXT: u8 = 5;
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

    /// The online-store encoding, binary so that a read costs no parsing: [`ROW_FORMAT`],
    /// `as_of` as days since 0001-01-01 (`i32`, little-endian), then each value in
    /// catalog order as a tag byte and its bytes. Reals keep their bits exactly.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + 5 * self.values.len() + 32);
        out.push(ROW_FORMAT);
        out.extend_from_slice(&self.as_of.num_days_from_ce().to_le_bytes());
        for value in &self.values {
            match value {
                FeatureValue::Missing => out.push(tag::MISSING),
                FeatureValue::Count(v) => {
                    out.push(tag::COUNT);
                    out.extend_from_slice(&v.to_le_bytes());
                }
                FeatureValue::Real(v) => {
                    out.push(tag::REAL);
                    out.extend_from_slice(&v.to_bits().to_le_bytes());
                }
                FeatureValue::Flag(v) => out.push(if *v { tag::TRUE } else { tag::FALSE }),
                FeatureValue::Text(v) => {
                    out.push(tag::TEXT);
                    // Band names and timezones, read from Postgres `text` (under 1 GiB).
                    let len = u32::try_from(v.len()).expect("a feature's text is under 4 GiB");
                    out.extend_from_slice(&len.to_le_bytes());
                    out.extend_from_slice(v.as_bytes());
                }
            }
        }
        out
    }

    /// Reads back what [`FeatureRow::encode`] wrote under the same catalog.
    pub fn decode(catalog: &FeatureCatalog, encoded: &[u8]) -> Result<Self, RowDecodeError> {
        let Some((&ROW_FORMAT, rest)) = encoded.split_first() else {
            return Err(RowDecodeError::Format(encoded.first().copied()));
        };
        let features = catalog.features();
        let truncated = |got| RowDecodeError::Truncated {
            expected: features.len(),
            got,
        };
        let mut bytes = Unread(rest);
        let as_of = bytes
            .array()
            .map(i32::from_le_bytes)
            .and_then(NaiveDate::from_num_days_from_ce_opt)
            .ok_or_else(|| truncated(0))?;
        let mut values = Vec::with_capacity(features.len());
        for feature in features {
            let bad = || RowDecodeError::Value(feature.name.clone());
            let tag = bytes.take(1).ok_or_else(|| truncated(values.len()))?[0];
            let value = match (tag, feature.kind) {
                (tag::MISSING, _) => FeatureValue::Missing,
                (tag::COUNT, FeatureKind::Count) => FeatureValue::Count(i32::from_le_bytes(
                    bytes.array().ok_or_else(|| truncated(values.len()))?,
                )),
                (
                    tag::REAL,
                    FeatureKind::Hours
                    | FeatureKind::Days
                    | FeatureKind::Rate
                    | FeatureKind::Score
                    | FeatureKind::HourOfDay,
                ) => FeatureValue::Real(f32::from_bits(u32::from_le_bytes(
                    bytes.array().ok_or_else(|| truncated(values.len()))?,
                ))),
                (tag::FALSE, FeatureKind::Flag) => FeatureValue::Flag(false),
                (tag::TRUE, FeatureKind::Flag) => FeatureValue::Flag(true),
                (tag::TEXT, FeatureKind::Band | FeatureKind::Timezone) => {
                    let len = bytes
                        .array()
                        .map(u32::from_le_bytes)
                        .ok_or_else(|| truncated(values.len()))?;
                    let text = usize::try_from(len)
                        .ok()
                        .and_then(|len| bytes.take(len))
                        .ok_or_else(|| truncated(values.len()))?;
                    FeatureValue::Text(std::str::from_utf8(text).map_err(|_| bad())?.to_owned())
                }
                _ => return Err(bad()),
            };
            values.push(value);
        }
        match bytes.0.len() {
            0 => Ok(Self { as_of, values }),
            left => Err(RowDecodeError::Trailing(left)),
        }
    }

    /// The values keyed by feature name, serialised in catalog order.
    pub fn named<'a>(&'a self, catalog: &'a FeatureCatalog) -> NamedFeatures<'a> {
        NamedFeatures { row: self, catalog }
    }
}

/// The unread part of an encoded row.
struct Unread<'a>(&'a [u8]);

impl<'a> Unread<'a> {
    /// The next `n` bytes; `None` when fewer are left.
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    /// The next `N` bytes as an array.
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
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
    fn entries_of_another_catalog_or_encoding_are_refused() {
        let catalog = catalog();
        let mut row = FeatureRow {
            as_of: NaiveDate::from_ymd_opt(2026, 1, 5).unwrap(),
            values: vec![FeatureValue::Missing; catalog.features().len()],
        };
        let encoded = row.encode();
        let features = catalog.features().len();
        assert_eq!(
            FeatureRow::decode(&catalog, &encoded[..encoded.len() - 1]),
            Err(RowDecodeError::Truncated {
                expected: features,
                got: features - 1
            })
        );
        let longer = [&encoded[..], &[tag::MISSING]].concat();
        assert_eq!(
            FeatureRow::decode(&catalog, &longer),
            Err(RowDecodeError::Trailing(1))
        );
        // A row of the JSON encoding that came before.
        assert_eq!(
            FeatureRow::decode(&catalog, b"[\"2026-01-05\",1]"),
            Err(RowDecodeError::Format(Some(b'[')))
        );
        assert_eq!(
            FeatureRow::decode(&catalog, b""),
            Err(RowDecodeError::Format(None))
        );
        // A real where the catalog has a band.
        let band = catalog
            .features()
            .iter()
            .position(|f| f.kind == FeatureKind::Band)
            .unwrap();
        row.values[band] = FeatureValue::Real(0.5);
        assert_eq!(
            FeatureRow::decode(&catalog, &row.encode()),
            Err(RowDecodeError::Value("magnetism_band".into()))
        );
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
