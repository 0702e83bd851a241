use super::*;
use crate::definition::{DefinitionSpec, DesiredState};
use crate::definition_run::{IterationReport, IterationStatus};
use crate::event::EntityKind;

fn apply_loop(h: &mut Harness, name: &str, spec_json: &str) {
    h.ok(Op::ApplyDefinitions {
        definitions: vec![DefinitionSpec {
            name: name.into(),
            spec_json: spec_json.into(),
            desired: None,
        }],
    });
}

fn claim(h: &mut Harness, name: &str, agent_id: AgentId) -> u64 {
    match h.ok(Op::ClaimDefinitionRun {
        name: name.into(),
        agent_id,
    }) {
        Outcome::RunClaimed(run) => run.runner.unwrap().run_token,
        other => panic!("unexpected {other:?}"),
    }
}

fn start(h: &mut Harness, name: &str, agent_id: AgentId, run_token: u64) -> crate::Iteration {
    match h.ok(Op::StartIteration {
        name: name.into(),
        agent_id,
        run_token,
    }) {
        Outcome::IterationStarted(iteration) => iteration,
        other => panic!("unexpected {other:?}"),
    }
}

fn finish(h: &mut Harness, name: &str, agent_id: AgentId, run_token: u64, number: u64) -> Outcome {
    h.ok(Op::FinishIteration {
        name: name.into(),
        agent_id,
        run_token,
        number,
        report: IterationReport {
            exit_code: Some(0),
            duration_ms: 5,
            ..IterationReport::default()
        },
    })
}

fn steer(h: &mut Harness, name: &str, from: &str, body: &str) {
    h.ok(Op::SteerDefinition {
        name: name.into(),
        from: from.into(),
        body: body.into(),
    });
}

const LOOP: &str = r#"{"command":"llm","prompt":"work","capabilities":["llm"]}"#;

#[test]
fn one_runner_at_a_time_and_a_stale_runner_is_refused() {
    let mut h = Harness::new();
    apply_loop(&mut h, "writer", LOOP);
    let a = h.register("a", &["llm"], &[], 1);
    let b = h.register("b", &["llm"], &[], 1);
    let plain = h.register("plain", &[], &[], 1);
    h.err_kind(
        Op::ClaimDefinitionRun {
            name: "writer".into(),
            agent_id: plain,
        },
        ErrorKind::FailedPrecondition,
        "lacks the capabilities",
    );
    let token = claim(&mut h, "writer", a);
    // A retried claim by the runner gets its own claim back.
    assert_eq!(claim(&mut h, "writer", a), token);
    h.err_kind(
        Op::ClaimDefinitionRun {
            name: "writer".into(),
            agent_id: b,
        },
        ErrorKind::FailedPrecondition,
        "is run by agent",
    );
    h.err_kind(
        Op::StartIteration {
            name: "writer".into(),
            agent_id: b,
            run_token: token,
        },
        ErrorKind::FailedPrecondition,
        "stale",
    );
    let first = start(&mut h, "writer", a, token);
    assert_eq!(first.number, 1);
    assert_eq!(first.prompt, "work");
    h.err_kind(
        Op::FinishIteration {
            name: "writer".into(),
            agent_id: a,
            run_token: token + 1,
            number: 1,
            report: IterationReport::default(),
        },
        ErrorKind::FailedPrecondition,
        "stale",
    );
}

#[test]
fn when_the_runner_expires_another_continues_at_the_next_number() {
    let mut h = Harness::new();
    apply_loop(&mut h, "writer", LOOP);
    let a = h.register("a", &["llm"], &[], 1);
    let b = h.register("b", &["llm"], &[], 1);
    let token_a = claim(&mut h, "writer", a);
    let one = start(&mut h, "writer", a, token_a);
    finish(&mut h, "writer", a, token_a, one.number);
    let two = start(&mut h, "writer", a, token_a);
    assert_eq!(two.number, 2);
    // a dies in the middle of iteration 2.
    h.ok(Op::ExpireAgents { agent_ids: vec![a] });
    let run = h.machine.definition_run("writer").unwrap();
    assert!(run.runner.is_none());
    assert_eq!(run.iterations[1].status, IterationStatus::Lost);
    let token_b = claim(&mut h, "writer", b);
    assert_ne!(token_a, token_b);
    // The old runner's token is stale for good, even for its open iteration.
    h.err_kind(
        Op::FinishIteration {
            name: "writer".into(),
            agent_id: a,
            run_token: token_a,
            number: 2,
            report: IterationReport::default(),
        },
        ErrorKind::FailedPrecondition,
        "stale",
    );
    let three = start(&mut h, "writer", b, token_b);
    assert_eq!(three.number, 3);
    assert_eq!(three.agent_name, "b");
    let numbers: Vec<u64> = h
        .machine
        .definition_run("writer")
        .unwrap()
        .iterations
        .iter()
        .map(|i| i.number)
        .collect();
    assert_eq!(numbers, [1, 2, 3]);
}

#[test]
fn no_iteration_number_is_recorded_twice_and_history_is_bounded() {
    let mut h = Harness::new();
    apply_loop(&mut h, "writer", LOOP);
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..30 {
        let agent = h.register(&format!("w{round}"), &["llm"], &[], 1);
        let token = claim(&mut h, "writer", agent);
        let iteration = start(&mut h, "writer", agent, token);
        assert!(seen.insert(iteration.number), "{} twice", iteration.number);
        if round % 2 == 0 {
            finish(&mut h, "writer", agent, token, iteration.number);
        }
        // A runner that starts again without finishing loses the open iteration.
        let again = start(&mut h, "writer", agent, token);
        assert!(seen.insert(again.number), "{} twice", again.number);
        h.ok(Op::DeregisterAgent { agent_id: agent });
    }
    let run = h.machine.definition_run("writer").unwrap();
    assert_eq!(run.iterations.len(), crate::limits::MAX_ITERATIONS_KEPT);
    assert_eq!(run.next_number, 61);
}

#[test]
fn steering_messages_reach_the_next_prompt_in_arrival_order() {
    let mut h = Harness::new();
    apply_loop(&mut h, "writer", LOOP);
    let a = h.register("a", &["llm"], &[], 1);
    let token = claim(&mut h, "writer", a);
    let first = start(&mut h, "writer", a, token);
    steer(&mut h, "writer", "alice", "use tabs");
    steer(&mut h, "writer", "bob", "and write tests");
    let applied = h.apply(Op::SteerDefinition {
        name: "writer".into(),
        from: "carol".into(),
        body: "   ".into(),
    });
    assert!(applied.response.is_err());
    finish(&mut h, "writer", a, token, first.number);
    let second = start(&mut h, "writer", a, token);
    let senders: Vec<&str> = second.messages.iter().map(|m| m.from.as_str()).collect();
    assert_eq!(senders, ["alice", "bob"]);
    let alice = second.prompt.find("use tabs").unwrap();
    let bob = second.prompt.find("and write tests").unwrap();
    assert!(
        second.prompt.starts_with("work") && alice < bob,
        "{}",
        second.prompt
    );
    // Consumed: the third iteration gets the plain prompt again.
    finish(&mut h, "writer", a, token, second.number);
    assert_eq!(start(&mut h, "writer", a, token).prompt, "work");
    h.err_kind(
        Op::SteerDefinition {
            name: "nope".into(),
            from: "x".into(),
            body: "hi".into(),
        },
        ErrorKind::NotFound,
        "not found",
    );
}

#[test]
fn stop_refuses_new_iterations_and_max_iterations_stops_the_loop() {
    let mut h = Harness::new();
    apply_loop(&mut h, "twice", r#"{"command":"llm","max_iterations":2}"#);
    let a = h.register("a", &[], &[], 1);
    let token = claim(&mut h, "twice", a);
    for number in 1..=2 {
        let iteration = start(&mut h, "twice", a, token);
        assert_eq!(iteration.number, number);
        finish(&mut h, "twice", a, token, number);
    }
    assert_eq!(
        h.machine.definition("twice").unwrap().desired,
        DesiredState::Stopped
    );
    h.err_kind(
        Op::StartIteration {
            name: "twice".into(),
            agent_id: a,
            run_token: token,
        },
        ErrorKind::FailedPrecondition,
        "stopped",
    );
    // Done: nobody may claim it until it is started again.
    let b = h.register("b", &[], &[], 1);
    h.err_kind(
        Op::ClaimDefinitionRun {
            name: "twice".into(),
            agent_id: b,
        },
        ErrorKind::FailedPrecondition,
        "stopped",
    );
    // Started again: two more iterations, numbered on.
    h.ok(Op::SetDefinitionState {
        name: "twice".into(),
        desired: DesiredState::Running,
    });
    assert_eq!(start(&mut h, "twice", a, token).number, 3);
}

#[test]
fn runs_emit_events_and_survive_a_snapshot() {
    let mut h = Harness::new();
    apply_loop(&mut h, "writer", LOOP);
    let a = h.register("a", &["llm"], &[], 1);
    let applied = h.apply(Op::ClaimDefinitionRun {
        name: "writer".into(),
        agent_id: a,
    });
    assert!(applied
        .events
        .iter()
        .any(|e| e.kind == EntityKind::DefinitionRun && e.key == "writer"));
    steer(&mut h, "writer", "alice", "hello");
    let restored = StateMachine::restore(&h.machine.snapshot()).unwrap();
    assert_eq!(restored, h.machine);
}

#[test]
fn bad_loop_keys_are_refused_at_apply() {
    let mut h = Harness::new();
    h.err_kind(
        Op::ApplyDefinitions {
            definitions: vec![DefinitionSpec {
                name: "bad".into(),
                spec_json: r#"{"command":"x","interval":"soon"}"#.into(),
                desired: None,
            }],
        },
        ErrorKind::InvalidArgument,
        "`interval`",
    );
    assert!(h.machine.definition("bad").is_none());
}

#[test]
fn a_lost_last_iteration_still_ends_a_bounded_loop() {
    let mut h = Harness::new();
    apply_loop(&mut h, "once", r#"{"command":"llm","max_iterations":1}"#);
    let a = h.register("a", &[], &[], 1);
    let token = claim(&mut h, "once", a);
    start(&mut h, "once", a, token);
    h.ok(Op::ExpireAgents { agent_ids: vec![a] });
    assert_eq!(
        h.machine.definition("once").unwrap().desired,
        DesiredState::Stopped
    );
}

#[test]
fn run_events_carry_only_the_newest_iterations() {
    let mut h = Harness::new();
    apply_loop(&mut h, "writer", LOOP);
    let a = h.register("a", &["llm"], &[], 1);
    let token = claim(&mut h, "writer", a);
    for _ in 0..5 {
        let i = start(&mut h, "writer", a, token);
        finish(&mut h, "writer", a, token, i.number);
    }
    let applied = h.apply(Op::StartIteration {
        name: "writer".into(),
        agent_id: a,
        run_token: token,
    });
    let Some(crate::EntityValue::DefinitionRun(run)) = applied.events[0].value.clone() else {
        panic!("{:?}", applied.events)
    };
    let numbers: Vec<u64> = run.iterations.iter().map(|i| i.number).collect();
    assert_eq!(numbers, [5, 6]);
    assert_eq!(
        h.machine.definition_run("writer").unwrap().iterations.len(),
        6
    );
}
