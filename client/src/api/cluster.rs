//! ClusterService: Raft status of the answering node, membership changes.

use std::time::Duration;

use percy_proto::v1::cluster_service_client::ClusterServiceClient;
use percy_proto::v1::{
    AddNodeRequest, ClusterStatusRequest, ClusterStatusResponse, Consistency, MembershipResponse,
    RemoveNodeRequest, SnapshotRequest,
};

use crate::{Client, ClientError};

/// Extra time for membership changes: adding a node waits for it to catch up as a learner
/// before it is promoted, which takes far longer than an ordinary write.
const MEMBERSHIP_CHANGE_TIME: Duration = Duration::from_secs(30);
/// Extra time for a backup: the whole image is streamed in one attempt.
const SNAPSHOT_TRANSFER_TIME: Duration = Duration::from_secs(120);

impl Client {
    /// Raft status as the answering node sees it (term, leader, indexes, members).
    pub async fn cluster_status(
        &self,
        consistency: Consistency,
    ) -> Result<ClusterStatusResponse, ClientError> {
        self.read(consistency, |channel, header| {
            let request = ClusterStatusRequest {
                header: Some(header),
            };
            async move { ClusterServiceClient::new(channel).status(request).await }
        })
        .await
    }

    /// Adds a node: it joins as a learner, catches up, then becomes a voter.
    pub async fn add_node(
        &self,
        node_id: u64,
        addr: &str,
    ) -> Result<MembershipResponse, ClientError> {
        self.mutate(MEMBERSHIP_CHANGE_TIME, |channel, header| {
            let request = AddNodeRequest {
                header: Some(header),
                node_id,
                addr: addr.to_owned(),
            };
            async move { ClusterServiceClient::new(channel).add_node(request).await }
        })
        .await
    }

    /// A backup of the cluster's state (admin only): the bytes of a backup file
    /// (`percy_proto::backup`), taken after a linearizable read barrier, so it holds every
    /// write acknowledged before this call. The caller checks it with `backup::decode`.
    pub async fn snapshot(&self) -> Result<Vec<u8>, ClientError> {
        self.long_read(SNAPSHOT_TRANSFER_TIME, |channel, header| {
            let request = SnapshotRequest {
                header: Some(header),
            };
            async move {
                let mut stream = ClusterServiceClient::new(channel).snapshot(request).await?;
                let metadata = stream.metadata().clone();
                let mut file = Vec::new();
                while let Some(chunk) = stream.get_mut().message().await? {
                    file.extend_from_slice(&chunk.data);
                }
                let mut response = tonic::Response::new(file);
                *response.metadata_mut() = metadata;
                Ok(response)
            }
        })
        .await
    }

    pub async fn remove_node(&self, node_id: u64) -> Result<MembershipResponse, ClientError> {
        self.mutate(MEMBERSHIP_CHANGE_TIME, |channel, header| {
            let request = RemoveNodeRequest {
                header: Some(header),
                node_id,
            };
            async move {
                ClusterServiceClient::new(channel)
                    .remove_node(request)
                    .await
            }
        })
        .await
    }
}
