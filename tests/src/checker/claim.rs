//! The claim checker: tasks are claimed, started and completed by many agents; no task is
//! completed twice or held by two claims at once, no claim token is reused, nothing succeeds
//! with a stale token (one the task was claimed again after, or one its holder gave back), and
//! every acknowledged completion is in the final state.
//!
//! History operations (`key` = the task id, owner = `input.agent`):
//! - `claim`: input `{"agent": a}` (claim-next) or `{"agent": a, "task": id}` (by name); ok
//!   output `{"task": id|null, "token": t}`.
//! - `start`, `complete`, `fail-task`: input `{"agent": a, "token": t}`. `fail-task` gives the
//!   task back (it is requeued while it has attempts left).
//! - `final-read` (after the final heal): output
//!   `{"tasks": [{"id", "status", "claim_token", "assignee"}, ...]}`, status in lowercase
//!   (`ready`, `claimed`, `working`, `completed`, `failed`, ...).
//!
//! Agents do not expire during a run, so the only way a claimed task becomes claimable again
//! is a `fail-task` by the holder.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::Verdict;
use crate::history::{History, Op, Status};

/// One task in the final read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinalTask {
    pub status: String,
    pub claim_token: u64,
    pub assignee: u64,
}

/// The tasks of the last ok `final-read`, by id; `None` if there is none.
pub fn final_tasks(history: &History) -> Option<BTreeMap<String, FinalTask>> {
    let read = history
        .ops_named("final-read")
        .filter(|op| op.status == Status::Ok)
        .last()?;
    let mut tasks = BTreeMap::new();
    for task in read
        .output
        .get("tasks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(id) = task.get("id").and_then(Value::as_str) else {
            continue;
        };
        tasks.insert(
            id.to_owned(),
            FinalTask {
                status: task
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                claim_token: task.get("claim_token").and_then(Value::as_u64).unwrap_or(0),
                assignee: task.get("assignee").and_then(Value::as_u64).unwrap_or(0),
            },
        );
    }
    Some(tasks)
}

/// Checks the claim workload.
pub fn check(history: &History) -> Verdict {
    let mut anomalies = Vec::new();
    let ok = |name: &'static str| history.ops_named(name).filter(|op| op.status == Status::Ok);

    // Claims by task, and token uniqueness across everything.
    let mut claims: HashMap<&str, Vec<&Op>> = HashMap::new();
    let mut token_holder: HashMap<u64, (&str, u64)> = HashMap::new();
    for claim in ok("claim") {
        let Some(task) = claim.output.get("task").and_then(Value::as_str) else {
            continue;
        };
        let (Some(token), Some(agent)) = (claim.output_u64("token"), claim.input_u64("agent"))
        else {
            anomalies.push(format!("claim without token or agent: {claim:?}"));
            continue;
        };
        if let Some(other) = token_holder.insert(token, (task, agent)) {
            anomalies.push(format!(
                "claim token {token} reused: {other:?} and {:?}",
                (task, agent)
            ));
        }
        claims.entry(task).or_default().push(claim);
    }

    // Two claims of one task need the first one given back (fail-task) in between.
    let give_backs: Vec<&Op> = history
        .ops_named("fail-task")
        .filter(|op| op.status != Status::Fail)
        .collect();
    for (task, list) in &mut claims {
        list.sort_by_key(|op| op.output_u64("token"));
        for pair in list.windows(2) {
            let first = pair[0].output_u64("token").unwrap_or(0);
            let second = &pair[1];
            let given_back = give_backs.iter().any(|op| {
                op.key == *task
                    && op.input_u64("token") == Some(first)
                    && op.call_ns < second.return_ns
            });
            if !given_back {
                anomalies.push(format!(
                    "double claim: task {task} claimed with token {first} and again with token {} \
                     (agent {:?}) without being given back",
                    second.output_u64("token").unwrap_or(0),
                    second.input_u64("agent")
                ));
            }
        }
    }

    // Completions: at most one per task, never with a stale token.
    let mut completions: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ok("complete") {
        completions.entry(op.key.as_str()).or_default().push(op);
    }
    for (task, list) in &completions {
        if list.len() > 1 {
            let tokens: Vec<_> = list.iter().map(|op| op.input_u64("token")).collect();
            anomalies.push(format!(
                "task {task} completed {} times (tokens {tokens:?})",
                list.len()
            ));
        }
    }
    for op in ok("complete").chain(ok("start")).chain(ok("fail-task")) {
        let token = op.input_u64("token").unwrap_or(0);
        for later in claims.get(op.key.as_str()).into_iter().flatten() {
            let later_token = later.output_u64("token").unwrap_or(0);
            if later_token <= token {
                continue;
            }
            if later.precedes(op) {
                anomalies.push(format!(
                    "stale token: {} of task {} with token {token} succeeded after it was \
                     claimed again with token {later_token}",
                    op.op, op.key
                ));
            } else if op.op == "complete" {
                anomalies.push(format!(
                    "task {} claimed again (token {later_token}) after it was completed with \
                     token {token}",
                    op.key
                ));
            }
        }
    }

    // A token given back (an acknowledged fail-task) is dead, whoever holds the task now, even
    // the same agent under a newer token.
    for op in ok("complete").chain(ok("start")).chain(ok("fail-task")) {
        let token = op.input_u64("token");
        let given_back = ok("fail-task").any(|back| {
            back.key == op.key && back.input_u64("token") == token && back.precedes(op)
        });
        if given_back {
            anomalies.push(format!(
                "stale token: {} of task {} with token {} succeeded after that token was given back",
                op.op,
                op.key,
                token.unwrap_or(0)
            ));
        }
    }

    // The final state keeps every acknowledged completion, and holds no invented one.
    match final_tasks(history) {
        None => anomalies.push("no final read of the tasks".to_owned()),
        Some(tasks) => {
            for (task, list) in &completions {
                let token = list[0].input_u64("token").unwrap_or(0);
                match tasks.get(*task) {
                    Some(state) if state.status == "completed" && state.claim_token == token => {}
                    other => anomalies.push(format!(
                        "acknowledged completion of {task} (token {token}) lost: final state {other:?}"
                    )),
                }
            }
            for (id, state) in &tasks {
                if state.status != "completed" {
                    continue;
                }
                let attempted = history.ops_named("complete").any(|op| {
                    op.key == *id
                        && op.status != Status::Fail
                        && op.input_u64("token") == Some(state.claim_token)
                });
                if !attempted {
                    anomalies.push(format!(
                        "task {id} is completed with token {} but nobody completed it with that token",
                        state.claim_token
                    ));
                }
            }
        }
    }
    let checked = history
        .ops
        .iter()
        .filter(|op| matches!(op.op.as_str(), "claim" | "start" | "complete" | "fail-task"))
        .count();
    Verdict::from_anomalies("claim", checked, anomalies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testutil::op;
    use crate::checker::Validity;
    use serde_json::json;

    fn claim(agent: u64, task: &str, token: u64, call: u64, ret: u64) -> Op {
        op(
            agent,
            task,
            "claim",
            json!({"agent": agent}),
            json!({"task": task, "token": token}),
            Status::Ok,
            call,
            ret,
        )
    }

    fn with_token(name: &str, agent: u64, task: &str, token: u64, status: Status, t: u64) -> Op {
        op(
            agent,
            task,
            name,
            json!({"agent": agent, "token": token}),
            json!({}),
            status,
            t,
            t + 5,
        )
    }

    fn final_read(tasks: Value, t: u64) -> Op {
        op(
            0,
            "",
            "final-read",
            json!({}),
            json!({"tasks": tasks}),
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
    fn claim_start_complete_and_requeue_pass() {
        let h = history(vec![
            claim(1, "t1", 10, 0, 5),
            with_token("start", 1, "t1", 10, Status::Ok, 10),
            with_token("complete", 1, "t1", 10, Status::Ok, 20),
            claim(2, "t2", 11, 0, 6),
            with_token("fail-task", 2, "t2", 11, Status::Ok, 30),
            claim(3, "t2", 20, 40, 45),
            with_token("complete", 3, "t2", 20, Status::Info, 50),
            final_read(
                json!([
                    {"id": "t1", "status": "completed", "claim_token": 10, "assignee": 1},
                    {"id": "t2", "status": "completed", "claim_token": 20, "assignee": 3},
                ]),
                100,
            ),
        ]);
        let verdict = check(&h);
        assert!(verdict.is_valid(), "{verdict}");
    }

    #[test]
    fn double_claim_is_rejected() {
        let h = history(vec![
            claim(1, "t1", 10, 0, 5),
            claim(2, "t1", 12, 10, 15),
            final_read(json!([]), 100),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn double_completion_is_rejected() {
        let h = history(vec![
            claim(1, "t1", 10, 0, 5),
            with_token("complete", 1, "t1", 10, Status::Ok, 10),
            with_token("complete", 2, "t1", 10, Status::Ok, 20),
            final_read(
                json!([{"id": "t1", "status": "completed", "claim_token": 10, "assignee": 1}]),
                100,
            ),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn reused_claim_token_is_rejected() {
        let h = history(vec![
            claim(1, "t1", 10, 0, 5),
            claim(2, "t2", 10, 0, 5),
            final_read(json!([]), 100),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn lost_completion_is_rejected() {
        let h = history(vec![
            claim(1, "t1", 10, 0, 5),
            with_token("complete", 1, "t1", 10, Status::Ok, 10),
            final_read(
                json!([{"id": "t1", "status": "claimed", "claim_token": 10, "assignee": 1}]),
                100,
            ),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn completion_with_stale_token_is_rejected() {
        let h = history(vec![
            claim(1, "t1", 10, 0, 5),
            with_token("fail-task", 1, "t1", 10, Status::Ok, 10),
            claim(2, "t1", 20, 20, 25),
            // Agent 1 comes back and completes with its old token: must be refused.
            with_token("complete", 1, "t1", 10, Status::Ok, 30),
            final_read(
                json!([{"id": "t1", "status": "completed", "claim_token": 10, "assignee": 1}]),
                100,
            ),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn token_used_after_it_was_given_back_is_rejected() {
        // A revived agent replays the token it gave back; nobody claimed the task since.
        let h = history(vec![
            claim(1, "t1", 10, 0, 5),
            with_token("fail-task", 1, "t1", 10, Status::Ok, 10),
            with_token("start", 1, "t1", 10, Status::Ok, 20),
            final_read(
                json!([{"id": "t1", "status": "working", "claim_token": 10, "assignee": 1}]),
                100,
            ),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
        // The same replay refused is fine.
        let refused = history(vec![
            claim(1, "t1", 10, 0, 5),
            with_token("fail-task", 1, "t1", 10, Status::Ok, 10),
            with_token("start", 1, "t1", 10, Status::Fail, 20),
            final_read(
                json!([{"id": "t1", "status": "ready", "claim_token": 0, "assignee": 0}]),
                100,
            ),
        ]);
        let verdict = check(&refused);
        assert!(verdict.is_valid(), "{verdict}");
    }

    #[test]
    fn completed_task_claimed_again_is_rejected() {
        let h = history(vec![
            claim(1, "t1", 10, 0, 5),
            with_token("complete", 1, "t1", 10, Status::Ok, 10),
            with_token("fail-task", 1, "t1", 10, Status::Info, 11),
            claim(2, "t1", 20, 8, 25),
            final_read(
                json!([{"id": "t1", "status": "completed", "claim_token": 10, "assignee": 1}]),
                100,
            ),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn invented_completion_is_rejected() {
        let h = history(vec![
            claim(1, "t1", 10, 0, 5),
            final_read(
                json!([{"id": "t1", "status": "completed", "claim_token": 10, "assignee": 1}]),
                100,
            ),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }
}
