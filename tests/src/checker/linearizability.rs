//! A linearizability checker: Wing & Gong's search with Lowe's memoisation (the algorithm of
//! Porcupine and Knossos' `wgl`), for one sequential [`Model`] at a time. Callers split a
//! history by key first (P-compositionality) and check each part on its own.
//!
//! Why not a crate: `porcupine-rs` 0.3 puts criterion, regex and rand 0.10 in its normal
//! dependencies (a heavy build for a test crate on two cores) and bounds the search by wall
//! clock, which makes verdicts depend on machine load; `todc-utils` has no budget and no way to
//! express indeterminate operations. This module bounds the search by a step count, so a
//! verdict is reproducible, and running out of budget is [`Outcome::Unknown`], never a pass.
//!
//! Indeterminate operations (`ret == None`) return at +infinity and are *optional*: the search
//! succeeds once every determinate operation is linearized, so an indeterminate operation may
//! take effect at any point after its call, or never.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    /// The model state; hashed for memoisation, so keep it small.
    type State: Clone + Eq + Hash;
    /// What an operation asked for.
    type Input;
    /// What an operation observed.
    type Output;

    /// The state before any operation.
    fn init(&self) -> Self::State;

    /// Applies `input` to `state`. `output` is `None` for an indeterminate operation: then
    /// return the state had it taken effect (or `None` if it could not have).
    /// Return `None` when the operation cannot be linearized in this state.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: Option<&Self::Output>,
    ) -> Option<Self::State>;
}

/// One operation as the checker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinOp<I, O> {
    pub call_ns: u64,
    /// Ignored for indeterminate operations (their return is +infinity).
    pub return_ns: u64,
    pub input: I,
    /// `None`: indeterminate.
    pub output: Option<O>,
    /// Where the operation came from (an index into the caller's history), for reports.
    pub id: usize,
}

/// What the search concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Linearizable,
    /// No linearization exists. `stuck` are the ids of determinate operations that could not
    /// be placed after the longest linearizable prefix the search found (`prefix_len` ops).
    NotLinearizable {
        prefix_len: usize,
        stuck: Vec<usize>,
    },
    /// The step budget ran out: failure to verify.
    Unknown {
        steps: u64,
    },
}

const NIL: usize = usize::MAX;

#[derive(Debug, Clone)]
struct Node {
    /// Index into the operation slice.
    op: usize,
    is_call: bool,
    /// For a call node: its return node.
    partner: usize,
    prev: usize,
    next: usize,
}

/// Checks `ops` against `model`, giving up after `budget` search steps.
pub fn check<M: Model>(model: &M, ops: &[LinOp<M::Input, M::Output>], budget: u64) -> Outcome {
    // Event list: calls and returns, sorted by time; at equal times calls come first, so that
    // an operation returning at t and one called at t count as concurrent.
    let mut events: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
    for (index, op) in ops.iter().enumerate() {
        let return_ns = if op.output.is_some() {
            op.return_ns.max(op.call_ns)
        } else {
            u64::MAX
        };
        events.push((op.call_ns, true, index));
        events.push((return_ns, false, index));
    }
    events.sort_by_key(|&(time, is_call, index)| (time, !is_call, index));

    // Node 0 is the head sentinel; event k is node k + 1.
    let mut nodes: Vec<Node> = Vec::with_capacity(events.len() + 1);
    nodes.push(Node {
        op: NIL,
        is_call: false,
        partner: NIL,
        prev: NIL,
        next: if events.is_empty() { NIL } else { 1 },
    });
    let mut return_node = vec![NIL; ops.len()];
    for (k, &(_, is_call, index)) in events.iter().enumerate() {
        let id = k + 1;
        nodes.push(Node {
            op: index,
            is_call,
            partner: NIL,
            prev: id - 1,
            next: if id == events.len() { NIL } else { id + 1 },
        });
        if !is_call {
            return_node[index] = id;
        }
    }
    for node in nodes.iter_mut().skip(1) {
        if node.is_call {
            node.partner = return_node[node.op];
        }
    }

    let mut remaining_determinate = ops.iter().filter(|op| op.output.is_some()).count();
    let mut state = model.init();
    let mut linearized = BitSet::new(ops.len());
    let mut cache: HashSet<(BitSet, M::State)> = HashSet::new();
    // (call node, state before it, whether it was determinate)
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut best_prefix = 0;
    let mut best_stuck: Vec<usize> = Vec::new();
    let mut steps: u64 = 0;
    let mut cursor = nodes[0].next;

    while remaining_determinate > 0 {
        steps += 1;
        if steps > budget {
            return Outcome::Unknown { steps };
        }
        if cursor == NIL {
            // Only reachable if every remaining entry is indeterminate, which the loop
            // condition excludes; treat defensively as a dead end.
            match backtrack(&mut nodes, &mut stack, &mut linearized, ops) {
                Some((node, previous, determinate)) => {
                    state = previous;
                    if determinate {
                        remaining_determinate += 1;
                    }
                    cursor = nodes[node].next;
                    continue;
                }
                None => break,
            }
        }
        let node = nodes[cursor].clone();
        if node.is_call {
            let op = &ops[node.op];
            if let Some(next_state) = model.step(&state, &op.input, op.output.as_ref()) {
                let mut next_linearized = linearized.clone();
                next_linearized.insert(node.op);
                if cache.insert((next_linearized.clone(), next_state.clone())) {
                    stack.push((cursor, state));
                    state = next_state;
                    linearized = next_linearized;
                    if op.output.is_some() {
                        remaining_determinate -= 1;
                    }
                    lift(&mut nodes, cursor);
                    if stack.len() > best_prefix {
                        best_prefix = stack.len();
                    }
                    cursor = nodes[0].next;
                    continue;
                }
            }
            cursor = node.next;
        } else {
            // A return: the operation it ends had to be linearized before this point.
            if stack.len() >= best_prefix {
                best_prefix = stack.len();
                best_stuck = unlinearized_returning_first(&nodes, ops);
            }
            match backtrack(&mut nodes, &mut stack, &mut linearized, ops) {
                Some((call_node, previous, determinate)) => {
                    state = previous;
                    if determinate {
                        remaining_determinate += 1;
                    }
                    cursor = nodes[call_node].next;
                }
                None => {
                    return Outcome::NotLinearizable {
                        prefix_len: best_prefix,
                        stuck: best_stuck,
                    }
                }
            }
        }
    }
    if remaining_determinate == 0 {
        Outcome::Linearizable
    } else {
        Outcome::NotLinearizable {
            prefix_len: best_prefix,
            stuck: best_stuck,
        }
    }
}

/// Ids of the operations whose returns are still in the list, up to and including the first
/// determinate one (the one the search could not get past).
fn unlinearized_returning_first<I, O>(nodes: &[Node], ops: &[LinOp<I, O>]) -> Vec<usize> {
    let mut stuck = Vec::new();
    let mut cursor = nodes[0].next;
    while cursor != NIL {
        let node = &nodes[cursor];
        if !node.is_call && ops[node.op].output.is_some() {
            stuck.push(ops[node.op].id);
            break;
        }
        cursor = node.next;
    }
    stuck
}

/// Pops the last linearized call, puts it back into the list, and returns it with the state
/// before it and whether it was determinate.
fn backtrack<S, I, O>(
    nodes: &mut [Node],
    stack: &mut Vec<(usize, S)>,
    linearized: &mut BitSet,
    ops: &[LinOp<I, O>],
) -> Option<(usize, S, bool)> {
    let (call_node, previous) = stack.pop()?;
    let op = nodes[call_node].op;
    linearized.remove(op);
    unlift(nodes, call_node);
    Some((call_node, previous, ops[op].output.is_some()))
}

/// Removes a call node and its return node from the list.
fn lift(nodes: &mut [Node], call: usize) {
    unlink(nodes, call);
    let partner = nodes[call].partner;
    unlink(nodes, partner);
}

/// Undoes [`lift`] (dancing links: restore in reverse order).
fn unlift(nodes: &mut [Node], call: usize) {
    let partner = nodes[call].partner;
    relink(nodes, partner);
    relink(nodes, call);
}

fn unlink(nodes: &mut [Node], id: usize) {
    let (prev, next) = (nodes[id].prev, nodes[id].next);
    nodes[prev].next = next;
    if next != NIL {
        nodes[next].prev = prev;
    }
}

fn relink(nodes: &mut [Node], id: usize) {
    let (prev, next) = (nodes[id].prev, nodes[id].next);
    nodes[prev].next = id;
    if next != NIL {
        nodes[next].prev = id;
    }
}

/// A fixed-size set of operation indices.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct BitSet {
    words: Vec<u64>,
}

impl BitSet {
    const BITS: usize = 64;

    fn new(len: usize) -> Self {
        BitSet {
            words: vec![0; len.div_ceil(Self::BITS)],
        }
    }

    fn insert(&mut self, index: usize) {
        self.words[index / Self::BITS] |= 1 << (index % Self::BITS);
    }

    fn remove(&mut self, index: usize) {
        self.words[index / Self::BITS] &= !(1 << (index % Self::BITS));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A plain integer register: write(v), read() -> v.
    struct IntRegister;

    #[derive(Debug, Clone, PartialEq)]
    enum RegOp {
        Write(u8),
        Read,
    }

    impl Model for IntRegister {
        type State = u8;
        type Input = RegOp;
        type Output = u8;

        fn init(&self) -> u8 {
            0
        }

        fn step(&self, state: &u8, input: &RegOp, output: Option<&u8>) -> Option<u8> {
            match input {
                RegOp::Write(v) => Some(*v),
                RegOp::Read => match output {
                    Some(seen) if seen == state => Some(*state),
                    Some(_) => None,
                    None => Some(*state),
                },
            }
        }
    }

    const BUDGET: u64 = 1_000_000;

    fn op(id: usize, call: u64, ret: u64, input: RegOp, output: Option<u8>) -> LinOp<RegOp, u8> {
        LinOp {
            call_ns: call,
            return_ns: ret,
            input,
            output,
            id,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let ops = vec![
            op(0, 0, 1, RegOp::Write(1), Some(0)),
            op(1, 2, 3, RegOp::Read, Some(1)),
            op(2, 4, 5, RegOp::Write(2), Some(0)),
            op(3, 6, 7, RegOp::Read, Some(2)),
        ];
        assert_eq!(check(&IntRegister, &ops, BUDGET), Outcome::Linearizable);
    }

    #[test]
    fn stale_read_is_rejected() {
        // write 1 completes, then a read that starts later sees the old 0.
        let ops = vec![
            op(0, 0, 10, RegOp::Write(1), Some(0)),
            op(1, 20, 30, RegOp::Read, Some(0)),
        ];
        match check(&IntRegister, &ops, BUDGET) {
            Outcome::NotLinearizable { stuck, .. } => assert_eq!(stuck, vec![1]),
            other => panic!("stale read accepted: {other:?}"),
        }
    }

    #[test]
    fn concurrent_read_may_see_either_value() {
        let ops = vec![
            op(0, 0, 10, RegOp::Write(1), Some(0)),
            op(1, 5, 15, RegOp::Read, Some(0)),
            op(2, 6, 16, RegOp::Read, Some(1)),
        ];
        assert_eq!(check(&IntRegister, &ops, BUDGET), Outcome::Linearizable);
    }

    #[test]
    fn reads_that_disagree_on_order_are_rejected() {
        // Two writes concurrent; one reader sees 1 then 2, another sees 2 then 1, all after both
        // writes returned.
        let ops = vec![
            op(0, 0, 10, RegOp::Write(1), Some(0)),
            op(1, 0, 10, RegOp::Write(2), Some(0)),
            op(2, 20, 21, RegOp::Read, Some(1)),
            op(3, 22, 23, RegOp::Read, Some(2)),
            op(4, 24, 25, RegOp::Read, Some(1)),
        ];
        assert!(matches!(
            check(&IntRegister, &ops, BUDGET),
            Outcome::NotLinearizable { .. }
        ));
    }

    #[test]
    fn indeterminate_write_may_take_effect_late_or_never() {
        // An info write of 1 called at 0: a read at 100 may see it ...
        let late = vec![
            op(0, 0, 5, RegOp::Write(1), None),
            op(1, 100, 101, RegOp::Read, Some(1)),
        ];
        assert_eq!(check(&IntRegister, &late, BUDGET), Outcome::Linearizable);
        // ... or not.
        let never = vec![
            op(0, 0, 5, RegOp::Write(1), None),
            op(1, 100, 101, RegOp::Read, Some(0)),
        ];
        assert_eq!(check(&IntRegister, &never, BUDGET), Outcome::Linearizable);
        // But a read before its call cannot.
        let before = vec![
            op(0, 50, 55, RegOp::Write(1), None),
            op(1, 10, 20, RegOp::Read, Some(1)),
        ];
        assert!(matches!(
            check(&IntRegister, &before, BUDGET),
            Outcome::NotLinearizable { .. }
        ));
    }

    #[test]
    fn exhausted_budget_is_unknown_not_a_pass() {
        let mut ops = Vec::new();
        for i in 0..12u8 {
            ops.push(op(usize::from(i), 0, 100, RegOp::Write(i + 1), Some(0)));
        }
        ops.push(op(12, 200, 201, RegOp::Read, Some(99)));
        assert!(matches!(
            check(&IntRegister, &ops, 50),
            Outcome::Unknown { .. }
        ));
    }

    /// Brute force: is there a permutation of the determinate ops, plus any subset of the
    /// indeterminate ones, consistent with real time and the model?
    fn brute_force(ops: &[LinOp<RegOp, u8>]) -> bool {
        fn search(ops: &[LinOp<RegOp, u8>], done: &mut Vec<bool>, state: u8) -> bool {
            let all_determinate_done = ops
                .iter()
                .zip(done.iter())
                .all(|(op, &d)| d || op.output.is_none());
            if all_determinate_done {
                return true;
            }
            for i in 0..ops.len() {
                if done[i] {
                    continue;
                }
                // i may go next only if no pending determinate op returned before i's call.
                let blocked = ops.iter().enumerate().any(|(j, other)| {
                    !done[j] && j != i && other.output.is_some() && other.return_ns < ops[i].call_ns
                });
                if blocked {
                    continue;
                }
                if let Some(next) = IntRegister.step(&state, &ops[i].input, ops[i].output.as_ref())
                {
                    done[i] = true;
                    if search(ops, done, next) {
                        return true;
                    }
                    done[i] = false;
                }
            }
            false
        }
        let mut done = vec![false; ops.len()];
        search(ops, &mut done, 0)
    }

    #[test]
    fn agrees_with_brute_force_on_random_small_histories() {
        const HISTORIES: u64 = 400;
        const MAX_OPS: usize = 7;
        let mut linearizable = 0;
        for seed in 0..HISTORIES {
            let mut rng = StdRng::seed_from_u64(seed);
            let count = rng.gen_range(1..=MAX_OPS);
            let ops: Vec<_> = (0..count)
                .map(|id| {
                    let call = rng.gen_range(0..20u64);
                    let ret = call + rng.gen_range(0..8u64);
                    let input = if rng.gen_bool(0.5) {
                        RegOp::Write(rng.gen_range(1..3))
                    } else {
                        RegOp::Read
                    };
                    let output = if rng.gen_bool(0.15) {
                        None
                    } else {
                        Some(rng.gen_range(0..3))
                    };
                    op(id, call, ret, input, output)
                })
                .collect();
            let expected = brute_force(&ops);
            let got = check(&IntRegister, &ops, BUDGET);
            assert_eq!(
                got == Outcome::Linearizable,
                expected,
                "seed {seed}: {ops:?} -> {got:?}"
            );
            if expected {
                linearizable += 1;
            }
        }
        // The generator must produce both kinds, or the comparison proves little.
        assert!(linearizable > 20 && linearizable < HISTORIES - 20);
    }
}
