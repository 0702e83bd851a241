//! Entry points for fuzzing the decoders of what a disk or a peer hands a node (feature
//! `fuzzing`, used by `tests/fuzz`): each takes arbitrary bytes and must return — an error is
//! fine, a panic, a hang or an unbounded allocation is a bug.

use super::codec;
use super::snapshot::Envelope;
use super::wal::Wal;

/// A log segment file as found on disk after a crash: opened (a torn tail is cut, damage is
/// refused), then every entry it accepted is read back and decoded.
pub fn wal_segment(bytes: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else {
        return;
    };
    let wal_dir = dir.path().join(super::WAL_DIR_NAME);
    if std::fs::create_dir_all(&wal_dir).is_err()
        || std::fs::write(wal_dir.join(format!("{:020}.wal", 1)), bytes).is_err()
    {
        return;
    }
    let Ok(wal) = Wal::open(dir.path(), None) else {
        return;
    };
    if let Some(first) = wal.first_index() {
        if let Ok(entries) = wal.read(first, None) {
            for (_, payload) in entries {
                let _ = codec::decode_entry(&payload);
            }
        }
    }
}

/// One log entry's payload (what a segment record or an AppendEntries carries).
pub fn log_entry(bytes: &[u8]) {
    let _ = codec::decode_entry(bytes);
    let _ = codec::decode_entry_log_id(bytes);
}

/// A stored or received snapshot: the envelope, then the state machine image inside it.
pub fn snapshot(bytes: &[u8]) {
    if let Ok(envelope) = Envelope::decode(bytes) {
        let _ = percy_statemachine::StateMachine::restore(envelope.state);
    }
}

/// Seeds: valid inputs of the storage targets, made by the code under test.
pub mod seeds {
    use openraft::{EntryPayload, LeaderId, LogId};
    use percy_statemachine::Command;

    use crate::storage::codec;
    use crate::storage::snapshot::Envelope;
    use crate::storage::wal::Wal;
    use crate::types::{Proposal, StoredMembership, TypeConfig};

    fn entry(index: u64, commands: Vec<Command>) -> openraft::Entry<TypeConfig> {
        openraft::Entry {
            log_id: LogId::new(LeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Proposal {
                now_ms: 1_000 + index,
                commands,
            }),
        }
    }

    /// An encoded log entry carrying `commands`.
    pub fn log_entry(commands: Vec<Command>) -> Vec<u8> {
        codec::encode_entry(&entry(1, commands)).unwrap_or_default()
    }

    /// A stored snapshot around the state machine image `state`.
    pub fn snapshot(state: &[u8]) -> Vec<u8> {
        Envelope {
            last_applied: Some(LogId::new(LeaderId::new(1, 1), 7)),
            last_membership: StoredMembership::default(),
            state,
        }
        .encode()
        .unwrap_or_default()
    }

    /// A log segment file holding one entry per command batch, as percyd writes it (without
    /// the preallocated zeros after the last record).
    pub fn wal_segment(batches: Vec<Vec<Command>>) -> Vec<u8> {
        let Ok(dir) = tempfile::tempdir() else {
            return Vec::new();
        };
        let Ok(mut wal) = Wal::open(dir.path(), None) else {
            return Vec::new();
        };
        let entries: Vec<(u64, Vec<u8>)> = batches
            .into_iter()
            .zip(1u64..)
            .filter_map(|(commands, index)| {
                Some((index, codec::encode_entry(&entry(index, commands)).ok()?))
            })
            .collect();
        if wal.append(&entries).is_err() {
            return Vec::new();
        }
        drop(wal);
        let path = dir
            .path()
            .join(super::super::WAL_DIR_NAME)
            .join(format!("{:020}.wal", 1));
        let mut bytes = std::fs::read(path).unwrap_or_default();
        // Up to the end of the last record: the rest is preallocated zeros.
        let mut end = 0;
        while let Ok((payload_offset, payload)) = crate::storage::wal::parse_record(&bytes, end) {
            end = payload_offset + payload.len() as u64;
        }
        bytes.truncate(end as usize);
        bytes
    }
}
