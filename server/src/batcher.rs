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
//! Owns: the proposal queue, batching and the per-command answer. Must not: decide leadership
//! or retry (that is `propose`), or look at what commands mean.

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
        let encoded_bytes = postcard::serialize_with_flavor::<_, postcard::ser_flavors::Size, _>(
            &command,
            postcard::ser_flavors::Size::default(),
        )
        .map_err(|e| ForwardError::Unavailable(format!("command does not encode: {e}")))?;
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            command,
            encoded_bytes,
            reply,
        };
        match tokio::time::timeout_at(deadline, self.queue.send(pending)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(shutting_down()),
            Err(_) => {
                return Err(ForwardError::Unavailable(
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
    ForwardError::Unavailable("the node is shutting down (outcome unknown); retry".into())
}

fn commit_timed_out() -> ForwardError {
    ForwardError::Unavailable(
        "timed out waiting for the write to commit (outcome unknown); retry with the same request id"
            .into(),
    )
}

/// The batching loop: take an in-flight slot, wait for a command, add whatever else is queued,
/// propose the entry, and hand the wait for its result to a task that answers every caller.
async fn run(raft: Raft, metrics: Metrics, mut incoming: mpsc::Receiver<Pending>) {
    let in_flight = Arc::new(Semaphore::new(MAX_BATCHES_IN_FLIGHT));
    // A command that did not fit the previous entry; it opens the next one.
    let mut carried: Option<Pending> = None;
    loop {
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(pending) => pending,
            None => match incoming.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        let mut bytes = first.encoded_bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS {
            let Ok(next) = incoming.try_recv() else {
                break;
            };
            if bytes + next.encoded_bytes > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            bytes += next.encoded_bytes;
            batch.push(next);
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
                answer_all(replies, || {
                    ForwardError::Unavailable(format!("raft stopped: {fatal}"))
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
                    ForwardError::Unavailable(format!("write failed: {e}"))
                }),
                Ok(Ok(Ok(response))) => answer_each(replies, response.data.commands),
            }
            drop(slot);
        });
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
            ForwardError::Unavailable(
                "the applied entry returned no result for this command".into(),
            )
        });
        return;
    }
    for (reply, result) in replies.into_iter().zip(results) {
        let _gone = reply.send(Ok(result));
    }
}
