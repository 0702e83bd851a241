//! The watch fan-out (ARCHITECTURE.md, Design §4): a ring buffer of the last N revisions' events for
//! resuming watchers, a broadcast to live watchers, filtering by kind and key prefix, the
//! optional initial state, and the "compacted" answer when a start revision is older than
//! what the ring still holds. Fed by the storage's applied-events broadcast (see `run_pump`).
//!
//! Ordering contract: the ring and the live broadcast are updated under one lock, and a new
//! watcher takes its replay and its live subscription under that same lock, so it sees every
//! revision once, in order, with no gap. Events at or below the revision a watcher has already
//! been given are skipped (the storage broadcast can trail the state machine it reads).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use percy_proto::v1 as pb;
use percy_statemachine::{EntityKind, EntityValue, Event, Recipient, StateMachine, TaskStatus};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use crate::context::NodeContext;
use crate::convert::{entity_kind_from_proto, event_to_proto, task_status_from_proto};
use crate::storage::StateChange;

/// Live batches buffered per watcher before it counts as too slow (and gets `compacted`).
const LIVE_CAPACITY: usize = 4_096;
/// Responses buffered between a watcher's task and its gRPC stream.
const STREAM_CAPACITY: usize = 64;
/// Initial-state events per response, so a large state streams in moderate messages.
const INITIAL_BATCH: usize = 256;

/// The events of one applied revision.
#[derive(Debug)]
pub struct Batch {
    pub revision: u64,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone)]
enum Item {
    Batch(Arc<Batch>),
    /// History was lost (the feed lagged): watchers must start over from this revision.
    Gap {
        floor: u64,
    },
}

struct Ring {
    batches: VecDeque<Arc<Batch>>,
    /// The events in `batches`.
    events: usize,
    /// Every event with revision ≥ floor is in `batches` or still to come.
    floor: u64,
}

/// How much watch history a node keeps: the newest revisions, at most `revisions` of them
/// and at most `events` events in all (but always the newest revision, however many events
/// it has). Both bounds matter: one revision can change a thousand entities (a plan's
/// submission), and each event holds a copy of its entity — a revision count alone let a
/// node that took a million tasks in plans keep a copy of every one (~400 B per task).
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub revisions: usize,
    pub events: usize,
}

pub struct WatchHub {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Item>,
    limits: HistoryLimits,
    closed: watch::Receiver<bool>,
}

impl WatchHub {
    /// `floor`: the first revision this node will see events for (state revision + 1 at start).
    pub fn new(limits: HistoryLimits, floor: u64, closed: watch::Receiver<bool>) -> Self {
        let (live, _) = broadcast::channel(LIVE_CAPACITY);
        Self {
            ring: Mutex::new(Ring {
                batches: VecDeque::new(),
                events: 0,
                floor,
            }),
            live,
            limits: HistoryLimits {
                revisions: limits.revisions.max(1),
                events: limits.events,
            },
            closed,
        }
    }

    /// The node's shutdown signal. Long-lived streams (watches, keep-alives) end when it
    /// fires, so that a graceful shutdown does not wait for clients to hang up.
    pub fn closed(&self) -> watch::Receiver<bool> {
        self.closed.clone()
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one applied revision and sends it to live watchers.
    pub fn publish(&self, batch: Batch) {
        let batch = Arc::new(batch);
        let mut ring = self.ring();
        if ring
            .batches
            .back()
            .is_some_and(|last| last.revision >= batch.revision)
        {
            return; // a replay of something already published
        }
        ring.events += batch.events.len();
        ring.batches.push_back(batch.clone());
        while ring.batches.len() > self.limits.revisions
            || (ring.events > self.limits.events && ring.batches.len() > 1)
        {
            let Some(old) = ring.batches.pop_front() else {
                break;
            };
            ring.events -= old.events.len();
            ring.floor = old.revision + 1;
        }
        // No receivers is fine: nobody is watching.
        let _ = self.live.send(Item::Batch(batch));
    }

    /// History before `floor` is gone (the feed lagged); live watchers must start over.
    pub fn reset(&self, floor: u64) {
        let mut ring = self.ring();
        ring.batches.clear();
        ring.events = 0;
        ring.floor = floor;
        let _ = self.live.send(Item::Gap { floor });
    }
}

/// Feeds the hub from the storage's change feed until it closes.
pub async fn run_pump(ctx: Arc<NodeContext>, mut feed: broadcast::Receiver<Arc<StateChange>>) {
    loop {
        match feed.recv().await {
            Ok(change) => match change.as_ref() {
                StateChange::Applied { revision, events } => ctx.watch.publish(Batch {
                    revision: *revision,
                    events: events.clone(),
                }),
                StateChange::SnapshotInstalled { revision } => {
                    tracing::info!(revision, "snapshot installed; watch history restarts");
                    ctx.watch.reset(revision + 1);
                }
            },
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                let floor = ctx.state.read(|sm| sm.revision()) + 1;
                tracing::warn!(missed, floor, "watch feed lagged; resetting watch history");
                ctx.watch.reset(floor);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Which events a watcher wants.
struct Filter {
    kinds: Vec<EntityKind>,
    prefix: String,
    /// Task events only of tasks in one of these statuses; empty = every status.
    task_statuses: Vec<TaskStatus>,
}

impl Filter {
    /// `task_statuses` already checked (see [`task_statuses`]).
    fn new(request: &pb::WatchRequest, task_statuses: Vec<TaskStatus>) -> Self {
        // UNSPECIFIED anywhere in the list, or an empty list, means every kind.
        let mut kinds = Vec::new();
        for raw in &request.kinds {
            match entity_kind_from_proto(*raw) {
                Some(kind) => kinds.push(kind),
                None => {
                    kinds.clear();
                    break;
                }
            }
        }
        Self {
            kinds,
            prefix: request.key_prefix.clone(),
            task_statuses,
        }
    }

    fn matches(&self, event: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && event.key.starts_with(&self.prefix)
            && self.status_matches(event)
    }

    /// Whether a task event's task is in a wanted status (events of other kinds pass).
    fn status_matches(&self, event: &Event) -> bool {
        match &event.value {
            Some(EntityValue::Task(task)) if !self.task_statuses.is_empty() => {
                self.task_statuses.contains(&task.status)
            }
            _ => true,
        }
    }

    fn wants(&self, kind: EntityKind) -> bool {
        self.kinds.is_empty() || self.kinds.contains(&kind)
    }
}

/// The request's task statuses; an unknown value or UNSPECIFIED is INVALID_ARGUMENT (an
/// UNSPECIFIED taken as "every status" would silently undo the rest of the list).
fn task_statuses(raw: &[i32]) -> Result<Vec<TaskStatus>, Status> {
    raw.iter()
        .map(|status| {
            task_status_from_proto(*status)?.ok_or_else(|| {
                Status::invalid_argument(
                    "task_statuses: TASK_STATUS_UNSPECIFIED is not a status to filter on",
                )
            })
        })
        .collect()
}

pub type WatchStream = ReceiverStream<Result<pb::WatchResponse, Status>>;

/// Starts a watch stream for `request`.
pub fn open(ctx: Arc<NodeContext>, request: pb::WatchRequest) -> Result<WatchStream, Status> {
    for raw in &request.kinds {
        if pb::EntityKind::try_from(*raw).is_err() {
            return Err(Status::invalid_argument(format!(
                "unknown entity kind {raw}"
            )));
        }
    }
    let filter = Filter::new(&request, task_statuses(&request.task_statuses)?);
    let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
    let plan = {
        let ring = ctx.watch.ring();
        let live = ctx.watch.live.subscribe();
        if request.initial_state {
            let (revision, events) = ctx.state.read(|sm| initial_events(sm, &filter));
            Plan::Start {
                replay: vec![Arc::new(Batch { revision, events })],
                next: revision + 1,
                live,
            }
        } else if request.start_revision == 0 {
            let revision = ctx.state.read(|sm| sm.revision());
            Plan::Start {
                replay: Vec::new(),
                next: revision + 1,
                live,
            }
        } else if request.start_revision < ring.floor {
            Plan::Compacted { floor: ring.floor }
        } else {
            let replay: Vec<Arc<Batch>> = ring
                .batches
                .iter()
                .filter(|b| b.revision >= request.start_revision)
                .cloned()
                .collect();
            let next = replay
                .last()
                .map(|b| b.revision + 1)
                .unwrap_or(request.start_revision);
            Plan::Start { replay, next, live }
        }
    };
    let closed = ctx.watch.closed();
    tokio::spawn(async move {
        ctx.metrics.watchers.inc();
        serve(&ctx, plan, filter, tx, closed).await;
        ctx.metrics.watchers.dec();
    });
    Ok(ReceiverStream::new(rx))
}

enum Plan {
    Compacted {
        floor: u64,
    },
    Start {
        replay: Vec<Arc<Batch>>,
        /// Lowest revision not yet covered by `replay`.
        next: u64,
        live: broadcast::Receiver<Item>,
    },
}

type Tx = mpsc::Sender<Result<pb::WatchResponse, Status>>;

async fn serve(
    ctx: &NodeContext,
    plan: Plan,
    filter: Filter,
    tx: Tx,
    mut closed: watch::Receiver<bool>,
) {
    let (replay, mut next, mut live) = match plan {
        Plan::Compacted { floor } => {
            let _ = tx.send(Ok(compacted(ctx, floor))).await;
            return;
        }
        Plan::Start { replay, next, live } => (replay, next, live),
    };
    for batch in replay {
        for chunk in batch.events.chunks(INITIAL_BATCH) {
            if !send(ctx, &tx, &filter, batch.revision, chunk).await {
                return;
            }
        }
    }
    loop {
        let item = tokio::select! {
            item = live.recv() => item,
            _ = tx.closed() => return,
            _ = closed.changed() => return,
        };
        match item {
            Ok(Item::Batch(batch)) => {
                if batch.revision < next {
                    continue;
                }
                next = batch.revision + 1;
                if !send(ctx, &tx, &filter, batch.revision, &batch.events).await {
                    return;
                }
            }
            Ok(Item::Gap { floor }) => {
                let _ = tx.send(Ok(compacted(ctx, floor))).await;
                return;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Too slow to keep up: the events it missed are gone from the live channel.
                let floor = ctx.watch.ring().floor.max(next);
                let _ = tx.send(Ok(compacted(ctx, floor))).await;
                return;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Sends the matching events of one revision; false once the watcher is gone.
async fn send(
    ctx: &NodeContext,
    tx: &Tx,
    filter: &Filter,
    revision: u64,
    events: &[Event],
) -> bool {
    let events: Vec<pb::Event> = events
        .iter()
        .filter(|e| filter.matches(e))
        .map(event_to_proto)
        .collect();
    if events.is_empty() {
        return true;
    }
    let response = pb::WatchResponse {
        header: ctx.header(revision, false),
        events,
        compacted: false,
        compact_revision: 0,
    };
    tx.send(Ok(response)).await.is_ok()
}

fn compacted(ctx: &NodeContext, floor: u64) -> pb::WatchResponse {
    pb::WatchResponse {
        header: ctx.header(floor.saturating_sub(1), false),
        events: Vec::new(),
        compacted: true,
        compact_revision: floor,
    }
}

/// Every entity the filter wants, as events at the current revision.
fn initial_events(sm: &StateMachine, filter: &Filter) -> (u64, Vec<Event>) {
    let revision = sm.revision();
    let mut events = Vec::new();
    let mut push = |kind: EntityKind, key: String, value: EntityValue| {
        let event = Event {
            revision,
            kind,
            key,
            value: Some(value),
        };
        if filter.matches(&event) {
            events.push(event);
        }
    };
    if filter.wants(EntityKind::Agent) {
        for a in sm.agents() {
            push(
                EntityKind::Agent,
                a.id.to_string(),
                EntityValue::Agent(a.clone()),
            );
        }
    }
    if filter.wants(EntityKind::Task) {
        for t in sm.tasks(&Default::default()) {
            push(EntityKind::Task, t.id.clone(), EntityValue::Task(t.clone()));
        }
    }
    if filter.wants(EntityKind::Lock) {
        for l in sm.locks() {
            push(
                EntityKind::Lock,
                l.path.clone(),
                EntityValue::Lock(l.clone()),
            );
        }
    }
    if filter.wants(EntityKind::Config) {
        for c in sm.config_range("") {
            push(
                EntityKind::Config,
                c.key.clone(),
                EntityValue::Config(c.clone()),
            );
        }
    }
    if filter.wants(EntityKind::Definition) {
        for d in sm.definitions() {
            push(
                EntityKind::Definition,
                d.name.clone(),
                EntityValue::Definition(d.clone()),
            );
        }
    }
    if filter.wants(EntityKind::DefinitionRun) {
        for run in sm.definition_runs() {
            push(
                EntityKind::DefinitionRun,
                run.name.clone(),
                EntityValue::DefinitionRun(run.clone()),
            );
        }
    }
    if filter.wants(EntityKind::Message) {
        let agents = sm.agents();
        let mailboxes = std::iter::once(Recipient::Broadcast)
            .chain(agents.iter().map(|a| Recipient::Agent(a.id)));
        for recipient in mailboxes {
            for m in sm.messages(&recipient, 0).0 {
                push(
                    EntityKind::Message,
                    message_key(&recipient, m.id),
                    EntityValue::Message(m.clone()),
                );
            }
        }
    }
    (revision, events)
}

/// The key the state machine gives message events (`percy_statemachine::Event::key`):
/// `<agent id>/<message id>`, or `*/<message id>` for broadcasts.
fn message_key(recipient: &Recipient, id: u64) -> String {
    match recipient {
        Recipient::Agent(agent) => format!("{agent}/{id}"),
        Recipient::Broadcast => format!("*/{id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use percy_statemachine::EntityKind;

    fn batch(revision: u64, events: usize) -> Batch {
        let event = |n: usize| Event {
            revision,
            kind: EntityKind::Config,
            key: format!("k{n}"),
            value: None,
        };
        Batch {
            revision,
            events: (0..events).map(event).collect(),
        }
    }

    fn hub(revisions: usize, events: usize) -> WatchHub {
        let (_closed_tx, closed) = watch::channel(false);
        WatchHub::new(HistoryLimits { revisions, events }, 1, closed)
    }

    fn kept(hub: &WatchHub) -> (Vec<u64>, usize, u64) {
        let ring = hub.ring();
        let revisions = ring.batches.iter().map(|b| b.revision).collect();
        (revisions, ring.events, ring.floor)
    }

    #[test]
    fn history_keeps_at_most_its_revisions() {
        let hub = hub(3, 1_000);
        for revision in 1..=5 {
            hub.publish(batch(revision, 1));
        }
        assert_eq!(kept(&hub), (vec![3, 4, 5], 3, 3));
    }

    /// A revision with many events (a plan's submission) pushes older revisions out, so the
    /// history's memory follows its events, not its revision count.
    #[test]
    fn history_keeps_at_most_its_events_but_always_the_newest_revision() {
        let hub = hub(100, 10);
        hub.publish(batch(1, 4));
        hub.publish(batch(2, 4));
        assert_eq!(kept(&hub), (vec![1, 2], 8, 1));
        hub.publish(batch(3, 4));
        assert_eq!(kept(&hub), (vec![2, 3], 8, 2));
        hub.publish(batch(4, 25));
        assert_eq!(kept(&hub), (vec![4], 25, 4));
        hub.reset(9);
        assert_eq!(kept(&hub), (vec![], 0, 9));
    }
}
