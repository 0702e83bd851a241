//! The payloads of the internal `RaftService` (proto/raft.proto carries them as opaque bytes):
//! openraft's own RPC types and Percy's forwarding messages, encoded with postcard behind a
//! one-byte wire version so that a node of an incompatible build fails loudly, not subtly.
//! Encoding only; what the messages mean lives in `network`, `raft_service` and `propose`.

use percy_statemachine::{AgentStatus, Command};
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
    /// Proposed or not, the outcome is unknown (commit timed out, node shutting down).
    Unavailable(String),
}

pub type ForwardReply = Result<CommandResult, ForwardError>;

/// A follower relays an agent heartbeat to the leader's in-memory liveness table.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeartbeatForward {
    pub agent_id: u64,
}

/// The leader's view of the agent after recording the heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum HeartbeatReply {
    Recorded {
        /// `None`: the leader does not know the agent.
        status: Option<AgentStatus>,
        ttl_ms: u64,
    },
    NotLeader {
        leader: Option<NodeId>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_other_versions() {
        let reply = HeartbeatReply::Recorded {
            status: Some(AgentStatus::Active),
            ttl_ms: 10,
        };
        let bytes = encode(&reply).unwrap();
        assert_eq!(decode::<HeartbeatReply>(&bytes).unwrap(), reply);
        let mut other = bytes.clone();
        other[0] = WIRE_VERSION + 1;
        assert!(matches!(
            decode::<HeartbeatReply>(&other),
            Err(WireError::Version { .. })
        ));
        assert!(matches!(
            decode::<HeartbeatReply>(&[]),
            Err(WireError::Empty)
        ));
    }
}
