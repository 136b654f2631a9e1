//! A spec's examples read from Postgres into columns: label, timestamp, optional key and
//! split column, numeric features (NaN = missing) and categorical features (dictionary
//! codes). Rows come in a fixed order (timestamp first, then every other column), so the
//! same data always gives the same table and the same model.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use indicatif::ProgressBar;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, Column, PgPool, Row, TypeInfo};

use super::TrainError;
use super::spec::{ModelSpec, Split};
use super::split::Part;
use crate::models::preprocess::ModelInput;

/// A categorical column: codes into `levels`, [`MISSING`] for a null.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategoricalColumn {
    /// Distinct values in order of first appearance.
    pub levels: Vec<String>,
    /// One code per row.
    pub codes: Vec<u32>,
}

/// Code of a missing categorical value.
pub const MISSING: u32 = u32::MAX;

impl CategoricalColumn {
    /// Appends a value.
    pub fn push(&mut self, value: Option<&str>) {
        let code = match value {
            None => MISSING,
            Some(v) => match self.levels.iter().position(|l| l == v) {
                Some(i) => i as u32,
                None => {
                    self.levels.push(v.to_owned());
                    (self.levels.len() - 1) as u32
                }
            },
        };
        self.codes.push(code);
    }

    /// The value of a row.
    pub fn get(&self, row: usize) -> Option<&str> {
        match self.codes[row] {
            MISSING => None,
            code => Some(&self.levels[code as usize]),
        }
    }
}

/// The examples of a spec, column by column.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Example keys (empty when the spec has none).
    pub keys: Vec<String>,
    /// Labels.
    pub labels: Vec<bool>,
    /// Example timestamps.
    pub times: Vec<DateTime<Utc>>,
    /// The split column's parts (empty for a time split).
    pub parts: Vec<Option<Part>>,
    /// Numeric features, `[feature][row]`, NaN = missing.
    pub numeric: Vec<Vec<f64>>,
    /// Categorical features.
    pub categorical: Vec<CategoricalColumn>,
}

/// One row of a [`Table`] as a model input.
#[derive(Debug, Clone, Copy)]
pub struct TableRow<'a> {
    table: &'a Table,
    row: usize,
}

impl ModelInput for TableRow<'_> {
    fn numeric(&self, index: usize) -> Option<f64> {
        let v = self.table.numeric[index][self.row];
        (!v.is_nan()).then_some(v)
    }

    fn categorical(&self, index: usize) -> Option<&str> {
        self.table.categorical[index].get(self.row)
    }
}

impl Table {
    /// Rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row `row` as a model input.
    pub fn row(&self, row: usize) -> TableRow<'_> {
        TableRow { table: self, row }
    }

    /// Rows `rows` as model inputs.
    pub fn rows(&self, rows: &[usize]) -> Vec<TableRow<'_>> {
        rows.iter().map(|&r| self.row(r)).collect()
    }

    /// Labels of `rows`.
    pub fn labels_of(&self, rows: &[usize]) -> Vec<bool> {
        rows.iter().map(|&r| self.labels[r]).collect()
    }
}

/// The query reading a spec's examples.
pub fn query(spec: &ModelSpec) -> String {
    let mut columns = vec![
        format!("({})::boolean", spec.label),
        format!("({})::timestamptz", spec.timestamp),
    ];
    if let Some(key) = &spec.key {
        columns.push(format!("({key})::text"));
    }
    if let Split::Column(column) = &spec.split {
        columns.push(format!("({column})::text"));
    }
    columns.extend(spec.features.numeric.iter().map(|f| format!("\"{f}\"")));
    columns.extend(
        spec.features
            .categorical
            .iter()
            .map(|f| format!("(\"{f}\")::text")),
    );
    let from = match (&spec.source.relation, &spec.source.query) {
        (Some(relation), _) => relation.clone(),
        (None, Some(query)) => format!("({query}) AS source"),
        (None, None) => unreachable!("a checked spec has a source"),
    };
    let filter = spec
        .source
        .filter
        .as_ref()
        .map(|f| format!(" WHERE {f}"))
        .unwrap_or_default();
    // Timestamp first, then every column: a total order, whatever the source's.
    let order: Vec<String> = std::iter::once(2)
        .chain((1..=columns.len()).filter(|&i| i != 2))
        .map(|i| i.to_string())
        .collect();
    format!(
        "SELECT {} FROM {from}{filter} ORDER BY {}",
        columns.join(", "),
        order.join(", ")
    )
}

/// Reads one numeric column whatever its SQL type.
fn numeric_value(row: &PgRow, index: usize) -> Result<f64, TrainError> {
    let column = &row.columns()[index];
    let value = match column.type_info().name() {
        "INT2" => row.try_get::<Option<i16>, _>(index)?.map(f64::from),
        "INT4" => row.try_get::<Option<i32>, _>(index)?.map(f64::from),
        "INT8" => row.try_get::<Option<i64>, _>(index)?.map(|v| v as f64),
        "FLOAT4" => row.try_get::<Option<f32>, _>(index)?.map(f64::from),
        "FLOAT8" => row.try_get::<Option<f64>, _>(index)?,
        "BOOL" => row
            .try_get::<Option<bool>, _>(index)?
            .map(|b| f64::from(u8::from(b))),
        other => {
            return Err(TrainError::ColumnType {
                column: column.name().to_owned(),
                found: other.to_owned(),
            });
        }
    };
    Ok(value.unwrap_or(f64::NAN))
}

/// Reads a spec's examples, ticking `progress` every 10,000 rows.
pub async fn load(
    pool: &PgPool,
    spec: &ModelSpec,
    progress: &ProgressBar,
) -> Result<Table, TrainError> {
    let sql = query(spec);
    let mut table = Table {
        numeric: vec![Vec::new(); spec.features.numeric.len()],
        categorical: vec![CategoricalColumn::default(); spec.features.categorical.len()],
        ..Table::default()
    };
    let mut rows = sqlx::query(AssertSqlSafe(sql)).fetch(pool);
    while let Some(row) = rows.try_next().await? {
        let mut index = 0;
        let mut next = || {
            index += 1;
            index - 1
        };
        let label: Option<bool> = row.try_get(next())?;
        let time: Option<DateTime<Utc>> = row.try_get(next())?;
        let (Some(label), Some(time)) = (label, time) else {
            return Err(TrainError::NullLabelOrTime {
                label: spec.label.clone(),
                timestamp: spec.timestamp.clone(),
            });
        };
        table.labels.push(label);
        table.times.push(time);
        if spec.key.is_some() {
            let key: Option<String> = row.try_get(next())?;
            table.keys.push(key.unwrap_or_default());
        }
        if let Split::Column(column) = &spec.split {
            let part: Option<String> = row.try_get(next())?;
            table.parts.push(match part.as_deref() {
                None => None,
                Some(p) => Some(p.parse().map_err(|_| TrainError::SplitValue {
                    column: column.clone(),
                    value: p.to_owned(),
                })?),
            });
        }
        for column in &mut table.numeric {
            column.push(numeric_value(&row, next())?);
        }
        for column in &mut table.categorical {
            let value: Option<String> = row.try_get(next())?;
            column.push(value.as_deref());
        }
        if table.labels.len().is_multiple_of(10_000) {
            progress.set_position(table.labels.len() as u64);
        }
    }
    progress.set_position(table.labels.len() as u64);
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categorical_codes_round_trip_with_missing_values() {
        let mut column = CategoricalColumn::default();
        for v in [Some("a"), None, Some("b"), Some("a")] {
            column.push(v);
        }
        assert_eq!(column.levels, ["a", "b"]);
        assert_eq!(column.codes, [0, MISSING, 1, 0]);
        assert_eq!(column.get(1), None);
        assert_eq!(column.get(3), Some("a"));
    }
}
