//! Retry policy: which failures are worth retrying, and how long to wait between attempts.
//!
//! Retrying a mutating call is safe because every attempt carries the same `(client_id, seq)`
//! (see `session`), so the state machine applies it at most once.

use std::time::Duration;

use tonic::Code;

/// First pause after a failed attempt.
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Upper bound of the pause between attempts.
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long one logical call keeps retrying before giving up. Long enough to ride out a
/// leader election plus a forwarding hop on a loaded machine.
pub const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(10);
/// How long one attempt may take before we try another endpoint: a node that is paused
/// (SIGSTOP) or partitioned never answers, and a healthy one answers in milliseconds.
pub const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Growth factor of the backoff per failed attempt.
const BACKOFF_MULTIPLIER: u32 = 2;

/// How a call retries. Cheap to copy; a `Client` carries one (see `Client::with_retry`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Overall time budget of one logical call, across all of its attempts.
    pub deadline: Duration,
    /// Time budget of one attempt (a lock acquire that waits adds its wait time).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            deadline: DEFAULT_RETRY_DEADLINE,
            attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
        }
    }
}

impl RetryPolicy {
    /// The policy with another overall deadline; the attempt timeout shrinks with it so a
    /// short deadline still allows more than one endpoint to be tried.
    pub fn with_deadline(self, deadline: Duration) -> Self {
        Self {
            deadline,
            attempt_timeout: self.attempt_timeout.min(deadline),
            ..self
        }
    }

    /// The pause after failed attempt number `attempt` (0-based), "equal jitter" style:
    /// half of the exponential step is fixed, the other half scaled by `jitter` in `[0, 1]`.
    /// Callers pass a random `jitter` so that many clients do not retry in lockstep; tests
    /// pass fixed values.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let step = BACKOFF_MULTIPLIER
            .checked_pow(attempt)
            .and_then(|factor| self.initial_backoff.checked_mul(factor))
            .map_or(self.max_backoff, |d| d.min(self.max_backoff));
        let half = step / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Whether a failed attempt should be retried (on the next endpoint).
///
/// `Unavailable` is what the server answers when it has no leader or quorum, and what tonic
/// reports for refused connections. A status with a local `source` never reached a server
/// intact (connection reset, broken stream), so the outcome is unknown and a retry with the
/// same seq is the way to learn it. Everything else is the server's definite answer.
pub fn is_retryable(status: &tonic::Status) -> bool {
    status.code() == Code::Unavailable || std::error::Error::source(status).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(1000),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_doubles_until_the_cap() {
        let p = policy();
        let full: Vec<_> = (0..6).map(|a| p.backoff(a, 1.0).as_millis()).collect();
        assert_eq!(full, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn jitter_ranges_over_the_upper_half() {
        let p = policy();
        assert_eq!(p.backoff(2, 0.0), Duration::from_millis(200));
        assert_eq!(p.backoff(2, 0.5), Duration::from_millis(300));
        assert_eq!(p.backoff(2, 1.0), Duration::from_millis(400));
        // Out-of-range jitter is clamped rather than producing a longer pause.
        assert_eq!(p.backoff(2, 7.0), Duration::from_millis(400));
        assert_eq!(p.backoff(2, -1.0), Duration::from_millis(200));
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = policy();
        assert_eq!(p.backoff(u32::MAX, 1.0), Duration::from_millis(1000));
        assert_eq!(p.backoff(64, 0.0), Duration::from_millis(500));
    }

    #[test]
    fn with_deadline_caps_the_attempt_timeout() {
        let p = RetryPolicy::default().with_deadline(Duration::from_secs(1));
        assert_eq!(p.deadline, Duration::from_secs(1));
        assert_eq!(p.attempt_timeout, Duration::from_secs(1));
        let long = RetryPolicy::default().with_deadline(Duration::from_secs(60));
        assert_eq!(long.attempt_timeout, DEFAULT_ATTEMPT_TIMEOUT);
    }

    #[test]
    fn only_unavailable_and_transport_failures_are_retried() {
        assert!(is_retryable(&tonic::Status::unavailable("no leader")));
        assert!(!is_retryable(&tonic::Status::failed_precondition(
            "stale token"
        )));
        assert!(!is_retryable(&tonic::Status::not_found("no such task")));
        assert!(!is_retryable(&tonic::Status::invalid_argument("bad path")));
        let io = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "reset");
        let transport = tonic::Status::from_error(Box::new(io));
        assert!(is_retryable(&transport), "{transport:?}");
    }
}
