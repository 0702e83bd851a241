//! Byte layout of every record the storage layer writes: one format-version byte, then postcard.
//!
//! Owns: the encoding of log entries, votes, log ids, snapshot metadata and the snapshot
//! envelope header, and nothing else.
//! Must not: touch sled or know where a record is stored.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{LogId, TypeConfig};

/// Version of the record encoding. Bump it when any record's layout changes incompatibly;
/// a record with another version is refused (never misread).
pub const RECORD_FORMAT_VERSION: u8 = 2;

/// Room reserved up front for an encoded record; most log entries fit, so encoding one
/// entry costs one allocation.
const ENCODE_INITIAL_CAPACITY: usize = 128;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("empty record")]
    Empty,
    #[error("record format version {found}, this build reads version {RECORD_FORMAT_VERSION}")]
    UnknownVersion { found: u8 },
    #[error("undecodable record: {0}")]
    Postcard(#[from] postcard::Error),
    #[error("{0} unexpected trailing bytes after the record")]
    TrailingBytes(usize),
}

/// Encodes `value` behind the format-version byte.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    let mut buf = Vec::with_capacity(ENCODE_INITIAL_CAPACITY);
    buf.push(RECORD_FORMAT_VERSION);
    postcard::to_extend(value, buf)
}

/// Decodes a whole record written by [`encode`]; trailing bytes are an error (a sign of a
/// record written by something else).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = decode_prefix(bytes)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingBytes(rest.len()))
    }
}

/// Decodes the value at the start of a record and returns the bytes after it.
pub fn decode_prefix<T: DeserializeOwned>(bytes: &[u8]) -> Result<(T, &[u8]), DecodeError> {
    let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
    if version != RECORD_FORMAT_VERSION {
        return Err(DecodeError::UnknownVersion { found: version });
    }
    Ok(postcard::take_from_bytes(body)?)
}

/// A log entry is stored as `(log_id, payload)`, so its log id can be read without decoding
/// the payload (see [`decode_entry_log_id`]).
pub fn encode_entry(entry: &openraft::Entry<TypeConfig>) -> Result<Vec<u8>, postcard::Error> {
    encode(&(&entry.log_id, &entry.payload))
}

pub fn decode_entry(bytes: &[u8]) -> Result<openraft::Entry<TypeConfig>, DecodeError> {
    let (log_id, payload) = decode::<(LogId, openraft::EntryPayload<TypeConfig>)>(bytes)?;
    Ok(openraft::Entry { log_id, payload })
}

/// Reads only the log id at the front of an encoded entry.
pub fn decode_entry_log_id(bytes: &[u8]) -> Result<LogId, DecodeError> {
    decode_prefix::<LogId>(bytes).map(|(log_id, _payload)| log_id)
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, Membership};
    use percy_statemachine::{Command, Op};

    use super::*;
    use crate::types::Proposal;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn entries_round_trip_and_expose_their_log_id() {
        let entries = [
            Entry::<TypeConfig> {
                log_id: log_id(1, 1),
                payload: EntryPayload::Blank,
            },
            Entry {
                log_id: log_id(2, 7),
                payload: EntryPayload::Normal(Proposal {
                    now_ms: 42,
                    commands: vec![Command::new(Op::Tick), Command::new(Op::Tick)],
                }),
            },
            Entry {
                log_id: log_id(3, 9),
                payload: EntryPayload::Membership(Membership::new(vec![[1u64, 2].into()], None)),
            },
        ];
        for entry in entries {
            let bytes = encode_entry(&entry).expect("encode");
            assert_eq!(decode_entry_log_id(&bytes).expect("log id"), entry.log_id);
            assert_eq!(decode_entry(&bytes).expect("entry"), entry);
        }
    }

    #[test]
    fn foreign_versions_and_garbage_are_refused() {
        let mut bytes = encode(&log_id(1, 1)).expect("encode");
        assert!(matches!(decode::<LogId>(&[]), Err(DecodeError::Empty)));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            decode::<LogId>(&longer),
            Err(DecodeError::TrailingBytes(1))
        ));
        bytes[0] = RECORD_FORMAT_VERSION + 1;
        assert!(matches!(
            decode::<LogId>(&bytes),
            Err(DecodeError::UnknownVersion { .. })
        ));
        assert!(matches!(
            decode::<LogId>(&[RECORD_FORMAT_VERSION, 0xff]),
            Err(DecodeError::Postcard(_))
        ));
    }
}
