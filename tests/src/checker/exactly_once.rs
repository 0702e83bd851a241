//! The exactly-once checker: a call sent twice with one session header (see
//! [`crate::duplicate`]) must get the same answer from both attempts that got a definite one.
//! The server remembers the answer of every unacknowledged `(client id, seq)` and replays it,
//! so two different answers mean the second attempt was applied again (or refused as if the
//! first had been someone else's).
//!
//! History operations: any operation whose output has `"answers": [{"status", "output"}, ...]`,
//! one per attempt, `status` as in the history (`ok`, `fail`, `info`).

use serde_json::Value;

use super::Verdict;
use crate::history::History;

/// Checks every duplicated call in the history.
pub fn check(history: &History) -> Verdict {
    let mut anomalies = Vec::new();
    let mut checked = 0;
    for op in &history.ops {
        let Some(answers) = op.output.get("answers").and_then(Value::as_array) else {
            continue;
        };
        checked += 1;
        let definite: Vec<&Value> = answers
            .iter()
            // `info`: no definite answer, among them a removed node's UNAVAILABLE (it turns
            // every call away before any state machine sees it).
            .filter(|answer| answer.get("status").and_then(Value::as_str) != Some("info"))
            .collect();
        if definite.windows(2).any(|pair| pair[0] != pair[1]) {
            anomalies.push(format!(
                "process {} sent {} {:?} twice with one client id and seq and got different \
                 answers (applied twice?): {}",
                op.process,
                op.op,
                op.key,
                Value::Array(answers.clone())
            ));
        }
    }
    Verdict::from_anomalies("exactly-once", checked, anomalies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testutil::op;
    use crate::checker::Validity;
    use crate::history::{Op, Status};
    use serde_json::json;

    fn sent_twice(answers: Value) -> Op {
        op(
            1,
            "t1",
            "submit",
            json!({"id": "t1"}),
            json!({"revision": 7, "answers": answers}),
            Status::Ok,
            0,
            10,
        )
    }

    fn history(ops: Vec<Op>) -> History {
        History {
            ops,
            nemesis: Vec::new(),
        }
    }

    #[test]
    fn the_same_answer_twice_passes() {
        let h = history(vec![
            sent_twice(json!([
                {"status": "ok", "output": {"revision": 7}},
                {"status": "ok", "output": {"revision": 7}},
            ])),
            sent_twice(json!([
                {"status": "info", "output": {"error": "timeout"}},
                {"status": "ok", "output": {"revision": 7}},
            ])),
            // Not duplicated: ignored.
            op(1, "t2", "submit", json!({}), json!({}), Status::Ok, 20, 30),
        ]);
        let verdict = check(&h);
        assert!(verdict.is_valid(), "{verdict}");
        assert_eq!(verdict.checked, 2);
    }

    #[test]
    fn a_retry_applied_again_is_rejected() {
        // The retry was applied as a new request: the task already existed.
        let h = history(vec![sent_twice(json!([
            {"status": "ok", "output": {"revision": 7}},
            {"status": "fail", "output": {"error": "task t1 already exists"}},
        ]))]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn two_different_successes_are_rejected() {
        // A claim-next applied twice hands out two tasks.
        let h = history(vec![sent_twice(json!([
            {"status": "ok", "output": {"task": "t1", "token": 7}},
            {"status": "ok", "output": {"task": "t2", "token": 9}},
        ]))]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }
}
