//! [`KeepAlive`]: an agent's heartbeats over one long-lived `AgentService/KeepAlive` stream
//! (like etcd's `LeaseKeepAlive`). A message on an open HTTP/2 stream costs the cluster far
//! less than a unary `Heartbeat` call, which matters with thousands of agents.
//!
//! The stream is opened on the first beat, on the client's preferred endpoint, and kept. A beat
//! that fails for a transport reason (or because the node has no leader) drops the stream,
//! moves the client to the next endpoint and tries again on a new stream, within the client's
//! retry policy, like any other call.

use percy_proto::v1::agent_service_client::AgentServiceClient;
use percy_proto::v1::{AgentLoad, KeepAliveRequest, KeepAliveResponse};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::client::back_off_or_give_up;
use crate::retry::is_retryable;
use crate::{Client, ClientError};

/// Requests queued towards the server on one stream: `beat` sends one and waits for its
/// answer before the next.
const OUTBOUND_QUEUE: usize = 1;

/// One agent's keep-alive stream; see the module documentation. Beats are sequential
/// (`&mut self`); for several agents, use one `KeepAlive` each (they share the client's
/// connections).
#[derive(Debug)]
pub struct KeepAlive {
    client: Client,
    agent_id: u64,
    stream: Option<OpenStream>,
    /// The endpoint the current (or last attempted) stream goes to.
    endpoint: usize,
    /// Sent with every beat from now on (see [`KeepAlive::set_load`]).
    load: Option<AgentLoad>,
}

#[derive(Debug)]
struct OpenStream {
    requests: mpsc::Sender<KeepAliveRequest>,
    replies: Streaming<KeepAliveResponse>,
}

impl Client {
    /// Heartbeats for `agent_id` over a keep-alive stream (opened on the first beat). Prefer
    /// it to [`Client::heartbeat`] for an agent that beats for a long time.
    pub fn keep_alive(&self, agent_id: u64) -> KeepAlive {
        KeepAlive {
            client: self.clone(),
            agent_id,
            stream: None,
            endpoint: 0,
            load: None,
        }
    }
}

impl KeepAlive {
    pub fn agent_id(&self) -> u64 {
        self.agent_id
    }

    /// The load the next beats report (the leader keeps the latest, in memory, and shows it
    /// in agent listings).
    pub fn set_load(&mut self, load: Option<AgentLoad>) {
        self.load = load;
    }

    /// Tells the leader the agent is alive. The reply says whether the agent must register
    /// again (it expired), as [`Client::heartbeat`]'s does.
    pub async fn beat(&mut self) -> Result<KeepAliveResponse, ClientError> {
        let retry = self.client.retry_policy();
        let started = Instant::now();
        let deadline = started + retry.deadline;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            let budget = retry.attempt_timeout.min(remaining);
            let error = match tokio::time::timeout(budget, self.attempt()).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(status)) if !is_retryable(&status) => {
                    // The server ended the stream with its answer.
                    self.stream = None;
                    return Err(status.into());
                }
                Ok(Err(status)) => ClientError::Status(status),
                Err(_elapsed) => ClientError::AttemptTimeout {
                    endpoint: self.client.endpoint_addr(self.endpoint).to_owned(),
                    timeout: budget,
                },
            };
            // A stream that failed, or whose answer is late, is out of step: start afresh on
            // the next endpoint.
            self.stream = None;
            self.client.rotate_from(self.endpoint);
            let endpoint = self.client.endpoint_addr(self.endpoint);
            back_off_or_give_up(&retry, attempts, started, deadline, error, endpoint).await?;
        }
    }

    /// One beat on the open stream, opening it first if needed.
    async fn attempt(&mut self) -> Result<KeepAliveResponse, Status> {
        let stream = match &mut self.stream {
            Some(stream) => stream,
            None => {
                let (endpoint, channel) = self.client.current_channel();
                self.endpoint = endpoint;
                let (requests, outbound) = mpsc::channel(OUTBOUND_QUEUE);
                let replies = AgentServiceClient::new(channel)
                    .keep_alive(ReceiverStream::new(outbound))
                    .await?
                    .into_inner();
                self.stream.insert(OpenStream { requests, replies })
            }
        };
        let request = KeepAliveRequest {
            agent_id: self.agent_id,
            load: self.load,
        };
        if stream.requests.send(request).await.is_err() {
            return Err(Status::unavailable("the keep-alive stream is closed"));
        }
        match stream.replies.message().await? {
            Some(reply) => Ok(reply),
            None => Err(Status::unavailable(
                "the server ended the keep-alive stream",
            )),
        }
    }
}
