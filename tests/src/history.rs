//! Operation histories: what every client did and when, plus what the nemesis did, on one
//! clock.
//!
//! A history is written as JSON lines (one object per line) so that any other tool can re-check
//! it. Client operations look like
//!
//! ```json
//! {"process":3,"key":"reg/1","op":"cas","input":{"value":"p3-17","expected_revision":41},
//!  "output":{"revision":57},"status":"ok","call_ns":1200345,"return_ns":1900022}
//! ```
//!
//! and nemesis events use the same fields with `"process":"nemesis"`. `status` follows Jepsen:
//! `ok` (the operation took effect and `output` is what it observed), `fail` (it certainly did
//! not take effect: checkers drop it) and `info` (indeterminate, e.g. a timeout: it may take
//! effect at any time after `call_ns`, so checkers treat its return as +infinity whatever
//! `return_ns` says). Times are nanoseconds since the start of the run, from one monotonic clock.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The process name that marks nemesis events in a history file.
pub const NEMESIS_PROCESS: &str = "nemesis";

/// How an operation ended, in Jepsen's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Took effect; `output` is what it observed.
    Ok,
    /// Certainly did not take effect.
    Fail,
    /// Indeterminate: may have taken effect, at any time after the call.
    Info,
}

/// One client operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Op {
    /// The logical client (worker) that issued the operation; one operation at a time each.
    pub process: u64,
    /// What the operation is about (a config key, a lock path, a task id, ...).
    pub key: String,
    /// The operation name (`read`, `write`, `cas`, `claim`, `acquire`, ...).
    pub op: String,
    pub input: Value,
    pub output: Value,
    pub status: Status,
    pub call_ns: u64,
    pub return_ns: u64,
}

impl Op {
    /// A string field of `input`, or `None`.
    pub fn input_str(&self, field: &str) -> Option<&str> {
        self.input.get(field).and_then(Value::as_str)
    }

    /// A numeric field of `input`, or `None`.
    pub fn input_u64(&self, field: &str) -> Option<u64> {
        self.input.get(field).and_then(Value::as_u64)
    }

    /// A numeric field of `output`, or `None`.
    pub fn output_u64(&self, field: &str) -> Option<u64> {
        self.output.get(field).and_then(Value::as_u64)
    }

    /// True when this operation certainly finished before `other` began.
    pub fn precedes(&self, other: &Op) -> bool {
        self.status != Status::Info && self.return_ns < other.call_ns
    }
}

/// One nemesis action (a fault started or healed), on the same clock as the operations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NemesisEvent {
    /// Always [`NEMESIS_PROCESS`].
    pub process: String,
    /// Empty for nemesis events (kept so every line has the same fields).
    pub key: String,
    /// The fault (`isolate-leader`, `kill-majority`, `heal`, ...).
    pub op: String,
    /// What the fault targets (node ids, links).
    pub input: Value,
    /// What it did (e.g. which node was the leader).
    pub output: Value,
    pub status: Status,
    pub call_ns: u64,
    pub return_ns: u64,
}

/// One line of a history file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Line {
    Op(Op),
    Nemesis(NemesisEvent),
}

/// A complete history: client operations and nemesis events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    pub ops: Vec<Op>,
    pub nemesis: Vec<NemesisEvent>,
}

impl History {
    /// Reads a JSON-lines history file.
    pub fn load(path: &Path) -> Result<Self> {
        let file = File::open(path).with_context(|| format!("open {}", path.display()))?;
        let mut history = History::default();
        for (number, line) in BufReader::new(file).lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let parsed: Line = serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: bad history line", path.display(), number + 1))?;
            match parsed {
                Line::Op(op) => history.ops.push(op),
                Line::Nemesis(event) => history.nemesis.push(event),
            }
        }
        Ok(history)
    }

    /// The operations named `name` (in recording order).
    pub fn ops_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Op> + 'a {
        self.ops.iter().filter(move |op| op.op == name)
    }

    /// Counts of ok / fail / info operations.
    pub fn status_counts(&self) -> StatusCounts {
        let mut counts = StatusCounts::default();
        for op in &self.ops {
            match op.status {
                Status::Ok => counts.ok += 1,
                Status::Fail => counts.fail += 1,
                Status::Info => counts.info += 1,
            }
        }
        counts
    }
}

/// How many operations ended in each status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
}

/// Records a history as it happens: keeps it in memory and appends every line to a file at
/// once, so that a crashed run still leaves its history behind.
pub struct Recorder {
    start: Instant,
    inner: Mutex<RecorderInner>,
}

struct RecorderInner {
    history: History,
    file: Option<BufWriter<File>>,
}

impl Recorder {
    /// A recorder writing to `path` (created or truncated).
    pub fn to_file(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
        Ok(Self::with_file(Some(BufWriter::new(file))))
    }

    /// A recorder that only keeps the history in memory.
    pub fn in_memory() -> Self {
        Self::with_file(None)
    }

    fn with_file(file: Option<BufWriter<File>>) -> Self {
        Recorder {
            start: Instant::now(),
            inner: Mutex::new(RecorderInner {
                history: History::default(),
                file,
            }),
        }
    }

    /// Nanoseconds since the recorder was created.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Starts an operation: the call time is taken now.
    pub fn invoke(&self, process: u64, key: impl Into<String>, op: &str, input: Value) -> Pending {
        Pending {
            process,
            key: key.into(),
            op: op.to_owned(),
            input,
            call_ns: self.now_ns(),
        }
    }

    /// Ends an operation started with [`Recorder::invoke`]; returns the recorded operation.
    pub fn complete(&self, pending: Pending, status: Status, output: Value) -> Op {
        let op = Op {
            process: pending.process,
            key: pending.key,
            op: pending.op,
            input: pending.input,
            output,
            status,
            call_ns: pending.call_ns,
            return_ns: self.now_ns(),
        };
        self.push(Line::Op(op.clone()));
        op
    }

    /// Records a nemesis action that started at `call_ns` and ends now.
    pub fn nemesis(&self, op: &str, input: Value, output: Value, status: Status, call_ns: u64) {
        let event = NemesisEvent {
            process: NEMESIS_PROCESS.to_owned(),
            key: String::new(),
            op: op.to_owned(),
            input,
            output,
            status,
            call_ns,
            return_ns: self.now_ns(),
        };
        self.push(Line::Nemesis(event));
    }

    fn push(&self, line: Line) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(file) = inner.file.as_mut() {
            // A history that cannot be written is a broken run: fail loudly.
            let text = serde_json::to_string(&line).expect("history lines serialise");
            writeln!(file, "{text}").expect("write history line");
            file.flush().expect("flush history file");
        }
        match line {
            Line::Op(op) => inner.history.ops.push(op),
            Line::Nemesis(event) => inner.history.nemesis.push(event),
        }
    }

    /// A copy of everything recorded so far.
    pub fn history(&self) -> History {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .history
            .clone()
    }
}

/// An operation that has been called but has not returned yet.
#[derive(Debug)]
pub struct Pending {
    process: u64,
    key: String,
    op: String,
    input: Value,
    call_ns: u64,
}

impl Pending {
    /// An operation that was called at `call_ns` (for operations recorded after the fact,
    /// such as a watcher's whole sequence).
    pub fn at(process: u64, key: &str, op: &str, input: Value, call_ns: u64) -> Pending {
        Pending {
            process,
            key: key.to_owned(),
            op: op.to_owned(),
            input,
            call_ns,
        }
    }

    /// The call time of this operation.
    pub fn call_ns(&self) -> u64 {
        self.call_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn history_round_trips_through_json_lines() {
        let dir = std::env::temp_dir().join(format!("percy-history-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        let recorder = Recorder::to_file(&path).unwrap();
        let pending = recorder.invoke(7, "reg/1", "write", json!({"value": "a"}));
        recorder.complete(pending, Status::Ok, json!({"revision": 3}));
        recorder.nemesis("kill", json!({"nodes": [2]}), json!({}), Status::Ok, 5);
        let pending = recorder.invoke(8, "reg/1", "read", json!({}));
        recorder.complete(pending, Status::Info, json!({"error": "timeout"}));

        let loaded = History::load(&path).unwrap();
        assert_eq!(loaded, recorder.history());
        assert_eq!(loaded.ops.len(), 2);
        assert_eq!(loaded.nemesis.len(), 1);
        assert_eq!(loaded.nemesis[0].process, NEMESIS_PROCESS);
        let counts = loaded.status_counts();
        assert_eq!((counts.ok, counts.fail, counts.info), (1, 0, 1));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().next().unwrap().contains("\"status\":\"ok\""));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
