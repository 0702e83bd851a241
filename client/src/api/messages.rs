//! MessageService: operator/agent chat and steering messages.

use percy_proto::v1::message_service_client::MessageServiceClient;
use percy_proto::v1::{
    Consistency, MessageHistoryRequest, MessageHistoryResponse, SendMessageRequest,
    SendMessageResponse,
};

use crate::{Client, ClientError};

/// `to_agent` value that addresses every agent.
pub const BROADCAST: u64 = 0;

impl Client {
    /// Sends `body` from `from` (a free-form sender name) to agent `to_agent`, or to everyone
    /// when it is [`BROADCAST`].
    pub async fn send_message(
        &self,
        from: &str,
        to_agent: u64,
        body: &str,
    ) -> Result<SendMessageResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = SendMessageRequest {
                header: Some(header),
                from: from.to_owned(),
                to_agent,
                body: body.to_owned(),
            };
            async move { MessageServiceClient::new(channel).send(request).await }
        })
        .await
    }

    /// Messages in agent `agent_id`'s mailbox ([`BROADCAST`] = the broadcast mailbox) with
    /// ids above `after_id`.
    pub async fn message_history(
        &self,
        agent_id: u64,
        after_id: u64,
        consistency: Consistency,
    ) -> Result<MessageHistoryResponse, ClientError> {
        self.read(consistency, |channel, header| {
            let request = MessageHistoryRequest {
                header: Some(header),
                agent_id,
                after_id,
            };
            async move { MessageServiceClient::new(channel).history(request).await }
        })
        .await
    }
}
