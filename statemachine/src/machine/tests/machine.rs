//! Whole-machine behaviour: revisions, snapshots, deadlines.

use super::*;
use crate::codec::{CodecError, FORMAT_VERSION};
use crate::task::{Task, TaskStatus};

#[test]
fn stale_revision_is_refused_without_change() {
    let mut h = Harness::new();
    h.register("a", &[], &[], 1);
    let before = h.machine.clone();
    let applied = h
        .machine
        .apply(h.revision, h.now_ms, Command::new(Op::Tick));
    assert_eq!(
        applied.response.unwrap_err().kind,
        ErrorKind::FailedPrecondition
    );
    assert_eq!(h.machine, before);
    let applied = h.machine.apply(0, h.now_ms, Command::new(Op::Tick));
    assert!(applied.response.is_err());
    assert_eq!(h.machine.revision(), h.revision);
}

#[test]
fn revision_advances_on_errors_too() {
    let mut h = Harness::new();
    h.apply(Op::DeregisterAgent { agent_id: 5 });
    assert_eq!(h.machine.revision(), 1);
    // Revisions may skip numbers (Raft entries that are not commands).
    let applied = h.machine.apply(10, h.now_ms, Command::new(Op::Tick));
    assert!(applied.response.is_ok());
    assert_eq!(h.machine.revision(), 10);
}

fn busy_machine() -> Harness {
    let mut h = Harness::new();
    let a = h.register("a", &["rust"], &[("os", "linux")], 3);
    let b = h.register("b", &[], &[], 1);
    h.submit(spec("t1"));
    h.submit(spec_deps("t2", &["t1"]));
    h.ok(Op::SubmitPlan {
        plan_id: None,
        tasks: vec![spec("p1"), spec_deps("p2", &["p1"])],
    });
    h.claim("t1", a);
    h.ok(acquire_op(
        a,
        &["src/api"],
        LockMode::Exclusive,
        None,
        Some(30_000),
    ));
    h.ok(acquire_op(
        b,
        &["src"],
        LockMode::Shared,
        Some(60_000),
        None,
    ));
    h.ok(Op::PutConfig {
        key: "k".into(),
        value: b"v".to_vec(),
        expected_revision: None,
    });
    h.ok(Op::ApplyDefinitions {
        definitions: vec![crate::definition::DefinitionSpec {
            name: "d".into(),
            spec_json: r#"{"x":[1,2,{"y":null}]}"#.into(),
            desired: None,
        }],
    });
    h.ok(Op::SendMessage {
        from: "op".into(),
        to: crate::message::Recipient::Agent(a),
        body: "hi".into(),
    });
    h.command(Command::with_session(
        Op::SubmitTask(spec("s")),
        Harness::session(9, 1, 1),
    ));
    h
}

#[test]
fn snapshot_restores_an_equal_machine() {
    let h = busy_machine();
    let bytes = h.machine.snapshot();
    assert_eq!(bytes[0], FORMAT_VERSION);
    let restored = crate::StateMachine::restore(&bytes).unwrap();
    assert_eq!(restored, h.machine);
    assert_eq!(restored.snapshot(), bytes);
}

#[test]
fn snapshot_then_continue_equals_never_snapshotting() {
    let mut original = busy_machine();
    let mut restored = Harness {
        machine: crate::StateMachine::restore(&original.machine.snapshot()).unwrap(),
        revision: original.revision,
        now_ms: original.now_ms,
    };
    let a = original.machine.agent_by_name("a").unwrap().id;
    for h in [&mut original, &mut restored] {
        let t1 = h.task("t1").clone();
        h.complete(&t1);
        assert_eq!(h.task("t2").status, TaskStatus::Ready);
        assert_eq!(h.claim_next(a).unwrap().id, "t2");
        h.ok(Op::ReleaseAllLocks { agent_id: a });
        h.advance(120_000);
        h.ok(Op::Tick);
        // The session survived the snapshot: the retry is answered, not re-applied.
        let retry = h.command(Command::with_session(
            Op::SubmitTask(spec("s")),
            Harness::session(9, 1, 1),
        ));
        assert!(retry.response.is_ok());
    }
    assert_eq!(original.machine, restored.machine);
    assert_eq!(original.machine.snapshot(), restored.machine.snapshot());
}

/// Restore builds the task indexes in bulk; claim-next must then pick exactly what the machine
/// that inserted the tasks one by one would. The tasks interleave shapes, priorities and plans
/// (so no group is one contiguous run of the image) and include blocked, held and finished
/// ones.
#[test]
fn restored_indexes_claim_in_the_same_order() {
    let mut h = Harness::new();
    let agents = [
        h.register("any", &[], &[], 100),
        h.register("rust", &["rust"], &[], 100),
        h.register("both", &["rust", "go"], &[("os", "linux")], 100),
    ];
    let shape = |i: usize, spec: &mut TaskSpec| match i % 4 {
        0 => {}
        1 => spec.requires = ["rust".to_string()].into(),
        2 => spec.requires = ["rust".to_string(), "go".to_string()].into(),
        _ => spec.selector = [("os".to_string(), "linux".to_string())].into(),
    };
    for plan in 0..3 {
        let tasks = (0..20)
            .map(|i| {
                let mut task = spec(&format!("p{plan}-{i:02}"));
                task.priority = ((i * 7 + plan) % 3) as i32;
                shape(i + plan, &mut task);
                if i % 5 == 4 {
                    task.depends_on = vec![format!("p{plan}-{:02}", i - 1)];
                }
                task
            })
            .collect();
        h.ok(Op::SubmitPlan {
            plan_id: Some(format!("plan-{plan}")),
            tasks,
        });
        let mut single = spec(&format!("single-{plan}"));
        shape(plan, &mut single);
        h.submit(single);
    }
    let held = h.claim("p0-03", agents[2]);
    h.complete(&held);
    h.claim("p1-03", agents[0]);

    let bytes = h.machine.snapshot();
    let mut restored = Harness {
        machine: crate::StateMachine::restore(&bytes).unwrap(),
        revision: h.revision,
        now_ms: h.now_ms,
    };
    assert_eq!(restored.machine, h.machine);
    assert_eq!(
        restored.machine.tasks.ready_index(),
        h.machine.tasks.ready_index()
    );
    loop {
        let mut claimed = Vec::new();
        for &agent in &agents {
            let original = h.claim_next(agent).map(|t| t.id);
            assert_eq!(restored.claim_next(agent).map(|t| t.id), original);
            claimed.extend(original);
        }
        if claimed.is_empty() {
            break;
        }
    }
    assert_eq!(restored.machine, h.machine);
}

/// The bulk build equals one insert per task for any order of tasks, including plans and
/// shapes that are not contiguous (which the snapshot of a live machine never produces), and
/// refuses a duplicate id.
#[test]
fn bulk_built_task_store_equals_inserting_one_by_one() {
    use super::super::task_store::TaskStore;

    let mut h = busy_machine();
    h.ok(Op::SubmitPlan {
        plan_id: Some("q".into()),
        tasks: vec![spec("q1"), spec_deps("q2", &["q1", "t1"])],
    });
    let mut tasks: Vec<Task> = h.machine.tasks.iter().cloned().collect();
    // Interleave: every other task moved to the end.
    let (even, odd): (Vec<_>, Vec<_>) = tasks.drain(..).enumerate().partition(|(i, _)| i % 2 == 0);
    tasks = even.into_iter().chain(odd).map(|(_, task)| task).collect();

    let mut one_by_one = TaskStore::default();
    let seqs: Vec<usize> = tasks
        .iter()
        .map(|task| one_by_one.insert(task.clone()))
        .collect();
    for seq in seqs {
        one_by_one.link_dependencies(seq);
    }
    assert_eq!(TaskStore::from_tasks(tasks.clone()).unwrap(), one_by_one);

    let duplicate = tasks[1].clone();
    tasks.push(duplicate);
    let error = TaskStore::from_tasks(tasks).unwrap_err();
    assert!(error.contains("appears twice"), "{error}");
}

/// `snapshot()` encodes the image straight from the machine; the bytes must be those of the
/// owned image every snapshot so far was written from, entity kind by entity kind.
#[test]
fn the_image_encoded_from_the_machine_is_the_owned_images_bytes() {
    use super::super::image::{StateImage, StateImageOf};
    let h = busy_machine();
    let machine = &h.machine;
    assert!(machine.agents.iter().count() > 0 && machine.tasks.len() > 0);
    assert!(machine.locks.locks().count() > 0 && machine.locks.waiters().count() > 0);
    assert!(!machine.config.is_empty() && !machine.definitions.is_empty());
    assert!(!machine.mailboxes.is_empty() && machine.sessions.iter().count() > 0);
    assert_eq!(
        crate::codec::encode(&StateImageOf(machine)),
        crate::codec::encode(&StateImage::of(machine))
    );
}

#[test]
fn restore_refuses_unknown_versions_and_corruption() {
    let h = busy_machine();
    let mut bytes = h.machine.snapshot();
    bytes[0] = FORMAT_VERSION + 1;
    assert!(matches!(
        crate::StateMachine::restore(&bytes),
        Err(CodecError::UnknownVersion { found }) if found == FORMAT_VERSION + 1
    ));
    let bytes = h.machine.snapshot();
    assert!(matches!(
        crate::StateMachine::restore(&bytes[..bytes.len() / 2]),
        Err(CodecError::Corrupt(_))
    ));
    assert!(matches!(
        crate::StateMachine::restore(&[]),
        Err(CodecError::Corrupt(_))
    ));
    // Decodes, but makes no sense: a task that is both ready and held elsewhere in the image.
    let mut image = super::super::image::StateImage::of(&h.machine);
    let encoded = crate::codec::encode(&image);
    assert!(crate::StateMachine::restore(&encoded).is_ok());
    image_corrupt_task(&mut image);
    let encoded = crate::codec::encode(&image);
    let error = crate::StateMachine::restore(&encoded).unwrap_err();
    assert!(error.to_string().contains("snapshot"), "{error}");
}

fn image_corrupt_task(image: &mut super::super::image::StateImage) {
    image.corrupt_first_task_for_tests();
}

#[test]
fn next_deadline_is_the_earliest_due_thing() {
    let mut h = Harness::new();
    assert_eq!(h.machine.next_deadline_ms(), None);
    let a = h.register("a", &[], &[], 1);
    h.ok(acquire_op(
        a,
        &["x"],
        LockMode::Exclusive,
        None,
        Some(7_000),
    ));
    assert_eq!(h.machine.next_deadline_ms(), Some(h.now_ms + 7_000));
    let b = h.register("b", &[], &[], 1);
    h.ok(acquire_op(
        b,
        &["x"],
        LockMode::Exclusive,
        Some(3_000),
        None,
    ));
    assert_eq!(h.machine.next_deadline_ms(), Some(h.now_ms + 3_000));
}

#[test]
fn time_never_runs_backwards_when_a_leader_stamps_an_earlier_clock() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let stale_clock = h.now_ms;
    h.advance(60_000);
    let late = h.now_ms;
    h.ok(Op::Tick);
    // A new leader whose wall clock is a minute behind proposes an acquire with a TTL: the TTL
    // counts from the machine's clock, not from the stale stamp, so it cannot be born expired.
    h.now_ms = stale_clock;
    let Outcome::LocksAcquired(grants) = h.ok(acquire_op(
        a,
        &["x"],
        LockMode::Exclusive,
        None,
        Some(5_000),
    )) else {
        panic!("expected a grant");
    };
    assert_eq!(grants[0].expires_at_ms, Some(late + 5_000));
    assert_eq!(h.machine.clock_ms(), late);
}
