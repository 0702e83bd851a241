//! Property tests: long random command sequences from several agents and clients.
//!
//! After every step the invariants must hold, fencing tokens must only go up, a claim's token
//! must be its revision, an operation with a stale claim token must be refused, and a session
//! retry must get the first answer without changing anything. At the end, a second machine fed
//! the same log must be equal (and snapshot to the same bytes), and a machine restored from a
//! snapshot taken midway and fed the rest of the log must be equal too.
//!
//! `PROPTEST_CASES` sets the number of sequences (default 64).

use std::collections::{BTreeMap, BTreeSet};

use percy_statemachine::limits::SESSION_IDLE_TIMEOUT_MS;
use percy_statemachine::{
    lock_paths_conflict, AgentId, AgentStatus, Applied, Command, DefinitionSpec, EntityValue,
    ErrorKind, LockMode, LockWaiter, Op, Outcome, Recipient, Response, SessionRef, StateMachine,
    TaskFilter, TaskResult, TaskSpec,
};
use proptest::prelude::*;

const PATHS: &[&str] = &["a", "a/b", "a/b/c", "a/d", "e", "e/f", "g", "a/bx"];
const CAPABILITIES: &[&str] = &["rust", "go", "gpu"];
const TASK_IDS: u8 = 24;
const CLIENTS: u8 = 3;

#[derive(Debug, Clone, Copy)]
enum TokenChoice {
    Right,
    WrongNumber,
    WrongAgent,
    /// A token this task had earlier (stale after a requeue, an expiry or a re-claim).
    Remembered(u8),
}

#[derive(Debug, Clone)]
enum Action {
    Register {
        name: u8,
        caps: u8,
        max: u8,
    },
    Deregister {
        agent: u8,
    },
    Expire {
        agents: Vec<u8>,
    },
    Checkpoint {
        agent: u8,
    },
    Submit {
        id: u8,
        caps: u8,
        priority: i8,
        deps: Vec<u8>,
        max_attempts: u8,
    },
    Plan {
        tasks: Vec<(u8, Vec<u8>)>,
    },
    ClaimNext {
        agent: u8,
        /// `ClaimNextStarted`: claimed and working in one write.
        started: bool,
    },
    Claim {
        task: u8,
        agent: u8,
        cas: bool,
    },
    Start {
        task: u8,
        token: TokenChoice,
    },
    Complete {
        task: u8,
        token: TokenChoice,
        /// `CompleteAndClaimNext`: the same agent's next task claimed in the same write.
        and_next: bool,
    },
    Fail {
        task: u8,
        token: TokenChoice,
    },
    Cancel {
        task: u8,
    },
    Requeue {
        task: u8,
    },
    Acquire {
        agent: u8,
        paths: Vec<u8>,
        shared: bool,
        wait: Option<u16>,
        ttl: Option<u16>,
    },
    Release {
        agent: u8,
        paths: Vec<u8>,
    },
    ReleaseAll {
        agent: u8,
    },
    PutConfig {
        key: u8,
        cas: u8,
    },
    DeleteConfig {
        key: u8,
        cas: u8,
    },
    Send {
        to: Option<u8>,
    },
    Definitions {
        name: u8,
        version: u8,
    },
    Tick,
    Advance {
        ms: u32,
    },
}

#[derive(Debug, Clone, Copy)]
enum SessionUse {
    None,
    New {
        client: u8,
        ack_lag: u8,
    },
    /// Resend the client's previous request, unchanged.
    Retry {
        client: u8,
    },
    /// Resend the client's first request (usually forgotten by now).
    RetryFirst {
        client: u8,
    },
}

#[derive(Debug, Clone)]
struct Step {
    action: Action,
    session: SessionUse,
    /// Skip a revision number (Raft entries that are not commands).
    gap: bool,
}

fn token() -> impl Strategy<Value = TokenChoice> {
    prop_oneof![
        6 => Just(TokenChoice::Right),
        1 => Just(TokenChoice::WrongNumber),
        1 => Just(TokenChoice::WrongAgent),
        2 => any::<u8>().prop_map(TokenChoice::Remembered),
    ]
}

fn task_index() -> impl Strategy<Value = u8> {
    0..TASK_IDS
}

fn action() -> impl Strategy<Value = Action> {
    let agent = any::<u8>;
    prop_oneof![
        4 => (0u8..6, 0u8..8, 1u8..4).prop_map(|(name, caps, max)| Action::Register { name, caps, max }),
        1 => agent().prop_map(|agent| Action::Deregister { agent }),
        1 => prop::collection::vec(agent(), 0..3).prop_map(|agents| Action::Expire { agents }),
        1 => agent().prop_map(|agent| Action::Checkpoint { agent }),
        6 => (task_index(), 0u8..8, -2i8..3, prop::collection::vec(task_index(), 0..3), 0u8..4)
            .prop_map(|(id, caps, priority, deps, max_attempts)| Action::Submit { id, caps, priority, deps, max_attempts }),
        2 => prop::collection::vec((task_index(), prop::collection::vec(task_index(), 0..3)), 1..5)
            .prop_map(|tasks| Action::Plan { tasks }),
        8 => (agent(), any::<bool>()).prop_map(|(agent, started)| Action::ClaimNext { agent, started }),
        3 => (task_index(), agent(), any::<bool>()).prop_map(|(task, agent, cas)| Action::Claim { task, agent, cas }),
        4 => (task_index(), token()).prop_map(|(task, token)| Action::Start { task, token }),
        6 => (task_index(), token(), any::<bool>()).prop_map(|(task, token, and_next)| Action::Complete { task, token, and_next }),
        3 => (task_index(), token()).prop_map(|(task, token)| Action::Fail { task, token }),
        1 => task_index().prop_map(|task| Action::Cancel { task }),
        1 => task_index().prop_map(|task| Action::Requeue { task }),
        6 => (
            agent(),
            prop::collection::vec(0..PATHS.len() as u8, 1..3),
            any::<bool>(),
            prop::option::weighted(0.6, 1u16..5_000),
            prop::option::of(1u16..8_000),
        )
            .prop_map(|(agent, paths, shared, wait, ttl)| Action::Acquire { agent, paths, shared, wait, ttl }),
        3 => (agent(), prop::collection::vec(0..PATHS.len() as u8, 1..3))
            .prop_map(|(agent, paths)| Action::Release { agent, paths }),
        1 => agent().prop_map(|agent| Action::ReleaseAll { agent }),
        2 => (0u8..4, 0u8..4).prop_map(|(key, cas)| Action::PutConfig { key, cas }),
        1 => (0u8..4, 0u8..4).prop_map(|(key, cas)| Action::DeleteConfig { key, cas }),
        1 => prop::option::of(agent()).prop_map(|to| Action::Send { to }),
        1 => (0u8..3, 0u8..3).prop_map(|(name, version)| Action::Definitions { name, version }),
        2 => Just(Action::Tick),
        3 => prop_oneof![20 => 0u32..3_000, 1 => Just(SESSION_IDLE_TIMEOUT_MS as u32)]
            .prop_map(|ms| Action::Advance { ms }),
    ]
}

fn session_use() -> impl Strategy<Value = SessionUse> {
    prop_oneof![
        8 => Just(SessionUse::None),
        6 => (0..CLIENTS, 0u8..3).prop_map(|(client, ack_lag)| SessionUse::New { client, ack_lag }),
        2 => (0..CLIENTS).prop_map(|client| SessionUse::Retry { client }),
        1 => (0..CLIENTS).prop_map(|client| SessionUse::RetryFirst { client }),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (action(), session_use(), prop::bool::weighted(0.05)).prop_map(|(action, session, gap)| Step {
        action,
        session,
        gap,
    })
}

#[derive(Default)]
struct Client {
    next_seq: u64,
    acked_below: u64,
    /// seq → the command first sent with it.
    sent: BTreeMap<u64, Command>,
}

/// A reference model of one session, following the documented rules, to predict what the
/// machine must do with a request that carries a session.
struct ModelSession {
    floor: u64,
    stored: BTreeMap<u64, Response>,
    last_active_ms: u64,
}

enum Expect {
    Replay(Box<Response>),
    TooOld,
    Proceed,
}

/// One entry of the log the first machine applied.
#[derive(Clone)]
struct Entry {
    revision: u64,
    now_ms: u64,
    command: Command,
    applied: Applied,
}

struct Driver {
    machine: StateMachine,
    revision: u64,
    now_ms: u64,
    clients: BTreeMap<u8, Client>,
    sessions: BTreeMap<u64, ModelSession>,
    /// Every (agent, token) a task was ever claimed under.
    claims: BTreeMap<String, Vec<(AgentId, u64)>>,
    seen_fencing_tokens: BTreeSet<u64>,
    log: Vec<Entry>,
}

fn task_id(n: u8) -> String {
    format!("t{n}")
}

fn capabilities(bits: u8) -> BTreeSet<String> {
    CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(i, _)| bits & (1 << i) != 0)
        .map(|(_, c)| c.to_string())
        .collect()
}

impl Driver {
    fn new() -> Self {
        Self {
            machine: StateMachine::new(),
            revision: 0,
            now_ms: 1_000_000,
            clients: BTreeMap::new(),
            sessions: BTreeMap::new(),
            claims: BTreeMap::new(),
            seen_fencing_tokens: BTreeSet::new(),
            log: Vec::new(),
        }
    }

    /// An agent id: one of the registered ones (any status), or an unknown one.
    /// An agent id: mostly an active agent, sometimes any registered one (expired or gone),
    /// rarely an unknown one.
    fn agent(&self, n: u8) -> AgentId {
        let agents = self.machine.agents();
        let active: Vec<AgentId> = agents
            .iter()
            .filter(|a| a.status == AgentStatus::Active)
            .map(|a| a.id)
            .collect();
        match n % 8 {
            _ if n == u8::MAX || agents.is_empty() => 999_999,
            0..=5 if !active.is_empty() => active[n as usize % active.len()],
            _ => agents[n as usize % agents.len()].id,
        }
    }

    /// A task id: mostly an existing task, preferably a held one when `held_first`;
    /// sometimes an id from the fixed namespace (which may not exist).
    fn task(&self, n: u8, held_first: bool) -> String {
        let all = self.machine.tasks(&TaskFilter::default());
        let held: Vec<&str> = all
            .iter()
            .filter(|t| t.status.is_held())
            .map(|t| t.id.as_str())
            .collect();
        match n % 8 {
            0..=4 if held_first && !held.is_empty() => held[n as usize % held.len()].to_string(),
            0..=5 if !all.is_empty() => all[n as usize % all.len()].id.clone(),
            _ => task_id(n % TASK_IDS),
        }
    }

    fn token_for(&self, id: &str, choice: TokenChoice) -> (AgentId, u64) {
        let current = self
            .machine
            .task(id)
            .and_then(|t| t.assignee.zip(t.claim_token));
        match (choice, current) {
            (TokenChoice::Right, Some(held)) => held,
            (TokenChoice::WrongNumber, Some((agent, token))) => (agent, token + 1),
            (TokenChoice::WrongAgent, Some((agent, token))) => (agent + 1, token),
            (TokenChoice::Remembered(i), _) => self
                .claims
                .get(id)
                .filter(|earlier| !earlier.is_empty())
                .map(|earlier| earlier[i as usize % earlier.len()])
                .unwrap_or((1, 1)),
            (_, None) => (self.agent(0), 1),
        }
    }

    fn resolve(&self, action: &Action) -> Op {
        match action {
            Action::Register { name, caps, max } => Op::RegisterAgent {
                name: format!("agent-{name}"),
                node: format!("node-{}", name % 2),
                capabilities: capabilities(*caps),
                labels: BTreeMap::new(),
                max_concurrent: u32::from(*max),
                ttl_ms: 0,
            },
            Action::Deregister { agent } => Op::DeregisterAgent {
                agent_id: self.agent(*agent),
            },
            Action::Expire { agents } => Op::ExpireAgents {
                agent_ids: agents.iter().map(|a| self.agent(*a)).collect(),
            },
            Action::Checkpoint { agent } => Op::CheckpointAgents {
                last_seen_ms: vec![(self.agent(*agent), self.now_ms)],
            },
            Action::Submit {
                id,
                caps,
                priority,
                deps,
                max_attempts,
            } => Op::SubmitTask(TaskSpec {
                id: Some(task_id(*id)),
                requires: capabilities(*caps & 3),
                priority: i32::from(*priority),
                depends_on: deps.iter().map(|d| self.task(*d, false)).collect(),
                max_attempts: u32::from(*max_attempts),
                ..TaskSpec::default()
            }),
            Action::Plan { tasks } => Op::SubmitPlan {
                plan_id: None,
                tasks: tasks
                    .iter()
                    .map(|(id, deps)| TaskSpec {
                        id: Some(task_id(*id)),
                        // Half point into the plan's own namespace, half at existing tasks.
                        depends_on: deps
                            .iter()
                            .map(|d| {
                                if d % 2 == 0 {
                                    self.task(*d, false)
                                } else {
                                    task_id(*d)
                                }
                            })
                            .collect(),
                        ..TaskSpec::default()
                    })
                    .collect(),
            },
            Action::ClaimNext { agent, started } => {
                let agent_id = self.agent(*agent);
                if *started {
                    Op::ClaimNextStarted { agent_id }
                } else {
                    Op::ClaimNext { agent_id }
                }
            }
            Action::Claim { task, agent, cas } => {
                let task_id = self.task(*task, false);
                Op::ClaimTask {
                    expected_revision: if *cas {
                        self.machine.task(&task_id).map(|t| t.revision)
                    } else {
                        None
                    },
                    task_id,
                    agent_id: self.agent(*agent),
                }
            }
            Action::Start { task, token } => {
                let task = self.task(*task, true);
                let (agent_id, claim_token) = self.token_for(&task, *token);
                Op::StartTask {
                    task_id: task,
                    agent_id,
                    claim_token,
                }
            }
            Action::Complete {
                task,
                token,
                and_next,
            } => {
                let task = self.task(*task, true);
                let (agent_id, claim_token) = self.token_for(&task, *token);
                if *and_next {
                    Op::CompleteAndClaimNext {
                        task_id: task,
                        agent_id,
                        claim_token,
                        result: TaskResult::default(),
                    }
                } else {
                    Op::CompleteTask {
                        task_id: task,
                        agent_id,
                        claim_token,
                        result: TaskResult::default(),
                    }
                }
            }
            Action::Fail { task, token } => {
                let task = self.task(*task, true);
                let (agent_id, claim_token) = self.token_for(&task, *token);
                Op::FailTask {
                    task_id: task,
                    agent_id,
                    claim_token,
                    error: "failed".into(),
                }
            }
            Action::Cancel { task } => Op::CancelTask {
                task_id: self.task(*task, false),
                reason: "test".into(),
            },
            Action::Requeue { task } => Op::RequeueTask {
                task_id: self.task(*task, true),
                reason: String::new(),
            },
            Action::Acquire {
                agent,
                paths,
                shared,
                wait,
                ttl,
            } => Op::AcquireLocks {
                agent_id: self.agent(*agent),
                paths: paths
                    .iter()
                    .map(|p| PATHS[*p as usize].to_string())
                    .collect(),
                mode: if *shared {
                    LockMode::Shared
                } else {
                    LockMode::Exclusive
                },
                task_id: None,
                ttl_ms: ttl.map(u64::from),
                wait_ms: wait.map(u64::from),
            },
            Action::Release { agent, paths } => Op::ReleaseLocks {
                agent_id: self.agent(*agent),
                paths: paths
                    .iter()
                    .map(|p| PATHS[*p as usize].to_string())
                    .collect(),
            },
            Action::ReleaseAll { agent } => Op::ReleaseAllLocks {
                agent_id: self.agent(*agent),
            },
            Action::PutConfig { key, cas } => Op::PutConfig {
                key: format!("k{key}"),
                value: vec![*cas],
                expected_revision: self.config_cas(*key, *cas),
            },
            Action::DeleteConfig { key, cas } => Op::DeleteConfig {
                key: format!("k{key}"),
                expected_revision: self.config_cas(*key, *cas),
            },
            Action::Send { to } => Op::SendMessage {
                from: "tester".into(),
                to: match to {
                    Some(agent) => Recipient::Agent(self.agent(*agent)),
                    None => Recipient::Broadcast,
                },
                body: "hello".into(),
            },
            Action::Definitions { name, version } => Op::ApplyDefinitions {
                definitions: vec![DefinitionSpec {
                    name: format!("def-{name}"),
                    spec_json: format!("{{\"version\": {version}, \"image\": \"x\"}}"),
                    desired: None,
                }],
            },
            Action::Tick | Action::Advance { .. } => Op::Tick,
        }
    }

    /// 0: unconditional, 1: must be absent, 2: the right revision, 3: a wrong one.
    fn config_cas(&self, key: u8, cas: u8) -> Option<u64> {
        let current = self.machine.config(&format!("k{key}")).map(|e| e.revision);
        match cas {
            0 => None,
            1 => Some(0),
            2 => Some(current.unwrap_or(0)),
            _ => Some(current.unwrap_or(0) + 1),
        }
    }

    /// Whether `op` presents a claim that is not the task's current one.
    fn stale_claim(&self, op: &Op) -> bool {
        let (task_id, agent_id, claim_token) = match op {
            Op::StartTask {
                task_id,
                agent_id,
                claim_token,
            }
            | Op::CompleteTask {
                task_id,
                agent_id,
                claim_token,
                ..
            }
            | Op::CompleteAndClaimNext {
                task_id,
                agent_id,
                claim_token,
                ..
            }
            | Op::FailTask {
                task_id,
                agent_id,
                claim_token,
                ..
            } => (task_id, *agent_id, *claim_token),
            _ => return false,
        };
        match self.machine.task(task_id) {
            Some(task) => {
                !(task.status.is_held()
                    && task.assignee == Some(agent_id)
                    && task.claim_token == Some(claim_token))
            }
            None => false,
        }
    }

    fn run(&mut self, step: &Step) {
        if let Action::Advance { ms } = step.action {
            self.now_ms += u64::from(ms);
        }
        self.revision += if step.gap { 2 } else { 1 };
        let command = match step.session {
            SessionUse::None => Command::new(self.resolve(&step.action)),
            SessionUse::New { client, ack_lag } => {
                let op = self.resolve(&step.action);
                let state = self.clients.entry(client).or_default();
                state.next_seq += 1;
                let seq = state.next_seq;
                state.acked_below = state
                    .acked_below
                    .max(seq.saturating_sub(u64::from(ack_lag)).max(1));
                let command = Command::with_session(
                    op,
                    SessionRef {
                        client_id: u64::from(client) + 1,
                        seq,
                        acked_below: state.acked_below,
                    },
                );
                state.sent.insert(seq, command.clone());
                command
            }
            SessionUse::Retry { client } | SessionUse::RetryFirst { client } => {
                let first = matches!(step.session, SessionUse::RetryFirst { .. });
                let previous = self.clients.get(&client).and_then(|state| {
                    if first {
                        state.sent.values().next().cloned()
                    } else {
                        state.sent.values().next_back().cloned()
                    }
                });
                previous.unwrap_or_else(|| Command::new(self.resolve(&step.action)))
            }
        };
        let expect = match command.session {
            Some(session) => self.model_admit(session),
            None => Expect::Proceed,
        };
        let expect_stale = matches!(expect, Expect::Proceed) && self.stale_claim(&command.op);
        let waiters_before: Vec<LockWaiter> =
            self.machine.lock_waiters().into_iter().cloned().collect();
        let tokens_before = self.seen_fencing_tokens.last().copied().unwrap_or(0);
        let applied = self
            .machine
            .apply(self.revision, self.now_ms, command.clone());
        self.check_no_overtaking(&waiters_before, tokens_before);
        self.check(&command, &applied, &expect, expect_stale);
        self.model_after(&command, &applied, &expect);
        self.log.push(Entry {
            revision: self.revision,
            now_ms: self.now_ms,
            command,
            applied,
        });
    }

    fn model_admit(&self, request: SessionRef) -> Expect {
        let Some(session) = self.sessions.get(&request.client_id) else {
            return if request.seq < request.acked_below {
                Expect::TooOld
            } else {
                Expect::Proceed
            };
        };
        if let Some(response) = session.stored.get(&request.seq) {
            return Expect::Replay(Box::new(response.clone()));
        }
        if request.seq < session.floor.max(request.acked_below) {
            return Expect::TooOld;
        }
        Expect::Proceed
    }

    /// The model's half of the apply: a Tick forgets idle sessions first, then the request's
    /// response is recorded (re-creating the session if the Tick just dropped it).
    fn model_after(&mut self, command: &Command, applied: &Applied, expect: &Expect) {
        let now_ms = self.now_ms;
        match expect {
            Expect::TooOld => return,
            Expect::Replay(_) => {
                if let Some(session) = command
                    .session
                    .and_then(|s| self.sessions.get_mut(&s.client_id))
                {
                    session.last_active_ms = now_ms;
                }
                return;
            }
            Expect::Proceed => {}
        }
        if command.op == Op::Tick {
            self.sessions
                .retain(|_, session| session.last_active_ms + SESSION_IDLE_TIMEOUT_MS > now_ms);
        }
        if let Some(request) = command.session {
            let session = self
                .sessions
                .entry(request.client_id)
                .or_insert(ModelSession {
                    floor: 0,
                    stored: BTreeMap::new(),
                    last_active_ms: now_ms,
                });
            session.floor = session.floor.max(request.acked_below);
            let floor = session.floor;
            session.stored.retain(|&seq, _| seq >= floor);
            session.stored.insert(request.seq, applied.response.clone());
            session.last_active_ms = now_ms;
        }
    }

    fn check(&mut self, command: &Command, applied: &Applied, expect: &Expect, expect_stale: bool) {
        if let Err(violation) = self.machine.check_invariants() {
            panic!(
                "invariant violated at revision {}: {violation}\ncommand: {command:?}",
                self.revision
            );
        }
        assert_eq!(self.machine.revision(), self.revision);
        match expect {
            Expect::Replay(first) => {
                assert_eq!(
                    &applied.response,
                    first.as_ref(),
                    "a retry got a different answer"
                );
                assert!(applied.events.is_empty(), "a retry changed something");
                return;
            }
            Expect::TooOld => {
                let error = applied
                    .response
                    .as_ref()
                    .expect_err("a forgotten request was applied");
                assert!(error.message.contains("request too old"), "{error:?}");
                assert!(applied.events.is_empty());
                return;
            }
            Expect::Proceed => {}
        }
        if expect_stale {
            let error = applied
                .response
                .as_ref()
                .expect_err("a stale claim token was accepted");
            assert_eq!(error.kind, ErrorKind::FailedPrecondition, "{error:?}");
        }
        for event in &applied.events {
            assert_eq!(event.revision, self.revision);
        }
        // Fencing tokens: every holder we have not seen before comes from a grant in this
        // apply, and must be above every token granted before.
        let max_before = self.seen_fencing_tokens.last().copied().unwrap_or(0);
        for event in &applied.events {
            if let Some(EntityValue::Lock(lock)) = &event.value {
                for holder in &lock.holders {
                    if !self.seen_fencing_tokens.contains(&holder.fencing_token) {
                        assert!(
                            holder.fencing_token > max_before,
                            "fencing token {} granted after {max_before}",
                            holder.fencing_token
                        );
                        assert!(holder.fencing_token >= self.revision);
                    }
                }
            }
        }
        for event in &applied.events {
            if let Some(EntityValue::Lock(lock)) = &event.value {
                self.seen_fencing_tokens
                    .extend(lock.holders.iter().map(|h| h.fencing_token));
            }
        }
        self.check_no_waiter_left_behind();
        if let Ok(Outcome::TaskClaimed(Some(task))) = &applied.response {
            assert_eq!(
                task.claim_token,
                Some(self.revision),
                "claim token is the claim's revision"
            );
            let agent = task.assignee.expect("a claimed task has an assignee");
            self.claims
                .entry(task.id.clone())
                .or_default()
                .push((agent, self.revision));
        }
    }
}

impl Driver {
    /// Strict FIFO among conflicting requests: a queued request granted by this apply must not
    /// have overtaken an earlier queued request it conflicts with that is still waiting.
    fn check_no_overtaking(&self, waiters_before: &[LockWaiter], tokens_before: u64) {
        let now_ms = self.now_ms;
        let locks = self.machine.locks();
        let still_queued: BTreeSet<u64> = self
            .machine
            .lock_waiters()
            .iter()
            .map(|w| w.queued_revision)
            .collect();
        let granted_now = |w: &LockWaiter| {
            w.paths.iter().all(|path| {
                locks.iter().any(|lock| {
                    lock.path == *path
                        && lock
                            .holders
                            .iter()
                            .any(|h| h.agent_id == w.agent_id && h.fencing_token > tokens_before)
                })
            })
        };
        for (i, granted) in waiters_before.iter().enumerate() {
            if still_queued.contains(&granted.queued_revision) || !granted_now(granted) {
                continue;
            }
            for earlier in &waiters_before[..i] {
                let waiting = still_queued.contains(&earlier.queued_revision)
                    && earlier.wait_deadline_ms > now_ms;
                let conflicting = !(earlier.mode == LockMode::Shared
                    && granted.mode == LockMode::Shared)
                    && earlier
                        .paths
                        .iter()
                        .any(|a| granted.paths.iter().any(|b| lock_paths_conflict(a, b)));
                assert!(
                    !(waiting && conflicting),
                    "queued request {} was granted before the earlier conflicting request {}",
                    granted.queued_revision,
                    earlier.queued_revision
                );
            }
        }
    }

    /// Lock fairness oracle, written against the public API independently of the machine's
    /// own conflict code: after an apply, every queued request must be blocked, by another
    /// agent's incompatible lock on a conflicting path, by the agent's own lock on an
    /// overlapping other path, or by an earlier queued request it conflicts with. Otherwise a
    /// grant was missed, or a request overtook an earlier one.
    ///
    /// Only checked while nothing time-based is due: a holder past its TTL or a request past
    /// its deadline is cleaned up by the next `Tick`, not the moment time passes.
    fn check_no_waiter_left_behind(&self) {
        let now_ms = self.now_ms;
        let locks = self.machine.locks();
        let waiters = self.machine.lock_waiters();
        let something_due = locks
            .iter()
            .flat_map(|lock| &lock.holders)
            .any(|holder| holder.expires_at_ms.is_some_and(|at| at <= now_ms))
            || waiters.iter().any(|w| w.wait_deadline_ms <= now_ms);
        if something_due {
            return;
        }
        let compatible = |a: LockMode, b: LockMode| a == LockMode::Shared && b == LockMode::Shared;
        for (i, waiter) in waiters.iter().enumerate() {
            let blocked = waiter.paths.iter().any(|path| {
                let already_held = locks
                    .iter()
                    .find(|l| {
                        l.path == *path && l.holders.iter().any(|h| h.agent_id == waiter.agent_id)
                    })
                    .map(|l| l.mode);
                if let Some(held) = already_held {
                    if waiter.mode == LockMode::Shared || held == LockMode::Exclusive {
                        return false;
                    }
                }
                let by_holder = locks
                    .iter()
                    .filter(|lock| lock_paths_conflict(&lock.path, path))
                    .any(|lock| {
                        lock.holders.iter().any(|h| {
                            if h.agent_id == waiter.agent_id {
                                lock.path != *path
                            } else {
                                !compatible(waiter.mode, lock.mode)
                            }
                        })
                    });
                let by_earlier = waiters[..i].iter().any(|earlier| {
                    !compatible(waiter.mode, earlier.mode)
                        && earlier.paths.iter().any(|p| lock_paths_conflict(p, path))
                });
                by_holder || by_earlier
            });
            assert!(
                blocked,
                "queued request {} of agent {} could be granted but was not\nlocks: {locks:?}\nwaiters: {waiters:?}",
                waiter.queued_revision, waiter.agent_id
            );
        }
    }
}

/// How a replay applies the log: as a running node does (`apply`, events built), or as a
/// restarting node does before anyone watches (`apply_without_events`: the same answers, and
/// no event may be built).
#[derive(Debug, Clone, Copy)]
enum Replay {
    Watched,
    Unwatched,
}

fn replay(entries: &[Entry], mut machine: StateMachine, how: Replay) -> StateMachine {
    for entry in entries {
        let (revision, now_ms, command) = (entry.revision, entry.now_ms, entry.command.clone());
        let (applied, expected) = match how {
            Replay::Watched => (
                machine.apply(revision, now_ms, command),
                entry.applied.clone(),
            ),
            Replay::Unwatched => (
                machine.apply_without_events(revision, now_ms, command),
                Applied {
                    response: entry.applied.response.clone(),
                    events: Vec::new(),
                    resolved_lock_waiters: entry.applied.resolved_lock_waiters.clone(),
                },
            ),
        };
        assert_eq!(
            applied, expected,
            "{how:?} replay diverged at revision {revision}"
        );
    }
    machine
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_invariants_and_replay_identically(
        steps in prop::collection::vec(step(), 1..250),
        snapshot_at in any::<prop::sample::Index>(),
    ) {
        let mut driver = Driver::new();
        let snapshot_after = snapshot_at.index(steps.len());
        let mut midway: Option<(usize, Vec<u8>)> = None;
        for (i, step) in steps.iter().enumerate() {
            driver.run(step);
            if i == snapshot_after {
                midway = Some((i + 1, driver.machine.snapshot()));
            }
        }

        // Determinism: the same log gives the same answers, events and state.
        let twin = replay(&driver.log, StateMachine::new(), Replay::Watched);
        prop_assert_eq!(&twin, &driver.machine);
        prop_assert_eq!(twin.snapshot(), driver.machine.snapshot());
        let unwatched = replay(&driver.log, StateMachine::new(), Replay::Unwatched);
        prop_assert_eq!(&unwatched, &driver.machine);

        // Snapshot midway, restore, continue: the same as never snapshotting.
        let (applied_before, bytes) = midway.expect("snapshot taken");
        let restored = StateMachine::restore(&bytes).expect("restore");
        let continued = replay(&driver.log[applied_before..], restored, Replay::Watched);
        prop_assert_eq!(&continued, &driver.machine);
        prop_assert_eq!(continued.snapshot(), driver.machine.snapshot());
    }
}

/// A scripted scenario that the random one reaches only rarely: many retries of the same
/// session interleaved with expiries, to make sure a replay never re-applies.
#[test]
fn session_retries_across_expiry_never_double_apply() {
    let mut driver = Driver::new();
    let script = [
        Action::Register {
            name: 0,
            caps: 7,
            max: 2,
        },
        Action::Submit {
            id: 1,
            caps: 0,
            priority: 0,
            deps: vec![],
            max_attempts: 0,
        },
        Action::ClaimNext {
            agent: 0,
            started: false,
        },
    ];
    for action in script {
        driver.run(&Step {
            action,
            session: SessionUse::New {
                client: 0,
                ack_lag: 2,
            },
            gap: false,
        });
        for _ in 0..3 {
            driver.run(&Step {
                action: Action::Tick,
                session: SessionUse::Retry { client: 0 },
                gap: false,
            });
        }
    }
    let task = driver.machine.task("t1").expect("task");
    assert_eq!(task.attempts, 1, "the claim was applied exactly once");
}
