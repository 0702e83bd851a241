//! The `cluster` config bucket: key/value with per-key revisions and compare-and-set.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigEntry {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: u64,
    /// Revision of the last put; what a compare-and-set compares against.
    pub revision: u64,
    /// Number of puts since creation (1 after the first).
    pub version: u64,
}
