//! ExecService: the live output of an exec (attach as the caller, publish as the executor)
//! and an operator's cancel. Submitting an exec is `submit_task` of a task that requires
//! [`percy_proto::exec::EXEC_CAPABILITY`].

use futures::Stream;
use percy_proto::v1::exec_service_client::ExecServiceClient;
use percy_proto::v1::{
    AttachExecRequest, CancelExecRequest, ExecChunk, PublishExecResponse, TaskUpdateResponse,
};
use tonic::Streaming;

use crate::{Client, ClientError};

impl Client {
    /// Attaches to `exec_id`'s live output on one node, trying the endpoints in turn. Returns
    /// the endpoint that took it (the executor must publish there) and the stream, which
    /// ends after the publisher's last chunk (`eof`). No retries beyond one round of the
    /// endpoints: a broken stream cannot be resumed (the durable output tail is in the task).
    pub async fn attach_exec(
        &self,
        exec_id: &str,
    ) -> Result<(String, Streaming<ExecChunk>), ClientError> {
        let mut last = None;
        for _ in 0..self.endpoints().len().max(1) {
            let (index, channel) = self.current_channel();
            let request = AttachExecRequest {
                header: None,
                exec_id: exec_id.to_owned(),
            };
            let attempt = tokio::time::timeout(
                self.retry_policy().attempt_timeout,
                ExecServiceClient::new(channel).attach(request),
            )
            .await;
            match attempt {
                Ok(Ok(stream)) => {
                    return Ok((self.endpoint_addr(index).to_owned(), stream.into_inner()))
                }
                Ok(Err(status)) if !crate::retry::is_retryable(&status) => {
                    return Err(status.into())
                }
                Ok(Err(status)) => last = Some(ClientError::Status(status)),
                Err(_elapsed) => {
                    last = Some(ClientError::AttemptTimeout {
                        endpoint: self.endpoint_addr(index).to_owned(),
                        timeout: self.retry_policy().attempt_timeout,
                    })
                }
            }
            self.rotate_from(index);
        }
        Err(last.unwrap_or_else(|| tonic::Status::unavailable("no endpoint").into()))
    }

    /// Publishes an exec's output to the node behind this client's current endpoint (make
    /// a client of the one endpoint the caller attached to). One attempt: a stream cannot be
    /// replayed.
    pub async fn publish_exec(
        &self,
        chunks: impl Stream<Item = ExecChunk> + Send + 'static,
    ) -> Result<PublishExecResponse, ClientError> {
        let (_, channel) = self.current_channel();
        Ok(ExecServiceClient::new(channel)
            .publish(chunks)
            .await?
            .into_inner())
    }

    /// Cancels an exec that has not finished; its executor kills the command.
    pub async fn cancel_exec(
        &self,
        exec_id: &str,
        reason: &str,
    ) -> Result<TaskUpdateResponse, ClientError> {
        self.mutate(Default::default(), |channel, header| {
            let request = CancelExecRequest {
                header: Some(header),
                exec_id: exec_id.to_owned(),
                reason: reason.to_owned(),
            };
            async move { ExecServiceClient::new(channel).cancel(request).await }
        })
        .await
    }
}
