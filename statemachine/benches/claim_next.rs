//! Claim-next cost as the number of ready tasks grows.
//!
//! Tasks are spread over 50 capability sets (50 shapes), 100 agents each offer 3 of them.
//! For each queue size the per-claim cost is timed in batches and the median batch reported:
//! with the ready index it must stay flat from 10,000 to 100,000 tasks (a scan would grow 10x).
//!
//! Run: `cargo bench -p percy-statemachine --bench claim_next`

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use percy_statemachine::{Command, Op, Outcome, StateMachine, TaskSpec};

const SHAPES: usize = 50;
const AGENTS: usize = 100;
const BATCH: usize = 250;
const BATCHES: usize = 20;

struct Bench {
    machine: StateMachine,
    revision: u64,
}

impl Bench {
    fn apply(&mut self, op: Op) -> Outcome {
        self.revision += 1;
        match self
            .machine
            .apply(self.revision, 1_000 + self.revision, Command::new(op))
            .response
        {
            Ok(outcome) => outcome,
            Err(e) => panic!("setup failed: {e}"),
        }
    }
}

fn capability(i: usize) -> String {
    format!("cap-{:02}", i % SHAPES)
}

fn setup(tasks: usize) -> (Bench, Vec<u64>) {
    let mut bench = Bench {
        machine: StateMachine::new(),
        revision: 0,
    };
    let mut agents = Vec::with_capacity(AGENTS);
    for a in 0..AGENTS {
        let capabilities: BTreeSet<String> =
            [a, a + 1, a + 7].iter().map(|&i| capability(i)).collect();
        let outcome = bench.apply(Op::RegisterAgent {
            name: format!("agent-{a}"),
            node: format!("node-{}", a % 5),
            capabilities,
            labels: BTreeMap::new(),
            max_concurrent: 1_024,
            ttl_ms: 0,
        });
        let Outcome::AgentRegistered { agent, .. } = outcome else {
            panic!("unexpected {outcome:?}")
        };
        agents.push(agent.id);
    }
    let specs: Vec<TaskSpec> = (0..tasks)
        .map(|i| TaskSpec {
            title: format!("task {i}"),
            requires: [capability(i * 7 + i / 13)].into(),
            priority: (i % 5) as i32,
            ..TaskSpec::default()
        })
        .collect();
    for chunk in specs.chunks(10_000) {
        bench.apply(Op::SubmitPlan {
            plan_id: None,
            tasks: chunk.to_vec(),
        });
    }
    (bench, agents)
}

fn measure(tasks: usize) -> (Duration, Duration, Duration) {
    let (mut bench, agents) = setup(tasks);
    let mut per_claim = Vec::with_capacity(BATCHES);
    let mut next_agent = 0;
    for _ in 0..BATCHES {
        let start = Instant::now();
        for _ in 0..BATCH {
            let agent_id = agents[next_agent % agents.len()];
            next_agent += 1;
            let outcome = bench.apply(Op::ClaimNext { agent_id });
            assert!(
                matches!(outcome, Outcome::TaskClaimed(Some(_))),
                "nothing claimable: {outcome:?}"
            );
        }
        per_claim.push(start.elapsed() / BATCH as u32);
    }
    per_claim.sort();
    (per_claim[0], per_claim[BATCHES / 2], per_claim[BATCHES - 1])
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` would pass other flags: only the
    // real bench run measures.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("claim_next: skipped (run with `cargo bench`)");
        return;
    }
    println!(
        "claim-next: {SHAPES} capability sets, {AGENTS} agents, {BATCHES} batches of {BATCH} claims"
    );
    for tasks in [10_000, 30_000, 100_000] {
        let (min, median, max) = measure(tasks);
        println!(
            "{tasks:>7} ready tasks: median {:>7.2} µs/claim (min {:.2}, max {:.2})",
            median.as_secs_f64() * 1e6,
            min.as_secs_f64() * 1e6,
            max.as_secs_f64() * 1e6
        );
    }
}
