//! Heartbeats: the worker's proof of life, sent in the background for as long as one
//! registration (incarnation) lasts. The loop ends only when the cluster says the agent is no
//! longer active; the worker then drops that incarnation's work and registers again.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tonic::Code;

use percy_client::Client;

use crate::machine_load::{self, Running};

/// Lower bound of the heartbeat interval, whatever the server advertises.
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);
/// At least this many beats per TTL: a lost or slow beat (an election, a loaded machine) must
/// not expire a live worker.
pub const BEATS_PER_TTL: u32 = 3;

/// The interval to beat at: what the server advertised, but at least [`BEATS_PER_TTL`] times
/// per TTL, and never below [`MIN_HEARTBEAT_INTERVAL`]. `0` means "not advertised".
pub fn heartbeat_interval(advertised_ms: u64, ttl_ms: u64) -> Duration {
    let by_ttl = Duration::from_millis(ttl_ms) / BEATS_PER_TTL;
    let interval = match (advertised_ms, ttl_ms) {
        (0, 0) => MIN_HEARTBEAT_INTERVAL,
        (0, _) => by_ttl,
        (advertised, 0) => Duration::from_millis(advertised),
        (advertised, _) => Duration::from_millis(advertised).min(by_ttl),
    };
    interval.max(MIN_HEARTBEAT_INTERVAL)
}

/// Beats every `interval`, over one keep-alive stream, until the cluster reports the agent
/// inactive; returns why. Each beat reports the machine's load and what `running` counts.
/// Transient failures are logged and the next beat tried: only the cluster can decide that
/// the agent expired.
pub async fn beat_until_expired(
    client: Client,
    agent_id: u64,
    interval: Duration,
    running: Arc<Running>,
) -> String {
    // One beat may retry across endpoints, but not past the next one.
    let mut keep_alive = client.with_deadline(interval).keep_alive(agent_id);
    let mut ticker = tokio::time::interval(interval);
    // After a pause (SIGSTOP, a stalled machine) beat once at once, not a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        ticker.tick().await;
        keep_alive.set_load(Some(machine_load::sample(&running)));
        match keep_alive.beat().await {
            Ok(reply) if reply.must_reregister => {
                return format!(
                    "the cluster reports agent {agent_id} as {}",
                    status_word(reply.status)
                );
            }
            Ok(_) => {
                if let Some(since) = failing_since.take() {
                    tracing::info!(agent_id, outage = ?since.elapsed(), "heartbeats get through again");
                }
            }
            Err(err) if err.code() == Code::NotFound => {
                return format!("the cluster does not know agent {agent_id}");
            }
            Err(err) => {
                let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                tracing::warn!(agent_id, error = %err, failing_for = ?since.elapsed(), "heartbeat failed");
            }
        }
    }
}

fn status_word(status: i32) -> &'static str {
    use percy_client::proto::AgentStatus;
    match AgentStatus::try_from(status) {
        Ok(AgentStatus::Active) => "active",
        Ok(AgentStatus::Expired) => "expired",
        Ok(AgentStatus::Deregistered) => "deregistered",
        Ok(AgentStatus::Unspecified) | Err(_) => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_fits_the_ttl() {
        let ms = Duration::from_millis;
        // The server's 2 s default is too slow for a 3 s TTL.
        assert_eq!(heartbeat_interval(2_000, 3_000), ms(1_000));
        assert_eq!(heartbeat_interval(2_000, 10_000), ms(2_000));
        assert_eq!(heartbeat_interval(0, 9_000), ms(3_000));
        assert_eq!(heartbeat_interval(500, 0), ms(500));
        assert_eq!(heartbeat_interval(0, 0), MIN_HEARTBEAT_INTERVAL);
        assert_eq!(heartbeat_interval(1, 1_000), MIN_HEARTBEAT_INTERVAL);
    }
}
