//! Applying entries, the change feed, and snapshots: build, restart, install.

mod storage_common;

use std::io::Cursor;

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{Membership, StoredMembership};
use percy_server::storage::StateChange;
use percy_statemachine::Op;
use percy_statemachine::{Outcome, StateMachine};
use storage_common::{batch, blank, log_id, membership, open, put_config};

#[tokio::test]
async fn apply_answers_each_entry_and_announces_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm) = open(dir.path());
    let mut changes = sm.subscribe();
    let applied_revision = sm.applied_revision();
    assert_eq!(*applied_revision.borrow(), 0);

    let results = sm
        .apply([
            blank(1, 1),
            membership(1, 2, &[1, 2]),
            put_config(1, 3, "k", "v"),
        ])
        .await
        .expect("apply");
    assert!(
        results[0].commands.is_empty(),
        "a blank entry has no command"
    );
    assert!(
        results[1].commands.is_empty(),
        "a membership entry has no command"
    );
    let [put] = results[2].commands.as_slice() else {
        panic!("one result for one command: {results:?}");
    };
    // Revisions count commands, not log entries.
    assert_eq!(put.revision, 1);
    match &put.response {
        Ok(Outcome::ConfigPut(entry)) => assert_eq!(entry.revision, 1),
        other => panic!("unexpected response {other:?}"),
    }

    match changes.try_recv().expect("one change").as_ref() {
        StateChange::Applied { revision, events } => {
            assert_eq!(*revision, 1);
            assert!(
                events.iter().any(|e| e.key == "k" && e.revision == 1),
                "{events:?}"
            );
        }
        other => panic!("unexpected change {other:?}"),
    }
    assert!(
        changes.try_recv().is_err(),
        "blank and membership entries announce nothing"
    );
    assert_eq!(*applied_revision.borrow(), 1);

    let (last_applied, last_membership) = sm.applied_state().await.expect("applied state");
    assert_eq!(last_applied, Some(log_id(1, 3)));
    assert_eq!(last_membership.log_id(), &Some(log_id(1, 2)));
    assert_eq!(
        sm.state().read().config("k").map(|e| e.value.clone()),
        Some(b"v".to_vec())
    );
}

#[tokio::test]
async fn snapshot_survives_restart_and_later_entries_are_replayed_on_top() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (built_meta, state_at_snapshot) = {
        let (_log, mut sm) = open(dir.path());
        sm.apply([
            membership(1, 1, &[1]),
            put_config(1, 2, "a", "1"),
            put_config(1, 3, "b", "2"),
            blank(2, 4),
        ])
        .await
        .expect("apply");
        let snapshot = sm
            .get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("build");
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(2, 4)));
        assert_eq!(snapshot.meta.last_membership.log_id(), &Some(log_id(1, 1)));
        let state_at_snapshot = sm.state().read().clone();
        // Not in the snapshot: after a restart, openraft replays it from the log.
        sm.apply([put_config(2, 5, "c", "3")])
            .await
            .expect("apply after snapshot");
        (snapshot.meta, state_at_snapshot)
    };

    let (_log, mut sm) = open(dir.path());
    assert_eq!(*sm.state().read(), state_at_snapshot);
    assert_eq!(
        *sm.applied_revision().borrow(),
        2,
        "two commands before the snapshot"
    );
    let (last_applied, last_membership) = sm.applied_state().await.expect("applied state");
    assert_eq!(last_applied, built_meta.last_log_id);
    assert_eq!(last_membership, built_meta.last_membership);
    let current = sm
        .get_current_snapshot()
        .await
        .expect("read")
        .expect("a snapshot");
    assert_eq!(current.meta, built_meta);

    sm.apply([put_config(2, 5, "c", "3")])
        .await
        .expect("replay");
    assert!(sm.state().read().config("c").is_some());
}

#[tokio::test]
async fn installed_snapshot_replaces_the_state_and_persists() {
    let leader_dir = tempfile::tempdir().expect("tempdir");
    let follower_dir = tempfile::tempdir().expect("tempdir");
    let (_leader_log, mut leader) = open(leader_dir.path());
    leader
        .apply([
            membership(1, 1, &[1, 2]),
            put_config(1, 2, "x", "1"),
            put_config(1, 3, "y", "2"),
        ])
        .await
        .expect("apply");
    let snapshot = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let leader_state = leader.state().read().clone();

    let meta = {
        let (_log, mut follower) = open(follower_dir.path());
        follower
            .apply([put_config(1, 1, "stale", "0")])
            .await
            .expect("apply");
        let mut changes = follower.subscribe();
        // A reader's handle, taken before the install, sees the installed state.
        let reader_handle = follower.state();
        let mut received = follower.begin_receiving_snapshot().await.expect("begin");
        *received = Cursor::new(snapshot.snapshot.get_ref().clone());
        follower
            .install_snapshot(&snapshot.meta, received)
            .await
            .expect("install");

        assert_eq!(*reader_handle.read(), leader_state);
        assert!(reader_handle.read().config("stale").is_none());
        assert_eq!(*follower.applied_revision().borrow(), 2);
        assert_eq!(
            changes.try_recv().expect("a change").as_ref(),
            &StateChange::SnapshotInstalled { revision: 2 }
        );
        let current = follower
            .get_current_snapshot()
            .await
            .expect("read")
            .expect("stored");
        assert_eq!(current.meta, snapshot.meta);
        snapshot.meta.clone()
    };

    let (_log, mut follower) = open(follower_dir.path());
    assert_eq!(*follower.state().read(), leader_state);
    assert_eq!(
        follower.applied_state().await.expect("state").0,
        meta.last_log_id
    );
}

#[tokio::test]
async fn snapshot_that_does_not_match_its_metadata_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm) = open(dir.path());
    sm.apply([membership(1, 1, &[1]), put_config(1, 2, "a", "1")])
        .await
        .expect("apply");
    let snapshot = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let bytes = snapshot.snapshot.get_ref().clone();

    let other_dir = tempfile::tempdir().expect("tempdir");
    let (_other_log, mut other) = open(other_dir.path());
    let mut wrong_meta = snapshot.meta.clone();
    wrong_meta.last_log_id = Some(log_id(1, 9));
    let err = other
        .install_snapshot(&wrong_meta, Box::new(Cursor::new(bytes.clone())))
        .await
        .expect_err("mismatched metadata");
    assert!(err.to_string().contains("metadata says"), "{err}");

    let mut wrong_membership = snapshot.meta.clone();
    wrong_membership.last_membership =
        StoredMembership::new(Some(log_id(1, 1)), Membership::new(vec![[5].into()], None));
    assert!(other
        .install_snapshot(&wrong_membership, Box::new(Cursor::new(bytes.clone())))
        .await
        .is_err());

    let mut truncated = bytes;
    truncated.truncate(truncated.len() / 2);
    assert!(other
        .install_snapshot(&snapshot.meta, Box::new(Cursor::new(truncated)))
        .await
        .is_err());
    assert!(other
        .install_snapshot(&snapshot.meta, Box::new(Cursor::new(vec![0xff; 16])))
        .await
        .is_err());

    assert_eq!(
        *other.state().read(),
        StateMachine::new(),
        "a refused snapshot changes nothing"
    );
    assert!(other.get_current_snapshot().await.expect("read").is_none());
}

/// Group commit puts several commands in one entry: each is applied in order at its own
/// revision, answered on its own (a refusal does not spoil its neighbours) and announced on
/// its own.
#[tokio::test]
async fn an_entry_of_several_commands_applies_each_at_its_own_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, mut sm) = open(dir.path());
    let mut changes = sm.subscribe();
    let put = |key: &str, expected_revision| Op::PutConfig {
        key: key.to_string(),
        value: b"v".to_vec(),
        expected_revision,
    };
    let results = sm
        .apply([
            put_config(1, 1, "before", "0"),
            batch(
                1,
                2,
                vec![
                    put("a", None),
                    // CAS against the revision `a` got one command earlier in the same entry.
                    put("a", Some(2)),
                    // Stale CAS: refused, changes nothing but the revision.
                    put("a", Some(2)),
                    put("b", None),
                ],
            ),
        ])
        .await
        .expect("apply");
    let batch = &results[1].commands;
    assert_eq!(
        batch.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![2, 3, 4, 5]
    );
    assert!(matches!(&batch[0].response, Ok(Outcome::ConfigPut(e)) if e.revision == 2));
    assert!(matches!(&batch[1].response, Ok(Outcome::ConfigPut(e)) if e.revision == 3));
    assert!(batch[2].response.is_err(), "{:?}", batch[2].response);
    assert!(matches!(&batch[3].response, Ok(Outcome::ConfigPut(e)) if e.revision == 5));
    assert_eq!(*sm.applied_revision().borrow(), 5);
    assert_eq!(sm.state().read().revision(), 5);

    let mut announced = Vec::new();
    while let Ok(change) = changes.try_recv() {
        if let StateChange::Applied { revision, .. } = change.as_ref() {
            announced.push(*revision);
        }
    }
    assert_eq!(
        announced,
        vec![1, 2, 3, 5],
        "the refused command announces nothing"
    );
}
