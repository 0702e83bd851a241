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
//! - `request`: a public API request, decoded, converted and validated as the API edge does.
//!
//! `cargo afl` drives them (`src/bin/percy-fuzz.rs`); `tests/corpus_replay.rs` runs every
//! stored input and a few thousand mutations of each in CI. See `tests/fuzz/README.md`.

pub mod seeds;

use percy_server::fuzzing;

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
        name: "request",
        run: fuzzing::request,
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
