//! Heartbeats for as long as the MCP session lives. When the cluster says the agent is no
//! longer active (it expired while the machine was suspended, or an operator deregistered
//! it), the session registers it again, forgets the tokens that died with it, and tells the
//! client with a warning notification.

use std::time::Duration;

use percy_client::{Client, ClientError};
use rmcp::{Peer, RoleServer};
use tokio::time::MissedTickBehavior;
use tonic::Code;

use super::announce;
use super::session::Session;

/// Beats until aborted (the session's end).
pub async fn keep_alive(
    session: std::sync::Arc<Session>,
    peer: Peer<RoleServer>,
    client: Client,
    mut every: Duration,
) {
    let mut agent_id = session.agent_id().await;
    // One beat may retry across endpoints, but not past the next one.
    let mut stream = client.with_deadline(every).keep_alive(agent_id);
    let mut ticker = tokio::time::interval(every);
    // After a pause (a suspended laptop) beat once at once, not a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let lost = match stream.beat().await {
            Ok(reply) => reply.must_reregister,
            Err(err) if err.code() == Code::NotFound => true,
            Err(err) => {
                tracing::warn!(agent_id, error = %err, "heartbeat failed; trying again");
                false
            }
        };
        if !lost {
            continue;
        }
        match session.reregister(None).await {
            Ok(registered) => {
                tracing::warn!(
                    old = agent_id,
                    new = registered.agent_id,
                    "the session's agent was no longer active; registered again"
                );
                announce::warn(
                    &session,
                    &peer,
                    format!(
                        "agent {agent_id} was no longer active (expired or deregistered) and was \
                         registered again as agent {}; the tasks it had claimed and the locks it \
                         held are gone",
                        registered.agent_id
                    ),
                )
                .await;
                agent_id = registered.agent_id;
                every = registered.interval;
                stream = client.with_deadline(every).keep_alive(agent_id);
                ticker = tokio::time::interval(every);
                ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            }
            Err(err) => log_failed_registration(agent_id, &err),
        }
    }
}

fn log_failed_registration(agent_id: u64, err: &ClientError) {
    tracing::warn!(agent_id, error = %err, "could not register the session's agent again");
}
