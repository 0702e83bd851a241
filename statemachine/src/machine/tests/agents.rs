use super::*;
use crate::agent::AgentStatus;
use crate::event::{EntityKind, EntityValue};
use crate::limits::{DEFAULT_AGENT_TTL_MS, MAX_CONCURRENT_TASKS};
use crate::task::TaskStatus;

#[test]
fn register_creates_then_refreshes_a_live_agent() {
    let mut h = Harness::new();
    let rev = h.next_revision();
    let id = h.register("w1", &["rust"], &[], 0);
    assert_eq!(id, rev, "agent id is the registration revision");
    let agent = h.machine.agent(id).unwrap().clone();
    assert_eq!(agent.max_concurrent, 1, "0 means 1");
    assert_eq!(agent.ttl_ms, DEFAULT_AGENT_TTL_MS);
    assert_eq!(agent.labels.get("node").map(String::as_str), Some("node-a"));

    h.advance(500);
    let applied = h.apply(register_op("w1", &["rust", "go"], &[("os", "linux")], 4));
    match applied.response.unwrap() {
        Outcome::AgentRegistered { agent, created } => {
            assert!(!created);
            assert_eq!(agent.id, id, "refresh keeps the id");
            assert_eq!(agent.capabilities, set(&["rust", "go"]));
            assert_eq!(agent.max_concurrent, 4);
            assert_eq!(agent.last_seen_ms, h.now_ms);
            assert_eq!(agent.revision, h.revision);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(applied.events.len(), 1);
    assert_eq!(applied.events[0].kind, EntityKind::Agent);
    assert_eq!(applied.events[0].key, id.to_string());
    assert_eq!(h.machine.agents().len(), 1);
}

#[test]
fn explicit_node_label_wins_over_node_field() {
    let mut h = Harness::new();
    let id = h.register("w1", &[], &[("node", "custom")], 1);
    assert_eq!(
        h.machine
            .agent(id)
            .unwrap()
            .labels
            .get("node")
            .map(String::as_str),
        Some("custom")
    );
}

#[test]
fn register_after_expiry_is_a_new_incarnation() {
    let mut h = Harness::new();
    let old = h.register("w1", &[], &[], 1);
    h.ok(Op::ExpireAgents {
        agent_ids: vec![old],
    });
    let new = h.register("w1", &[], &[], 1);
    assert_ne!(old, new);
    assert_eq!(h.machine.agent(old).unwrap().status, AgentStatus::Expired);
    assert_eq!(h.machine.agent_by_name("w1").unwrap().id, new);
    // The old identity can do nothing any more.
    h.err_kind(
        Op::ClaimNext { agent_id: old },
        ErrorKind::FailedPrecondition,
        "expired",
    );
}

#[test]
fn register_limits_are_checked() {
    let mut h = Harness::new();
    h.err_kind(
        register_op("", &[], &[], 1),
        ErrorKind::InvalidArgument,
        "empty",
    );
    h.err_kind(
        register_op("w", &[], &[], MAX_CONCURRENT_TASKS + 1),
        ErrorKind::InvalidArgument,
        "max_concurrent",
    );
    let too_many: Vec<String> = (0..65).map(|i| format!("c{i}")).collect();
    let caps: Vec<&str> = too_many.iter().map(String::as_str).collect();
    h.err_kind(
        register_op("w", &caps, &[], 1),
        ErrorKind::InvalidArgument,
        "capabilities",
    );
    h.err_kind(
        Op::RegisterAgent {
            name: "w".into(),
            node: String::new(),
            capabilities: BTreeSet::new(),
            labels: BTreeMap::new(),
            max_concurrent: 1,
            ttl_ms: 5,
        },
        ErrorKind::InvalidArgument,
        "ttl_ms",
    );
}

#[test]
fn deregister_requeues_without_counting_and_releases_locks() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 2);
    let b = h.register("b", &[], &[], 2);
    h.submit(spec("t1"));
    let claimed = h.claim("t1", a);
    assert_eq!(claimed.attempts, 1);
    h.acquired(a, &["src/api"], LockMode::Exclusive);
    // b waits for the lock a holds.
    assert!(matches!(
        h.acquire(b, &["src/api/users.rs"], LockMode::Exclusive, Some(10_000))
            .response,
        Ok(Outcome::LockQueued { position: 1, .. })
    ));
    let applied = h.apply(Op::DeregisterAgent { agent_id: a });
    let Ok(Outcome::AgentDeregistered(released)) = applied.response else {
        panic!("{:?}", applied.response)
    };
    assert_eq!(ids(&released.requeued_tasks), ["t1"]);
    assert_eq!(released.released_locks, ["src/api"]);
    assert_eq!(released.granted.len(), 1);
    assert_eq!(released.granted[0].agent_id, b);
    assert_eq!(released.granted[0].path, "src/api/users.rs");
    let task = h.task("t1");
    assert_eq!(task.status, TaskStatus::Ready);
    assert_eq!(task.attempts, 1, "deregistration adds no attempt");
    assert_eq!(task.assignee, None);
    assert_eq!(task.claim_token, None);
    assert_eq!(
        h.machine.agent(a).unwrap().status,
        AgentStatus::Deregistered
    );
    // Events: the task, the agent, and both lock paths.
    let keys: Vec<(EntityKind, &str)> = applied
        .events
        .iter()
        .map(|e| (e.kind, e.key.as_str()))
        .collect();
    assert!(keys.contains(&(EntityKind::Task, "t1")));
    assert!(keys.contains(&(EntityKind::Agent, a.to_string().as_str())));
    assert!(keys.contains(&(EntityKind::Lock, "src/api")));
    assert!(keys.contains(&(EntityKind::Lock, "src/api/users.rs")));
    let removed = applied.events.iter().find(|e| e.key == "src/api").unwrap();
    assert_eq!(removed.value, None);

    h.err_kind(
        Op::DeregisterAgent { agent_id: a },
        ErrorKind::FailedPrecondition,
        "deregistered",
    );
    h.err_kind(
        Op::DeregisterAgent { agent_id: 999 },
        ErrorKind::NotFound,
        "999",
    );
}

#[test]
fn expiry_requeues_releases_and_the_old_token_is_stale() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    let c = h.register("c", &[], &[], 1);
    h.submit(TaskSpec {
        max_attempts: 5,
        ..spec("t1")
    });
    let lost = h.claim("t1", a);
    h.acquired(a, &["f"], LockMode::Exclusive);
    assert!(matches!(
        h.acquire(c, &["f"], LockMode::Shared, Some(60_000))
            .response,
        Ok(Outcome::LockQueued { .. })
    ));
    let applied = h.apply(Op::ExpireAgents {
        agent_ids: vec![a, 12345, a, b],
    });
    let Ok(Outcome::AgentsExpired(released)) = applied.response else {
        panic!()
    };
    assert_eq!(released.len(), 2, "unknown and duplicate ids are skipped");
    assert_eq!(released[0].agent_id, a);
    assert_eq!(ids(&released[0].requeued_tasks), ["t1"]);
    assert_eq!(released[0].released_locks, ["f"]);
    assert_eq!(released[0].granted[0].agent_id, c);
    assert_eq!(released[1].agent_id, b);
    assert!(released[1].requeued_tasks.is_empty());

    // Skipping an already-expired agent is not an error.
    assert!(matches!(
        h.ok(Op::ExpireAgents { agent_ids: vec![a] }),
        Outcome::AgentsExpired(v) if v.is_empty()
    ));

    // The attempt made by the expired agent counts.
    let again = h.claim("t1", c);
    assert_eq!(again.attempts, 2);
    // The expired holder's token is stale.
    h.err_kind(complete_op(&lost), ErrorKind::FailedPrecondition, "stale");
    h.complete(&again);
}

#[test]
fn expiring_two_agents_never_grants_a_lock_to_the_second() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    h.acquired(a, &["x"], LockMode::Exclusive);
    assert!(h
        .acquire(b, &["x"], LockMode::Exclusive, Some(1_000))
        .response
        .is_ok());
    let Outcome::AgentsExpired(released) = h.ok(Op::ExpireAgents {
        agent_ids: vec![a, b],
    }) else {
        panic!()
    };
    assert!(released.iter().all(|r| r.granted.is_empty()));
    assert!(h.machine.locks().is_empty());
    assert!(h.machine.lock_waiters().is_empty());
}

#[test]
fn checkpoint_moves_last_seen_forward_for_active_agents_only() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    h.ok(Op::DeregisterAgent { agent_id: b });
    let applied = h.apply(Op::CheckpointAgents {
        last_seen_ms: vec![(a, 50_000), (b, 50_000), (77, 1), (a, 10)],
    });
    assert_eq!(
        applied.response,
        Ok(Outcome::AgentsCheckpointed { updated: 1 })
    );
    assert_eq!(applied.events.len(), 1);
    assert_eq!(h.machine.agent(a).unwrap().last_seen_ms, 50_000);
    match &applied.events[0].value {
        Some(EntityValue::Agent(agent)) => assert_eq!(agent.last_seen_ms, 50_000),
        other => panic!("{other:?}"),
    }
}

fn load(load_milli: u32, running_execs: u32) -> crate::agent::AgentLoad {
    crate::agent::AgentLoad {
        load_milli: Some(load_milli),
        cores: Some(4),
        mem_used_bytes: Some(1 << 30),
        mem_total_bytes: Some(8 << 30),
        running_tasks: 0,
        running_execs,
    }
}

#[test]
fn load_checkpoint_keeps_active_agents_only_and_survives_a_snapshot() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let b = h.register("b", &[], &[], 1);
    h.ok(Op::DeregisterAgent { agent_id: b });
    let applied = h.apply(Op::CheckpointAgentLoads {
        loads: vec![(a, load(1_500, 1)), (b, load(9, 0)), (77, load(1, 0))],
    });
    assert_eq!(
        applied.response,
        Ok(Outcome::AgentsCheckpointed { updated: 1 })
    );
    assert!(
        applied.events.is_empty(),
        "a load checkpoint is no watch event"
    );
    let seen = *h.machine.agent_load(a).unwrap();
    assert_eq!(seen.load, load(1_500, 1));
    assert_eq!(seen.at_ms, h.now_ms);
    assert_eq!(h.machine.agent_load(b), None);

    let restored = crate::StateMachine::restore(&h.machine.snapshot()).unwrap();
    assert_eq!(restored, h.machine);
    assert_eq!(restored.agent_load(a), Some(&seen));

    // `a` leaves: its load is no longer shown, and the next checkpoint forgets it.
    h.ok(Op::DeregisterAgent { agent_id: a });
    assert_eq!(h.machine.agent_load(a), None);
    h.ok(Op::CheckpointAgentLoads { loads: vec![] });
    assert!(h.machine.agent_loads.is_empty());
}

#[test]
fn a_snapshot_from_before_loads_restores_without_them() {
    let mut h = Harness::new();
    let a = h.register("a", &[], &[], 1);
    let older = crate::codec::encode(&(
        super::super::image::StateImage::of(&h.machine),
        super::super::image::TokenImage::of(&h.machine),
        super::super::image::RunImage::of(&h.machine),
    ));
    let restored = crate::StateMachine::restore(&older).unwrap();
    assert_eq!(restored, h.machine);
    h.ok(Op::CheckpointAgentLoads {
        loads: vec![(a, load(100, 0))],
    });
    let mut cut = h.machine.snapshot();
    cut.pop();
    assert!(
        crate::StateMachine::restore(&cut).is_err(),
        "a cut load section is corrupt, not absent"
    );
}

#[test]
fn too_many_loads_in_one_checkpoint_are_refused() {
    let mut h = Harness::new();
    let loads = vec![(1, load(0, 0)); crate::limits::MAX_LOADS_PER_CHECKPOINT + 1];
    let applied = h.apply(Op::CheckpointAgentLoads { loads });
    assert!(applied.response.is_err());
}
