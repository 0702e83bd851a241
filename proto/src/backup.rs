//! The backup file of `percyctl snapshot save` / `percyd restore`: one consistent image of the
//! state machine, with what it is and a checksum over all of it.
//!
//! Layout (integers little-endian):
//!
//! ```text
//! magic       8 bytes   "PERCYSNP"
//! version     u32       FORMAT_VERSION
//! header_len  u32       then header_len bytes: SnapshotFileHeader (protobuf)
//! image_len   u64       then image_len bytes: the state machine image (StateMachine::snapshot,
//!                       which carries its own encoding version)
//! checksum    32 bytes  SHA-256 of every byte before it
//! ```
//!
//! Why a file format of its own rather than the Raft snapshot envelope: the envelope names a
//! log position and membership of the old cluster, which a restored cluster must not inherit;
//! the file names only the revision and the cluster it came from. Decoding checks the magic,
//! the version, the lengths and the checksum before it hands out anything, so a truncated or
//! bit-flipped file is refused as a whole.
//!
//! Owns: the layout. Must not: interpret the image (the server and the state machine do).

use prost::Message;
use sha2::{Digest, Sha256};

use crate::v1::SnapshotFileHeader;

pub const MAGIC: &[u8; 8] = b"PERCYSNP";
pub const FORMAT_VERSION: u32 = 1;
const CHECKSUM_BYTES: usize = 32;
/// Largest header accepted: far above what the fields need, low enough that a damaged length
/// cannot ask for a huge allocation.
const MAX_HEADER_BYTES: u32 = 64 * 1024;
/// Magic, version, header length, image length, checksum.
const FIXED_BYTES: usize = 8 + 4 + 4 + 8 + CHECKSUM_BYTES;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupError {
    #[error("not a Percy snapshot file (no PERCYSNP magic at the start)")]
    NotASnapshot,
    #[error("snapshot file format {found} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedVersion { found: u32 },
    #[error("snapshot file is truncated: {found} bytes, the lengths it records need {needed}")]
    Truncated { found: u64, needed: u64 },
    #[error("snapshot file has {extra} bytes after its checksum")]
    TrailingBytes { extra: u64 },
    #[error("snapshot file is damaged: checksum mismatch (SHA-256 of the content is {computed}, the file records {recorded})")]
    ChecksumMismatch { computed: String, recorded: String },
    #[error("snapshot file header is damaged: {0}")]
    BadHeader(String),
}

/// A decoded backup file; `image` borrows from the input bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Backup<'a> {
    pub header: SnapshotFileHeader,
    pub image: &'a [u8],
    /// The SHA-256 the file carries (checked), hex.
    pub checksum: String,
}

/// The file's bytes for `header` and `image`.
pub fn encode(header: &SnapshotFileHeader, image: &[u8]) -> Vec<u8> {
    let header_bytes = header.encode_to_vec();
    let mut out = Vec::with_capacity(FIXED_BYTES + header_bytes.len() + image.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    // A header is a handful of small fields: far below u32::MAX.
    out.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(&(image.len() as u64).to_le_bytes());
    out.extend_from_slice(image);
    let checksum = Sha256::digest(&out);
    out.extend_from_slice(&checksum);
    out
}

/// Checks and decodes a whole file.
pub fn decode(bytes: &[u8]) -> Result<Backup<'_>, BackupError> {
    let found = bytes.len() as u64;
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(BackupError::NotASnapshot);
    }
    let mut at = MAGIC.len();
    let truncated = |needed: u64| BackupError::Truncated { found, needed };
    let version = u32::from_le_bytes(take::<4>(bytes, &mut at).ok_or(truncated(12))?);
    if version != FORMAT_VERSION {
        return Err(BackupError::UnsupportedVersion { found: version });
    }
    let header_len = u32::from_le_bytes(take::<4>(bytes, &mut at).ok_or(truncated(16))?);
    if header_len > MAX_HEADER_BYTES {
        return Err(BackupError::BadHeader(format!(
            "it claims {header_len} bytes (at most {MAX_HEADER_BYTES})"
        )));
    }
    let header_at = at;
    let header_end = header_at + header_len as usize;
    let image_len_at = header_end;
    // Everything up to and including the image length, so the image length can be read.
    let needed_for_len = image_len_at as u64 + 8;
    if found < needed_for_len {
        return Err(truncated(needed_for_len + CHECKSUM_BYTES as u64));
    }
    at = image_len_at;
    let image_len = u64::from_le_bytes(take::<8>(bytes, &mut at).ok_or(truncated(needed_for_len))?);
    let needed = (at as u64)
        .checked_add(image_len)
        .and_then(|n| n.checked_add(CHECKSUM_BYTES as u64))
        .ok_or(truncated(u64::MAX))?;
    if found < needed {
        return Err(truncated(needed));
    }
    if found > needed {
        return Err(BackupError::TrailingBytes {
            extra: found - needed,
        });
    }
    let content_end = bytes.len() - CHECKSUM_BYTES;
    let computed = Sha256::digest(&bytes[..content_end]);
    let recorded = &bytes[content_end..];
    if computed.as_slice() != recorded {
        return Err(BackupError::ChecksumMismatch {
            computed: hex(&computed),
            recorded: hex(recorded),
        });
    }
    let header = SnapshotFileHeader::decode(&bytes[header_at..header_end])
        .map_err(|e| BackupError::BadHeader(e.to_string()))?;
    Ok(Backup {
        header,
        image: &bytes[at..content_end],
        checksum: hex(recorded),
    })
}

fn take<const N: usize>(bytes: &[u8], at: &mut usize) -> Option<[u8; N]> {
    let slice = bytes.get(*at..at.checked_add(N)?)?;
    *at += N;
    slice.try_into().ok()
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::SnapshotCounts;

    fn sample() -> Vec<u8> {
        let header = SnapshotFileHeader {
            cluster_id: "00112233445566778899aabbccddeeff".into(),
            revision: 42,
            node_id: 2,
            created_ms: 1_700_000_000_000,
            counts: Some(SnapshotCounts {
                agents: 3,
                tasks: 7,
                ..Default::default()
            }),
        };
        encode(&header, b"the state machine image")
    }

    #[test]
    fn a_file_decodes_to_what_was_encoded() {
        let bytes = sample();
        let backup = decode(&bytes).expect("decodes");
        assert_eq!(backup.header.revision, 42);
        assert_eq!(backup.header.counts.as_ref().map(|c| c.tasks), Some(7));
        assert_eq!(backup.image, b"the state machine image");
        assert_eq!(backup.checksum.len(), 64);
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = sample();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "accepted {len} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(
            decode(&longer),
            Err(BackupError::TrailingBytes { extra: 1 })
        );
    }

    #[test]
    fn every_single_bit_flip_is_refused() {
        let bytes = sample();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut flipped = bytes.clone();
                flipped[i] ^= 1 << bit;
                assert!(
                    decode(&flipped).is_err(),
                    "accepted a flip of bit {bit} of byte {i}"
                );
            }
        }
    }

    #[test]
    fn a_huge_recorded_length_is_refused_without_allocating() {
        let mut bytes = sample();
        bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&bytes), Err(BackupError::BadHeader(_))));
    }
}
