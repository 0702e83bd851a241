//! The lock checker: per lock path, `acquire` / `release` must be linearizable against a mutex
//! that tracks its owner and whose fencing tokens strictly increase; and the harness's fenced
//! resource must never have lost an accepted write nor had to reject one.
//!
//! History operations (`key` = the lock path, owner = `input.agent`):
//! - `acquire`: input `{"agent": a}`; output `{"token": t}`. Refused (conflict): `fail`.
//! - `release`: input `{"agent": a}`; output `{"released": bool}` (false: `a` did not hold it).
//! - `fenced_write` (`key` = the lock path: one fenced resource per lock): input
//!   `{"token": t, "value": s}`; output `{"accepted": bool}`.
//! - `fenced_read` (once per resource, at the end): output `{"log": [[token, value], ...]}`,
//!   the resource's accepted writes in order.
//!
//! Locks in this workload have no TTL and agents do not expire during a run, so a rejected
//! fenced write means two clients believed they held the lock at once.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::linearizability::{self, LinOp, Model, Outcome};
use super::{fenced, Validity, Verdict};
use crate::history::{History, Op, Status};

/// Search steps allowed per lock before the verdict is "unknown".
pub const DEFAULT_STEP_BUDGET: u64 = 20_000_000;

#[derive(Debug, Clone, PartialEq)]
enum MutexInput {
    Acquire(u64),
    Release(u64),
}

#[derive(Debug, Clone, PartialEq)]
enum MutexOutput {
    Granted(u64),
    Released(bool),
}

/// (owner, highest fencing token granted so far)
type MutexState = (Option<u64>, u64);

struct Mutex;

impl Model for Mutex {
    type State = MutexState;
    type Input = MutexInput;
    type Output = MutexOutput;

    fn init(&self) -> MutexState {
        (None, 0)
    }

    fn step(
        &self,
        &(owner, highest): &MutexState,
        input: &MutexInput,
        output: Option<&MutexOutput>,
    ) -> Option<MutexState> {
        match (input, output) {
            (MutexInput::Acquire(agent), Some(MutexOutput::Granted(token))) => {
                (owner.is_none() && *token > highest).then_some((Some(*agent), *token))
            }
            (MutexInput::Acquire(agent), None) => {
                owner.is_none().then_some((Some(*agent), highest))
            }
            (MutexInput::Release(agent), Some(MutexOutput::Released(true))) => {
                (owner == Some(*agent)).then_some((None, highest))
            }
            (MutexInput::Release(agent), Some(MutexOutput::Released(false))) => {
                (owner != Some(*agent)).then_some((owner, highest))
            }
            (MutexInput::Release(agent), None) => {
                if owner == Some(*agent) {
                    Some((None, highest))
                } else {
                    Some((owner, highest))
                }
            }
            _ => None,
        }
    }
}

/// Checks mutual exclusion and fencing.
pub fn check(history: &History, budget: u64) -> Verdict {
    let mut anomalies = Vec::new();
    let mut unknown = 0;
    let mut by_path: BTreeMap<&str, Vec<(usize, &Op)>> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        if matches!(op.op.as_str(), "acquire" | "release") {
            by_path
                .entry(op.key.as_str())
                .or_default()
                .push((index, op));
        }
    }
    let mut checked = 0;
    let mut token_owner: HashMap<u64, (String, u64)> = HashMap::new();
    for (path, ops) in &by_path {
        let mut lin_ops = Vec::new();
        for (index, op) in ops {
            if op.status == Status::Fail {
                continue;
            }
            let Some(agent) = op.input_u64("agent") else {
                anomalies.push(format!("lock {path}: {} without an agent: {op:?}", op.op));
                continue;
            };
            let determinate = op.status == Status::Ok;
            let (input, output) = if op.op == "acquire" {
                let token = op.output_u64("token");
                if determinate && token.is_none() {
                    anomalies.push(format!("lock {path}: granted without a token: {op:?}"));
                    continue;
                }
                if let Some(token) = token.filter(|_| determinate) {
                    let grant = (path.to_string(), agent);
                    if let Some(other) = token_owner.insert(token, grant.clone()) {
                        anomalies.push(format!(
                            "fencing token {token} granted twice: {other:?} and {grant:?}"
                        ));
                    }
                }
                (
                    MutexInput::Acquire(agent),
                    token.filter(|_| determinate).map(MutexOutput::Granted),
                )
            } else {
                let released = op.output.get("released").and_then(Value::as_bool);
                if determinate && released.is_none() {
                    anomalies.push(format!("lock {path}: release without outcome: {op:?}"));
                    continue;
                }
                (
                    MutexInput::Release(agent),
                    released.filter(|_| determinate).map(MutexOutput::Released),
                )
            };
            lin_ops.push(LinOp {
                call_ns: op.call_ns,
                return_ns: op.return_ns,
                input,
                output,
                id: *index,
            });
        }
        checked += lin_ops.len();
        match linearizability::check(&Mutex, &lin_ops, budget) {
            Outcome::Linearizable => {}
            Outcome::Unknown { steps } => {
                unknown += 1;
                anomalies.push(format!(
                    "lock {path}: search budget exhausted after {steps} steps (cannot verify)"
                ));
            }
            Outcome::NotLinearizable { prefix_len, stuck } => anomalies.push(format!(
                "lock {path}: not linearizable against a fenced mutex (overlapping holders or \
                 tokens not increasing); longest prefix {prefix_len} of {} ops; could not \
                 place history op #{stuck:?}",
                lin_ops.len()
            )),
        }
    }
    // No TTLs and no expiry in this workload: a rejected write means two holders at once.
    fenced::check(history, |_| false, &mut anomalies);
    let mut verdict = Verdict::from_anomalies("lock", checked, anomalies);
    if unknown > 0 && unknown == verdict.anomalies.len() {
        verdict.validity = Validity::Unknown;
    }
    verdict
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testutil::op;
    use serde_json::json;

    const BUDGET: u64 = 1_000_000;

    fn acquire(agent: u64, token: u64, status: Status, call: u64, ret: u64) -> Op {
        op(
            agent,
            "src/lib.rs",
            "acquire",
            json!({"agent": agent}),
            json!({"token": token}),
            status,
            call,
            ret,
        )
    }

    fn release(agent: u64, released: bool, status: Status, call: u64, ret: u64) -> Op {
        op(
            agent,
            "src/lib.rs",
            "release",
            json!({"agent": agent}),
            json!({"released": released}),
            status,
            call,
            ret,
        )
    }

    fn fenced_write(process: u64, token: u64, value: &str, accepted: bool, t: u64) -> Op {
        op(
            process,
            "src/lib.rs",
            "fenced_write",
            json!({"token": token, "value": value}),
            json!({"accepted": accepted}),
            Status::Ok,
            t,
            t + 1,
        )
    }

    fn fenced_read(log: Value, t: u64) -> Op {
        op(
            0,
            "src/lib.rs",
            "fenced_read",
            json!({}),
            json!({"log": log}),
            Status::Ok,
            t,
            t + 1,
        )
    }

    fn history(ops: Vec<Op>) -> History {
        History {
            ops,
            nemesis: Vec::new(),
        }
    }

    #[test]
    fn orderly_handover_passes() {
        let h = history(vec![
            acquire(1, 10, Status::Ok, 0, 10),
            acquire(2, 0, Status::Fail, 5, 12),
            fenced_write(1, 10, "a", true, 15),
            release(1, true, Status::Ok, 20, 30),
            acquire(2, 31, Status::Ok, 35, 40),
            fenced_write(2, 31, "b", true, 45),
            release(2, true, Status::Ok, 50, 60),
            // An indeterminate acquire resolved by a release that found nothing.
            acquire(3, 0, Status::Info, 70, 80),
            release(3, false, Status::Ok, 90, 95),
            fenced_read(json!([[10, "a"], [31, "b"]]), 100),
        ]);
        let verdict = check(&h, BUDGET);
        assert!(verdict.is_valid(), "{verdict}");
    }

    #[test]
    fn overlapping_holders_are_rejected() {
        let h = history(vec![
            acquire(1, 10, Status::Ok, 0, 10),
            acquire(2, 11, Status::Ok, 20, 30),
            release(1, true, Status::Ok, 40, 50),
        ]);
        assert_eq!(check(&h, BUDGET).validity, Validity::Invalid);
    }

    #[test]
    fn fencing_token_regression_is_rejected() {
        let h = history(vec![
            acquire(1, 10, Status::Ok, 0, 10),
            release(1, true, Status::Ok, 20, 30),
            acquire(2, 9, Status::Ok, 40, 50),
        ]);
        assert_eq!(check(&h, BUDGET).validity, Validity::Invalid);
    }

    #[test]
    fn reused_token_is_rejected() {
        let h = history(vec![
            acquire(1, 10, Status::Ok, 0, 10),
            release(1, true, Status::Ok, 20, 30),
            acquire(2, 10, Status::Ok, 40, 50),
        ]);
        assert_eq!(check(&h, BUDGET).validity, Validity::Invalid);
    }

    #[test]
    fn release_of_a_lock_not_held_is_rejected() {
        let h = history(vec![
            acquire(1, 10, Status::Ok, 0, 10),
            release(2, true, Status::Ok, 20, 30),
        ]);
        assert_eq!(check(&h, BUDGET).validity, Validity::Invalid);
    }

    #[test]
    fn lost_fenced_write_is_rejected() {
        let h = history(vec![
            acquire(1, 10, Status::Ok, 0, 10),
            fenced_write(1, 10, "a", true, 15),
            release(1, true, Status::Ok, 20, 30),
            fenced_read(json!([]), 100),
        ]);
        assert_eq!(check(&h, BUDGET).validity, Validity::Invalid);
    }

    #[test]
    fn rejected_fenced_write_is_reported() {
        let h = history(vec![
            fenced_write(2, 11, "b", true, 15),
            fenced_write(1, 10, "a", false, 16),
            fenced_read(json!([[11, "b"]]), 100),
        ]);
        assert_eq!(check(&h, BUDGET).validity, Validity::Invalid);
    }

    #[test]
    fn fenced_log_going_backwards_or_invented_is_rejected() {
        let backwards = history(vec![
            fenced_write(1, 11, "a", true, 15),
            fenced_write(2, 10, "b", true, 16),
            fenced_read(json!([[11, "a"], [10, "b"]]), 100),
        ]);
        assert_eq!(check(&backwards, BUDGET).validity, Validity::Invalid);
        let invented = history(vec![fenced_read(json!([[11, "x"]]), 100)]);
        assert_eq!(check(&invented, BUDGET).validity, Validity::Invalid);
    }
}
