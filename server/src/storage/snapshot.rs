//! The snapshot format and where the latest snapshot is kept.
//!
//! A snapshot's bytes (what openraft streams to a follower) are a self-describing envelope:
//! the version byte and a postcard header with the last applied log id and membership, then
//! the state machine's own image (`StateMachine::snapshot()`, which carries its own version).
//! The receiver can therefore check that the bytes match the metadata openraft sent along.
//!
//! The latest snapshot is one file, `<data_dir>/snapshot` ([`SnapshotFile`]): written whole
//! to `snapshot.tmp`, fsynced, renamed over the previous one and the directory synced, so a
//! crash leaves the old snapshot or the new one, never a mix. It used to be a value in sled's
//! `snapshot` tree, whose page cache kept the whole image in memory for the life of the
//! process (~95 B per task at a million tasks) and whose blob files sled never syncs; a data
//! dir written that way moves its snapshot to the file when it is opened
//! ([`migrate_from_sled`]).
//!
//! Owns: the envelope layout and the snapshot file's layout. Must not: touch the live state
//! machine, or decide when to snapshot.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::storage::codec::{self, DecodeError};
use crate::storage::db::Database;
use crate::storage::dir_sync::sync_dir;
use crate::storage::error::StorageError;
use crate::storage::wal::file_error;
use crate::types::{LogId, NodeId, StoredMembership};

pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

const KEY_META: &[u8] = b"meta";
const KEY_DATA: &[u8] = b"data";

#[derive(Serialize, Deserialize)]
struct EnvelopeHeader {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
}

/// A decoded envelope; `state` borrows the state machine image from the input bytes.
pub(crate) struct Envelope<'a> {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: &'a [u8],
}

impl Envelope<'_> {
    pub fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut bytes = Self::header(self.last_applied, &self.last_membership)?;
        bytes.extend_from_slice(self.state);
        Ok(bytes)
    }

    /// The envelope without its state: the state machine image is appended to it
    /// (`StateMachine::snapshot_appended_to`) instead of being copied in.
    pub fn header(
        last_applied: Option<LogId>,
        last_membership: &StoredMembership,
    ) -> Result<Vec<u8>, postcard::Error> {
        codec::encode(&EnvelopeHeader {
            last_applied,
            last_membership: last_membership.clone(),
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope<'_>, DecodeError> {
        let (header, state) = codec::decode_prefix::<EnvelopeHeader>(bytes)?;
        Ok(Envelope {
            last_applied: header.last_applied,
            last_membership: header.last_membership,
            state,
        })
    }

    /// Decodes `bytes`, which must describe the same point in the log as the metadata they
    /// came with (stored beside them, or sent along by openraft).
    pub fn decode_matching<'a>(
        bytes: &'a [u8],
        meta: &SnapshotMeta,
    ) -> Result<Envelope<'a>, String> {
        let envelope = Envelope::decode(bytes).map_err(|e| e.to_string())?;
        if envelope.last_applied != meta.last_log_id
            || envelope.last_membership != meta.last_membership
        {
            return Err(format!(
                "snapshot bytes are for last applied {:?} / membership {:?}, metadata says {:?} / {:?}",
                envelope.last_applied, envelope.last_membership, meta.last_log_id, meta.last_membership
            ));
        }
        Ok(envelope)
    }
}

/// The latest snapshot's file name in the data dir, and the name it is written under first.
const FILE_NAME: &str = "snapshot";
const TEMPORARY_FILE_NAME: &str = "snapshot.tmp";
/// The file starts with these bytes, then [`FILE_VERSION`].
const FILE_MAGIC: &[u8; 4] = b"PSNP";
/// Bump when the layout below changes.
const FILE_VERSION: u8 = 1;
/// Magic, version, CRC-32 of the rest of the file, length of the metadata (little endian):
/// then the metadata (`codec`), then the snapshot's bytes (the envelope) to the end.
const CRC_AT: usize = FILE_MAGIC.len() + 1;
/// Where the CRC field ends: it covers the rest of the file.
const CRC_END: usize = CRC_AT + 4;
const FILE_HEADER_LEN: usize = CRC_END + 4;
/// Encoded snapshot metadata is a log id and a membership: far below this unless the file
/// is damaged, which this bound turns into an error instead of a huge read.
const METADATA_AT_MOST: usize = 1 << 20;

/// A loaded snapshot's bytes (the envelope): the snapshot file mapped, or read where it
/// cannot be mapped (a FUSE file opened for direct I/O, as the fault suite's power-loss
/// filesystem does, refuses `mmap`).
pub(crate) struct SnapshotBytes {
    file: FileBytes,
    /// Where the envelope starts, after the header and the metadata.
    start: usize,
}

enum FileBytes {
    Mapped(memmap2::Mmap),
    Read(Vec<u8>),
}

impl FileBytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            FileBytes::Mapped(map) => map,
            FileBytes::Read(bytes) => bytes,
        }
    }
}

impl std::ops::Deref for SnapshotBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.file.as_slice()[self.start..]
    }
}

/// The data dir's latest snapshot: its metadata and bytes, replaced together.
#[derive(Clone)]
pub(crate) struct SnapshotFile {
    data_dir: PathBuf,
    path: PathBuf,
}

impl SnapshotFile {
    /// The snapshot file of `data_dir`. A temporary file left by a crash in the middle of a
    /// write is removed: the snapshot it would have become was never reported built.
    pub fn open(data_dir: &Path) -> Result<Self, StorageError> {
        let file = Self {
            data_dir: data_dir.to_path_buf(),
            path: data_dir.join(FILE_NAME),
        };
        let temporary = file.temporary_path();
        match std::fs::remove_file(&temporary) {
            Ok(()) => sync_dir(&file.data_dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(file_error(
                    &temporary,
                    "removing a half-written snapshot",
                    e,
                ))
            }
        }
        Ok(file)
    }

    fn temporary_path(&self) -> PathBuf {
        self.data_dir.join(TEMPORARY_FILE_NAME)
    }

    /// Replaces the snapshot, metadata and bytes together, durably: when this returns, a
    /// crash leaves this snapshot. Blocking I/O.
    pub fn store(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let meta_bytes = codec::encode(meta).map_err(|e| self.corrupt("snapshot metadata", e))?;
        let meta_len = u32::try_from(meta_bytes.len())
            .ok()
            .filter(|len| (*len as usize) <= METADATA_AT_MOST)
            .ok_or_else(|| self.corrupt("snapshot metadata", "too large"))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&meta_len.to_le_bytes());
        crc.update(&meta_bytes);
        crc.update(data);
        let mut header = Vec::with_capacity(FILE_HEADER_LEN);
        header.extend_from_slice(FILE_MAGIC);
        header.push(FILE_VERSION);
        header.extend_from_slice(&crc.finalize().to_le_bytes());
        header.extend_from_slice(&meta_len.to_le_bytes());

        let temporary = self.temporary_path();
        File::create(&temporary)
            .and_then(|mut file| {
                file.write_all(&header)?;
                file.write_all(&meta_bytes)?;
                file.write_all(data)?;
                file.sync_all()
            })
            .map_err(|e| file_error(&temporary, "writing and syncing the new snapshot", e))?;
        std::fs::rename(&temporary, &self.path)
            .map_err(|e| file_error(&self.path, "renaming the new snapshot into place", e))?;
        sync_dir(&self.data_dir)
    }

    /// The snapshot's metadata, without reading its bytes.
    pub fn load_meta(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        let Some(mut file) = self.open_existing()? else {
            return Ok(None);
        };
        let (_crc, meta_bytes) = self.read_to_metadata(&mut file)?;
        codec::decode(&meta_bytes)
            .map(Some)
            .map_err(|e| self.corrupt("snapshot metadata", e))
    }

    /// The snapshot, checked: its CRC, and its bytes against its metadata. The bytes are the
    /// file mapped read-only, not a copy: reading ~90 MB (a million tasks) into a buffer cost
    /// as many freshly zeroed pages plus the copy, a fifth of a restart's samples.
    pub fn load(&self) -> Result<Option<(SnapshotMeta, SnapshotBytes)>, StorageError> {
        let Some(file) = self.open_existing()? else {
            return Ok(None);
        };
        let len = file.metadata().map_err(|e| self.read_error(e))?.len();
        if len < FILE_HEADER_LEN as u64 {
            return Err(self.corrupt("snapshot", "the file ends inside its header"));
        }
        // SAFETY: the mapping is undefined behaviour only if the file changes while mapped.
        // Percy never writes a snapshot file in place: a new one is written under another
        // name and renamed over it (a new inode; this mapping keeps the old one), and the data
        // dir is this process's alone (sled's lock on `db/` refuses a second percyd).
        let bytes = match unsafe { memmap2::Mmap::map(&file) } {
            Ok(map) => FileBytes::Mapped(map),
            Err(_cannot_map) => {
                let mut bytes = Vec::new();
                (&file)
                    .read_to_end(&mut bytes)
                    .map_err(|e| self.read_error(e))?;
                FileBytes::Read(bytes)
            }
        };
        let map = bytes.as_slice();
        let (crc, meta_bytes) = self.read_to_metadata(&mut &map[..])?;
        // The CRC covers everything after itself: the metadata's length, the metadata, the data.
        if crc32fast::hash(&map[CRC_END..]) != crc {
            return Err(self.corrupt("snapshot", "CRC mismatch (the file is damaged)"));
        }
        let meta: SnapshotMeta =
            codec::decode(&meta_bytes).map_err(|e| self.corrupt("snapshot metadata", e))?;
        let start = FILE_HEADER_LEN + meta_bytes.len();
        let data = SnapshotBytes { file: bytes, start };
        Envelope::decode_matching(&data, &meta).map_err(|e| self.corrupt("snapshot", e))?;
        Ok(Some((meta, data)))
    }

    fn open_existing(&self) -> Result<Option<File>, StorageError> {
        match File::open(&self.path) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.read_error(e)),
        }
    }

    /// Reads the header (checking magic and version) and the metadata's bytes; returns the
    /// CRC the header records and those bytes.
    fn read_to_metadata(&self, file: &mut impl Read) -> Result<(u32, Vec<u8>), StorageError> {
        let cut = |what| {
            move |e: std::io::Error| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => {
                    self.corrupt("snapshot", format!("the file ends inside {what}"))
                }
                _ => self.read_error(e),
            }
        };
        let mut header = [0u8; FILE_HEADER_LEN];
        file.read_exact(&mut header).map_err(cut("its header"))?;
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        if &header[..FILE_MAGIC.len()] != FILE_MAGIC {
            return Err(self.corrupt("snapshot", "not a Percy snapshot file (bad magic)"));
        }
        let version = header[FILE_MAGIC.len()];
        if version != FILE_VERSION {
            return Err(StorageError::FormatVersion {
                path: self.path.clone(),
                what: "snapshot file",
                found: version,
                expected: FILE_VERSION,
            });
        }
        let meta_len = word(CRC_END) as usize;
        if meta_len > METADATA_AT_MOST {
            return Err(self.corrupt("snapshot metadata", format!("claims {meta_len} bytes")));
        }
        let mut meta_bytes = vec![0; meta_len];
        file.read_exact(&mut meta_bytes)
            .map_err(cut("the metadata"))?;
        Ok((word(CRC_AT), meta_bytes))
    }

    fn read_error(&self, e: std::io::Error) -> StorageError {
        file_error(&self.path, "reading the snapshot", e)
    }

    /// The blocking thread a load or store ran on failed (it panicked, or the runtime is
    /// shutting down).
    pub fn thread_error(&self, e: tokio::task::JoinError) -> StorageError {
        file_error(
            &self.path,
            "running the snapshot's I/O thread",
            std::io::Error::other(e),
        )
    }

    pub fn corrupt(&self, what: &str, detail: impl ToString) -> StorageError {
        StorageError::Corrupt {
            path: self.path.clone(),
            what: what.to_string(),
            detail: detail.to_string(),
        }
    }
}

/// Moves the snapshot of a data dir written before the snapshot file (metadata and bytes in
/// sled's `snapshot` tree) into the file, then removes it from sled. Idempotent: a crash in
/// between leaves both, and the next open writes the file again from sled.
pub(crate) fn migrate_from_sled(db: &Database, file: &SnapshotFile) -> Result<(), StorageError> {
    let read = |key| {
        db.snapshot
            .get(key)
            .map_err(|e| db.io_error("reading the snapshot tree", e))
    };
    let Some(meta_bytes) = read(KEY_META)? else {
        return Ok(());
    };
    let data = read(KEY_DATA)?
        .ok_or_else(|| db.corrupt("snapshot", "metadata present but bytes missing"))?;
    let meta: SnapshotMeta =
        codec::decode(&meta_bytes).map_err(|e| db.corrupt("snapshot metadata", e))?;
    Envelope::decode_matching(&data, &meta).map_err(|e| db.corrupt("snapshot", e))?;
    file.store(&meta, &data)?;
    db.snapshot
        .clear()
        .map_err(|e| db.io_error("removing the snapshot tree's records", e))?;
    db.flush_blocking("flushing the moved snapshot")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::restore::restored_log_id;

    fn loaded(file: &SnapshotFile) -> Option<(SnapshotMeta, Vec<u8>)> {
        file.load()
            .unwrap()
            .map(|(meta, data)| (meta, data.to_vec()))
    }

    fn snapshot_at(index: u64) -> (SnapshotMeta, Vec<u8>) {
        let mut log_id = restored_log_id();
        log_id.index = index;
        let membership = StoredMembership::default();
        let state = percy_statemachine::StateMachine::default().snapshot();
        let envelope = Envelope {
            last_applied: Some(log_id),
            last_membership: membership.clone(),
            state: &state,
        };
        let meta = SnapshotMeta {
            last_log_id: Some(log_id),
            last_membership: membership,
            snapshot_id: format!("test-{index}"),
        };
        (meta, envelope.encode().unwrap())
    }

    #[test]
    fn a_stored_snapshot_loads_back_and_the_newest_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap();
        assert!(loaded(&file).is_none());
        assert!(file.load_meta().unwrap().is_none());
        for index in [3, 7] {
            let (meta, data) = snapshot_at(index);
            file.store(&meta, &data).unwrap();
            assert_eq!(file.load_meta().unwrap(), Some(meta.clone()));
            assert_eq!(loaded(&file), Some((meta, data)));
        }
        assert!(!dir.path().join(TEMPORARY_FILE_NAME).exists());
    }

    /// Any flipped byte, a cut anywhere, a foreign file: an error naming the file, never a
    /// snapshot that loads wrong.
    #[test]
    fn a_damaged_snapshot_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap();
        let (meta, data) = snapshot_at(5);
        file.store(&meta, &data).unwrap();
        let good = std::fs::read(&file.path).unwrap();
        let mut damaged_copies: Vec<Vec<u8>> = (0..good.len())
            .map(|at| {
                let mut bytes = good.clone();
                bytes[at] ^= 0x40;
                bytes
            })
            .collect();
        damaged_copies.extend((0..good.len()).map(|len| good[..len].to_vec()));
        for bytes in damaged_copies {
            std::fs::write(&file.path, &bytes).unwrap();
            let error = file
                .load()
                .map(|_| ())
                .expect_err("a damaged file must not load");
            assert!(
                error.to_string().contains(&file.path.display().to_string()),
                "{error}"
            );
        }
    }

    #[test]
    fn a_half_written_snapshot_is_removed_at_open_and_the_previous_one_stays() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, data) = snapshot_at(2);
        SnapshotFile::open(dir.path())
            .unwrap()
            .store(&meta, &data)
            .unwrap();
        std::fs::write(dir.path().join(TEMPORARY_FILE_NAME), b"half a snap").unwrap();
        let file = SnapshotFile::open(dir.path()).unwrap();
        assert!(!dir.path().join(TEMPORARY_FILE_NAME).exists());
        assert_eq!(loaded(&file), Some((meta, data)));
    }

    /// A data dir from before the snapshot file: its snapshot moves out of sled, once.
    #[test]
    fn a_snapshot_kept_in_sled_moves_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (meta, data) = snapshot_at(9);
        {
            let db = Database::open(dir.path()).unwrap();
            let mut batch = sled::Batch::default();
            batch.insert(KEY_META, codec::encode(&meta).unwrap());
            batch.insert(KEY_DATA, data.clone());
            db.snapshot.apply_batch(batch).unwrap();
            db.flush_blocking("test").unwrap();
        }
        // Opening the node's storage moves it.
        drop(crate::storage::open(dir.path()).unwrap());
        let file = SnapshotFile::open(dir.path()).unwrap();
        assert_eq!(loaded(&file), Some((meta.clone(), data.clone())));
        let db = Database::open(dir.path()).unwrap();
        assert!(db.snapshot.is_empty());
        // Nothing left to move: the file stays as it is.
        migrate_from_sled(&db, &file).unwrap();
        assert_eq!(loaded(&file), Some((meta, data)));
    }
}
