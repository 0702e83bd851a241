//! Prometheus metrics, served as text at `GET /metrics` on the node's one port. Request
//! counters and latency histograms are recorded by the API layer; Raft gauges are refreshed
//! from openraft's metrics at scrape time. This module only counts; it never decides anything.

use openraft::ServerState;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

use std::sync::Arc;

use crate::storage::{AppliedEntries, EntryKind};
use crate::types::{NodeId, Raft};

/// Latency buckets (seconds): from a local read to a slow cross-node commit.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Commands per Raft entry, up to `batcher::MAX_BATCH_COMMANDS`.
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    pub proposal_seconds: Histogram,
    pub proposal_batch_commands: Histogram,
    pub agents_expired: IntCounter,
    pub relayed_heartbeats: IntCounter,
    pub relay_batches: IntCounter,
    /// Vote requests of a higher term refused because a leader is known to be alive.
    pub votes_refused_leader_alive: IntCounter,
    /// Read indexes this node gave followers as leader, by what confirmed the leadership.
    pub read_index_by_follower: IntCounter,
    pub read_index_by_heartbeats: IntCounter,
    /// Commands that waited to ride with the next entry (see `batcher`): those that joined an
    /// entry another command opened, and those whose wait ran out first.
    pub riders_joined: IntCounter,
    pub riders_alone: IntCounter,
    term: IntGauge,
    leader: IntGauge,
    is_leader: IntGauge,
    last_log_index: IntGauge,
    commit_index: IntGauge,
    applied_index: IntGauge,
    snapshot_index: IntGauge,
    pub tracked_agents: IntGauge,
    pub watchers: IntGauge,
    /// Log entries applied by kind, from the state machine store's tally at scrape time.
    applied_entries: IntCounterVec,
    applied_tally: Arc<AppliedEntries>,
}

#[derive(Debug, thiserror::Error)]
#[error("metrics registry: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

impl Metrics {
    /// `applied`: the state machine store's tally of applied entries.
    pub fn new(applied: Arc<AppliedEntries>) -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some("percy".into()), None)?;
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "gRPC requests by method and status code"),
            &["method", "code"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "gRPC request latency by method")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )?;
        let proposal_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "raft_proposal_duration_seconds",
                "Time from proposing an entry (a batch of commands) on the leader to its apply",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        let proposal_batch_commands = Histogram::with_opts(
            HistogramOpts::new(
                "raft_proposal_batch_commands",
                "Commands the leader put into one Raft entry (group commit)",
            )
            .buckets(BATCH_SIZE_BUCKETS.to_vec()),
        )?;
        let gauge = |name: &str, help: &str| IntGauge::new(name, help);
        let m = Self {
            requests,
            request_seconds,
            proposal_seconds,
            proposal_batch_commands,
            agents_expired: IntCounter::new(
                "agents_expired_total",
                "Agents this node expired as leader",
            )?,
            relayed_heartbeats: IntCounter::new(
                "heartbeats_relayed_total",
                "Heartbeats followers relayed to this node as leader",
            )?,
            relay_batches: IntCounter::new(
                "heartbeat_relay_batches_total",
                "Batches those relayed heartbeats came in",
            )?,
            votes_refused_leader_alive: IntCounter::new(
                "raft_votes_refused_leader_alive_total",
                "Vote requests of a higher term refused while a leader was known to be alive",
            )?,
            read_index_by_follower: IntCounter::new(
                "read_index_confirmed_by_follower_total",
                "Read indexes given to followers whose own request confirmed the leadership",
            )?,
            read_index_by_heartbeats: IntCounter::new(
                "read_index_confirmed_by_heartbeats_total",
                "Read indexes given to followers after a heartbeat round to a quorum",
            )?,
            riders_joined: IntCounter::new(
                "raft_riders_joined_total",
                "Queued lock requests proposed in an entry another command opened",
            )?,
            riders_alone: IntCounter::new(
                "raft_riders_alone_total",
                "Queued lock requests proposed after waiting out their ride (no entry came by)",
            )?,
            term: gauge("raft_term", "Current Raft term")?,
            leader: gauge(
                "raft_leader_id",
                "Leader id as this node knows it (0 = unknown)",
            )?,
            is_leader: gauge("raft_is_leader", "1 when this node is the leader")?,
            last_log_index: gauge("raft_last_log_index", "Index of the last log entry")?,
            commit_index: gauge(
                "raft_commit_index",
                "Committed index (quorum-replicated on the leader; applied index elsewhere)",
            )?,
            applied_index: gauge(
                "raft_applied_index",
                "Index of the last entry applied to the state machine (entries applied)",
            )?,
            snapshot_index: gauge("raft_snapshot_index", "Last index in the latest snapshot")?,
            tracked_agents: gauge(
                "liveness_tracked_agents",
                "Agents in the leader's heartbeat table",
            )?,
            watchers: gauge("watch_streams", "Open watch streams")?,
            applied_entries: IntCounterVec::new(
                Opts::new(
                    "raft_applied_entries_total",
                    "Log entries applied since the process started, by kind: blank (a new \
                     leader's), membership, checkpoint (liveness checkpoints and ticks), expiry \
                     (agent expiries), other (client writes)",
                ),
                &["kind"],
            )?,
            applied_tally: applied,
            registry,
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.request_seconds.clone()))?;
        m.registry.register(Box::new(m.proposal_seconds.clone()))?;
        m.registry
            .register(Box::new(m.proposal_batch_commands.clone()))?;
        m.registry.register(Box::new(m.agents_expired.clone()))?;
        m.registry
            .register(Box::new(m.relayed_heartbeats.clone()))?;
        m.registry.register(Box::new(m.relay_batches.clone()))?;
        m.registry
            .register(Box::new(m.votes_refused_leader_alive.clone()))?;
        m.registry
            .register(Box::new(m.read_index_by_follower.clone()))?;
        m.registry
            .register(Box::new(m.read_index_by_heartbeats.clone()))?;
        m.registry.register(Box::new(m.riders_joined.clone()))?;
        m.registry.register(Box::new(m.riders_alone.clone()))?;
        m.registry.register(Box::new(m.applied_entries.clone()))?;
        for g in [
            &m.term,
            &m.leader,
            &m.is_leader,
            &m.last_log_index,
            &m.commit_index,
            &m.applied_index,
            &m.snapshot_index,
            &m.tracked_agents,
            &m.watchers,
        ] {
            m.registry.register(Box::new(g.clone()))?;
        }
        Ok(m)
    }

    /// Counts one finished request.
    pub fn observe_request(&self, method: &str, code: tonic::Code, seconds: f64) {
        self.requests
            .with_label_values(&[method, code_label(code)])
            .inc();
        self.request_seconds
            .with_label_values(&[method])
            .observe(seconds);
    }

    /// The Prometheus text exposition, with Raft gauges refreshed from `raft`.
    pub fn render(&self, raft: &Raft) -> String {
        self.refresh_raft(raft);
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    fn refresh_raft(&self, raft: &Raft) {
        let m = raft.metrics().borrow().clone();
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let last_log = m.last_log_index.unwrap_or(0);
        self.term.set(m.current_term as i64);
        self.leader.set(m.current_leader.unwrap_or(0) as i64);
        self.is_leader
            .set(i64::from(m.state == ServerState::Leader));
        self.last_log_index.set(last_log as i64);
        self.applied_index.set(applied as i64);
        self.snapshot_index
            .set(m.snapshot.map(|l| l.index).unwrap_or(0) as i64);
        self.commit_index.set(commit_index(&m) as i64);
        for kind in EntryKind::ALL {
            let counter = self.applied_entries.with_label_values(&[kind.label()]);
            // A counter only goes up: add what the tally gained since the last scrape.
            counter.inc_by(self.applied_tally.get(kind).saturating_sub(counter.get()));
        }
    }
}

/// The label of a status code: its name as `Debug` prints it, without formatting a string on
/// every request (heartbeats come by the thousand per second).
fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "Ok",
        Cancelled => "Cancelled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// The commit index as far as this node can tell. openraft 0.9 does not publish it: the leader
/// computes it from replication progress (the highest index a majority of voters has); any
/// other node reports its applied index, which trails its commit index only briefly.
pub fn commit_index(m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>) -> u64 {
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let Some(replication) = &m.replication else {
        return applied;
    };
    let last_log = m.last_log_index.unwrap_or(0);
    let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
    let mut matched: Vec<u64> = voters
        .iter()
        .map(|id| {
            if *id == m.id {
                last_log
            } else {
                replication
                    .get(id)
                    .and_then(|l| l.as_ref().map(|l| l.index))
                    .unwrap_or(0)
            }
        })
        .collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched.get(voters.len() / 2).copied().unwrap_or(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_labels_match_the_debug_names() {
        for n in 0..=16 {
            let code = tonic::Code::from_i32(n);
            assert_eq!(code_label(code), format!("{code:?}"));
        }
    }
}
