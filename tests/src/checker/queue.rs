//! The queue checker: every acknowledged task submission is in the final read (no lost
//! writes), nothing is there that was never submitted, and nothing is there twice.
//!
//! History operations: `submit` (`key` = the client-chosen task id) and one `final-read` after
//! the final heal (see [`super::claim`] for its output).

use std::collections::{BTreeSet, HashSet};

use serde_json::Value;

use super::Verdict;
use crate::history::{History, Status};

/// Checks the queue workload.
pub fn check(history: &History) -> Verdict {
    let mut anomalies = Vec::new();
    let Some(read) = history
        .ops_named("final-read")
        .filter(|op| op.status == Status::Ok)
        .last()
    else {
        return Verdict::from_anomalies("queue", 0, vec!["no final read".to_owned()]);
    };
    let mut present: BTreeSet<&str> = BTreeSet::new();
    for id in read
        .output
        .get("tasks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|task| task.get("id").and_then(Value::as_str))
    {
        if !present.insert(id) {
            anomalies.push(format!("task {id} appears twice in the final read"));
        }
    }
    let mut attempted: HashSet<&str> = HashSet::new();
    let mut acknowledged = 0;
    for submit in history.ops_named("submit") {
        if submit.status != Status::Fail {
            attempted.insert(submit.key.as_str());
        }
        if submit.status == Status::Ok {
            acknowledged += 1;
            if !present.contains(submit.key.as_str()) {
                anomalies.push(format!(
                    "acknowledged submission {} (process {}) lost",
                    submit.key, submit.process
                ));
            }
        }
    }
    for id in &present {
        if !attempted.contains(id) {
            anomalies.push(format!("task {id} appeared but was never submitted"));
        }
    }
    Verdict::from_anomalies("queue", acknowledged, anomalies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testutil::op;
    use crate::checker::Validity;
    use crate::history::Op;
    use serde_json::json;

    fn submit(id: &str, status: Status, t: u64) -> Op {
        op(1, id, "submit", json!({}), json!({}), status, t, t + 5)
    }

    fn final_read(ids: &[&str]) -> Op {
        let tasks: Vec<Value> = ids.iter().map(|id| json!({"id": id})).collect();
        op(
            0,
            "",
            "final-read",
            json!({}),
            json!({"tasks": tasks}),
            Status::Ok,
            1000,
            1001,
        )
    }

    fn history(ops: Vec<Op>) -> History {
        History {
            ops,
            nemesis: Vec::new(),
        }
    }

    #[test]
    fn complete_queue_passes() {
        let h = history(vec![
            submit("a", Status::Ok, 0),
            submit("b", Status::Info, 10),
            submit("c", Status::Info, 20),
            submit("d", Status::Fail, 30),
            final_read(&["a", "b"]),
        ]);
        let verdict = check(&h);
        assert!(verdict.is_valid(), "{verdict}");
    }

    #[test]
    fn lost_submission_is_rejected() {
        let h = history(vec![
            submit("a", Status::Ok, 0),
            submit("b", Status::Ok, 10),
            final_read(&["a"]),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn unexpected_or_duplicated_task_is_rejected() {
        let failed_but_present = history(vec![submit("a", Status::Fail, 0), final_read(&["a"])]);
        assert_eq!(check(&failed_but_present).validity, Validity::Invalid);
        let twice = history(vec![submit("a", Status::Ok, 0), final_read(&["a", "a"])]);
        assert_eq!(check(&twice).validity, Validity::Invalid);
    }

    #[test]
    fn missing_final_read_is_a_failure() {
        let h = history(vec![submit("a", Status::Ok, 0)]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }
}
