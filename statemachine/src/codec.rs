//! The versioned binary encoding of commands (the Raft log payload) and of snapshots: one
//! format-version byte, then postcard.
//!
//! postcard is positional and does not describe itself, so every type encoded here avoids
//! serde features that need `deserialize_any` (untagged enums, `flatten`,
//! `skip_serializing_if`), and any incompatible change to an encoded type bumps
//! [`FORMAT_VERSION`].

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::command::Command;

/// Bumped whenever the encoding of a command or of the state changes incompatibly.
pub const FORMAT_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("unknown format version {found} (this build reads version {FORMAT_VERSION})")]
    UnknownVersion { found: u8 },
    #[error("corrupt or truncated data: {0}")]
    Corrupt(String),
}

/// Encodes a command for the Raft log.
///
/// # Panics
///
/// Never in practice: postcard can only fail to serialise into a `Vec` for a sequence of
/// unknown length, and every sequence in [`Command`] is a `Vec`, `String` or B-tree collection
/// whose length is known.
pub fn encode_command(command: &Command) -> Vec<u8> {
    encode(command)
}

/// Decodes a command written by [`encode_command`].
pub fn decode_command(bytes: &[u8]) -> Result<Command, CodecError> {
    decode(bytes)
}

/// Version byte + postcard. See [`encode_command`] on why this cannot fail.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    encode_appended(value, Vec::new())
}

/// [`encode`], appended to `bytes`.
pub(crate) fn encode_appended<T: Serialize>(value: &T, mut bytes: Vec<u8>) -> Vec<u8> {
    bytes.push(FORMAT_VERSION);
    match postcard::to_extend(value, bytes) {
        Ok(bytes) => bytes,
        Err(e) => panic!("postcard cannot fail to encode into a Vec here: {e}"),
    }
}

/// Checks the version byte, decodes, and refuses trailing bytes (a sign of corruption or of a
/// different layout).
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| CodecError::Corrupt("empty input".to_string()))?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion { found: version });
    }
    let (value, rest) =
        postcard::take_from_bytes(body).map_err(|e| CodecError::Corrupt(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CodecError::Corrupt(format!(
            "{} unexpected trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

/// A reader of input written as the version byte, then one value after another, where values
/// at the end may be *sections* a later version appended (the snapshot's tokens, for example).
/// Input that ends before a section was written before that section existed, and reads as the
/// section's default. Each new section goes at the end, after every older one.
pub(crate) struct Sections<'a> {
    rest: &'a [u8],
}

impl<'a> Sections<'a> {
    /// Checks the version byte.
    pub fn open(bytes: &'a [u8]) -> Result<Self, CodecError> {
        let (&version, rest) = bytes
            .split_first()
            .ok_or_else(|| CodecError::Corrupt("empty input".to_string()))?;
        if version != FORMAT_VERSION {
            return Err(CodecError::UnknownVersion { found: version });
        }
        Ok(Self { rest })
    }

    /// A value every version wrote.
    pub fn required<T: DeserializeOwned>(&mut self) -> Result<T, CodecError> {
        let (value, rest) =
            postcard::take_from_bytes(self.rest).map_err(|e| CodecError::Corrupt(e.to_string()))?;
        self.rest = rest;
        Ok(value)
    }

    /// A section older versions did not write: its default when the input has ended.
    pub fn optional<T: DeserializeOwned + Default>(&mut self) -> Result<T, CodecError> {
        if self.rest.is_empty() {
            return Ok(T::default());
        }
        self.required()
    }

    /// Refuses trailing bytes (a sign of corruption or of a newer layout).
    pub fn finish(self) -> Result<(), CodecError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Corrupt(format!(
                "{} unexpected trailing bytes",
                self.rest.len()
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Op;
    use crate::task::TaskSpec;

    #[test]
    fn command_round_trip() {
        let command = Command::new(Op::SubmitTask(TaskSpec {
            id: Some("t".into()),
            priority: -3,
            payload: vec![1, 2, 3],
            ..TaskSpec::default()
        }));
        let bytes = encode_command(&command);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode_command(&bytes).unwrap(), command);
    }

    #[test]
    fn unknown_version_and_corruption_are_refused() {
        let mut bytes = encode_command(&Command::new(Op::Tick));
        bytes[0] = 99;
        assert!(matches!(
            decode_command(&bytes),
            Err(CodecError::UnknownVersion { found: 99 })
        ));
        assert!(matches!(decode_command(&[]), Err(CodecError::Corrupt(_))));
        assert!(matches!(
            decode_command(&[FORMAT_VERSION, 200, 200]),
            Err(CodecError::Corrupt(_))
        ));
        let mut trailing = encode_command(&Command::new(Op::Tick));
        trailing.push(0);
        assert!(matches!(
            decode_command(&trailing),
            Err(CodecError::Corrupt(_))
        ));
    }
}
