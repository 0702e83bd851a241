//! Messages in bounded mailboxes, one per recipient (each agent id, and broadcast). A full
//! mailbox drops its oldest message and counts it, so readers can tell they missed some.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::error::CommandError;
use crate::limits::MAILBOX_CAPACITY;
use crate::message::{Message, Recipient};
use crate::response::{Outcome, Response};

use super::ctx::Ctx;
use super::StateMachine;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mailbox {
    /// Oldest first; ids increase.
    pub messages: VecDeque<Message>,
    /// Messages dropped so far because the mailbox was full.
    pub dropped: u64,
}

impl Mailbox {
    /// Messages with id > `after_id`, oldest first.
    pub fn after(&self, after_id: u64) -> impl Iterator<Item = &Message> {
        let start = self.messages.partition_point(|m| m.id <= after_id);
        self.messages.range(start..)
    }
}

impl StateMachine {
    /// The message id is this revision. Sending to an agent needs the agent to exist (in any
    /// status: an operator may leave a note for an agent that is about to re-register).
    pub(super) fn send_message(
        &mut self,
        ctx: &mut Ctx,
        from: String,
        to: Recipient,
        body: String,
    ) -> Response {
        if let Recipient::Agent(agent_id) = to {
            if self.agents.get(agent_id).is_none() {
                return Err(CommandError::not_found(format!(
                    "agent {agent_id} not found"
                )));
            }
        }
        let message = Message {
            id: ctx.revision,
            from,
            to: to.clone(),
            body,
            sent_at_ms: ctx.now_ms,
        };
        let mailbox = self.mailboxes.entry(to.clone()).or_default();
        let mut dropped = 0;
        while mailbox.messages.len() >= MAILBOX_CAPACITY {
            let Some(oldest) = mailbox.messages.pop_front() else {
                break;
            };
            ctx.message_changed(&to, oldest.id, None);
            dropped += 1;
        }
        mailbox.dropped += dropped;
        mailbox.messages.push_back(message.clone());
        ctx.message_changed(&to, message.id, Some(&message));
        Ok(Outcome::MessageSent { message, dropped })
    }
}
