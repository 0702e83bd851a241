//! `percy.v1.MessageService`: messages to one agent or to everyone, and mailbox history.

use std::sync::Arc;

use percy_proto::v1::message_service_server::MessageService;
use percy_proto::v1::*;
use percy_statemachine::{Op, Outcome, Recipient, Role};
use tonic::{Request, Response, Status};

use super::{observe, read, unexpected, write};
use crate::auth;
use crate::context::NodeContext;
use crate::convert::message_to_proto;

pub struct MessageApi {
    pub ctx: Arc<NodeContext>,
}

/// Agent 0 is the broadcast mailbox on the wire.
fn recipient(agent_id: u64) -> Recipient {
    if agent_id == 0 {
        Recipient::Broadcast
    } else {
        Recipient::Agent(agent_id)
    }
}

#[tonic::async_trait]
impl MessageService for MessageApi {
    async fn send(
        &self,
        request: Request<SendMessageRequest>,
    ) -> Result<Response<SendMessageResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "MessageService/Send", async {
            let r = request.into_inner();
            let op = Op::SendMessage {
                from: r.from,
                to: recipient(r.to_agent),
                body: r.body,
            };
            match write(ctx, r.header.as_ref(), op).await? {
                (Outcome::MessageSent { message, dropped }, header) => Ok(SendMessageResponse {
                    header,
                    message: Some(message_to_proto(&message)),
                    dropped,
                }),
                (other, _) => Err(unexpected(other)),
            }
        })
        .await
    }

    async fn history(
        &self,
        request: Request<MessageHistoryRequest>,
    ) -> Result<Response<MessageHistoryResponse>, Status> {
        let ctx = &self.ctx;
        observe(ctx, "MessageService/History", async {
            let r = request.into_inner();
            // An agent token reads its own inbox and the broadcast one only.
            let caller = auth::current(ctx)?;
            if r.agent_id != 0 && caller.as_ref().is_some_and(|c| c.role == Role::Agent) {
                auth::require_agent(ctx, caller.as_ref(), r.agent_id)?;
            }
            let mailbox = recipient(r.agent_id);
            let ((messages, dropped), header) = read(ctx, r.header.as_ref(), |sm| {
                let (messages, dropped) = sm.messages(&mailbox, r.after_id);
                (
                    messages.into_iter().map(message_to_proto).collect(),
                    dropped,
                )
            })
            .await?;
            Ok(MessageHistoryResponse {
                header,
                messages,
                dropped,
            })
        })
        .await
    }
}
