//! Whole-machine behaviour: revisions, snapshots, deadlines.

use super::*;
use crate::codec::{CodecError, FORMAT_VERSION};
use crate::task::TaskStatus;

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
