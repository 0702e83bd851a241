//! The expiry checker: an agent is expired only after a silence of its TTL (grace across
//! leader changes only makes that later), and an agent that fell silent is expired in the end.
//!
//! History operations (`key` = the agent's name):
//! - `register`: input `{"ttl_ms": t}`; ok output `{"agent": id}`.
//! - `beat`: input `{"agent": id}`; ok output `{"must_reregister": bool}` (true: expired).
//! - `fall-silent`: input `{"agent": id}`; the agent beats no more from here on.
//! - `final-agents` (`key` ""; after the final heal): output `{"agents": [{"id", "status"}]}`,
//!   `status` in lowercase (`active`, `expired`, ...).
//!
//! An acknowledged `register`, or `beat` that did not say "expired", is a sign of life that
//! reached the cluster between its call and its return. If an agent is seen expired (a beat
//! answered "must re-register", or the final read) although no two consecutive signs of life
//! before that — nor the last one and the sighting — could have been a TTL apart (the later
//! one's return minus the earlier one's call), the cluster expired an agent that was alive.
//!
//! That holds only while an acknowledged heartbeat really reached the leader: one answered by
//! a deposed leader that does not know it yet never does. So the rule applies only to agents
//! that never fell silent (the workload keeps them beating for the whole run, with a TTL
//! longer than any fault lasts); agents that fell silent, with short TTLs, are checked only for
//! expiring in the end.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;

use super::lease::CLOCK_SLACK_NS;
use super::Verdict;
use crate::history::{History, Op, Status};

/// What the history says about one agent.
#[derive(Debug, Default)]
struct Agent<'a> {
    ttl_ns: u64,
    /// Acknowledged registrations and beats, in history order.
    alive: Vec<&'a Op>,
    /// Where the agent was first seen expired: (return time, how).
    expired_at: Option<(u64, String)>,
    fell_silent: bool,
}

/// Checks the expiry workload's agents.
pub fn check(history: &History) -> Verdict {
    let mut anomalies = Vec::new();
    let mut agents: BTreeMap<u64, Agent> = BTreeMap::new();
    let mut name_of: HashMap<u64, &str> = HashMap::new();
    for op in history.ops.iter().filter(|op| op.status == Status::Ok) {
        match op.op.as_str() {
            "register" => {
                let (Some(id), Some(ttl_ms)) = (op.output_u64("agent"), op.input_u64("ttl_ms"))
                else {
                    anomalies.push(format!("register without agent or TTL: {op:?}"));
                    continue;
                };
                name_of.insert(id, &op.key);
                let agent = agents.entry(id).or_default();
                agent.ttl_ns = ttl_ms * 1_000_000;
                agent.alive.push(op);
            }
            "beat" => {
                let Some(agent) = op.input_u64("agent").and_then(|id| agents.get_mut(&id)) else {
                    anomalies.push(format!("beat of an agent never registered: {op:?}"));
                    continue;
                };
                let expired = op
                    .output
                    .get("must_reregister")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !expired {
                    if agent.expired_at.is_none() {
                        agent.alive.push(op);
                    }
                } else if agent.expired_at.is_none() {
                    agent.expired_at = Some((op.return_ns, "a heartbeat's answer".to_owned()));
                }
            }
            "fall-silent" => {
                if let Some(agent) = op.input_u64("agent").and_then(|id| agents.get_mut(&id)) {
                    agent.fell_silent = true;
                }
            }
            _ => {}
        }
    }
    let final_read = history
        .ops_named("final-agents")
        .filter(|op| op.status == Status::Ok)
        .last();
    let Some(final_read) = final_read else {
        anomalies.push("no final read of the agents".to_owned());
        return Verdict::from_anomalies("expiry", agents.len(), anomalies);
    };
    let final_status: HashMap<u64, &str> = final_read
        .output
        .get("agents")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|agent| {
            Some((
                agent.get("id").and_then(Value::as_u64)?,
                agent.get("status").and_then(Value::as_str)?,
            ))
        })
        .collect();
    for (id, agent) in &mut agents {
        let name = name_of.get(id).copied().unwrap_or("?");
        let status = final_status.get(id).copied().unwrap_or("missing");
        if status != "active" && agent.expired_at.is_none() {
            agent.expired_at = Some((final_read.return_ns, format!("the final read ({status})")));
        }
        if agent.fell_silent && status == "active" {
            anomalies.push(format!(
                "agent {id} ({name}) fell silent but is still active in the final read"
            ));
        }
        if agent.fell_silent {
            continue;
        }
        if let Some((seen_ns, how)) = &agent.expired_at {
            if let Some(gap) = longest_possible_silence(&agent.alive, *seen_ns) {
                if gap + CLOCK_SLACK_NS < agent.ttl_ns {
                    anomalies.push(format!(
                        "agent {id} ({name}) expired although it was never silent for its TTL \
                         ({} ms; longest possible silence {} ms), seen in {how}",
                        agent.ttl_ns / 1_000_000,
                        gap / 1_000_000
                    ));
                }
            }
        }
    }
    Verdict::from_anomalies("expiry", agents.len(), anomalies)
}

/// The longest silence the cluster may have seen among signs of life `alive` (in order) and
/// up to a sighting of the expiry at `seen_ns`: each gap runs from one sign's call to the
/// next one's return. `None` without any sign of life.
fn longest_possible_silence(alive: &[&Op], seen_ns: u64) -> Option<u64> {
    let last = alive.last()?;
    let between = alive
        .windows(2)
        .map(|pair| pair[1].return_ns.saturating_sub(pair[0].call_ns));
    let to_sighting = seen_ns.saturating_sub(last.call_ns);
    Some(between.chain([to_sighting]).max().unwrap_or(to_sighting))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::testutil::op;
    use crate::checker::Validity;
    use serde_json::json;

    const MS: u64 = 1_000_000;

    fn register(id: u64, name: &str, ttl_ms: u64, at_ms: u64) -> Op {
        op(
            0,
            name,
            "register",
            json!({"ttl_ms": ttl_ms}),
            json!({"agent": id}),
            Status::Ok,
            at_ms * MS,
            (at_ms + 5) * MS,
        )
    }

    fn beat(id: u64, name: &str, expired: bool, at_ms: u64) -> Op {
        op(
            1,
            name,
            "beat",
            json!({"agent": id}),
            json!({"must_reregister": expired}),
            Status::Ok,
            at_ms * MS,
            (at_ms + 5) * MS,
        )
    }

    fn fall_silent(id: u64, name: &str, at_ms: u64) -> Op {
        op(
            2,
            name,
            "fall-silent",
            json!({"agent": id}),
            json!({}),
            Status::Ok,
            at_ms * MS,
            at_ms * MS,
        )
    }

    fn final_agents(agents: Value, at_ms: u64) -> Op {
        op(
            0,
            "",
            "final-agents",
            json!({}),
            json!({"agents": agents}),
            Status::Ok,
            at_ms * MS,
            (at_ms + 5) * MS,
        )
    }

    fn history(ops: Vec<Op>) -> History {
        History {
            ops,
            nemesis: Vec::new(),
        }
    }

    #[test]
    fn beating_agents_live_and_silent_ones_expire() {
        let h = history(vec![
            register(1, "live", 1_000, 0),
            register(2, "mortal", 1_000, 0),
            beat(1, "live", false, 500),
            beat(2, "mortal", false, 500),
            fall_silent(2, "mortal", 505),
            beat(1, "live", false, 1_000),
            // A gap of a whole TTL (a partition): expiry is legitimate.
            beat(1, "live", true, 2_100),
            final_agents(
                json!([{"id": 1, "status": "expired"}, {"id": 2, "status": "expired"}]),
                3_000,
            ),
        ]);
        let verdict = check(&h);
        assert!(verdict.is_valid(), "{verdict}");
    }

    #[test]
    fn a_live_agent_expired_is_rejected() {
        let h = history(vec![
            register(1, "live", 1_000, 0),
            beat(1, "live", false, 400),
            beat(1, "live", false, 800),
            beat(1, "live", true, 1_200),
            final_agents(json!([{"id": 1, "status": "expired"}]), 1_300),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn a_live_agent_missing_from_the_final_read_is_rejected() {
        let h = history(vec![
            register(1, "live", 1_000, 0),
            beat(1, "live", false, 400),
            final_agents(json!([]), 600),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }

    #[test]
    fn a_silent_agent_never_expired_is_rejected() {
        let h = history(vec![
            register(2, "mortal", 1_000, 0),
            fall_silent(2, "mortal", 10),
            final_agents(json!([{"id": 2, "status": "active"}]), 5_000),
        ]);
        assert_eq!(check(&h).validity, Validity::Invalid);
    }
}
