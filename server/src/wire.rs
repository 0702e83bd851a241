//! The payloads of the internal `RaftService` (proto/raft.proto carries them as opaque bytes):
//! openraft's own RPC types and Percy's forwarding messages, encoded with postcard behind a
//! one-byte wire version so that a node of an incompatible build fails loudly, not subtly.
//! Encoding only; what the messages mean lives in `network`, `raft_service` and `propose`.

use openraft::error::RaftError;
use openraft::raft::AppendEntriesResponse;
use percy_statemachine::{AgentId, AgentLoad, AgentStatus, Command};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::types::{CommandResult, NodeId};

/// Bumped whenever any payload below (or openraft's serde form) changes incompatibly.
pub const WIRE_VERSION: u8 = 2;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("peer speaks internal wire version {found}, this node speaks {WIRE_VERSION}")]
    Version { found: u8 },
    #[error("empty internal payload")]
    Empty,
    #[error("internal payload does not decode: {0}")]
    Codec(#[from] postcard::Error),
}

pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![WIRE_VERSION];
    out.extend(postcard::to_stdvec(value)?);
    Ok(out)
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    match bytes.split_first() {
        None => Err(WireError::Empty),
        Some((&WIRE_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&found, _)) => Err(WireError::Version { found }),
    }
}

/// A follower's write, forwarded to the leader, which stamps `now_ms` and proposes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForwardRequest {
    pub command: Command,
}

/// Why the leader did not produce a [`CommandResult`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum ForwardError {
    /// The receiver is not the leader (any more); the command was not proposed.
    NotLeader { leader: Option<NodeId> },
    /// The command was certainly not proposed (the queue stayed full, it did not encode, the
    /// leader had no address or could not be dialled): retrying it anywhere is safe.
    NotProposed(String),
    /// The command may have been applied, or not (commit timed out, the node shut down while
    /// it was in flight, the forward stream broke after sending): only a write the session
    /// table deduplicates may be retried.
    Unknown(String),
}

pub type ForwardReply = Result<CommandResult, ForwardError>;

/// One message on an internal stream (`tagged_stream`): a request, or the answer to the
/// request with the same `id`. `M` is borrowed when sending and owned when received.
#[derive(Debug, Serialize, Deserialize)]
pub struct Tagged<M> {
    pub id: u64,
    pub message: M,
}

/// What openraft answers an AppendEntries with, as the unary call returns it.
pub type AppendEntriesResult = Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>;

/// A batch of agent heartbeats a follower received, relayed to the leader's in-memory
/// liveness table (one message for many heartbeats, so the leader pays one RPC per batch).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatRelay {
    pub agent_ids: Vec<u64>,
    /// The loads some of those heartbeats reported (added after `agent_ids`: see
    /// [`decode_heartbeat_relay`]).
    pub loads: Vec<(AgentId, AgentLoad)>,
}

/// A [`HeartbeatRelay`] as nodes sent it before heartbeats carried loads.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HeartbeatRelayWithoutLoads {
    agent_ids: Vec<u64>,
}

/// Decodes a relayed batch, also from a node of the previous build (without loads): the field
/// was added at the end, so such a batch is the same bytes cut before it. (A newer batch
/// decodes on an older leader as it is: postcard ignores trailing bytes.)
pub fn decode_heartbeat_relay(bytes: &[u8]) -> Result<HeartbeatRelay, WireError> {
    decode::<HeartbeatRelay>(bytes).or_else(|error| {
        match decode::<HeartbeatRelayWithoutLoads>(bytes) {
            Ok(old) => Ok(HeartbeatRelay {
                agent_ids: old.agent_ids,
                loads: Vec::new(),
            }),
            Err(_) => Err(error),
        }
    })
}

/// The leader's view of one agent after recording its heartbeat.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentLiveness {
    /// `None`: the leader does not know the agent.
    pub status: Option<AgentStatus>,
    pub ttl_ms: u64,
}

/// The leader's answer to a [`HeartbeatRelay`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum RelayReply {
    /// One entry per relayed agent id, in the same order.
    Recorded(Vec<AgentLiveness>),
    /// The receiver is not the leader (any more); nothing was recorded.
    NotLeader { leader: Option<NodeId> },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_batch_without_loads_still_decodes() {
        let old = encode(&HeartbeatRelayWithoutLoads {
            agent_ids: vec![3, 4],
        })
        .unwrap();
        let batch = decode_heartbeat_relay(&old).unwrap();
        assert_eq!(batch.agent_ids, vec![3, 4]);
        assert!(batch.loads.is_empty());
        let load = AgentLoad {
            cores: Some(8),
            ..AgentLoad::default()
        };
        let new = encode(&HeartbeatRelay {
            agent_ids: vec![3],
            loads: vec![(3, load)],
        })
        .unwrap();
        assert_eq!(decode_heartbeat_relay(&new).unwrap().loads, vec![(3, load)]);
    }

    #[test]
    fn round_trips_and_refuses_other_versions() {
        let reply = RelayReply::Recorded(vec![
            AgentLiveness {
                status: Some(AgentStatus::Active),
                ttl_ms: 10,
            },
            AgentLiveness {
                status: None,
                ttl_ms: 0,
            },
        ]);
        let bytes = encode(&reply).unwrap();
        assert_eq!(decode::<RelayReply>(&bytes).unwrap(), reply);
        let mut other = bytes.clone();
        other[0] = WIRE_VERSION + 1;
        assert!(matches!(
            decode::<RelayReply>(&other),
            Err(WireError::Version { .. })
        ));
        assert!(matches!(decode::<RelayReply>(&[]), Err(WireError::Empty)));
    }
}
