//! Postgres: connecting (creating the database if missing), migrating, and checking
//! that the schema is exactly the one this build was written for.

use std::time::Duration;

use sqlx::migrate::{MigrateDatabase, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use super::StoreError;

/// The migrations in `notebooks-sql/migrations`, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!("./notebooks-sql/migrations");

/// How the database schema differs from the one this build knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaMismatch {
    /// No migration was ever applied.
    #[error("the database has no nudge schema: run `nudge-train migrate` first")]
    NotMigrated,
    /// Some migrations of this build are not applied yet.
    #[error(
        "the database schema is behind this build (missing migrations {missing:?}): run `nudge-train migrate`"
    )]
    Behind {
        /// Versions this build has and the database lacks.
        missing: Vec<i64>,
    },
    /// The database has migrations this build does not know (a newer build migrated it).
    #[error(
        "the database schema has migrations {unknown:?} this build does not know: deploy the build that applied them"
    )]
    Unknown {
        /// Versions the database has and this build lacks.
        unknown: Vec<i64>,
    },
    /// A migration was applied with different content than this build's.
    #[error(
        "migration {version} in the database differs from this build's file (checksum mismatch)"
    )]
    Modified {
        /// The differing version.
        version: i64,
    },
    /// A migration failed half-way and was left dirty.
    #[error(
        "migration {version} failed part-way; fix the database and re-run `nudge-train migrate`"
    )]
    Dirty {
        /// The dirty version.
        version: i64,
    },
}

/// Parses a Postgres URL.
pub fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    url.parse::<PgConnectOptions>()
        .map_err(|e| StoreError::BadUrl(e.to_string()))
}

/// Creates the database named in `url` unless it exists.
pub async fn create_database_if_missing(url: &str) -> Result<bool, StoreError> {
    if Postgres::database_exists(url).await? {
        return Ok(false);
    }
    match Postgres::create_database(url).await {
        Ok(()) => Ok(true),
        // Another process created it between the check and the create.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// How every pool of ours waits: at most `max_connections`, and a query gives up after
/// 3 s without a connection (sqlx retries a refused connection until then).
fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(3))
}

/// A connection pool to `url` of at most `max_connections`, connected now.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let pool = pool_options(max_connections)
        .connect_with(connect_options(url)?)
        .await?;
    Ok(pool)
}

/// Whether a Postgres error means the server is out of reach (a refused, dropped or
/// timed-out connection) rather than a refused query or a wrong schema.
pub fn is_unreachable(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut)
}

/// What [`open`] found of Postgres.
#[derive(Debug)]
pub enum AtStart {
    /// It answered, with the schema this build knows.
    SchemaCurrent,
    /// It was out of reach (why): the schema is yet to be checked.
    Unreachable(StoreError),
}

/// The service's pool to `url` (at most `max_connections`). When Postgres answers, the
/// database is created if missing and its schema checked: a mismatch is an error. When it
/// is out of reach, the pool connects on first use and [`AtStart::Unreachable`] says the
/// schema is still to be checked.
pub async fn open(url: &str, max_connections: u32) -> Result<(PgPool, AtStart), StoreError> {
    let pool = pool_options(max_connections).connect_lazy_with(connect_options(url)?);
    let checked = match create_database_if_missing(url).await {
        Ok(_) => check_schema(&pool).await,
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => Ok((pool, AtStart::SchemaCurrent)),
        Err(e) if e.is_postgres_unreachable() => Ok((pool, AtStart::Unreachable(e))),
        Err(e) => Err(e),
    }
}

/// Applies every pending migration. Safe to run concurrently: sqlx holds an advisory lock.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Empties what nudge-serve has written: decisions, runtime flags, the controller's state
/// and history and the guardrail checks. For a fresh demo or simulation, never production.
pub async fn reset_serving_state(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query(
        "TRUNCATE serving.decisions, serving.paywall_decisions, serving.churn_scores,
                  serving.flags, serving.controller, serving.controller_steps,
                  serving.guardrail_checks",
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// One applied migration as recorded in the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    /// Migration version.
    pub version: i64,
    /// Checksum of the file as applied.
    pub checksum: Vec<u8>,
    /// Whether it completed.
    pub success: bool,
}

/// Compares the applied migrations with the ones this build knows.
pub fn compare_schema(
    known: &[(i64, Vec<u8>)],
    applied: &[AppliedMigration],
) -> Result<(), SchemaMismatch> {
    if let Some(dirty) = applied.iter().find(|m| !m.success) {
        return Err(SchemaMismatch::Dirty {
            version: dirty.version,
        });
    }
    let unknown: Vec<i64> = applied
        .iter()
        .map(|m| m.version)
        .filter(|v| !known.iter().any(|(k, _)| k == v))
        .collect();
    if !unknown.is_empty() {
        return Err(SchemaMismatch::Unknown { unknown });
    }
    if applied.is_empty() {
        return Err(SchemaMismatch::NotMigrated);
    }
    let mut missing = Vec::new();
    for (version, checksum) in known {
        match applied.iter().find(|m| m.version == *version) {
            None => missing.push(*version),
            Some(m) if &m.checksum != checksum => {
                return Err(SchemaMismatch::Modified { version: *version });
            }
            Some(_) => {}
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(SchemaMismatch::Behind { missing })
    }
}

/// Checks that the database schema is exactly the one this build knows.
pub async fn check_schema(pool: &PgPool) -> Result<(), StoreError> {
    let has_table: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    let applied = if has_table {
        sqlx::query_as::<_, (i64, Vec<u8>, bool)>(
            "SELECT version, checksum, success FROM public._sqlx_migrations ORDER BY version",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(version, checksum, success)| AppliedMigration {
            version,
            checksum,
            success,
        })
        .collect()
    } else {
        Vec::new()
    };
    let known: Vec<(i64, Vec<u8>)> = MIGRATOR
        .iter()
        .map(|m| (m.version, m.checksum.to_vec()))
        .collect();
    compare_schema(&known, &applied)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(version: i64, checksum: &[u8]) -> AppliedMigration {
        AppliedMigration {
            version,
            checksum: checksum.to_vec(),
            success: true,
        }
    }

    #[test]
    fn schema_comparison_names_each_mismatch() {
        let known = vec![(1, vec![1u8]), (2, vec![2u8])];
        assert_eq!(
            compare_schema(&known, &[applied(1, &[1]), applied(2, &[2])]),
            Ok(())
        );
        assert_eq!(
            compare_schema(&known, &[]),
            Err(SchemaMismatch::NotMigrated)
        );
        assert_eq!(
            compare_schema(&known, &[applied(1, &[1])]),
            Err(SchemaMismatch::Behind { missing: vec![2] })
        );
        assert_eq!(
            compare_schema(
                &known,
                &[applied(1, &[1]), applied(2, &[2]), applied(3, &[3])]
            ),
            Err(SchemaMismatch::Unknown { unknown: vec![3] })
        );
        assert_eq!(
            compare_schema(&known, &[applied(1, &[9]), applied(2, &[2])]),
            Err(SchemaMismatch::Modified { version: 1 })
        );
        let dirty = AppliedMigration {
            success: false,
            ..applied(1, &[1])
        };
        assert_eq!(
            compare_schema(&known, &[dirty]),
            Err(SchemaMismatch::Dirty { version: 1 })
        );
    }

    #[test]
    fn the_builds_migrations_are_numbered_from_one() {
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert_eq!(versions.first(), Some(&1));
        assert!(
            versions.windows(2).all(|w| w[1] == w[0] + 1),
            "gaps in {versions:?}"
        );
    }
}
