//! The register checker: per config key, `read` / `write` / `cas` operations must be
//! linearizable against a register whose revision only grows.
//!
//! History operations (`key` = the config key):
//! - `read`:  input `{}`; output `{"value": string|null, "revision": u64}` (revision 0 when absent).
//! - `write`: input `{"value": v}`; output `{"revision": r}`.
//! - `cas`:   input `{"value": v, "expected_revision": R}` (R = 0: only if absent);
//!   output `{"revision": r}`. A refused CAS is recorded as `fail` and dropped.
//!
//! Every write and cas writes a value that is unique for its key, so a value names the write
//! that produced it, and its revision is a function of the value. The checker first checks that
//! function (one revision per value, one value per revision), then runs the WGL search with a
//! state that is just "which write is current"; a write must also carry a higher revision than
//! the write it replaces.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::linearizability::{self, LinOp, Model, Outcome};
use super::{Validity, Verdict};
use crate::history::{History, Op, Status};

/// Search steps allowed per key before the verdict is "unknown".
pub const DEFAULT_STEP_BUDGET: u64 = 20_000_000;

/// An interned value: its index in the key's value table.
type ValueId = u32;

#[derive(Debug, Clone, PartialEq)]
enum RegInput {
    Read,
    Write(ValueId),
    /// Expected value (`None`: absent; `Some(Err(r))`: a revision no operation ever observed).
    Cas(Option<Result<ValueId, u64>>, ValueId),
}

/// The register model; knows each value's revision where any operation observed it.
struct Register {
    revision_of: Vec<Option<u64>>,
}

impl Register {
    fn newer(&self, next: ValueId, current: Option<ValueId>) -> bool {
        let Some(current) = current else {
            return true;
        };
        match (
            self.revision_of[next as usize],
            self.revision_of[current as usize],
        ) {
            (Some(next), Some(current)) => next > current,
            _ => true,
        }
    }
}

impl Model for Register {
    type State = Option<ValueId>;
    type Input = RegInput;
    /// Reads: what was seen. Writes: nothing beyond success.
    type Output = Option<ValueId>;

    fn init(&self) -> Self::State {
        None
    }

    fn step(
        &self,
        state: &Self::State,
        input: &RegInput,
        output: Option<&Option<ValueId>>,
    ) -> Option<Self::State> {
        match input {
            RegInput::Read => match output {
                Some(seen) if seen == state => Some(*state),
                Some(_) => None,
                None => Some(*state),
            },
            RegInput::Write(value) => self.newer(*value, *state).then_some(Some(*value)),
            RegInput::Cas(expected, value) => {
                let matches = match expected {
                    None => state.is_none(),
                    Some(Ok(expected)) => *state == Some(*expected),
                    Some(Err(_)) => false,
                };
                (matches && self.newer(*value, *state)).then_some(Some(*value))
            }
        }
    }
}

/// Checks every key's register history.
pub fn check(history: &History, budget: u64) -> Verdict {
    let mut by_key: BTreeMap<&str, Vec<(usize, &Op)>> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        if matches!(op.op.as_str(), "read" | "write" | "cas") {
            by_key.entry(op.key.as_str()).or_default().push((index, op));
        }
    }
    let mut anomalies = Vec::new();
    let mut unknown = 0;
    let mut checked = 0;
    // Revisions are log indices: two different writes anywhere must not share one.
    let mut writer_of_revision: HashMap<u64, (String, String)> = HashMap::new();
    for (key, ops) in &by_key {
        checked += ops.len();
        match check_key(key, ops, budget, &mut writer_of_revision, &mut anomalies) {
            KeyResult::Done => {}
            KeyResult::Unknown(steps) => {
                unknown += 1;
                anomalies.push(format!(
                    "key {key}: search budget exhausted after {steps} steps (cannot verify)"
                ));
            }
        }
    }
    let mut verdict = Verdict::from_anomalies("register-linearizability", checked, anomalies);
    if unknown > 0 && unknown == verdict.anomalies.len() {
        verdict.validity = Validity::Unknown;
    }
    verdict
}

enum KeyResult {
    Done,
    Unknown(u64),
}

fn check_key(
    key: &str,
    ops: &[(usize, &Op)],
    budget: u64,
    writer_of_revision: &mut HashMap<u64, (String, String)>,
    anomalies: &mut Vec<String>,
) -> KeyResult {
    let mut ids: HashMap<String, ValueId> = HashMap::new();
    let mut names: Vec<String> = Vec::new();
    let mut intern = |value: &str| -> ValueId {
        if let Some(id) = ids.get(value) {
            return *id;
        }
        let id = ValueId::try_from(names.len()).expect("fewer than 2^32 values per key");
        names.push(value.to_owned());
        ids.insert(value.to_owned(), id);
        id
    };

    // Pass 1: intern values, learn each value's revision, check the value <-> revision map.
    let mut revision_of: HashMap<ValueId, u64> = HashMap::new();
    let mut value_at: HashMap<u64, ValueId> = HashMap::new();
    let mut observe = |value: ValueId, revision: u64, op: &Op, anomalies: &mut Vec<String>| {
        if let Some(previous) = revision_of.insert(value, revision) {
            if previous != revision {
                anomalies.push(format!(
                    "key {key}: one value seen at revisions {previous} and {revision} ({op:?})"
                ));
            }
        }
        if let Some(previous) = value_at.insert(revision, value) {
            if previous != value {
                anomalies.push(format!(
                    "key {key}: revision {revision} holds two different values ({op:?})"
                ));
            }
        }
    };
    let mut inputs: Vec<Option<(RegInput, Option<Option<ValueId>>)>> = Vec::new();
    for (_, op) in ops {
        if op.status == Status::Fail {
            inputs.push(None);
            continue;
        }
        let determinate = op.status == Status::Ok;
        let entry = match op.op.as_str() {
            "read" if !determinate => None,
            "read" => {
                let seen = op
                    .output
                    .get("value")
                    .and_then(Value::as_str)
                    .map(&mut intern);
                if let (Some(value), Some(revision)) = (seen, op.output_u64("revision")) {
                    observe(value, revision, op, anomalies);
                }
                Some((RegInput::Read, Some(seen)))
            }
            _ => {
                let Some(text) = op.input_str("value") else {
                    anomalies.push(format!("key {key}: {} without a value: {op:?}", op.op));
                    inputs.push(None);
                    continue;
                };
                let value = intern(text);
                if determinate {
                    if let Some(revision) = op.output_u64("revision") {
                        observe(value, revision, op, anomalies);
                        let writer = (key.to_owned(), text.to_owned());
                        if let Some(other) = writer_of_revision.insert(revision, writer.clone()) {
                            if other != writer {
                                anomalies.push(format!(
                                    "revision {revision} acknowledged for two writes: {other:?} and {writer:?}"
                                ));
                            }
                        }
                    }
                }
                let input = if op.op == "cas" {
                    RegInput::Cas(
                        Some(Err(op.input_u64("expected_revision").unwrap_or(0))),
                        value,
                    )
                } else {
                    RegInput::Write(value)
                };
                Some((input, determinate.then_some(None)))
            }
        };
        inputs.push(entry);
    }

    // Pass 2: resolve CAS expectations to values, build the search input.
    let mut lin_ops = Vec::new();
    for ((index, op), entry) in ops.iter().zip(inputs) {
        let Some((input, output)) = entry else {
            continue;
        };
        let input = match input {
            RegInput::Cas(Some(Err(0)), value) => RegInput::Cas(None, value),
            RegInput::Cas(Some(Err(revision)), value) => match value_at.get(&revision) {
                Some(expected) => RegInput::Cas(Some(Ok(*expected)), value),
                None => RegInput::Cas(Some(Err(revision)), value),
            },
            other => other,
        };
        lin_ops.push(LinOp {
            call_ns: op.call_ns,
            return_ns: op.return_ns,
            input,
            output,
            id: *index,
        });
    }
    let model = Register {
        revision_of: (0..names.len())
            .map(|id| revision_of.get(&(id as ValueId)).copied())
            .collect(),
    };
    match linearizability::check(&model, &lin_ops, budget) {
        Outcome::Linearizable => KeyResult::Done,
        Outcome::Unknown { steps } => KeyResult::Unknown(steps),
        Outcome::NotLinearizable { prefix_len, stuck } => {
            anomalies.push(format!(
                "key {key}: not linearizable; longest linearizable prefix {prefix_len} of {} ops; \
                 could not place history op #{:?}",
                lin_ops.len(),
                stuck
            ));
            KeyResult::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testutil::op;
    use serde_json::json;

    const BUDGET: u64 = 1_000_000;

    fn history(ops: Vec<Op>) -> History {
        History {
            ops,
            nemesis: Vec::new(),
        }
    }

    fn write(p: u64, v: &str, rev: u64, call: u64, ret: u64) -> Op {
        op(
            p,
            "k",
            "write",
            json!({"value": v}),
            json!({"revision": rev}),
            Status::Ok,
            call,
            ret,
        )
    }

    fn read(p: u64, v: Option<&str>, rev: u64, call: u64, ret: u64) -> Op {
        op(
            p,
            "k",
            "read",
            json!({}),
            json!({"value": v, "revision": rev}),
            Status::Ok,
            call,
            ret,
        )
    }

    fn cas(p: u64, v: &str, expected: u64, rev: u64, status: Status, call: u64, ret: u64) -> Op {
        op(
            p,
            "k",
            "cas",
            json!({"value": v, "expected_revision": expected}),
            json!({"revision": rev}),
            status,
            call,
            ret,
        )
    }

    #[test]
    fn valid_history_passes() {
        let h = history(vec![
            read(1, None, 0, 0, 5),
            write(1, "a", 10, 10, 20),
            read(2, Some("a"), 10, 25, 30),
            cas(2, "b", 10, 12, Status::Ok, 31, 40),
            cas(1, "c", 10, 0, Status::Fail, 32, 41),
            read(1, Some("b"), 12, 50, 60),
        ]);
        let verdict = check(&h, BUDGET);
        assert!(verdict.is_valid(), "{verdict}");
    }

    #[test]
    fn stale_read_is_rejected() {
        let h = history(vec![
            write(1, "a", 10, 0, 10),
            write(1, "b", 11, 20, 30),
            read(2, Some("a"), 10, 40, 50),
        ]);
        let verdict = check(&h, BUDGET);
        assert_eq!(verdict.validity, Validity::Invalid, "{verdict}");
    }

    #[test]
    fn lost_write_is_rejected() {
        // An acknowledged write vanishes: a later read still sees the absent register.
        let h = history(vec![write(1, "a", 10, 0, 10), read(2, None, 0, 20, 30)]);
        assert_eq!(check(&h, BUDGET).validity, Validity::Invalid);
    }

    #[test]
    fn two_cas_from_the_same_revision_both_succeeding_is_rejected() {
        let h = history(vec![
            write(1, "a", 10, 0, 10),
            cas(1, "b", 10, 12, Status::Ok, 20, 30),
            cas(2, "c", 10, 13, Status::Ok, 20, 30),
        ]);
        assert_eq!(check(&h, BUDGET).validity, Validity::Invalid);
    }

    #[test]
    fn indeterminate_write_may_appear_later() {
        let h = history(vec![
            op(
                1,
                "k",
                "write",
                json!({"value": "a"}),
                json!({"error": "timeout"}),
                Status::Info,
                0,
                10,
            ),
            read(2, None, 0, 20, 30),
            read(2, Some("a"), 15, 40, 50),
        ]);
        let verdict = check(&h, BUDGET);
        assert!(verdict.is_valid(), "{verdict}");
    }

    #[test]
    fn revision_going_backwards_is_rejected() {
        let h = history(vec![write(1, "a", 10, 0, 10), write(1, "b", 9, 20, 30)]);
        assert_eq!(check(&h, BUDGET).validity, Validity::Invalid);
    }

    #[test]
    fn one_value_at_two_revisions_is_rejected() {
        let h = history(vec![
            write(1, "a", 10, 0, 10),
            read(2, Some("a"), 11, 20, 30),
        ]);
        assert_eq!(check(&h, BUDGET).validity, Validity::Invalid);
    }

    #[test]
    fn exhausted_budget_is_unknown() {
        let mut ops: Vec<Op> = (0..14)
            .map(|i| write(i, &format!("v{i}"), 100 + i, 0, 100))
            .collect();
        ops.push(read(99, Some("v0"), 100, 200, 210));
        ops.push(read(99, Some("v1"), 101, 220, 230));
        ops.push(read(99, Some("v0"), 100, 240, 250));
        let verdict = check(&history(ops), 100);
        assert_eq!(verdict.validity, Validity::Unknown, "{verdict}");
        assert!(!verdict.is_valid());
    }
}
