//! Messages for the session's agent, announced to the MCP client as they arrive.
//!
//! The announcement is an MCP logging notification (`notifications/message`, level
//! `notice`, logger [`INBOX_LOGGER`]) whose data is the message itself and a hint to call
//! `read_inbox`. Logging notifications reach every client of the initialize-era protocol
//! versions this server speaks (2024-11-05 to 2025-11-25) without a subscription, which
//! `notifications/resources/updated` would need; MCP 2026-07-28 deprecates logging
//! (SEP-2577), which is why the server does not offer that version yet (see
//! `tools::SUPPORTED_UP_TO`).
//!
//! The messages stay unread until `read_inbox`: the announcement does not move the read
//! position, so nothing is lost if the client ignores notifications.

// Logging notifications are deprecated only from MCP 2026-07-28 on; this server speaks the
// earlier versions, where they are the one notification every client receives.
#![allow(deprecated)]

use std::sync::Arc;

use futures::StreamExt;
use percy_client::proto::{event, Message};
use percy_client::{Client, ClientError, EntityKind, WatchOptions, BROADCAST};
use rmcp::model::{LoggingLevel, LoggingMessageNotificationParam};
use rmcp::{Peer, RoleServer};
use serde_json::json;

use super::session::Session;
use crate::views::MessageView;

/// Logger name of message announcements.
pub const INBOX_LOGGER: &str = "percy.inbox";
/// Logger name of the session's own warnings (the agent had to register again).
pub const SESSION_LOGGER: &str = "percy.session";
/// Pause before reopening a watch that ended (no node reachable for a while).
const WATCH_REOPEN_DELAY: std::time::Duration = std::time::Duration::from_secs(1);

/// Watches messages from `from_revision` on and announces each one addressed to the
/// session's agent or to everyone (except the agent's own broadcasts). Runs until aborted.
pub async fn announce_messages(
    client: Client,
    session: Arc<Session>,
    peer: Peer<RoleServer>,
    from_revision: u64,
) {
    let mut next_revision = from_revision;
    loop {
        let mut events = client.watch(WatchOptions {
            start_revision: next_revision,
            kinds: vec![EntityKind::Message],
            key_prefix: String::new(),
            task_statuses: Vec::new(),
            initial_state: false,
        });
        while let Some(item) = events.next().await {
            match item {
                Ok(event) => {
                    next_revision = next_revision.max(event.revision + 1);
                    if let Some(event::Value::Message(message)) = event.value {
                        if is_for(&session, &message).await {
                            announce(&session, &peer, &message).await;
                        }
                    }
                }
                Err(ClientError::Compacted { .. }) => {
                    // The missed messages are still in the mailbox for read_inbox.
                    next_revision = 0;
                }
                Err(err) => tracing::warn!(error = %err, "message watch ended; reopening"),
            }
        }
        tokio::time::sleep(WATCH_REOPEN_DELAY).await;
    }
}

async fn is_for(session: &Session, message: &Message) -> bool {
    let me = session.agent_id().await;
    message.to_agent == me
        || (message.to_agent == BROADCAST && message.from != session.name().await)
}

/// A level's severity, least severe first (the order the MCP specification lists them in).
pub fn rank(level: LoggingLevel) -> u8 {
    level as u8
}

async fn announce(session: &Session, peer: &Peer<RoleServer>, message: &Message) {
    let data = json!({
        "message": MessageView::from(message),
        "hint": "a message for this agent arrived; call read_inbox to read it",
    });
    send(session, peer, LoggingLevel::Notice, INBOX_LOGGER, data).await;
}

/// A warning about the session itself, for the client to show.
pub async fn warn(session: &Session, peer: &Peer<RoleServer>, text: String) {
    send(
        session,
        peer,
        LoggingLevel::Warning,
        SESSION_LOGGER,
        json!(text),
    )
    .await;
}

/// Sends a notification unless the client asked for more severe ones only
/// (`logging/setLevel`).
async fn send(
    session: &Session,
    peer: &Peer<RoleServer>,
    level: LoggingLevel,
    logger: &str,
    data: serde_json::Value,
) {
    if rank(level) < session.log_level() {
        return;
    }
    let notification = LoggingMessageNotificationParam::new(level, data).with_logger(logger);
    if let Err(err) = peer.notify_logging_message(notification).await {
        // The client went away; the session is ending.
        tracing::debug!(error = %err, "could not send a notification");
    }
}
