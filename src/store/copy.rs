//! Bulk inserts with `COPY … FROM STDIN`: [`copy_in`] streams a batch to Postgres, and
//! [`BinaryRows`] encodes one in `COPY`'s binary format. Postgres stores copied rows
//! without planning a statement, unpacking parameter arrays or running an executor per
//! row, and fills heap pages several rows at a time; for the decision log's batches it
//! costs about a fifth less than `INSERT … SELECT FROM UNNEST` (BENCHMARKS.md, "Scoring
//! load").

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

/// Runs `statement` (a `COPY … FROM STDIN`) with `data`, in the format the statement
/// names; returns the rows stored. Empty data copies nothing and does not ask Postgres.
pub async fn copy_in(
    pool: &PgPool,
    statement: &str,
    data: impl AsRef<[u8]>,
) -> Result<u64, sqlx::Error> {
    let data = data.as_ref();
    if data.is_empty() {
        return Ok(0);
    }
    let mut conn = pool.acquire().await?;
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(data).await?;
    copy.finish().await
}

/// Copies binary `data` into `columns` of `table` like [`copy_in`], but skips the rows
/// whose key is already stored (`ON CONFLICT DO NOTHING`), which `COPY` cannot: the rows go
/// through a temporary table in one transaction. Returns the rows newly stored.
pub async fn copy_in_new(
    pool: &PgPool,
    table: &str,
    columns: &str,
    data: impl AsRef<[u8]>,
) -> Result<u64, sqlx::Error> {
    let data = data.as_ref();
    if data.is_empty() {
        return Ok(0);
    }
    let mut tx = pool.begin().await?;
    // The columns' types without the table's constraints and defaults. Table and columns
    // are the caller's constants, never input.
    sqlx::query(AssertSqlSafe(format!(
        "CREATE TEMP TABLE copy_staging ON COMMIT DROP AS SELECT {columns} FROM {table} WITH NO DATA"
    )))
    .execute(&mut *tx)
    .await?;
    let mut copy = tx
        .copy_in_raw(&format!(
            "COPY copy_staging ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await?;
    copy.send(data).await?;
    copy.finish().await?;
    let stored = sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {table} ({columns}) SELECT {columns} FROM copy_staging ON CONFLICT DO NOTHING"
    )))
    .execute(&mut *tx)
    .await?
    .rows_affected();
    tx.commit().await?;
    Ok(stored)
}

/// Rows of `COLUMNS` fields in the binary `COPY` format (see "Binary Format" in
/// <https://www.postgresql.org/docs/current/sql-copy.html>): a header,
/// each row as its field count and each field as its length and bytes (−1 for NULL), and
/// a trailer. The field types must be the columns' own: binary input does not convert.
pub struct BinaryRows<const COLUMNS: usize> {
    buf: Vec<u8>,
    rows: usize,
}

/// The binary format's signature, flags (none) and header extension length (none).
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

impl<const COLUMNS: usize> BinaryRows<COLUMNS> {
    /// No rows yet, with room for `bytes` of them.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER.len() + bytes + 2);
        buf.extend_from_slice(HEADER);
        Self { buf, rows: 0 }
    }

    /// Appends a row, its fields in the order of the statement's column list.
    pub fn push(&mut self, fields: [&dyn Field; COLUMNS]) {
        const { assert!(COLUMNS <= i16::MAX as usize) };
        self.buf.extend_from_slice(&(COLUMNS as i16).to_be_bytes());
        for field in fields {
            field.put(&mut self.buf);
        }
        self.rows += 1;
    }

    /// The data to send: nothing when there are no rows, else the rows and the trailer.
    pub fn finish(mut self) -> Vec<u8> {
        if self.rows == 0 {
            return Vec::new();
        }
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

/// A value written as one binary `COPY` field of the Postgres type it stands for.
pub trait Field {
    /// Appends the field: its length in bytes (−1 for NULL), then its bytes.
    fn put(&self, buf: &mut Vec<u8>);
}

/// Appends the field `write` writes, its length known only once it is written.
fn put_with_length(buf: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 4]);
    write(buf);
    // Fields come from requests under the body limit (1 MiB), far below Postgres's 1 GiB.
    let len = i32::try_from(buf.len() - start - 4).expect("a COPY field is under 2 GiB");
    buf[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// `uuid`.
impl Field for Uuid {
    fn put(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&16i32.to_be_bytes());
        buf.extend_from_slice(self.as_bytes());
    }
}

/// Microseconds from the Unix epoch to Postgres's, 2000-01-01 00:00 UTC.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// `timestamptz`: microseconds since 2000-01-01 00:00 UTC.
impl Field for DateTime<Utc> {
    fn put(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&8i32.to_be_bytes());
        let micros = self.timestamp_micros() - POSTGRES_EPOCH_MICROS;
        buf.extend_from_slice(&micros.to_be_bytes());
    }
}

/// Days from 0001-01-01 (day 1 of the Common Era) to Postgres's epoch, 2000-01-01.
const POSTGRES_EPOCH_DAYS_FROM_CE: i32 = 730_120;

/// `date`: days since 2000-01-01.
impl Field for NaiveDate {
    fn put(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&4i32.to_be_bytes());
        let days = chrono::Datelike::num_days_from_ce(self) - POSTGRES_EPOCH_DAYS_FROM_CE;
        buf.extend_from_slice(&days.to_be_bytes());
    }
}

/// `text` (and `json`, whose binary form is its text).
impl Field for &str {
    fn put(&self, buf: &mut Vec<u8>) {
        put_with_length(buf, |buf| buf.extend_from_slice(self.as_bytes()));
    }
}

/// `text`.
impl Field for String {
    fn put(&self, buf: &mut Vec<u8>) {
        self.as_str().put(buf);
    }
}

/// `bool`.
impl Field for bool {
    fn put(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&1i32.to_be_bytes());
        buf.push(u8::from(*self));
    }
}

/// `real`.
impl Field for f32 {
    fn put(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&4i32.to_be_bytes());
        buf.extend_from_slice(&self.to_be_bytes());
    }
}

/// `double precision`.
impl Field for f64 {
    fn put(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&8i32.to_be_bytes());
        buf.extend_from_slice(&self.to_be_bytes());
    }
}

/// NULL when `None`.
impl<T: Field> Field for Option<T> {
    fn put(&self, buf: &mut Vec<u8>) {
        match self {
            Some(value) => value.put(buf),
            None => buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
}

/// A value serialised as `json`, straight into the buffer.
pub struct Json<'a, T: Serialize>(pub &'a T);

impl<T: Serialize> Field for Json<'_, T> {
    fn put(&self, buf: &mut Vec<u8>) {
        put_with_length(buf, |buf| {
            serde_json::to_writer(buf, self.0)
                .expect("the logged types serialise without error (strings, numbers, booleans)");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_is_its_field_count_then_each_field_as_length_and_big_endian_bytes() {
        let mut rows = BinaryRows::<5>::with_capacity(0);
        rows.push([&true, &Some("ab"), &None::<&str>, &1.5f32, &Json(&[1, 2])]);
        let data = rows.finish();
        let (header, rest) = data.split_at(HEADER.len());
        assert_eq!(header, HEADER);
        let expected: &[u8] = &[
            0, 5, // fields
            0, 0, 0, 1, 1, // bool
            0, 0, 0, 2, b'a', b'b', // text
            0xff, 0xff, 0xff, 0xff, // NULL
            0, 0, 0, 4, 0x3f, 0xc0, 0, 0, // real 1.5
            0, 0, 0, 5, b'[', b'1', b',', b'2', b']', // json
            0xff, 0xff, // trailer
        ];
        assert_eq!(rest, expected);
    }

    #[test]
    fn a_timestamp_counts_microseconds_from_2000_and_no_rows_is_no_data() {
        let mut buf = Vec::new();
        let t = DateTime::parse_from_rfc3339("2000-01-01T00:00:01.000002Z").unwrap();
        t.with_timezone(&Utc).put(&mut buf);
        assert_eq!(buf, [0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x42]);
        assert!(BinaryRows::<1>::with_capacity(64).finish().is_empty());
    }

    #[test]
    fn a_date_counts_days_from_2000() {
        let field = |date: &str| {
            let mut buf = Vec::new();
            date.parse::<NaiveDate>().unwrap().put(&mut buf);
            buf
        };
        assert_eq!(field("2000-01-01"), [0, 0, 0, 4, 0, 0, 0, 0]);
        assert_eq!(field("2000-01-03"), [0, 0, 0, 4, 0, 0, 0, 2]);
        assert_eq!(field("1999-12-31"), [0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]);
    }
}
