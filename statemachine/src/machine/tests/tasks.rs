use super::*;
use crate::limits::{MAX_DESCRIPTION_LEN, MAX_PAYLOAD_LEN};
use crate::machine::TaskFilter;
use crate::task::TaskStatus;

#[test]
fn submit_is_ready_or_blocked_by_dependencies() {
    let mut h = Harness::new();
    assert_eq!(h.submit(spec("a")).status, TaskStatus::Ready);
    let b = h.submit(spec_deps("b", &["a", "a"]));
    assert_eq!(b.status, TaskStatus::Blocked);
    assert_eq!(b.depends_on(), ["a"], "duplicate dependencies are merged");
    let rev = h.next_revision();
    let generated = h.submit(TaskSpec::default());
    assert_eq!(generated.id, format!("task-{rev}"));
    assert_eq!(generated.max_attempts, crate::limits::DEFAULT_MAX_ATTEMPTS);
}

#[test]
fn submit_refuses_duplicates_unknown_and_dead_dependencies() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 1);
    h.submit(spec("a"));
    h.err_kind(
        Op::SubmitTask(spec("a")),
        ErrorKind::AlreadyExists,
        "task a already exists",
    );
    h.err_kind(
        Op::SubmitTask(spec_deps("b", &["a", "ghost"])),
        ErrorKind::InvalidArgument,
        "unknown task ghost",
    );
    h.err_kind(
        Op::SubmitTask(spec_deps("b", &["b"])),
        ErrorKind::InvalidArgument,
        "cycle: b -> b",
    );
    let task = h.claim("a", w);
    h.ok(Op::CancelTask {
        task_id: task.id,
        reason: String::new(),
    });
    h.err_kind(
        Op::SubmitTask(spec_deps("c", &["a"])),
        ErrorKind::FailedPrecondition,
        "depends on task a, which is cancelled",
    );
}

#[test]
fn submit_limits_are_checked() {
    let mut h = Harness::new();
    h.err_kind(
        Op::SubmitTask(TaskSpec {
            payload: vec![0; MAX_PAYLOAD_LEN + 1],
            ..spec("big")
        }),
        ErrorKind::InvalidArgument,
        "payload",
    );
    h.err_kind(
        Op::SubmitTask(TaskSpec {
            description: "d".repeat(MAX_DESCRIPTION_LEN + 1),
            ..spec("big")
        }),
        ErrorKind::InvalidArgument,
        "description",
    );
    h.err_kind(
        Op::SubmitTask(TaskSpec {
            max_attempts: 101,
            ..spec("x")
        }),
        ErrorKind::InvalidArgument,
        "max_attempts",
    );
}

#[test]
fn plan_is_all_or_nothing() {
    let mut h = Harness::new();
    h.submit(spec("existing"));
    // A cycle is named and nothing is created.
    h.err_kind(
        Op::SubmitPlan {
            plan_id: Some("p".into()),
            tasks: vec![
                spec("ok"),
                spec_deps("x", &["y"]),
                spec_deps("y", &["z"]),
                spec_deps("z", &["x"]),
            ],
        },
        ErrorKind::InvalidArgument,
        "dependency cycle: x -> y -> z -> x",
    );
    h.err_kind(
        Op::SubmitPlan {
            plan_id: None,
            tasks: vec![spec("fresh"), spec_deps("x", &["nope"])],
        },
        ErrorKind::InvalidArgument,
        "depends on unknown task nope",
    );
    h.err_kind(
        Op::SubmitPlan {
            plan_id: None,
            tasks: vec![spec("fresh"), spec("existing")],
        },
        ErrorKind::AlreadyExists,
        "task existing already exists",
    );
    h.err_kind(
        Op::SubmitPlan {
            plan_id: None,
            tasks: vec![spec("dup"), spec("dup")],
        },
        ErrorKind::InvalidArgument,
        "task id dup appears twice",
    );
    assert!(h.machine.task("fresh").is_none());
    assert!(h.machine.task("ok").is_none());

    let rev = h.next_revision();
    let outcome = h.ok(Op::SubmitPlan {
        plan_id: None,
        tasks: vec![
            spec_deps("d", &["b", "c"]),
            spec_deps("b", &["a", "existing"]),
            spec_deps("c", &["a"]),
            spec("a"),
            TaskSpec::default(),
        ],
    });
    let Outcome::PlanSubmitted { plan_id, tasks } = outcome else {
        panic!()
    };
    assert_eq!(plan_id, format!("plan-{rev}"));
    let got: Vec<(&str, TaskStatus)> = tasks.iter().map(|t| (t.id.as_str(), t.status)).collect();
    let generated = format!("task-{rev}-5");
    assert_eq!(
        got,
        [
            ("d", TaskStatus::Blocked),
            ("b", TaskStatus::Blocked),
            ("c", TaskStatus::Blocked),
            ("a", TaskStatus::Ready),
            (generated.as_str(), TaskStatus::Ready),
        ]
    );
    let listed: Vec<&str> = h
        .machine
        .tasks(&TaskFilter {
            plan_id: Some(plan_id.clone()),
            ..TaskFilter::default()
        })
        .into_iter()
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(listed, ["d", "b", "c", "a", generated.as_str()]);
    h.err_kind(
        Op::SubmitPlan {
            plan_id: Some(plan_id),
            tasks: vec![spec("other")],
        },
        ErrorKind::AlreadyExists,
        "plan",
    );
}

#[test]
fn claim_next_takes_highest_priority_then_oldest() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 10);
    h.submit(TaskSpec {
        priority: 1,
        ..spec("low-old")
    });
    h.submit(TaskSpec {
        priority: 5,
        ..spec("high-old")
    });
    h.submit(TaskSpec {
        priority: 5,
        ..spec("high-new")
    });
    h.submit(TaskSpec {
        priority: -3,
        ..spec("negative")
    });
    let order: Vec<String> = (0..4).map(|_| h.claim_next(w).unwrap().id).collect();
    assert_eq!(order, ["high-old", "high-new", "low-old", "negative"]);
    assert_eq!(h.claim_next(w), None);
}

#[test]
fn claim_routes_by_capabilities_and_selector() {
    let mut h = Harness::new();
    let rust = h.register("rust", &["rust"], &[("os", "linux")], 10);
    let both = h.register("both", &["rust", "gpu"], &[("os", "mac")], 10);
    h.submit(TaskSpec {
        requires: set(&["gpu"]),
        priority: 9,
        ..spec("needs-gpu")
    });
    h.submit(TaskSpec {
        selector: [("os".to_string(), "linux".to_string())].into(),
        priority: 8,
        ..spec("linux-only")
    });
    h.submit(TaskSpec {
        selector: [("node".to_string(), "node-a".to_string())].into(),
        priority: 7,
        ..spec("on-node-a")
    });
    h.submit(spec("anyone"));
    assert_eq!(h.claim_next(rust).unwrap().id, "linux-only");
    assert_eq!(
        h.claim_next(rust).unwrap().id,
        "on-node-a",
        "node is a label"
    );
    assert_eq!(h.claim_next(rust).unwrap().id, "anyone");
    assert_eq!(h.claim_next(rust), None, "rust lacks gpu");
    h.err_kind(
        Op::ClaimTask {
            task_id: "needs-gpu".into(),
            agent_id: rust,
            expected_revision: None,
        },
        ErrorKind::FailedPrecondition,
        "lacks capability gpu",
    );
    h.submit(TaskSpec {
        selector: [("os".to_string(), "linux".to_string())].into(),
        ..spec("linux-2")
    });
    h.err_kind(
        Op::ClaimTask {
            task_id: "linux-2".into(),
            agent_id: both,
            expected_revision: None,
        },
        ErrorKind::FailedPrecondition,
        "selector os=linux",
    );
    assert_eq!(h.claim_next(both).unwrap().id, "needs-gpu");
}

#[test]
fn max_concurrent_is_respected() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 2);
    for id in ["a", "b", "c"] {
        h.submit(spec(id));
    }
    let a = h.claim_next(w).unwrap();
    h.claim_next(w).unwrap();
    h.err_kind(
        Op::ClaimNext { agent_id: w },
        ErrorKind::ResourceExhausted,
        "max_concurrent 2",
    );
    h.err_kind(
        Op::ClaimTask {
            task_id: "c".into(),
            agent_id: w,
            expected_revision: None,
        },
        ErrorKind::ResourceExhausted,
        "already holds 2",
    );
    h.complete(&a);
    assert_eq!(h.claim_next(w).unwrap().id, "c");
}

#[test]
fn claim_specific_with_cas() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 5);
    let v = h.register("v", &[], &[], 5);
    let task = h.submit(spec("t"));
    h.err_kind(
        Op::ClaimTask {
            task_id: "t".into(),
            agent_id: w,
            expected_revision: Some(task.revision + 100),
        },
        ErrorKind::FailedPrecondition,
        &format!("revision {}", task.revision),
    );
    let rev = h.next_revision();
    let claimed = match h.ok(Op::ClaimTask {
        task_id: "t".into(),
        agent_id: w,
        expected_revision: Some(task.revision),
    }) {
        Outcome::TaskClaimed(Some(t)) => t,
        other => panic!("{other:?}"),
    };
    assert_eq!(claimed.claim_token, Some(rev));
    assert_eq!(claimed.status, TaskStatus::Claimed);
    assert_eq!(claimed.assignee, Some(w));
    // Never held by two agents.
    h.err_kind(
        Op::ClaimTask {
            task_id: "t".into(),
            agent_id: v,
            expected_revision: None,
        },
        ErrorKind::FailedPrecondition,
        "claimed, not ready",
    );
    h.err_kind(
        Op::ClaimTask {
            task_id: "nope".into(),
            agent_id: v,
            expected_revision: None,
        },
        ErrorKind::NotFound,
        "nope",
    );
    h.err_kind(
        Op::ClaimTask {
            task_id: "t".into(),
            agent_id: 4242,
            expected_revision: None,
        },
        ErrorKind::NotFound,
        "agent 4242",
    );
}

#[test]
fn start_complete_fail_need_the_current_token() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 5);
    let v = h.register("v", &[], &[], 5);
    h.submit(spec("t"));
    let first = h.claim("t", w);
    h.ok(Op::RequeueTask {
        task_id: "t".into(),
        reason: "operator".into(),
    });
    // After the requeue the old token is stale, even before anyone claims again.
    h.err_kind(
        Op::StartTask {
            task_id: "t".into(),
            agent_id: w,
            claim_token: first.claim_token.unwrap(),
        },
        ErrorKind::FailedPrecondition,
        "stale claim token",
    );
    let second = h.claim("t", v);
    h.err_kind(
        complete_op(&first),
        ErrorKind::FailedPrecondition,
        "stale claim token",
    );
    // Right token, wrong agent.
    h.err_kind(
        Op::FailTask {
            task_id: "t".into(),
            agent_id: w,
            claim_token: second.claim_token.unwrap(),
            error: "x".into(),
        },
        ErrorKind::FailedPrecondition,
        "stale",
    );
    let start = Op::StartTask {
        task_id: "t".into(),
        agent_id: v,
        claim_token: second.claim_token.unwrap(),
    };
    let Outcome::TaskUpdated { task, .. } = h.ok(start.clone()) else {
        panic!()
    };
    assert_eq!(task.status, TaskStatus::Working);
    // Starting again is harmless and changes nothing.
    let applied = h.apply(start);
    assert!(applied.response.is_ok());
    assert!(applied.events.is_empty());
    h.complete(&second);
    let done = h.task("t");
    assert_eq!(done.status, TaskStatus::Completed);
    assert_eq!(done.result().unwrap().summary, "done");
    assert_eq!(
        done.claim_token, second.claim_token,
        "token kept for the record"
    );
    h.err_kind(
        complete_op(&second),
        ErrorKind::FailedPrecondition,
        "completed",
    );
}

#[test]
fn complete_unblocks_dependents_whose_dependencies_are_all_done() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 5);
    h.submit(spec("a"));
    h.submit(spec("b"));
    h.submit(spec_deps("c", &["a", "b"]));
    h.submit(spec_deps("d", &["a"]));
    let a = h.claim("a", w);
    let Outcome::TaskUpdated { cascade, .. } = h.complete(&a) else {
        panic!()
    };
    assert_eq!(ids(&cascade.unblocked), ["d"]);
    assert_eq!(h.task("c").status, TaskStatus::Blocked);
    let b = h.claim("b", w);
    let Outcome::TaskUpdated { cascade, .. } = h.complete(&b) else {
        panic!()
    };
    assert_eq!(ids(&cascade.unblocked), ["c"]);
    assert_eq!(h.task("c").status, TaskStatus::Ready);
}

#[test]
fn fail_retries_then_fails_for_good_and_cancels_dependents() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 5);
    h.submit(TaskSpec {
        max_attempts: 2,
        ..spec("flaky")
    });
    h.submit(spec_deps("child", &["flaky"]));
    h.submit(spec_deps("grandchild", &["child"]));
    h.submit(spec("unrelated"));

    let first = h.claim("flaky", w);
    let Outcome::TaskUpdated { task, cascade } = h.fail(&first, "boom 1") else {
        panic!()
    };
    assert_eq!(
        task.status,
        TaskStatus::Ready,
        "retried while attempts remain"
    );
    assert_eq!(task.error(), Some("boom 1"));
    assert!(cascade.cancelled.is_empty());
    assert_eq!(h.task("child").status, TaskStatus::Blocked);

    let second = h.claim("flaky", w);
    assert_eq!(second.attempts, 2);
    let Outcome::TaskUpdated { task, cascade } = h.fail(&second, "boom 2") else {
        panic!()
    };
    assert_eq!(task.status, TaskStatus::Failed);
    assert_eq!(ids(&cascade.cancelled), ["child", "grandchild"]);
    for id in ["child", "grandchild"] {
        let t = h.task(id);
        assert_eq!(t.status, TaskStatus::Cancelled);
        assert!(
            t.error().unwrap().contains("dependency flaky failed"),
            "{:?}",
            t.error()
        );
    }
    assert_eq!(h.task("unrelated").status, TaskStatus::Ready);
}

#[test]
fn cancel_takes_a_held_task_away_and_cascades() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 1);
    h.submit(spec("a"));
    h.submit(spec_deps("b", &["a"]));
    let held = h.claim("a", w);
    let Outcome::TaskUpdated { task, cascade } = h.ok(Op::CancelTask {
        task_id: "a".into(),
        reason: "no longer needed".into(),
    }) else {
        panic!()
    };
    assert_eq!(task.status, TaskStatus::Cancelled);
    assert_eq!(task.error(), Some("cancelled: no longer needed"));
    assert_eq!(ids(&cascade.cancelled), ["b"]);
    assert!(h.task("b").error().unwrap().contains("a was cancelled"));
    // The holder lost it, and has room for another task again.
    h.err_kind(complete_op(&held), ErrorKind::FailedPrecondition, "stale");
    h.submit(spec("c"));
    assert_eq!(h.claim_next(w).unwrap().id, "c");
    h.err_kind(
        Op::CancelTask {
            task_id: "a".into(),
            reason: String::new(),
        },
        ErrorKind::FailedPrecondition,
        "already cancelled",
    );
}

#[test]
fn requeue_needs_a_held_task() {
    let mut h = Harness::new();
    h.submit(spec("t"));
    h.err_kind(
        Op::RequeueTask {
            task_id: "t".into(),
            reason: String::new(),
        },
        ErrorKind::FailedPrecondition,
        "ready, not claimed",
    );
}

#[test]
fn task_listing_filters_in_creation_order() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 5);
    for id in ["z", "y", "x"] {
        h.submit(spec(id));
    }
    h.claim("y", w);
    let all: Vec<&str> = h
        .machine
        .tasks(&TaskFilter::default())
        .iter()
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(all, ["z", "y", "x"]);
    let ready = h.machine.tasks(&TaskFilter {
        status: Some(TaskStatus::Ready),
        limit: 1,
        ..TaskFilter::default()
    });
    assert_eq!(ready.len(), 1);
    assert_eq!(ready[0].id, "z");
    let mine = h.machine.tasks(&TaskFilter {
        assignee: Some(w),
        ..TaskFilter::default()
    });
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].id, "y");
}

/// Following `next` from page to page lists every matching task once, in order, whatever the
/// page size.
#[test]
fn task_pages_cover_the_listing_once_in_order() {
    let mut h = Harness::new();
    let w = h.register("w", &[], &[], 50);
    let ids: Vec<String> = (0..23).map(|i| format!("t{i:02}")).collect();
    for id in &ids {
        h.submit(spec(id));
    }
    for id in ids.iter().step_by(3) {
        h.claim(id, w);
    }
    let ready = TaskFilter {
        status: Some(TaskStatus::Ready),
        ..TaskFilter::default()
    };
    let expected: Vec<&str> = h
        .machine
        .tasks(&ready)
        .iter()
        .map(|t| t.id.as_str())
        .collect();
    assert_eq!(expected.len(), 15);
    for page_size in [1, 4, 15, 16, 100] {
        let mut listed = Vec::new();
        let mut from = 0;
        let mut pages = 0;
        loop {
            let page = h.machine.tasks_page(&ready, from, page_size);
            assert!(page.tasks.len() <= page_size);
            listed.extend(page.tasks.iter().map(|t| t.id.as_str()));
            pages += 1;
            match page.next {
                Some(next) => from = next,
                None => break,
            }
        }
        assert_eq!(listed, expected, "page size {page_size}");
        assert!(
            pages <= expected.len() / page_size + 2,
            "page size {page_size}: {pages} pages"
        );
    }
}

#[test]
fn a_maximal_chain_plan_is_handled_without_recursion() {
    let mut h = Harness::new();
    let n = crate::limits::MAX_PLAN_TASKS;
    let ids: Vec<String> = (0..n).map(|i| format!("c{i}")).collect();
    let tasks: Vec<TaskSpec> = (0..n)
        .map(|i| TaskSpec {
            id: Some(ids[i].clone()),
            depends_on: if i == 0 {
                vec![]
            } else {
                vec![ids[i - 1].clone()]
            },
            ..TaskSpec::default()
        })
        .collect();
    // Closing the chain into a cycle is caught.
    let mut cyclic = tasks.clone();
    cyclic[0].depends_on = vec![ids[n - 1].clone()];
    let error = h.err(Op::SubmitPlan {
        plan_id: None,
        tasks: cyclic,
    });
    assert!(
        error
            .message
            .starts_with("dependency cycle: c0 -> c9999 -> c9998"),
        "{}",
        error.message
    );
    assert!(
        error.message.ends_with("c2 -> c1 -> c0"),
        "{}",
        error.message
    );
    assert!(error.message.contains("(9977 more)"), "{}", error.message);
    h.ok(Op::SubmitPlan {
        plan_id: None,
        tasks,
    });
    let Outcome::TaskUpdated { cascade, .. } = h.ok(Op::CancelTask {
        task_id: "c0".into(),
        reason: String::new(),
    }) else {
        panic!()
    };
    assert_eq!(cascade.cancelled.len(), n - 1);
}

#[test]
fn lost_claim_is_certain_only_for_a_task_past_the_expected_revision() {
    let mut h = Harness::new();
    let winner = h.register("winner", &[], &[], 1);
    let submitted = h.submit(spec("t"));
    let expected = submitted.revision;
    let winning_request = Harness::session(7, 1, 1);
    let claim = Op::ClaimTask {
        task_id: "t".into(),
        agent_id: winner,
        expected_revision: Some(expected),
    };
    assert_eq!(h.machine.lost_claim("t", expected, None), None);
    h.command(Command::with_session(claim, winning_request))
        .response
        .unwrap();

    let refusal = h.machine.lost_claim("t", expected, None).unwrap();
    assert_eq!(refusal.kind, ErrorKind::FailedPrecondition);
    assert!(refusal.message.contains("not the expected"), "{refusal:?}");
    let other_request = Harness::session(8, 1, 1);
    assert!(h
        .machine
        .lost_claim("t", expected, Some(other_request))
        .is_some());
    // The winner's retry must reach the session, which holds its first answer.
    assert_eq!(
        h.machine.lost_claim("t", expected, Some(winning_request)),
        None
    );
    // Newer than anything applied here, or unknown: only apply can decide.
    assert_eq!(h.machine.lost_claim("t", h.revision + 10, None), None);
    assert_eq!(h.machine.lost_claim("nope", expected, None), None);
}

/// An exec is not idempotent: when its executor expires mid-run it fails as lost, unless it
/// was submitted with attempts to spare (`--retry`), while an ordinary task is requeued.
#[test]
fn an_exec_whose_executor_expires_is_lost_not_rerun() {
    let mut h = Harness::new();
    let exec_spec = |id: &str, max_attempts: u32| TaskSpec {
        requires: [crate::task::EXEC_CAPABILITY.to_owned()].into(),
        max_attempts,
        ..spec(id)
    };
    let executor = h.register("x", &[crate::task::EXEC_CAPABILITY], &[], 3);
    h.submit(exec_spec("once", 1));
    h.submit(exec_spec("retried", 2));
    h.submit(spec("plain"));
    for id in ["once", "retried", "plain"] {
        h.claim(id, executor);
    }
    h.ok(Op::ExpireAgents {
        agent_ids: vec![executor],
    });
    let once = h.task("once");
    assert_eq!(once.status, TaskStatus::Failed);
    assert!(
        once.error()
            .unwrap_or_default()
            .starts_with(crate::task::LOST_EXEC_PREFIX),
        "{:?}",
        once.error()
    );
    assert_eq!(h.task("retried").status, TaskStatus::Ready);
    assert_eq!(h.task("plain").status, TaskStatus::Ready);
}
