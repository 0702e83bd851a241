//! The leader's heartbeat table and every liveness decision, as pure functions of the table,
//! the state machine's view of the agents and the (monotonic) time passed in. No clock, no
//! network, no Raft: the monitor in `mod.rs` reads those and acts on what this decides.

use std::time::{Duration, Instant};

use percy_statemachine::{AgentId, AgentLoad};

use super::id_hasher::{IdMap, IdSet};

/// The leader-local table: when each active agent last beat, in the term it is valid for.
#[derive(Debug, Default)]
pub struct Table {
    /// Term in which this node leads and the table is valid; `None` while not leading.
    term: Option<u64>,
    /// One entry per active agent (a pass drops the others).
    seen: IdMap<Seen>,
    /// Agents whose expiry has been proposed and not yet applied.
    expiring: IdSet,
    /// The load each agent last reported. Kept across a new term of this node's leadership
    /// (a load is a report, not a liveness decision: the heartbeats that reached this node
    /// before its monitor noticed the term must not be lost), dropped when it stops leading
    /// and for agents no longer active.
    loads: IdMap<ReportedLoad>,
    /// Number of the latest pass over the active agents.
    pass: u64,
}

#[derive(Debug)]
struct Seen {
    /// The last heartbeat, on the monotonic clock.
    at: Instant,
    /// Whether `at` is newer than the last checkpoint.
    unsaved: bool,
    /// The pass that last found the agent active.
    pass: u64,
}

impl Seen {
    fn new(at: Instant, unsaved: bool, pass: u64) -> Self {
        Seen { at, unsaved, pass }
    }
}

#[derive(Debug, Clone, Copy)]
struct ReportedLoad {
    load: AgentLoad,
    /// When it was reported, on the monotonic clock.
    at: Instant,
    /// Whether it is newer than the last load checkpoint.
    unsaved: bool,
}

/// Monotonic `at` as wall-clock ms, given one wall-clock reading `now_wall_ms` taken at `now`.
fn wall_ms(at: Instant, now: Instant, now_wall_ms: u64) -> u64 {
    let ago_ms = u64::try_from(now.saturating_duration_since(at).as_millis()).unwrap_or(u64::MAX);
    now_wall_ms.saturating_sub(ago_ms)
}

impl Table {
    /// Takes note of this node's role. Returns whether it leads. Not leading empties the
    /// table; leading in a new term starts it afresh, so every agent gets a full TTL of grace
    /// under each new leader (an agent missing from the table counts as seen at the next pass).
    pub fn observe_role(&mut self, leading: bool, term: u64) -> bool {
        if !leading {
            if self.term.is_some() || !self.loads.is_empty() {
                *self = Table::default();
            }
            return false;
        }
        if self.term != Some(term) {
            tracing::info!(term, "leading: every agent gets a full TTL of grace");
            *self = Table {
                term: Some(term),
                loads: std::mem::take(&mut self.loads),
                ..Table::default()
            };
        }
        true
    }

    /// Records a heartbeat at `now` for each of `agents`, with the load it reported if any.
    pub fn record(
        &mut self,
        agents: impl IntoIterator<Item = (AgentId, Option<AgentLoad>)>,
        now: Instant,
    ) {
        let pass = self.pass;
        for (id, load) in agents {
            let seen = self.seen.entry(id).or_insert(Seen::new(now, true, pass));
            seen.at = now;
            seen.unsaved = true;
            if let Some(load) = load {
                self.loads.insert(
                    id,
                    ReportedLoad {
                        load,
                        at: now,
                        unsaved: true,
                    },
                );
            }
        }
    }

    /// The load each agent reported to this leader, with its wall-clock time (derived as in
    /// [`Self::take_unsaved`]). Empty on a new leader until the agents beat again.
    pub fn loads(&self, now: Instant, now_wall_ms: u64) -> Vec<(AgentId, AgentLoad, u64)> {
        self.loads
            .iter()
            .map(|(id, r)| (*id, r.load, wall_ms(r.at, now, now_wall_ms)))
            .collect()
    }

    /// The loads reported since the last load checkpoint, sorted by agent; they count as
    /// saved from here on.
    pub fn take_unsaved_loads(&mut self) -> Vec<(AgentId, AgentLoad)> {
        let mut loads: Vec<(AgentId, AgentLoad)> = self
            .loads
            .iter_mut()
            .filter(|(_, r)| r.unsaved)
            .map(|(id, r)| {
                r.unsaved = false;
                (*id, r.load)
            })
            .collect();
        loads.sort_unstable_by_key(|(id, _)| *id);
        loads
    }

    /// One pass over the agents the state machine calls active (`(id, ttl_ms)`): returns
    /// those silent longer than their TTL at `now` whose expiry is not already in flight, and
    /// marks them as in flight. An active agent the table has not seen counts as seen `now`;
    /// agents no longer active are forgotten.
    pub fn silent(&mut self, active: &[(AgentId, u64)], now: Instant) -> Vec<AgentId> {
        // Mark every active agent with this pass, then drop the unmarked ones: no set of the
        // active agents has to be built on every pass.
        self.pass += 1;
        let pass = self.pass;
        let mut silent = Vec::new();
        for (id, ttl_ms) in active {
            let seen = self.seen.entry(*id).or_insert(Seen::new(now, false, pass));
            seen.pass = pass;
            if now.saturating_duration_since(seen.at) > Duration::from_millis(*ttl_ms)
                && self.expiring.insert(*id)
            {
                silent.push(*id);
            }
        }
        self.seen.retain(|_, seen| seen.pass == pass);
        let seen = &self.seen;
        self.expiring.retain(|id| seen.contains_key(id));
        self.loads.retain(|id, _| seen.contains_key(id));
        silent
    }

    /// The expiry of `agents` was not proposed: a later pass may decide it again.
    pub fn expiry_failed(&mut self, agents: &[AgentId]) {
        for id in agents {
            self.expiring.remove(id);
        }
    }

    /// The wall-clock last-seen time (ms) of every heartbeat since the last checkpoint, sorted
    /// by agent, derived from the monotonic times with one wall-clock reading (`now_wall_ms`
    /// taken at `now`): one clock read per checkpoint, and times consistent with each other.
    /// They count as saved from here on.
    pub fn take_unsaved(&mut self, now: Instant, now_wall_ms: u64) -> Vec<(AgentId, u64)> {
        let mut last_seen: Vec<(AgentId, u64)> = self
            .seen
            .iter_mut()
            .filter(|(_, seen)| seen.unsaved)
            .map(|(id, seen)| {
                seen.unsaved = false;
                (*id, wall_ms(seen.at, now, now_wall_ms))
            })
            .collect();
        last_seen.sort_unstable();
        last_seen
    }

    /// Number of agents tracked.
    pub fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL_MS: u64 = 1_000;
    const A: AgentId = 1;
    const B: AgentId = 2;

    /// Heartbeats without a load.
    fn beats<const N: usize>(ids: [AgentId; N]) -> [(AgentId, Option<AgentLoad>); N] {
        ids.map(|id| (id, None))
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A table leading in term 1 at logical time `t0`.
    fn leading() -> (Table, Instant) {
        let mut table = Table::default();
        assert!(table.observe_role(true, 1));
        (table, Instant::now())
    }

    #[test]
    fn an_agent_is_expired_only_after_a_full_ttl_of_silence() {
        let (mut table, t0) = leading();
        let active = [(A, TTL_MS)];
        table.record(beats([A]), t0);
        assert!(
            table.silent(&active, t0 + ms(TTL_MS)).is_empty(),
            "exactly the TTL is not past it"
        );
        table.record(beats([A]), t0 + ms(TTL_MS));
        assert!(
            table.silent(&active, t0 + ms(2 * TTL_MS)).is_empty(),
            "the beat restarted the TTL"
        );
        assert_eq!(table.silent(&active, t0 + ms(2 * TTL_MS + 1)), vec![A]);
    }

    #[test]
    fn an_expiry_in_flight_is_not_proposed_twice_and_a_failed_one_is_retried() {
        let (mut table, t0) = leading();
        let active = [(A, TTL_MS)];
        table.record(beats([A]), t0);
        let late = t0 + ms(TTL_MS + 1);
        assert_eq!(table.silent(&active, late), vec![A]);
        assert!(
            table.silent(&active, late + ms(200)).is_empty(),
            "in flight"
        );
        table.expiry_failed(&[A]);
        assert_eq!(table.silent(&active, late + ms(400)), vec![A]);
    }

    #[test]
    fn an_agent_the_leader_never_heard_gets_a_full_ttl_from_the_first_pass() {
        let (mut table, t0) = leading();
        let active = [(A, TTL_MS)];
        assert!(table.silent(&active, t0).is_empty());
        assert!(table.silent(&active, t0 + ms(TTL_MS)).is_empty());
        assert_eq!(table.silent(&active, t0 + ms(TTL_MS + 1)), vec![A]);
    }

    #[test]
    fn a_new_term_gives_everyone_a_full_ttl_of_grace() {
        let (mut table, t0) = leading();
        let active = [(A, TTL_MS), (B, TTL_MS)];
        table.record(beats([A, B]), t0);
        // Leadership moves away and comes back in term 3, long after A and B last beat here.
        assert!(!table.observe_role(false, 2));
        assert_eq!(table.len(), 0, "a follower keeps no table");
        let back = t0 + ms(10 * TTL_MS);
        assert!(table.observe_role(true, 3));
        assert!(table.silent(&active, back).is_empty(), "grace, not expiry");
        table.record(beats([A]), back + ms(TTL_MS / 2));
        assert_eq!(table.silent(&active, back + ms(TTL_MS + 1)), vec![B]);
    }

    #[test]
    fn a_term_change_without_a_step_down_also_resets() {
        let (mut table, t0) = leading();
        table.record(beats([A]), t0);
        assert!(table.observe_role(true, 1));
        assert_eq!(table.len(), 1, "same term: kept");
        assert!(table.observe_role(true, 2));
        assert_eq!(table.len(), 0, "new term: afresh");
    }

    #[test]
    fn agents_no_longer_active_are_forgotten() {
        let (mut table, t0) = leading();
        table.record(beats([A, B]), t0);
        assert_eq!(table.len(), 2);
        // B deregistered: only A is active now.
        assert!(table.silent(&[(A, TTL_MS)], t0 + ms(10)).is_empty());
        assert_eq!(table.len(), 1);
        // B is expired by nobody even when "silent" long after.
        assert_eq!(table.silent(&[(A, TTL_MS)], t0 + ms(TTL_MS + 1)), vec![A]);
    }

    #[test]
    fn a_checkpoint_takes_each_heartbeat_once_with_consistent_wall_times() {
        let (mut table, t0) = leading();
        table.record(beats([B]), t0);
        table.record(beats([A]), t0 + ms(300));
        let wall = 1_000_000;
        assert_eq!(
            table.take_unsaved(t0 + ms(500), wall),
            vec![(A, wall - 200), (B, wall - 500)]
        );
        assert!(
            table.take_unsaved(t0 + ms(600), wall + 100).is_empty(),
            "saved"
        );
        table.record(beats([A]), t0 + ms(700));
        assert_eq!(
            table.take_unsaved(t0 + ms(700), wall + 200),
            vec![(A, wall + 200)]
        );
    }

    #[test]
    fn loads_are_kept_per_agent_and_checkpointed_once() {
        let (mut table, t0) = leading();
        let busy = AgentLoad {
            load_milli: Some(3_000),
            cores: Some(2),
            running_execs: 1,
            ..AgentLoad::default()
        };
        table.record([(A, Some(busy)), (B, None)], t0);
        let wall = 1_000_000;
        assert_eq!(table.loads(t0 + ms(100), wall), vec![(A, busy, wall - 100)]);
        assert_eq!(table.take_unsaved_loads(), vec![(A, busy)]);
        assert!(table.take_unsaved_loads().is_empty(), "saved");
        // A beat without a load keeps the last one, and is no new load to save.
        table.record(beats([A]), t0 + ms(200));
        assert!(table.take_unsaved_loads().is_empty());
        assert_eq!(table.loads(t0 + ms(200), wall).len(), 1);
        // A new term of this node's leadership keeps them (heartbeats may reach a new leader
        // before its monitor notices the term); stepping down drops them.
        assert!(table.observe_role(true, 2));
        assert_eq!(table.loads(t0 + ms(300), wall).len(), 1);
        assert!(!table.observe_role(false, 3));
        assert!(table.loads(t0 + ms(300), wall).is_empty());
        // An agent no longer active loses its load at the next pass.
        assert!(table.observe_role(true, 4));
        table.record([(A, Some(busy))], t0 + ms(400));
        assert!(table.silent(&[(B, TTL_MS)], t0 + ms(500)).is_empty());
        assert!(table.loads(t0 + ms(500), wall).is_empty());
    }
}
