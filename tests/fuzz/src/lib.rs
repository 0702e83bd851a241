//! Fuzz targets: every decoder of bytes that a client, a peer or a disk hands Percy. Each
//! target takes arbitrary bytes; an error is the right answer to garbage, a panic, a hang or
//! an unbounded allocation is a bug.
//!
//! - `command`: a Raft log command (postcard), then the state machine's own validation and an
//!   apply to an empty machine (what a follower does with a replicated entry).
//! - `state_image`: the state machine's snapshot image (`StateMachine::restore`).
//! - `snapshot`: a stored or received snapshot (the storage envelope, then the image).
//! - `log_entry`: one log entry's payload.
//! - `wal_segment`: a log segment file as found after a crash (torn tails cut, damage refused).
//! - `wal_records`: a log segment whose record checksums are mended first, so mutations of the
//!   entries behind them reach the entry decoder.
//! - `request`: a public API request, decoded, converted and validated as the API edge does.
//! - `backup`: a backup file (`percyctl snapshot save`, `percyd restore --from`), then the
//!   image it carries, as restore checks it.
//! - `plan`, `manifest`: percyctl's plan files and definition manifests (TOML or YAML).
//! - `http_body`: a JSON request body of the HTTP API, decoded and validated.
//! - `github_webhook`: a GitHub webhook delivery (signature header and `issues` body).
//!
//! `cargo afl` drives them (`src/bin/percy-fuzz.rs`); `tests/corpus_replay.rs` runs every
//! stored input and a few thousand mutations of each in CI. See `tests/fuzz/README.md`.

pub mod seeds;

use percy_files::document::Format;
use percy_files::manifest::Manifest;
use percy_files::plan::{topological_order, PlanFile};
use percy_server::fuzzing;
use sha2::{Digest, Sha256};

/// One fuzz target: its name (the corpus directory) and its entry point.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

/// Every target.
pub const TARGETS: &[Target] = &[
    Target {
        name: "command",
        run: command,
    },
    Target {
        name: "state_image",
        run: state_image,
    },
    Target {
        name: "snapshot",
        run: fuzzing::snapshot,
    },
    Target {
        name: "log_entry",
        run: fuzzing::log_entry,
    },
    Target {
        name: "wal_segment",
        run: fuzzing::wal_segment,
    },
    Target {
        name: "wal_records",
        run: wal_records,
    },
    Target {
        name: "request",
        run: fuzzing::request,
    },
    Target {
        name: "backup",
        run: backup,
    },
    Target {
        name: "plan",
        run: plan,
    },
    Target {
        name: "manifest",
        run: manifest,
    },
    Target {
        name: "http_body",
        run: fuzzing::http_body,
    },
    Target {
        name: "github_webhook",
        run: fuzzing::github_webhook,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

fn command(bytes: &[u8]) {
    if let Ok(command) = percy_statemachine::decode_command(bytes) {
        let mut machine = percy_statemachine::StateMachine::new();
        let _ = machine.apply(1, 1_000, command);
    }
}

fn state_image(bytes: &[u8]) {
    let _ = percy_statemachine::StateMachine::restore(bytes);
}

/// The first byte's low bit: mend the checksum before decoding. A fuzzer cannot forge a
/// SHA-256, so without this every mutation would stop at the checksum check and the header
/// and image behind it would never be reached.
fn backup(bytes: &[u8]) {
    let Some((&mode, file)) = bytes.split_first() else {
        return;
    };
    let mut file = file.to_vec();
    if mode & 1 == 1 && file.len() >= CHECKSUM_BYTES {
        let content_end = file.len() - CHECKSUM_BYTES;
        let checksum = Sha256::digest(&file[..content_end]);
        file[content_end..].copy_from_slice(&checksum);
    }
    // What `percyd restore` does before it writes anything.
    let Ok(decoded) = percy_proto::backup::decode(&file) else {
        return;
    };
    if let Ok(state) = percy_statemachine::StateMachine::restore(decoded.image) {
        let _ = state.check_invariants();
    }
}

const CHECKSUM_BYTES: usize = 32;

/// The first byte's low bit picks the format (0: TOML, 1: YAML), the rest is the text, as
/// `percyctl` reads a file (which must be UTF-8).
fn document(bytes: &[u8]) -> Option<(&str, Format)> {
    let (&kind, text) = bytes.split_first()?;
    let format = if kind & 1 == 0 {
        Format::Toml
    } else {
        Format::Yaml
    };
    Some((std::str::from_utf8(text).ok()?, format))
}

/// A plan file, then what `plan submit` sends and what `plan status` draws from it.
fn plan(bytes: &[u8]) {
    let Some((text, format)) = document(bytes) else {
        return;
    };
    let Ok(plan) = PlanFile::parse(text, format) else {
        return;
    };
    let tasks: Vec<percy_proto::v1::Task> = plan
        .task_specs()
        .into_iter()
        .map(|spec| percy_proto::v1::Task {
            id: spec.id,
            depends_on: spec.depends_on,
            ..Default::default()
        })
        .collect();
    assert_eq!(topological_order(&tasks).len(), tasks.len());
}

/// A definition manifest, then the definitions `apply` sends.
fn manifest(bytes: &[u8]) {
    let Some((text, format)) = document(bytes) else {
        return;
    };
    if let Ok(manifest) = Manifest::parse(text, format) {
        let _ = manifest.definition_specs();
    }
}

/// Each record is `[length: u32 LE][CRC-32 of payload: u32 LE][payload]`: mend every CRC a
/// length reaches, then open the segment. A fuzzer cannot forge CRCs, so in `wal_segment`
/// nearly every mutated record stops at its checksum as a torn tail.
fn wal_records(bytes: &[u8]) {
    let mut file = bytes.to_vec();
    let mut at = 0;
    while let Some(header) = file.get(at..at + 8) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let Some(payload) = file.get(at + 8..).and_then(|rest| rest.get(..len)) else {
            break;
        };
        let crc = crc32fast::hash(payload);
        file[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
        at += 8 + len;
    }
    fuzzing::wal_segment(&file);
}
