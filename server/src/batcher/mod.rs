//! Group commit on the leader: many commands per Raft entry.
//!
//! openraft 0.9 appends and flushes each `client_write` on its own (one leader fsync per
//! entry, and its core loop waits for that flush before it handles the next message), so one
//! entry per command caps writes at roughly one per fsync-plus-replication round. Instead,
//! every command proposed on this node goes through one queue: a single task drains whatever
//! has queued up (bounded by [`MAX_BATCH_COMMANDS`] and [`MAX_BATCH_BYTES`]) into one
//! [`Proposal`], and keeps at most [`MAX_BATCHES_IN_FLIGHT`] entries in flight, so commands that
//! arrive while the log is busy share the next entry, its fsync and its replication round.
//! Each caller gets its own command's result back.
//!
//! A command may also *ride* ([`Batcher::propose_riding`]): it opens no entry of its own but
//! waits, up to a bound, for the next entry another command opens. `propose` uses that for lock
//! requests that will queue: their callers wait for the grant anyway, and on a contended lock
//! the re-queued request of the holder that just released would otherwise take a replication
//! round (two disk syncs and a commit announcement) right on the path of the new holder's
//! writes — a third of all entries on the lock benchmark.
//!
//! Owns: the proposal queue, batching and the per-command answer; *when* an entry opens and
//! *what* goes in it are pure decisions in `queue.rs`, tested with logical time. Must not:
//! decide leadership or retry (that is `propose`), or look at what commands mean.

mod queue;

use std::sync::Arc;
use std::time::Duration;

use openraft::error::ClientWriteError;
use percy_statemachine::Command;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::types::{CommandResult, Proposal, Raft};
use crate::wire::ForwardError;

use self::queue::{Next, Queue, Queued};

/// Most commands in one entry. Bounds apply time per entry (readers wait while it runs) and the
/// entry's size on the wire for followers.
pub const MAX_BATCH_COMMANDS: usize = 256;
/// Most encoded command bytes in one entry; a single larger command still goes alone. Kept
/// well below what one AppendEntries can carry in time: openraft 0.9 sends up to
/// `MAX_PAYLOAD_ENTRIES` (32) entries per RPC to a follower that is catching up and times the RPC
/// out after about one heartbeat interval, so 32 × 256 KiB = 8 MiB is the most batching adds to
/// one RPC. (Small commands are ~100–300 bytes, so 256 of them are far below this.)
pub const MAX_BATCH_BYTES: usize = 256 << 10;
/// Entries proposed and not yet applied. One is appended and flushed while the one before it
/// replicates; everything else waits in the queue and joins the next entry. More would hand
/// openraft small entries that it flushes one at a time again.
pub const MAX_BATCHES_IN_FLIGHT: usize = 2;
/// Commands waiting for an entry. A full queue holds proposers back (until their deadline)
/// instead of growing without limit.
pub const QUEUE_CAPACITY: usize = 8192;
/// How long an entry may stay unapplied before its commands are answered "outcome unknown"
/// and its in-flight slot is reused. Matches the proposers' own deadline.
pub const BATCH_COMMIT_TIMEOUT: Duration = crate::propose::PROPOSE_TIMEOUT;

type Reply = oneshot::Sender<Result<CommandResult, ForwardError>>;

/// One queued command and where its answer goes.
struct Pending {
    command: Command,
    encoded_bytes: usize,
    reply: Reply,
    /// Set for a command that may wait for the next entry (see [`Batcher::propose_riding`]):
    /// the latest it may be proposed.
    ride_until: Option<Instant>,
}

impl Queued for Pending {
    fn encoded_bytes(&self) -> usize {
        self.encoded_bytes
    }

    fn ride_until(&self) -> Option<Instant> {
        self.ride_until
    }
}

/// The handle proposers use; cheap to clone. The batching task stops when every handle is
/// dropped.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts the batching task for `raft`.
    pub fn start(raft: Raft, metrics: Metrics) -> (Self, JoinHandle<()>) {
        let (queue, incoming) = mpsc::channel(QUEUE_CAPACITY);
        let task = tokio::spawn(run(raft, metrics, incoming));
        (Self { queue }, task)
    }

    /// Proposes `command` in the next entry and waits for its result, up to `deadline`.
    /// This node must believe it is the leader; if it is not, the answer is `NotLeader`.
    pub async fn propose(
        &self,
        command: Command,
        deadline: Instant,
    ) -> Result<CommandResult, ForwardError> {
        self.submit(command, None, deadline).await
    }

    /// Like [`Batcher::propose`], for a command whose caller waits long after it is applied
    /// anyway (a lock request that will queue): it does not open an entry of its own but joins
    /// the next one another command opens, or goes after `may_wait`. Under contention that
    /// saves a replication round and two disk syncs on the path of the writes that matter.
    pub async fn propose_riding(
        &self,
        command: Command,
        may_wait: Duration,
        deadline: Instant,
    ) -> Result<CommandResult, ForwardError> {
        let ride_until = (Instant::now() + may_wait).min(deadline);
        self.submit(command, Some(ride_until), deadline).await
    }

    async fn submit(
        &self,
        command: Command,
        ride_until: Option<Instant>,
        deadline: Instant,
    ) -> Result<CommandResult, ForwardError> {
        let encoded_bytes = postcard::serialize_with_flavor::<_, postcard::ser_flavors::Size, _>(
            &command,
            postcard::ser_flavors::Size::default(),
        )
        .map_err(|e| ForwardError::NotProposed(format!("command does not encode: {e}")))?;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            command,
            encoded_bytes,
            reply,
            ride_until,
        };
        match tokio::time::timeout_at(deadline, self.queue.send(pending)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err(ForwardError::NotProposed(
                    "the node is shutting down; the command was not proposed; retry".into(),
                ))
            }
            Err(_) => {
                return Err(ForwardError::NotProposed(
                    "the proposal queue stayed full until the deadline; the command was not proposed; retry"
                        .into(),
                ))
            }
        }
        match tokio::time::timeout_at(deadline, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(shutting_down()),
            Err(_) => Err(commit_timed_out()),
        }
    }
}

fn shutting_down() -> ForwardError {
    ForwardError::Unknown("the node is shutting down (outcome unknown); retry".into())
}

fn commit_timed_out() -> ForwardError {
    ForwardError::Unknown(
        "timed out waiting for the write to commit (outcome unknown); retry with the same request id"
            .into(),
    )
}

/// The batching loop: take an in-flight slot, wait until an entry must open, fill it with what
/// has queued, propose it, and hand the wait for its result to a task that answers every caller.
async fn run(raft: Raft, metrics: Metrics, mut incoming: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    let mut queue = Queue::new();
    loop {
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        if !wait_for_opener(&mut queue, &mut incoming).await {
            return;
        }
        let batch = queue.take_batch(|| incoming.try_recv().ok());
        let riders = batch.iter().filter(|p| p.ride_until.is_some()).count() as u64;
        if riders == batch.len() as u64 {
            metrics.riders_alone.inc_by(riders);
        } else {
            metrics.riders_joined.inc_by(riders);
        }
        metrics.proposal_batch_commands.observe(batch.len() as f64);
        let (commands, replies): (Vec<Command>, Vec<Reply>) = batch
            .into_iter()
            .map(|pending| (pending.command, pending.reply))
            .unzip();
        let proposal = Proposal {
            now_ms: crate::propose::now_ms(),
            commands,
        };
        let started = std::time::Instant::now();
        let receiver = match raft.client_write_ff(proposal).await {
            Ok(receiver) => receiver,
            Err(fatal) => {
                // openraft refused the entry before it reached the log.
                answer_all(replies, || {
                    ForwardError::NotProposed(format!("raft stopped: {fatal}"))
                });
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(BATCH_COMMIT_TIMEOUT, receiver).await;
            metrics
                .proposal_seconds
                .observe(started.elapsed().as_secs_f64());
            match result {
                Err(_) => answer_all(replies, commit_timed_out),
                Ok(Err(_)) => answer_all(replies, shutting_down),
                Ok(Ok(Err(ClientWriteError::ForwardToLeader(f)))) => {
                    answer_all(replies, || ForwardError::NotLeader {
                        leader: f.leader_id,
                    })
                }
                Ok(Ok(Err(e))) => answer_all(replies, || {
                    ForwardError::Unknown(format!("write failed: {e}"))
                }),
                Ok(Ok(Ok(response))) => answer_each(replies, response.data.commands),
            }
            drop(slot);
        });
    }
}

/// Receives commands until the queue says the next entry must open (see [`Queue::next`]).
/// False when every handle on the batcher is gone.
async fn wait_for_opener(
    queue: &mut Queue<Pending>,
    incoming: &mut mpsc::Receiver<Pending>,
) -> bool {
    loop {
        let due = match queue.next(Instant::now()) {
            Next::Open => return true,
            Next::Wait { until } => until,
        };
        tokio::select! {
            received = incoming.recv() => match received {
                None => return false,
                Some(pending) => queue.arrive(pending),
            },
            () = sleep_until_due(due), if due.is_some() => {}
        }
    }
}

/// Resolves at `due` (never when there is none; the caller guards it).
async fn sleep_until_due(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Gives every caller of a failed entry the same error.
fn answer_all(replies: Vec<Reply>, error: impl Fn() -> ForwardError) {
    for reply in replies {
        // A caller that gave up (deadline) dropped its receiver; nothing to tell it.
        let _gone = reply.send(Err(error()));
    }
}

/// Gives each caller its own command's result: results come back in the entry's order.
fn answer_each(replies: Vec<Reply>, results: Vec<CommandResult>) {
    if replies.len() != results.len() {
        tracing::error!(
            commands = replies.len(),
            results = results.len(),
            "an applied entry returned a different number of results than it had commands"
        );
        answer_all(replies, || {
            ForwardError::Unknown("the applied entry returned no result for this command".into())
        });
        return;
    }
    for (reply, result) in replies.into_iter().zip(results) {
        let _gone = reply.send(Ok(result));
    }
}

#[cfg(test)]
mod tests {
    use futures::FutureExt;
    use percy_statemachine::Op;

    use super::*;
    use crate::test_cluster::{Cluster, SETTLE};

    fn put(key: &str) -> Command {
        Command::new(Op::PutConfig {
            key: key.into(),
            value: b"v".to_vec(),
            expected_revision: None,
        })
    }

    /// Entries proposed so far and the commands in them, from the leader's metrics.
    fn entries(metrics: &Metrics) -> (u64, u64) {
        let histogram = &metrics.proposal_batch_commands;
        (
            histogram.get_sample_count(),
            histogram.get_sample_sum() as u64,
        )
    }

    /// A batcher whose batching task is `incoming`'s holder (or gone, when it is dropped).
    fn detached_batcher(capacity: usize) -> (Batcher, mpsc::Receiver<Pending>) {
        let (queue, incoming) = mpsc::channel(capacity);
        (Batcher { queue }, incoming)
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_millis(100)
    }

    /// What a write failure says about the command decides whether a caller may retry it, so
    /// each failure must be classified by what is known.
    #[tokio::test]
    async fn failures_say_whether_the_command_was_proposed() {
        // The batching task is gone: the command never left this node.
        let (batcher, incoming) = detached_batcher(1);
        drop(incoming);
        let stopped = batcher.propose(put("a"), soon()).await;
        assert!(
            matches!(stopped, Err(ForwardError::NotProposed(_))),
            "{stopped:?}"
        );

        // The queue stays full until the deadline: not proposed either.
        let (batcher, _incoming) = detached_batcher(1);
        let first = batcher.propose(put("first"), soon());
        let second = batcher.propose(put("second"), soon());
        let (first, second) = tokio::join!(first, second);
        // The first sits in the queue unanswered: it may be proposed any moment, so its
        // outcome is unknown; the second never got into the queue.
        assert!(matches!(first, Err(ForwardError::Unknown(_))), "{first:?}");
        assert!(
            matches!(second, Err(ForwardError::NotProposed(_))),
            "{second:?}"
        );

        // Taken by the batching task, which then dies without answering: unknown.
        let (batcher, mut incoming) = detached_batcher(1);
        let pending = batcher.propose(put("taken"), Instant::now() + SETTLE);
        let taker = async {
            let taken = incoming.recv().await;
            drop(taken);
        };
        let (pending, ()) = tokio::join!(pending, taker);
        assert!(
            matches!(pending, Err(ForwardError::Unknown(_))),
            "{pending:?}"
        );
    }

    #[tokio::test]
    async fn riders_join_the_next_entry_in_the_order_they_came() {
        let cluster = Cluster::start().await;
        let leader = cluster.leader_index().await;
        cluster.warm_up(leader).await;
        let ctx = cluster.nodes[leader].context();
        let deadline = Instant::now() + SETTLE;
        let before = entries(&ctx.metrics);
        // Polled once each, the riders are in the queue before the opener is sent.
        let mut first = Box::pin(ctx.batcher.propose_riding(put("r1"), SETTLE, deadline));
        let mut second = Box::pin(ctx.batcher.propose_riding(put("r2"), SETTLE, deadline));
        assert!(first.as_mut().now_or_never().is_none());
        assert!(second.as_mut().now_or_never().is_none());
        // Time for the batching task to take both riders (and, were they not riding, to
        // propose them before the opener comes).
        tokio::time::sleep(Duration::from_millis(200)).await;
        let opener = ctx.batcher.propose(put("opener"), deadline);
        let (first, second, opener) = tokio::join!(first, second, opener);
        let revisions = [first, second, opener].map(|r| r.expect("applied").revision);
        assert!(
            revisions[0] < revisions[1] && revisions[1] < revisions[2],
            "riders first, in order: {revisions:?}"
        );
        let after = entries(&ctx.metrics);
        assert_eq!(
            (after.0 - before.0, after.1 - before.1),
            (1, 3),
            "one entry carried all three"
        );
        assert_eq!(ctx.metrics.riders_joined.get(), 2);
        assert_eq!(ctx.metrics.riders_alone.get(), 0);
        cluster.stop().await;
    }

    #[tokio::test]
    async fn a_rider_no_entry_comes_for_goes_alone_after_its_wait() {
        let cluster = Cluster::start().await;
        let leader = cluster.leader_index().await;
        cluster.warm_up(leader).await;
        let ctx = cluster.nodes[leader].context();
        let may_wait = Duration::from_millis(300);
        let started = Instant::now();
        ctx.batcher
            .propose_riding(put("alone"), may_wait, started + SETTLE)
            .await
            .expect("applied");
        assert!(started.elapsed() >= may_wait, "it waited for company");
        assert_eq!(ctx.metrics.riders_alone.get(), 1);
        assert_eq!(ctx.metrics.riders_joined.get(), 0);
        cluster.stop().await;
    }
}
