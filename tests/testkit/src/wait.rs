//! Waiting for what a cluster does on its own (an election, an expiry, a snapshot), with
//! deadlines a loaded 2-core machine can meet: a flaky test is a bug.

use std::future::Future;
use std::time::Duration;

/// Generous bound for anything that involves an election on a busy machine.
pub const SETTLE: Duration = Duration::from_secs(20);
/// Pause between two looks.
const POLL: Duration = Duration::from_millis(50);

/// Polls `probe` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What [`try_eventually`] waited for did not happen in time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {timeout:?} waiting for {what}")]
pub struct TimedOut {
    pub what: String,
    pub timeout: Duration,
}

/// [`eventually`] for a probe that can fail: its error ends the wait at once, and a timeout
/// is an error too (for tests and examples that report errors rather than panic).
pub async fn try_eventually<T, E, F, Fut>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>, E>>,
    E: From<TimedOut>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(E::from(TimedOut {
                what: what.to_string(),
                timeout,
            }));
        }
        tokio::time::sleep(POLL).await;
    }
}
