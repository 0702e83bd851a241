//! Nemeses: the faults the suite injects, and a seeded schedule that alternates fault and
//! heal. Every action is recorded in the history (process `"nemesis"`) on the operations'
//! clock, with the nodes and links it touched, so a failing run can be read against its faults
//! and replayed from its seed.
//!
//! Whenever the nemesis starts killed nodes again it says so on its restart channel at once,
//! so that a workload can read what was acknowledged before the crash *the moment* the nodes
//! are back, while a restored leader may still trust a stale commit index. Before every
//! action it checks that no node died on its own ([`Cluster::check_running`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch, Mutex};

use crate::cluster::{probe_leader, Cluster};
use crate::history::{Recorder, Status};
use crate::proxy::Mode;

/// How long a fault lasts, and how long the cluster is left healed in between (ms ranges).
/// A failover takes 3-4 s with the test timings (2 s leader lease + 1-2 s election timeout),
/// so most faults outlast one.
pub const FAULT_MS: (u64, u64) = (3_000, 8_000);
pub const HEAL_MS: (u64, u64) = (2_000, 4_000);
/// Chance that a network fault resets connections instead of hanging them.
const RESET_PROBABILITY: f64 = 0.25;
/// Deadline of a membership change issued by the nemesis.
const MEMBERSHIP_DEADLINE: Duration = Duration::from_secs(20);
/// How long a heal keeps trying to add a removed member back. A membership change still in
/// flight refuses the next one ("already undergoing a configuration change"), and a run that
/// ended on two voters with a dead node would report a missing leader instead of the cause.
const REJOIN_DEADLINE: Duration = Duration::from_secs(90);
/// Pause between attempts to add a removed member back.
const REJOIN_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// How often the leader monitor looks.
const LEADER_POLL: Duration = Duration::from_millis(1_000);

/// The faults a schedule picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    IsolateOne,
    IsolateLeader,
    Halves,
    MajorityRing,
    Bridge,
    OneWay,
    KillOne,
    KillLeader,
    KillMajority,
    KillAll,
    /// SIGKILL every node and start them all again at once, without waiting: a whole-cluster
    /// crash whose restart races the clients (a leader restored in its old term must not
    /// serve reads from before the crash's commit point).
    RestartAll,
    PauseOne,
    PauseLeader,
    /// Remove a member (not the leader) while another fault runs; the heal adds it back.
    Membership,
    /// SIGKILL one node / a majority / every node and cut their power: whatever they had
    /// written and not synced is dropped (their data dirs are on percy-lazyfs mounts). The
    /// heal restarts them on what survived.
    PowerLossOne,
    PowerLossMajority,
    PowerLossAll,
}

impl FaultKind {
    /// Every fault.
    pub const ALL: [FaultKind; 14] = [
        FaultKind::IsolateOne,
        FaultKind::IsolateLeader,
        FaultKind::Halves,
        FaultKind::MajorityRing,
        FaultKind::Bridge,
        FaultKind::OneWay,
        FaultKind::KillOne,
        FaultKind::KillLeader,
        FaultKind::KillMajority,
        FaultKind::KillAll,
        FaultKind::RestartAll,
        FaultKind::PauseOne,
        FaultKind::PauseLeader,
        FaultKind::Membership,
    ];

    /// The power-loss faults: not in [`FaultKind::ALL`], since they need the data dirs on
    /// FUSE mounts (a run that picks one mounts them).
    pub const POWER_LOSS: [FaultKind; 3] = [
        FaultKind::PowerLossOne,
        FaultKind::PowerLossMajority,
        FaultKind::PowerLossAll,
    ];

    /// Whether the fault needs the data dirs on lazy filesystems.
    pub fn is_power_loss(self) -> bool {
        FaultKind::POWER_LOSS.contains(&self)
    }

    /// Faults that can overlap a membership change.
    const UNDER_MEMBERSHIP: [FaultKind; 5] = [
        FaultKind::IsolateOne,
        FaultKind::OneWay,
        FaultKind::KillOne,
        FaultKind::PauseOne,
        FaultKind::IsolateLeader,
    ];

    /// The name used in histories and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::IsolateOne => "isolate-one",
            FaultKind::IsolateLeader => "isolate-leader",
            FaultKind::Halves => "halves",
            FaultKind::MajorityRing => "majority-ring",
            FaultKind::Bridge => "bridge",
            FaultKind::OneWay => "one-way",
            FaultKind::KillOne => "kill-one",
            FaultKind::KillLeader => "kill-leader",
            FaultKind::KillMajority => "kill-majority",
            FaultKind::KillAll => "kill-all",
            FaultKind::RestartAll => "restart-all",
            FaultKind::PauseOne => "pause-one",
            FaultKind::PauseLeader => "pause-leader",
            FaultKind::Membership => "membership",
            FaultKind::PowerLossOne => "power-loss-one",
            FaultKind::PowerLossMajority => "power-loss-majority",
            FaultKind::PowerLossAll => "power-loss-all",
        }
    }

    /// A fault that is over once injected: nothing to hold, nothing to heal.
    fn is_instant(self) -> bool {
        self == FaultKind::RestartAll
    }

    /// Parses [`FaultKind::name`].
    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .chain(FaultKind::POWER_LOSS)
            .find(|kind| kind.name() == name)
    }
}

/// What is currently broken, so that a heal can undo exactly that.
#[derive(Debug, Default)]
struct Active {
    network: bool,
    killed: BTreeSet<u64>,
    paused: BTreeSet<u64>,
    removed: BTreeSet<u64>,
}

/// Counts for the run summary.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct NemesisStats {
    pub faults: usize,
    pub heals: usize,
    /// Nodes whose power was cut, and how many files and directories lost unsynced changes
    /// in those cuts (all of them together).
    pub power_cuts: usize,
    pub unsynced_lost: usize,
}

/// Injects faults into a cluster and records them.
pub struct Nemesis {
    cluster: Arc<Mutex<Cluster>>,
    recorder: Arc<Recorder>,
    rng: StdRng,
    kinds: Vec<FaultKind>,
    active: Active,
    stats: NemesisStats,
    /// Told the ids of nodes the moment they were started again after a kill.
    restarts: mpsc::UnboundedSender<Vec<u64>>,
}

impl Nemesis {
    /// A nemesis choosing among `kinds` with a generator seeded by `seed`; it sends the ids
    /// of restarted nodes on `restarts` (a closed receiver is fine).
    pub fn new(
        cluster: Arc<Mutex<Cluster>>,
        recorder: Arc<Recorder>,
        seed: u64,
        kinds: Vec<FaultKind>,
        restarts: mpsc::UnboundedSender<Vec<u64>>,
    ) -> Self {
        Nemesis {
            cluster,
            recorder,
            rng: StdRng::seed_from_u64(seed),
            kinds,
            active: Active::default(),
            stats: NemesisStats::default(),
            restarts,
        }
    }

    /// Alternates fault and heal until `stop` turns true, then heals everything.
    pub async fn run(&mut self, mut stop: watch::Receiver<bool>) -> Result<NemesisStats> {
        if !self.kinds.is_empty() {
            loop {
                let pause = self.duration(HEAL_MS);
                if sleep_or_stop(pause, &mut stop).await {
                    break;
                }
                let kind = *self.kinds.choose(&mut self.rng).expect("kinds not empty");
                self.inject(kind).await?;
                if kind.is_instant() {
                    continue;
                }
                let hold = self.duration(FAULT_MS);
                let stopped = sleep_or_stop(hold, &mut stop).await;
                self.heal().await?;
                if stopped {
                    break;
                }
            }
        }
        self.heal().await?;
        Ok(self.stats)
    }

    fn duration(&mut self, (low, high): (u64, u64)) -> Duration {
        Duration::from_millis(self.rng.gen_range(low..=high))
    }

    /// Injects one fault.
    pub async fn inject(&mut self, kind: FaultKind) -> Result<()> {
        if kind == FaultKind::Membership {
            self.remove_member().await?;
            let overlay = *FaultKind::UNDER_MEMBERSHIP
                .choose(&mut self.rng)
                .expect("non-empty");
            return Box::pin(self.inject(overlay)).await;
        }
        let call_ns = self.recorder.now_ns();
        let cluster = Arc::clone(&self.cluster);
        let mut cluster = cluster.lock().await;
        cluster.check_running()?;
        let mut ids: Vec<u64> = cluster
            .ids()
            .into_iter()
            .filter(|id| !self.active.removed.contains(id))
            .collect();
        ids.shuffle(&mut self.rng);
        let majority = ids.len() / 2 + 1;
        let needs_leader = matches!(
            kind,
            FaultKind::IsolateLeader | FaultKind::KillLeader | FaultKind::PauseLeader
        );
        let leader = if needs_leader {
            probe_leader(&cluster.live_nodes(), cluster.security()).await
        } else {
            None
        };
        // The leader if known, else a random node.
        let target = leader.filter(|id| ids.contains(id)).unwrap_or(ids[0]);
        let mode = if self.rng.gen_bool(RESET_PROBABILITY) {
            Mode::Reset
        } else {
            Mode::Hang
        };
        let mut blocked: BTreeSet<(u64, u64)> = BTreeSet::new();
        let mut block_both = |a: u64, b: u64| {
            blocked.insert((a, b));
            blocked.insert((b, a));
        };
        let mut input = json!({});
        let mut restarted = Vec::new();
        let mut output = json!({"leader": leader});
        match kind {
            FaultKind::IsolateOne | FaultKind::IsolateLeader => {
                for &other in ids.iter().filter(|&&id| id != target) {
                    block_both(target, other);
                }
                input = json!({"node": target});
            }
            FaultKind::Halves => {
                let (a, b) = ids.split_at(ids.len() / 2);
                for &x in a {
                    for &y in b {
                        block_both(x, y);
                    }
                }
                input = json!({"halves": [a, b]});
            }
            FaultKind::Bridge => {
                let bridge = ids[0];
                let rest = &ids[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                for &x in a {
                    for &y in b {
                        block_both(x, y);
                    }
                }
                input = json!({"bridge": bridge, "sides": [a, b]});
            }
            FaultKind::MajorityRing => {
                // Node ring[k] may send only to the next n/2 nodes around the ring, so every
                // node hears from a different majority (itself and the nodes before it).
                let n = ids.len();
                for k in 0..n {
                    for step in (n / 2 + 1)..n {
                        blocked.insert((ids[k], ids[(k + step) % n]));
                    }
                }
                input = json!({"ring": ids});
            }
            FaultKind::OneWay => {
                blocked.insert((ids[0], ids[1]));
                input = json!({"from": ids[0], "to": ids[1]});
            }
            FaultKind::KillOne | FaultKind::KillLeader => {
                cluster.kill(target)?;
                self.active.killed.insert(target);
                input = json!({"nodes": [target]});
            }
            FaultKind::KillMajority | FaultKind::KillAll => {
                let count = if kind == FaultKind::KillAll {
                    ids.len()
                } else {
                    majority
                };
                let victims: Vec<u64> = ids[..count].to_vec();
                for &id in &victims {
                    cluster.kill(id)?;
                    self.active.killed.insert(id);
                }
                input = json!({"nodes": victims});
            }
            FaultKind::RestartAll => {
                // Every kill first: no node may outlive the crash of another.
                for &id in &ids {
                    cluster.kill(id)?;
                }
                for &id in &ids {
                    cluster.restart(id)?;
                }
                restarted = ids.clone();
                input = json!({"nodes": ids});
            }
            FaultKind::PauseOne | FaultKind::PauseLeader => {
                cluster.pause(target)?;
                self.active.paused.insert(target);
                input = json!({"nodes": [target]});
            }
            FaultKind::PowerLossOne | FaultKind::PowerLossMajority | FaultKind::PowerLossAll => {
                let count = match kind {
                    FaultKind::PowerLossOne => 1,
                    FaultKind::PowerLossMajority => majority,
                    _ => ids.len(),
                };
                let victims: Vec<u64> = ids[..count].to_vec();
                // Every victim dies before any loses power: none may run on after another's
                // cut (on real hardware the cut is what kills them).
                for &id in &victims {
                    cluster.kill(id)?;
                    self.active.killed.insert(id);
                }
                let mut lost = serde_json::Map::new();
                for &id in &victims {
                    let dropped = cluster.power_cut(id)?;
                    self.stats.power_cuts += 1;
                    self.stats.unsynced_lost += dropped;
                    lost.insert(id.to_string(), json!(dropped));
                }
                input = json!({"nodes": victims});
                // How many files and directories each node lost something of: a run whose
                // cuts never lose anything is not testing much.
                output["unsynced_lost"] = Value::Object(lost);
            }
            FaultKind::Membership => unreachable!("handled above"),
        }
        if !blocked.is_empty() {
            cluster.set_network(&blocked, mode);
            self.active.network = true;
            let links: Vec<[u64; 2]> = blocked.iter().map(|&(a, b)| [a, b]).collect();
            input["blocked"] = json!(links);
            input["mode"] = json!(format!("{mode:?}").to_lowercase());
        }
        drop(cluster);
        self.announce_restart(restarted);
        self.stats.faults += 1;
        self.recorder
            .nemesis(kind.name(), input, output, Status::Ok, call_ns);
        Ok(())
    }

    /// Removes a random member that is not the leader.
    async fn remove_member(&mut self) -> Result<()> {
        let call_ns = self.recorder.now_ns();
        let (live, ids, security) = {
            let cluster = self.cluster.lock().await;
            (
                cluster.live_nodes(),
                cluster.ids(),
                cluster.security().clone(),
            )
        };
        let leader = probe_leader(&live, &security).await;
        let candidates: Vec<u64> = ids
            .into_iter()
            .filter(|id| Some(*id) != leader && !self.active.removed.contains(id))
            .collect();
        let Some(&victim) = candidates.choose(&mut self.rng) else {
            return Ok(());
        };
        let client = self.admin_client(&live).await?;
        let outcome = client.remove_node(victim).await;
        let (status, output) = outcome_of(&outcome);
        // Whatever the answer, the heal puts the member back.
        self.active.removed.insert(victim);
        self.stats.faults += 1;
        self.recorder.nemesis(
            "remove-member",
            json!({"node": victim}),
            output,
            status,
            call_ns,
        );
        Ok(())
    }

    async fn admin_client(
        &self,
        live: &[(u64, std::net::SocketAddr)],
    ) -> Result<percy_client::Client> {
        let endpoints: Vec<String> = live.iter().map(|(_, addr)| addr.to_string()).collect();
        let retry = percy_client::RetryPolicy::default().with_deadline(MEMBERSHIP_DEADLINE);
        let security = self.cluster.lock().await.security().clone();
        Ok(percy_client::Client::connect_secure(&endpoints, retry, &security).await?)
    }

    /// Adds a removed member back, retrying until it is a member again or [`REJOIN_DEADLINE`]
    /// passes (then the run fails with the last refusal). "Already a member" counts as done:
    /// the removal whose outcome was unknown did not happen.
    async fn add_back(&self, node: u64, live: &[(u64, std::net::SocketAddr)]) -> Result<Value> {
        let addr = live
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, addr)| addr.to_string())
            .unwrap_or_default();
        let deadline = tokio::time::Instant::now() + REJOIN_DEADLINE;
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let client = self.admin_client(live).await?;
            let outcome = client.add_node(node, &addr).await;
            let (status, result) = outcome_of(&outcome);
            let done = match &outcome {
                Ok(_) => true,
                Err(error) => error.code() == tonic::Code::AlreadyExists,
            };
            if done {
                return Ok(json!({"status": status, "result": result, "attempts": attempts}));
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "could not add removed member {node} back within {REJOIN_DEADLINE:?} \
                     ({attempts} attempts); last answer: {result}"
                );
            }
            tokio::time::sleep(REJOIN_RETRY_PAUSE).await;
        }
    }

    /// Tells the restart channel that `nodes` were just started again (if any were).
    fn announce_restart(&self, nodes: Vec<u64>) {
        if !nodes.is_empty() {
            // Nobody listening is fine: the workload has no use for restarts.
            let _ = self.restarts.send(nodes);
        }
    }

    /// Undoes every active fault: network first, then processes, then membership.
    pub async fn heal(&mut self) -> Result<()> {
        let active = std::mem::take(&mut self.active);
        let call_ns = self.recorder.now_ns();
        let live = {
            let mut cluster = self.cluster.lock().await;
            cluster.check_running()?;
            cluster.heal_all()?;
            cluster.live_nodes()
        };
        self.announce_restart(active.killed.iter().copied().collect());
        let mut output = json!({});
        for &node in &active.removed {
            output[format!("add-member-{node}")] = self.add_back(node, &live).await?;
        }
        let input = json!({
            "network": active.network,
            "restarted": active.killed,
            "resumed": active.paused,
            "re-added": active.removed,
        });
        self.stats.heals += 1;
        self.recorder
            .nemesis("heal", input, output, Status::Ok, call_ns);
        Ok(())
    }
}

/// Sleeps for `duration`; true if `stop` turned true first.
async fn sleep_or_stop(duration: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return true;
    }
    let stopped = tokio::time::timeout(duration, stop.wait_for(|stopped| *stopped)).await;
    // Elapsed: not stopped. Ready: stopped, or the sender is gone (the run is over).
    stopped.is_ok()
}

/// A client call's status and output for the history.
fn outcome_of<T: std::fmt::Debug>(
    outcome: &std::result::Result<T, percy_client::ClientError>,
) -> (Status, Value) {
    match outcome {
        Ok(value) => (Status::Ok, json!({"response": format!("{value:?}")})),
        Err(error) if error.is_refusal() => (Status::Fail, json!({"error": error.to_string()})),
        Err(error) => (Status::Info, json!({"error": error.to_string()})),
    }
}

/// Polls the leader until `stop`, recording every change; returns how many changes it saw.
pub async fn monitor_leader(
    cluster: Arc<Mutex<Cluster>>,
    recorder: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) -> usize {
    let mut current: Option<u64> = None;
    let mut changes = 0;
    loop {
        let (live, security) = {
            let cluster = cluster.lock().await;
            (cluster.live_nodes(), cluster.security().clone())
        };
        let call_ns = recorder.now_ns();
        if let Some(leader) = probe_leader(&live, &security).await {
            if current != Some(leader) {
                if current.is_some() {
                    changes += 1;
                }
                current = Some(leader);
                recorder.nemesis(
                    "leader",
                    json!({}),
                    json!({"leader": leader}),
                    Status::Info,
                    call_ns,
                );
            }
        }
        if sleep_or_stop(LEADER_POLL, &mut stop).await {
            return changes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::FaultKind;

    #[test]
    fn power_loss_faults_parse_by_name_and_are_not_picked_by_default() {
        for kind in FaultKind::POWER_LOSS {
            assert_eq!(FaultKind::parse(kind.name()), Some(kind));
            assert!(kind.is_power_loss());
            assert!(
                !FaultKind::ALL.contains(&kind),
                "{} is a default",
                kind.name()
            );
        }
        assert_eq!(
            FaultKind::parse("power-loss-all"),
            Some(FaultKind::PowerLossAll)
        );
        assert!(FaultKind::ALL.iter().all(|kind| !kind.is_power_loss()));
        assert_eq!(FaultKind::parse("power-loss"), None);
    }
}
