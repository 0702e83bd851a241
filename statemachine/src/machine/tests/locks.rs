use super::*;
use crate::event::{EntityKind, EntityValue};
use crate::limits::MAX_LOCK_WAITERS;
use crate::lock::LockWaiter;

fn queued(applied: &Applied) -> (u32, u64) {
    match &applied.response {
        Ok(Outcome::LockQueued {
            position,
            queued_revision,
        }) => (*position, *queued_revision),
        other => panic!("expected LockQueued, got {other:?}"),
    }
}

fn released(h: &mut Harness, agent_id: AgentId, paths: &[&str]) -> (Vec<String>, Vec<LockGrant>) {
    match h.ok(Op::ReleaseLocks {
        agent_id,
        paths: paths.iter().map(|p| p.to_string()).collect(),
    }) {
        Outcome::LocksReleased { released, granted } => (released, granted),
        other => panic!("{other:?}"),
    }
}

fn holders(h: &Harness, path: &str) -> Vec<AgentId> {
    h.machine
        .locks()
        .into_iter()
        .find(|l| l.path == path)
        .map(|l| l.holders.iter().map(|x| x.agent_id).collect())
        .unwrap_or_default()
}

#[test]
fn grant_uses_the_normalised_path_and_the_revision_as_token() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let rev = h.next_revision();
    let applied = h.acquire(
        a,
        &["/src//api/./users.rs/", "docs"],
        LockMode::Exclusive,
        None,
    );
    let Ok(Outcome::LocksAcquired(grants)) = &applied.response else {
        panic!("{:?}", applied.response)
    };
    assert_eq!(grants[0].path, "src/api/users.rs");
    assert_eq!(grants[1].path, "docs");
    assert!(grants
        .iter()
        .all(|g| g.fencing_token == rev && g.agent_id == a));
    let keys: Vec<&str> = applied.events.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["docs", "src/api/users.rs"]);
    assert!(
        matches!(&applied.events[0].value, Some(EntityValue::Lock(l)) if l.holders[0].agent_id == a)
    );
    assert!(applied.events.iter().all(|e| e.kind == EntityKind::Lock));
}

#[test]
fn bad_paths_are_refused() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let deep = vec!["d"; 65].join("/");
    for (path, needle) in [
        ("a/../b", ".."),
        ("a\0b", "control character"),
        ("src\tapi", "control character"),
        ("", "empty"),
        ("//", "empty"),
        (deep.as_str(), "components"),
    ] {
        h.err_kind(
            acquire_op(a, &[path], LockMode::Exclusive, None, None),
            ErrorKind::InvalidArgument,
            needle,
        );
    }
    h.err_kind(
        acquire_op(a, &[], LockMode::Exclusive, None, None),
        ErrorKind::InvalidArgument,
        "no lock path",
    );
    h.err_kind(
        acquire_op(a, &["src", "src/api"], LockMode::Exclusive, None, None),
        ErrorKind::InvalidArgument,
        "overlap",
    );
    h.err_kind(
        acquire_op(a, &["x"], LockMode::Exclusive, None, Some(0)),
        ErrorKind::InvalidArgument,
        "ttl_ms",
    );
}

#[test]
fn ancestors_and_descendants_conflict_siblings_do_not() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    h.acquired(a, &["src/api"], LockMode::Exclusive);
    h.err_kind(
        acquire_op(b, &["src/api/users.rs"], LockMode::Exclusive, None, None),
        ErrorKind::FailedPrecondition,
        &format!("conflicts with the exclusive lock on src/api held by agent {a}"),
    );
    h.err_kind(
        acquire_op(b, &["src"], LockMode::Shared, None, None),
        ErrorKind::FailedPrecondition,
        "src/api",
    );
    h.err_kind(
        acquire_op(b, &["src/api"], LockMode::Exclusive, None, None),
        ErrorKind::FailedPrecondition,
        "src/api",
    );
    h.acquired(b, &["src/apix"], LockMode::Exclusive);
    h.acquired(b, &["src/ap"], LockMode::Exclusive);
    h.acquired(b, &["src/web/index.ts"], LockMode::Exclusive);
}

#[test]
fn shared_locks_share_exclusive_ones_do_not() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    let c = h.register("c", &[], &[], 1);
    h.acquired(a, &["src"], LockMode::Shared);
    h.acquired(b, &["src/lib.rs"], LockMode::Shared);
    h.acquired(c, &["src"], LockMode::Shared);
    assert_eq!(holders(&h, "src"), [a, c]);
    h.err_kind(
        acquire_op(c, &["src/main.rs"], LockMode::Exclusive, None, None),
        ErrorKind::FailedPrecondition,
        "overlaps src, which agent",
    );
    let d = h.register("d", &[], &[], 1);
    h.err_kind(
        acquire_op(d, &["src/lib.rs"], LockMode::Exclusive, None, None),
        ErrorKind::FailedPrecondition,
        "shared lock",
    );
}

#[test]
fn multi_path_acquire_is_all_or_nothing() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    h.acquired(a, &["b"], LockMode::Exclusive);
    h.err_kind(
        acquire_op(b, &["a", "b", "c"], LockMode::Exclusive, None, None),
        ErrorKind::FailedPrecondition,
        "b",
    );
    assert!(holders(&h, "a").is_empty());
    // `Some(0)` means do not wait.
    h.err_kind(
        acquire_op(b, &["a", "b"], LockMode::Exclusive, Some(0), None),
        ErrorKind::FailedPrecondition,
        "b",
    );
    assert!(h.machine.lock_waiters().is_empty());
}

#[test]
fn waiters_are_granted_in_fifo_order_on_release() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    let c = h.register("c", &[], &[], 1);
    h.acquired(a, &["x"], LockMode::Exclusive);
    let (pos_b, q_b) = queued(&h.acquire(b, &["x"], LockMode::Exclusive, Some(60_000)));
    let (pos_c, _) = queued(&h.acquire(c, &["x/y"], LockMode::Exclusive, Some(60_000)));
    assert_eq!((pos_b, pos_c), (1, 2));
    assert_eq!(q_b, h.revision - 1);
    let waiters: Vec<AgentId> = h
        .machine
        .lock_waiters()
        .iter()
        .map(|w| w.agent_id)
        .collect();
    assert_eq!(waiters, [b, c]);

    let rev = h.next_revision();
    let (rel, granted) = released(&mut h, a, &["x", "not-held"]);
    assert_eq!(rel, ["x"]);
    assert_eq!(
        granted.len(),
        1,
        "c conflicts with b and must not overtake it"
    );
    assert_eq!(granted[0].agent_id, b);
    assert_eq!(granted[0].fencing_token, rev);
    assert_eq!(holders(&h, "x"), [b]);

    let (_, granted) = released(&mut h, b, &["x"]);
    assert_eq!(granted[0].agent_id, c);
    assert_eq!(granted[0].path, "x/y");
    assert!(h.machine.lock_waiters().is_empty());
}

#[test]
fn a_new_request_does_not_overtake_a_queued_one() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    let c = h.register("c", &[], &[], 1);
    h.acquired(a, &["one"], LockMode::Exclusive);
    queued(&h.acquire(b, &["one", "two"], LockMode::Exclusive, Some(60_000)));
    // `two` is free, but b asked for it first.
    h.err_kind(
        acquire_op(c, &["two"], LockMode::Exclusive, None, None),
        ErrorKind::FailedPrecondition,
        &format!("request of agent {b} for two"),
    );
    let (pos, _) = queued(&h.acquire(c, &["two"], LockMode::Exclusive, Some(60_000)));
    assert_eq!(pos, 2);
    // Unrelated paths proceed.
    h.acquired(c, &["three"], LockMode::Exclusive);
    let (_, granted) = released(&mut h, a, &["one"]);
    let got: Vec<(AgentId, &str)> = granted
        .iter()
        .map(|g| (g.agent_id, g.path.as_str()))
        .collect();
    assert_eq!(got, [(b, "one"), (b, "two")]);
}

#[test]
fn a_later_waiter_never_overtakes_an_earlier_conflicting_one() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    let c = h.register("c", &[], &[], 1);
    let d = h.register("d", &[], &[], 1);
    h.acquired(a, &["one"], LockMode::Exclusive);
    h.acquired(d, &["unrelated"], LockMode::Exclusive);
    queued(&h.acquire(b, &["one", "two"], LockMode::Exclusive, Some(60_000)));
    queued(&h.acquire(c, &["two/file"], LockMode::Shared, Some(60_000)));
    // A release elsewhere runs the grant pass: `two/file` has no holder, but b asked for
    // `two` first and is still blocked, so c must keep waiting.
    let (_, granted) = released(&mut h, d, &["unrelated"]);
    assert!(granted.is_empty(), "{granted:?}");
    assert!(holders(&h, "two/file").is_empty());
    let (_, granted) = released(&mut h, a, &["one"]);
    let got: Vec<AgentId> = granted.iter().map(|g| g.agent_id).collect();
    assert_eq!(got, [b, b]);
    let (_, granted) = released(&mut h, b, &["one", "two"]);
    assert_eq!(granted[0].agent_id, c);
}

#[test]
fn shared_waiters_are_granted_together_with_increasing_tokens() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    let c = h.register("c", &[], &[], 1);
    let d = h.register("d", &[], &[], 1);
    h.acquired(a, &["x"], LockMode::Exclusive);
    queued(&h.acquire(b, &["x"], LockMode::Shared, Some(60_000)));
    queued(&h.acquire(c, &["x/y"], LockMode::Shared, Some(60_000)));
    queued(&h.acquire(d, &["x"], LockMode::Exclusive, Some(60_000)));
    let rev = h.next_revision();
    let (_, granted) = released(&mut h, a, &["x"]);
    let tokens: Vec<(AgentId, u64)> = granted
        .iter()
        .map(|g| (g.agent_id, g.fencing_token))
        .collect();
    assert_eq!(
        tokens,
        [(b, rev), (c, rev + 1)],
        "d must wait for both shared holders"
    );
    // The next grant's token is above every earlier one, though its revision is not.
    released(&mut h, b, &["x"]);
    let next_rev = h.next_revision();
    let (_, granted) = released(&mut h, c, &["x/y"]);
    assert_eq!(granted[0].agent_id, d);
    assert_eq!(next_rev, rev + 2);
    assert_eq!(granted[0].fencing_token, rev + 2);
    assert_eq!(h.machine.locks.last_fencing_token(), rev + 2);
}

#[test]
fn reacquire_refreshes_with_a_new_token_and_up_or_downgrades() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    let first = h.acquired(a, &["f"], LockMode::Exclusive);
    let second = h.acquired(a, &["f"], LockMode::Exclusive);
    assert!(second[0].fencing_token > first[0].fencing_token);
    assert_eq!(holders(&h, "f"), [a]);
    queued(&h.acquire(b, &["f"], LockMode::Shared, Some(60_000)));
    // Downgrading lets the shared waiter in.
    h.acquired(a, &["f"], LockMode::Shared);
    assert_eq!(holders(&h, "f"), [a, b]);
    // Upgrading needs a to be alone.
    h.err_kind(
        acquire_op(a, &["f"], LockMode::Exclusive, None, None),
        ErrorKind::FailedPrecondition,
        "held by agent",
    );
    released(&mut h, b, &["f"]);
    h.acquired(a, &["f"], LockMode::Exclusive);
    // A request overlapping one's own lock can only wait for itself: refused at once.
    h.err_kind(
        acquire_op(a, &["f/g"], LockMode::Exclusive, Some(60_000), None),
        ErrorKind::FailedPrecondition,
        "already holds",
    );
}

#[test]
fn ttl_expires_on_tick_and_grants_waiters() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    h.ok(acquire_op(
        a,
        &["f"],
        LockMode::Exclusive,
        None,
        Some(5_000),
    ));
    let expires = h.now_ms + 5_000;
    queued(&h.acquire(b, &["f"], LockMode::Exclusive, Some(60_000)));
    assert_eq!(h.machine.next_deadline_ms(), Some(expires));
    h.advance(4_999);
    assert!(matches!(
        h.ok(Op::Tick),
        Outcome::Ticked {
            expired_lock_holders: 0,
            ..
        }
    ));
    h.advance(1);
    let applied = h.apply(Op::Tick);
    let Ok(Outcome::Ticked {
        expired_lock_holders,
        expired_waiters,
        granted,
        ..
    }) = applied.response
    else {
        panic!()
    };
    assert_eq!((expired_lock_holders, expired_waiters), (1, 0));
    assert_eq!(granted[0].agent_id, b);
    assert_eq!(holders(&h, "f"), [b]);
    assert_eq!(
        applied.events.len(),
        1,
        "one event per path, with its final state"
    );
}

#[test]
fn acquire_treats_an_expired_holder_as_gone() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    h.ok(acquire_op(
        a,
        &["src"],
        LockMode::Exclusive,
        None,
        Some(1_000),
    ));
    h.advance(1_000);
    h.acquired(b, &["src/x"], LockMode::Exclusive);
    assert!(
        holders(&h, "src").is_empty(),
        "the expired holder was removed by the grant"
    );
}

#[test]
fn waits_past_their_deadline_are_dropped_on_tick() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    let c = h.register("c", &[], &[], 1);
    h.acquired(a, &["f"], LockMode::Exclusive);
    queued(&h.acquire(b, &["f"], LockMode::Exclusive, Some(1_000)));
    queued(&h.acquire(c, &["f"], LockMode::Exclusive, Some(50_000)));
    assert_eq!(h.machine.next_deadline_ms(), Some(h.now_ms + 1_000));
    h.advance(1_000);
    assert!(matches!(
        h.ok(Op::Tick),
        Outcome::Ticked {
            expired_waiters: 1,
            ..
        }
    ));
    let (_, granted) = released(&mut h, a, &["f"]);
    assert_eq!(granted[0].agent_id, c);
}

#[test]
fn the_wait_queue_is_bounded() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    h.acquired(a, &["f"], LockMode::Exclusive);
    // Fill the queue directly: ten thousand applies would be slow in a debug build.
    for i in 0..MAX_LOCK_WAITERS as u64 {
        h.machine.locks.add_waiter(LockWaiter {
            queued_revision: i + 1_000_000,
            agent_id: b,
            paths: vec![format!("q/{i}")],
            mode: LockMode::Exclusive,
            task_id: None,
            ttl_ms: None,
            wait_deadline_ms: u64::MAX,
        });
    }
    h.revision = 2_000_000;
    h.err_kind(
        acquire_op(b, &["f"], LockMode::Exclusive, Some(1_000), None),
        ErrorKind::ResourceExhausted,
        "queue is full",
    );
}

#[test]
fn release_all_drops_waiters_and_lets_later_ones_in() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    let c = h.register("c", &[], &[], 1);
    h.acquired(a, &["one"], LockMode::Exclusive);
    queued(&h.acquire(b, &["one", "two"], LockMode::Exclusive, Some(60_000)));
    queued(&h.acquire(c, &["two"], LockMode::Exclusive, Some(60_000)));
    let Outcome::LocksReleased { released, granted } = h.ok(Op::ReleaseAllLocks { agent_id: b })
    else {
        panic!()
    };
    assert!(released.is_empty());
    assert_eq!(
        granted[0].agent_id, c,
        "b's dropped request no longer holds c back"
    );
    h.err_kind(
        Op::ReleaseAllLocks { agent_id: 999 },
        ErrorKind::NotFound,
        "999",
    );
}

#[test]
fn inactive_agents_cannot_acquire() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    h.ok(Op::ExpireAgents { agent_ids: vec![a] });
    h.err_kind(
        acquire_op(a, &["f"], LockMode::Exclusive, None, None),
        ErrorKind::FailedPrecondition,
        "expired",
    );
    h.err_kind(
        acquire_op(77, &["f"], LockMode::Exclusive, None, None),
        ErrorKind::NotFound,
        "agent 77",
    );
}

/// `acquire_would_queue` (the leader's hint for batching) says what apply then does with a
/// request that may wait: queue it, grant it, or refuse it.
#[test]
fn acquire_would_queue_predicts_what_apply_does() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    let c = h.register("c", &[], &[], 1);
    h.acquired(a, &["held"], LockMode::Exclusive);
    h.acquired(a, &["shared"], LockMode::Shared);
    h.ok(acquire_op(
        a,
        &["ttl"],
        LockMode::Exclusive,
        None,
        Some(1_000),
    ));
    h.acquired(b, &["busy"], LockMode::Exclusive);
    queued(&h.acquire(c, &["busy"], LockMode::Exclusive, Some(60_000)));
    h.advance(1_000);
    let cases: [(&str, AgentId, &[&str], LockMode, bool); 9] = [
        (
            "another agent holds it",
            b,
            &["held"],
            LockMode::Exclusive,
            true,
        ),
        (
            "another agent holds an ancestor",
            b,
            &["held/file"],
            LockMode::Shared,
            true,
        ),
        ("a free path", b, &["free"], LockMode::Exclusive, false),
        (
            "its own lock, again",
            a,
            &["held"],
            LockMode::Exclusive,
            false,
        ),
        (
            "inside its own lock: refused",
            a,
            &["held/file"],
            LockMode::Exclusive,
            false,
        ),
        (
            "shared with a shared holder",
            b,
            &["shared"],
            LockMode::Shared,
            false,
        ),
        (
            "behind an earlier waiter",
            a,
            &["busy"],
            LockMode::Shared,
            true,
        ),
        (
            "the holder's TTL ran out",
            b,
            &["ttl"],
            LockMode::Exclusive,
            false,
        ),
        (
            "inside its own lock first, then held by another: refused",
            a,
            &["held/file", "busy"],
            LockMode::Exclusive,
            false,
        ),
    ];
    for (why, agent, paths, mode, expected) in cases {
        let owned: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        let predicted = h.machine.acquire_would_queue(agent, &owned, mode, h.now_ms);
        assert_eq!(predicted, expected, "{why}");
        let mut applied_to = h.clone();
        let outcome = applied_to
            .acquire(agent, paths, mode, Some(60_000))
            .response;
        let was_queued = matches!(outcome, Ok(Outcome::LockQueued { .. }));
        assert_eq!(was_queued, expected, "{why}: {outcome:?}");
    }
}

/// A node wakes only the callers whose queued request left the queue, so every way out of the
/// queue — grant, wait deadline, the agent's expiry, the agent's own release — must be reported
/// by the command that caused it, also when events are not built; a request missing here is a
/// caller that hangs to its deadline.
#[test]
fn every_request_leaving_the_queue_is_reported_by_that_command() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    let c = h.register("c", &[], &[], 1);
    let d = h.register("d", &[], &[], 1);
    h.acquired(a, &["f", "g", "h"], LockMode::Exclusive);
    let queue = |h: &mut Harness, agent, path: &str, wait_ms| {
        let applied = h.acquire(agent, &[path], LockMode::Exclusive, Some(wait_ms));
        assert!(applied.resolved_lock_waiters.is_empty());
        queued(&applied).1
    };
    let q_b = queue(&mut h, b, "f", 60_000);
    let q_c = queue(&mut h, c, "f", 1_000);
    let q_d = queue(&mut h, d, "g", 60_000);
    let q_b_h = queue(&mut h, b, "h", 60_000);

    h.advance(1_000);
    assert_eq!(h.apply(Op::Tick).resolved_lock_waiters, [q_c], "deadline");

    // The same command replayed without events reports the same requests.
    let mut replay = h.machine.clone();
    let release_f = Command::new(Op::ReleaseLocks {
        agent_id: a,
        paths: vec!["f".into()],
    });
    let without_events = replay.apply_without_events(h.revision + 1, h.now_ms, release_f.clone());
    assert_eq!(h.command(release_f).resolved_lock_waiters, [q_b], "grant");
    assert_eq!(without_events.resolved_lock_waiters, [q_b]);

    let expired = h.apply(Op::ExpireAgents { agent_ids: vec![d] });
    assert_eq!(expired.resolved_lock_waiters, [q_d], "the agent expired");

    let released = h.apply(Op::ReleaseLocks {
        agent_id: b,
        paths: vec!["h".into()],
    });
    assert_eq!(released.resolved_lock_waiters, [q_b_h], "withdrawn");
    assert!(h.machine.lock_waiters().is_empty());
}
