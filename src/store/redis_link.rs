//! The link to Redis: a [`ConnectionManager`] (which reconnects by itself), and for the
//! server a breaker in front of it, so a request never waits on a Redis that is down.
//!
//! Without the breaker every command during an outage waits for the manager's
//! reconnection attempts (up to a few seconds when Redis does not answer at all), and
//! `/v1/score`, which asks Redis twice, would miss its deadline instead of answering
//! "nothing sent, `quota_unavailable`" at once. With it, a guarded command takes at most
//! [`CALL_TIMEOUT`]; once one fails for want of Redis, every command fails at once for
//! [`COOL_DOWN`], after which one command (whichever comes first, often the flag
//! watcher's) probes and either closes the breaker or opens it again. Redis's own
//! answers (a script error, a wrong type) say nothing about reachability and leave it
//! closed. The commands of `nudge-train` and `nudge-serve flag` use an unguarded link:
//! a bulk write may rightly take longer than a request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// Longest a guarded command may take.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// How long commands fail at once after one found Redis unreachable.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// A connection to Redis, guarded or not; cheap to clone, clones share the breaker.
#[derive(Clone)]
pub struct RedisLink {
    conn: ConnectionManager,
    breaker: Option<Arc<Breaker>>,
}

impl RedisLink {
    /// A link whose commands go through a breaker: for request paths.
    pub fn guarded(conn: ConnectionManager) -> Self {
        Self {
            conn,
            breaker: Some(Arc::new(Breaker::new())),
        }
    }

    /// A link without a breaker: for commands that may rightly take long.
    pub fn direct(conn: ConnectionManager) -> Self {
        Self {
            conn,
            breaker: None,
        }
    }

    /// Runs `call` through the breaker, if any.
    async fn guard<T>(
        breaker: Option<&Breaker>,
        call: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, RedisError> {
        let Some(breaker) = breaker else {
            return call.await;
        };
        if !breaker.admit(breaker.now_ms()) {
            return Err(unreachable(format!(
                "unreachable within the last {COOL_DOWN:?}; not waiting for it"
            )));
        }
        let outcome = match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(unreachable(format!("no answer within {CALL_TIMEOUT:?}"))),
        };
        let reached = outcome.as_ref().err().is_none_or(|e| !is_unreachable(e));
        match breaker.record(breaker.now_ms(), reached) {
            Some(true) => tracing::info!("redis reachable again"),
            Some(false) => tracing::error!(
                error = %outcome.as_ref().err().map(ToString::to_string).unwrap_or_default(),
                "redis unreachable: its commands fail at once, one probe every {COOL_DOWN:?}"
            ),
            None => {}
        }
        outcome
    }
}

/// Whether `error` says Redis could not be reached (rather than that it refused a
/// command).
pub fn is_unreachable(error: &RedisError) -> bool {
    error.is_io_error() || error.is_unrecoverable_error()
}

/// An I/O error saying why Redis was not asked or did not answer.
fn unreachable(why: String) -> RedisError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, why).into()
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        let breaker = self.breaker.as_deref();
        Box::pin(Self::guard(breaker, self.conn.req_packed_command(cmd)))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        let breaker = self.breaker.as_deref();
        let call = self.conn.req_packed_commands(pipeline, offset, count);
        Box::pin(Self::guard(breaker, call))
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}

/// Closed (`open_until` = 0) or open until a time, in milliseconds since `epoch`.
#[derive(Debug)]
struct Breaker {
    epoch: Instant,
    open_until: AtomicU64,
}

impl Breaker {
    fn new() -> Self {
        Self {
            epoch: Instant::now(),
            open_until: AtomicU64::new(0),
        }
    }

    /// Milliseconds since the epoch, at least 1 (0 means closed).
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).map_or(u64::MAX, |ms| ms.max(1))
    }

    /// Whether a command may go to Redis at `now`. When the cool-down is over, exactly
    /// one caller is let through to probe (and the breaker stays open for the others
    /// another cool-down, unless the probe closes it).
    fn admit(&self, now: u64) -> bool {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return true;
        }
        if now < until {
            return false;
        }
        self.open_until
            .compare_exchange(
                until,
                now + cool_down_ms(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Records whether a command reached Redis at `now`; returns the breaker's new state
    /// when this closed it (`true`) or opened a closed one (`false`).
    fn record(&self, now: u64, reached: bool) -> Option<bool> {
        let was_closed = self.open_until.load(Ordering::Acquire) == 0;
        if reached {
            if !was_closed {
                self.open_until.store(0, Ordering::Release);
                return Some(true);
            }
        } else {
            let until = now + cool_down_ms();
            if self.open_until.swap(until, Ordering::AcqRel) == 0 {
                return Some(false);
            }
        }
        None
    }
}

fn cool_down_ms() -> u64 {
    COOL_DOWN.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_breaker_admits_every_command() {
        let breaker = Breaker::new();
        assert!((1..100).all(|t| breaker.admit(t)));
        assert_eq!(breaker.record(50, true), None);
        assert!(breaker.admit(51));
    }

    #[test]
    fn after_a_failure_commands_fail_at_once_until_one_probe_after_the_cool_down() {
        let breaker = Breaker::new();
        assert_eq!(breaker.record(1_000, false), Some(false), "opened");
        assert!(!breaker.admit(1_001));
        assert!(!breaker.admit(1_999));
        // The cool-down is over: one probe, the others still refused.
        assert!(breaker.admit(2_000));
        assert!(!breaker.admit(2_000));
        assert!(!breaker.admit(2_500));
        // The probe failed: another cool-down from its failure.
        assert_eq!(breaker.record(2_100, false), None, "was open already");
        assert!(!breaker.admit(3_000));
        assert!(breaker.admit(3_100));
        // This probe reached Redis: closed again.
        assert_eq!(breaker.record(3_101, true), Some(true), "closed");
        assert!(breaker.admit(3_102));
        assert!(breaker.admit(3_102));
    }
}
