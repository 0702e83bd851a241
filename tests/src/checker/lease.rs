//! The lease checker: exclusive locks with a TTL, which lapse unless released first. Per lock
//! path:
//! - fencing tokens are unique, and a grant that certainly came after another (it was called
//!   after the other returned) has the higher token;
//! - two holders never overlap: when a grant is made, the grant before it (by token) has been
//!   released, or its lease has certainly lapsed;
//! - the fenced resource ([`super::fenced`]) rejected only writes of holders whose lease may
//!   have lapsed: a holder within its lease must never be fenced off.
//!
//! Time: the leader stamps every command with its wall clock, and a lease granted by a
//! command stamped `s` lapses at `s + TTL`. The nodes and the harness share one machine and
//! its clock, so an acquire called at `c` was stamped no earlier than `c` and one that returned
//! at `r` no later than `r`; a lease granted by an acquire called at `c` is therefore valid at
//! least until `c + TTL`. [`CLOCK_SLACK_NS`] covers the millisecond stamps.
//!
//! History operations (`key` = the lock path, owner = `input.agent`):
//! - `acquire`: input `{"agent": a, "ttl_ms": t}`; ok output `{"token": t}`; refused: `fail`.
//! - `release`: input `{"agent": a}`; output `{"released": bool}`.
//! - `fenced_write`, `fenced_read`: see [`super::fenced`].

use std::collections::{BTreeMap, HashMap};

use super::{fenced, Verdict};
use crate::history::{History, Op, Status};

/// Allowance for the leader's millisecond timestamps against the harness's clock.
pub const CLOCK_SLACK_NS: u64 = 100_000_000;

/// One acknowledged grant.
#[derive(Debug, Clone, Copy)]
struct Grant<'a> {
    op: &'a Op,
    agent: u64,
    token: u64,
    ttl_ns: u64,
}

impl Grant<'_> {
    /// The earliest instant (on the history's clock) at which the lease may have lapsed.
    fn may_lapse_at(&self) -> u64 {
        (self.op.call_ns + self.ttl_ns).saturating_sub(CLOCK_SLACK_NS)
    }
}

/// Checks the lease workload's locks and fenced resources.
pub fn check(history: &History) -> Verdict {
    let mut anomalies = Vec::new();
    let mut by_path: BTreeMap<&str, Vec<Grant>> = BTreeMap::new();
    let mut by_token: HashMap<u64, Grant> = HashMap::new();
    for op in history
        .ops_named("acquire")
        .filter(|op| op.status == Status::Ok)
    {
        let (Some(agent), Some(ttl_ms), Some(token)) = (
            op.input_u64("agent"),
            op.input_u64("ttl_ms"),
            op.output_u64("token"),
        ) else {
            anomalies.push(format!("acquire without agent, TTL or token: {op:?}"));
            continue;
        };
        let grant = Grant {
            op,
            agent,
            token,
            ttl_ns: ttl_ms * 1_000_000,
        };
        if let Some(other) = by_token.insert(token, grant) {
            anomalies.push(format!(
                "fencing token {token} granted twice: to agent {} on {} and to agent {agent} on {}",
                other.agent, other.op.key, op.key
            ));
        }
        by_path.entry(op.key.as_str()).or_default().push(grant);
    }
    let checked = by_token.len();
    for (path, grants) in &mut by_path {
        grants.sort_by_key(|grant| grant.token);
        check_order(path, grants, &mut anomalies);
        for pair in grants.windows(2) {
            check_handover(history, path, pair[0], pair[1], &mut anomalies);
        }
    }
    fenced::check(
        history,
        |write| {
            // Fenced off legitimately only if its lease may have lapsed by the time it ended.
            write
                .input_u64("token")
                .and_then(|token| by_token.get(&token))
                .is_some_and(|grant| write.return_ns >= grant.may_lapse_at())
        },
        &mut anomalies,
    );
    Verdict::from_anomalies("lease", checked, anomalies)
}

/// Tokens follow real-time order: no grant with a lower token was called after a grant with a
/// higher one returned.
fn check_order(path: &str, grants: &[Grant], anomalies: &mut Vec<String>) {
    for (i, lower) in grants.iter().enumerate() {
        for higher in &grants[i + 1..] {
            if higher.op.precedes(lower.op) {
                anomalies.push(format!(
                    "lock {path}: token {} was granted after token {} had been returned",
                    lower.token, higher.token
                ));
            }
        }
    }
}

/// `next` was granted after `previous` (tokens): by then `previous` must have been released by
/// its holder, or its lease must have lapsed.
fn check_handover(
    history: &History,
    path: &str,
    previous: Grant,
    next: Grant,
    anomalies: &mut Vec<String>,
) {
    let lapsed = next.op.return_ns >= previous.may_lapse_at();
    let released = history.ops_named("release").any(|release| {
        release.key == path
            && release.status != Status::Fail
            && release.input_u64("agent") == Some(previous.agent)
            && release.call_ns > previous.op.call_ns
            && release.call_ns < next.op.return_ns
    });
    if !lapsed && !released {
        anomalies.push(format!(
            "lock {path}: two holders at once: agent {} got token {} while agent {} held token {} \
             (neither released nor lapsed: granted {} ms after the earlier acquire was called, \
             TTL {} ms)",
            next.agent,
            next.token,
            previous.agent,
            previous.token,
            next.op.return_ns.saturating_sub(previous.op.call_ns) / 1_000_000,
            previous.ttl_ns / 1_000_000
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testutil::op;
    use crate::checker::Validity;
    use serde_json::{json, Value};

    const MS: u64 = 1_000_000;
    const TTL_MS: u64 = 1_000;

    fn acquire(agent: u64, token: u64, call_ms: u64, return_ms: u64) -> Op {
        op(
            agent,
            "src/lib.rs",
            "acquire",
            json!({"agent": agent, "ttl_ms": TTL_MS}),
            json!({"token": token}),
            Status::Ok,
            call_ms * MS,
            return_ms * MS,
        )
    }

    fn release(agent: u64, released: bool, call_ms: u64) -> Op {
        op(
            agent,
            "src/lib.rs",
            "release",
            json!({"agent": agent}),
            json!({"released": released}),
            Status::Ok,
            call_ms * MS,
            (call_ms + 5) * MS,
        )
    }

    fn write(agent: u64, token: u64, value: &str, accepted: bool, call_ms: u64) -> Op {
        op(
            agent,
            "src/lib.rs",
            "fenced_write",
            json!({"token": token, "value": value}),
            json!({"accepted": accepted}),
            Status::Ok,
            call_ms * MS,
            (call_ms + 1) * MS,
        )
    }

    fn fenced_read(log: Value) -> Op {
        op(
            0,
            "src/lib.rs",
            "fenced_read",
            json!({}),
            json!({"log": log}),
            Status::Ok,
            100_000 * MS,
            100_001 * MS,
        )
    }

    fn history(ops: Vec<Op>) -> History {
        History {
            ops,
            nemesis: Vec::new(),
        }
    }

    #[test]
    fn release_and_lapse_hand_over_and_a_lapsed_holder_is_fenced_off() {
        let h = history(vec![
            acquire(1, 10, 0, 10),
            write(1, 10, "a", true, 20),
            release(1, true, 30),
            acquire(2, 20, 40, 50),
            write(2, 20, "b", true, 60),
            // Agent 2 stalls; its lease lapses; agent 3 takes over.
            acquire(3, 30, 1_100, 1_110),
            write(3, 30, "c", true, 1_120),
            // Agent 2 wakes up and is fenced off.
            write(2, 20, "late", false, 1_200),
            fenced_read(json!([[10, "a"], [20, "b"], [30, "c"]])),
        ]);
        let verdict = check(&h);
        assert!(verdict.is_valid(), "{verdict}");
    }

    #[test]
    fn a_grant_within_the_previous_lease_is_rejected() {
        let h = history(vec![
            acquire(1, 10, 0, 10),
            acquire(2, 20, 500, 510),
            fenced_read(json!([])),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn a_holder_fenced_off_within_its_lease_is_rejected() {
        // A lower token granted later (tokens out of order) lets the earlier holder be
        // fenced off while its lease still runs.
        let h = history(vec![
            acquire(1, 20, 0, 10),
            release(1, true, 30),
            acquire(2, 10, 40, 50),
            write(1, 20, "a", true, 45),
            write(2, 10, "b", false, 60),
            fenced_read(json!([[20, "a"]])),
        ]);
        let verdict = check(&h);
        assert_eq!(verdict.validity, Validity::Invalid, "{verdict}");
        assert!(
            verdict
                .anomalies
                .iter()
                .any(|a| a.contains("rejected token 10")),
            "{verdict}"
        );
        assert!(
            verdict
                .anomalies
                .iter()
                .any(|a| a.contains("token 10 was granted after token 20")),
            "{verdict}"
        );
    }

    #[test]
    fn a_token_granted_twice_is_rejected() {
        let h = history(vec![
            acquire(1, 10, 0, 10),
            release(1, true, 20),
            acquire(2, 10, 30, 40),
            fenced_read(json!([])),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }
}
