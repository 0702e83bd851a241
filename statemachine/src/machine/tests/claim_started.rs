//! Claim-next that starts the task (`ClaimNextStarted`) and completion that claims the next
//! task in the same write (`CompleteAndClaimNext`): the worker's one-write task cycle.

use super::*;
use crate::event::EntityValue;
use crate::task::TaskStatus;

fn complete_and_claim_op(task: &Task) -> Op {
    Op::CompleteAndClaimNext {
        task_id: task.id.clone(),
        agent_id: task.assignee.expect("held"),
        claim_token: task.claim_token.expect("held"),
        result: TaskResult {
            summary: "done".into(),
            ..TaskResult::default()
        },
    }
}

fn claim_started(h: &mut Harness, agent_id: AgentId) -> Option<Task> {
    match h.ok(Op::ClaimNextStarted { agent_id }) {
        Outcome::TaskClaimed(task) => task,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_started_claim_is_working_at_once_under_its_own_token_with_one_event() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 1);
    h.submit(spec("a"));
    let revision = h.next_revision();
    let applied = h.apply(Op::ClaimNextStarted { agent_id: w });
    let Ok(Outcome::TaskClaimed(Some(task))) = applied.response else {
        panic!("{:?}", applied.response)
    };
    assert_eq!(task.status, TaskStatus::Working);
    assert_eq!(task.assignee, Some(w));
    assert_eq!(task.claim_token, Some(revision));
    assert_eq!(task.attempts, 1);
    assert_eq!(h.task("a"), &task);
    assert_eq!(applied.events.len(), 1, "ready → working is one change");
    assert!(matches!(
        &applied.events[0].value,
        Some(EntityValue::Task(t)) if t.status == TaskStatus::Working
    ));
    // The agent is full now: the cluster says so, as for any claim.
    h.submit(spec("b"));
    h.err_kind(
        Op::ClaimNextStarted { agent_id: w },
        ErrorKind::ResourceExhausted,
        "max_concurrent 1",
    );
    // Starting it again (a worker that does not know) is harmless.
    let start = Op::StartTask {
        task_id: "a".into(),
        agent_id: w,
        claim_token: revision,
    };
    assert!(h.apply(start).events.is_empty());
    // Nothing claimable: `None`, and nothing changes.
    let v = h.register("v", &["gpu"], &[], 1);
    h.complete(&task);
    h.claim_next(w);
    assert_eq!(claim_started(&mut h, v), None);
}

#[test]
fn complete_and_claim_next_completes_then_hands_over_the_next_task_started() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 1);
    h.submit(spec("a"));
    h.submit(spec("b"));
    let a = claim_started(&mut h, w).expect("a");
    assert_eq!(a.id, "a");
    let revision = h.next_revision();
    let applied = h.apply(complete_and_claim_op(&a));
    let Ok(Outcome::TaskCompletedClaimedNext {
        task,
        cascade,
        next: Some(b),
    }) = applied.response
    else {
        panic!("{:?}", applied.response)
    };
    assert_eq!(task.status, TaskStatus::Completed);
    assert_eq!(task.result().map(|r| r.summary.as_str()), Some("done"));
    assert_eq!(cascade, crate::response::Cascade::default());
    assert_eq!((b.id.as_str(), b.status), ("b", TaskStatus::Working));
    assert_eq!(b.claim_token, Some(revision));
    assert_eq!(h.task("a").status, TaskStatus::Completed);
    assert_eq!(h.task("b"), &*b);
    // The completion's event comes first, then the claim's.
    let order: Vec<(&str, TaskStatus)> = applied
        .events
        .iter()
        .filter_map(|e| match &e.value {
            Some(EntityValue::Task(t)) => Some((t.id.as_str(), t.status)),
            _ => None,
        })
        .collect();
    assert_eq!(
        order,
        [("a", TaskStatus::Completed), ("b", TaskStatus::Working)]
    );
    // The last one: completed, and nothing to claim.
    match h.ok(complete_and_claim_op(&b)) {
        Outcome::TaskCompletedClaimedNext { task, next, .. } => {
            assert_eq!(task.status, TaskStatus::Completed);
            assert_eq!(next, None);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_completion_that_unblocks_a_dependent_can_claim_it_in_the_same_write() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 1);
    h.submit(spec("a"));
    h.submit(spec_deps("b", &["a"]));
    let a = claim_started(&mut h, w).expect("a");
    match h.ok(complete_and_claim_op(&a)) {
        Outcome::TaskCompletedClaimedNext { cascade, next, .. } => {
            assert_eq!(cascade.unblocked, ["b"]);
            assert_eq!(next.map(|t| t.id), Some("b".to_owned()));
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// A stale token (the task was requeued and claimed by another agent) refuses the whole
/// command: nothing is completed and nothing claimed (`Harness::err` checks the state).
#[test]
fn a_stale_token_refuses_the_completion_and_the_claim() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 1);
    let v = h.register("v", &[], &[], 1);
    h.submit(spec("a"));
    h.submit(spec("b"));
    let first = claim_started(&mut h, w).expect("a");
    h.ok(Op::RequeueTask {
        task_id: "a".into(),
        reason: "operator".into(),
    });
    let second = claim_started(&mut h, v).expect("a again");
    assert_eq!(second.id, "a");
    h.err_kind(
        complete_and_claim_op(&first),
        ErrorKind::FailedPrecondition,
        "stale claim token",
    );
    assert_eq!(h.task("b").status, TaskStatus::Ready, "b was not claimed");
    // Wrong agent with the right token.
    h.err_kind(
        Op::CompleteAndClaimNext {
            task_id: "a".into(),
            agent_id: w,
            claim_token: second.claim_token.expect("held"),
            result: TaskResult::default(),
        },
        ErrorKind::FailedPrecondition,
        "stale",
    );
    // After the agent expired, its token is stale too and nothing is claimed for it.
    h.ok(Op::ExpireAgents { agent_ids: vec![v] });
    h.err_kind(
        complete_and_claim_op(&second),
        ErrorKind::FailedPrecondition,
        "stale",
    );
    assert_eq!(
        h.task("a").status,
        TaskStatus::Ready,
        "requeued by the expiry"
    );
    assert_eq!(h.task("b").status, TaskStatus::Ready);
}

/// Refused up front by the stateless checks, like a plain completion.
/// An agent that re-registered with a lower `max_concurrent` while holding tasks has no
/// room after one completion: the completion stands and there is no next task (it was
/// refused after the completion had changed the state — found by `random_sequences`).
#[test]
fn an_agent_over_its_limit_completes_and_claims_nothing() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 2);
    for id in ["a", "b", "c"] {
        h.submit(spec(id));
    }
    let first = claim_started(&mut h, w).expect("a");
    let second = claim_started(&mut h, w).expect("b");
    assert_eq!(
        h.register("w", &[], &[], 1),
        w,
        "the same agent, now with room for one"
    );
    match h.ok(complete_and_claim_op(&first)) {
        Outcome::TaskCompletedClaimedNext { task, next, .. } => {
            assert_eq!(task.status, TaskStatus::Completed);
            assert_eq!(next, None, "still holds one task, its new limit");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(h.task("c").status, TaskStatus::Ready);
    // Back under the limit, the next completion hands over the next task again.
    match h.ok(complete_and_claim_op(&second)) {
        Outcome::TaskCompletedClaimedNext {
            next: Some(next), ..
        } => assert_eq!(next.id, "c"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn validation_covers_the_new_commands() {
    use crate::validate::validate;
    let op = |task_id: &str| Op::CompleteAndClaimNext {
        task_id: task_id.into(),
        agent_id: 1,
        claim_token: 1,
        result: TaskResult::default(),
    };
    assert!(validate(&op("")).is_err(), "an empty task id");
    assert!(validate(&op("t")).is_ok());
    assert!(validate(&Op::ClaimNextStarted { agent_id: 1 }).is_ok());
}
