//! What wakes a worker: one watch on tasks, agents and messages, reduced to the few things
//! the worker acts on. A task event wakes it only when that task became ready *and* this
//! agent could run it, because every claim attempt is a Raft write: a cluster of idle workers
//! must not write on every unrelated change.
//!
//! The watch resumes by itself through node failures; when it gives up (no node reachable
//! for a while, or its revision was compacted away) it is reopened after a pause, and the
//! worker is told to look for work anyway, since events may have been missed.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use percy_client::proto::{event, Agent, AgentStatus, Event, Message, Task};
use percy_client::{
    Client, ClientError, EntityKind, EventStream, TaskStatus, WatchOptions, BROADCAST,
};

/// Pause before reopening a watch that ended with an error.
pub const WATCH_REOPEN_DELAY: Duration = Duration::from_secs(1);

/// Something the worker must act on.
#[derive(Debug, Clone, PartialEq)]
pub enum Wake {
    /// A task this agent can run is ready, or events may have been missed: try to claim.
    Claimable,
    /// This agent is no longer active (expired or deregistered behind our back).
    AgentInactive(String),
    /// A message for this agent or everyone.
    Message(Message),
}

/// The watch of one incarnation.
pub struct Feed {
    client: Client,
    me: Agent,
    stream: EventStream,
    next_revision: u64,
    /// Set when the stream ended: reopen at that instant.
    reopen_at: Option<Instant>,
}

impl Feed {
    /// Watches from `from_revision` (the registration's revision + 1, so nothing said to the
    /// new agent is missed).
    pub fn open(client: Client, me: Agent, from_revision: u64) -> Feed {
        let stream = client.watch(options(from_revision));
        Feed {
            client,
            me,
            stream,
            next_revision: from_revision,
            reopen_at: None,
        }
    }

    /// The next thing to act on. Cancel-safe: it can be raced in a `select!`.
    pub async fn next(&mut self) -> Wake {
        loop {
            if let Some(at) = self.reopen_at {
                tokio::time::sleep_until(at).await;
                self.reopen_at = None;
                self.stream = self.client.watch(options(self.next_revision));
                return Wake::Claimable;
            }
            match self.stream.next().await {
                Some(Ok(event)) => {
                    self.next_revision = self.next_revision.max(event.revision + 1);
                    if let Some(wake) = self.classify(event) {
                        return wake;
                    }
                }
                Some(Err(ClientError::Compacted {
                    compact_revision, ..
                })) => {
                    // Events are gone; watch from now on and look for work instead.
                    tracing::warn!(compact_revision, "worker watch compacted; resyncing");
                    self.next_revision = 0;
                    self.reopen_at = Some(Instant::now());
                }
                Some(Err(err)) => {
                    tracing::warn!(error = %err, "worker watch ended; reopening");
                    self.reopen_at = Some(Instant::now() + WATCH_REOPEN_DELAY);
                }
                None => {
                    self.reopen_at = Some(Instant::now() + WATCH_REOPEN_DELAY);
                }
            }
        }
    }

    fn classify(&self, event: Event) -> Option<Wake> {
        match event.value? {
            event::Value::Task(task) => (task.status == TaskStatus::Ready as i32
                && can_run(&self.me, &task))
            .then_some(Wake::Claimable),
            event::Value::Agent(agent) if agent.id == self.me.id => {
                (agent.status != AgentStatus::Active as i32).then(|| {
                    Wake::AgentInactive(format!(
                        "agent {} is no longer active (revision {})",
                        agent.id, agent.revision
                    ))
                })
            }
            event::Value::Message(message)
                if message.to_agent == self.me.id || message.to_agent == BROADCAST =>
            {
                Some(Wake::Message(message))
            }
            _ => None,
        }
    }
}

fn options(start_revision: u64) -> WatchOptions {
    WatchOptions {
        start_revision,
        kinds: vec![EntityKind::Task, EntityKind::Agent, EntityKind::Message],
        key_prefix: String::new(),
        initial_state: false,
        // Only a task becoming ready can give this worker something to claim: filtered on the
        // server, a worker is not sent every claim, start and completion of the cluster (at
        // 64 workers that fan-out cost more than the task cycle itself). `classify` still
        // checks the status, for servers that ignore the filter.
        task_statuses: vec![TaskStatus::Ready],
    }
}

/// The cluster's matching rule, mirrored: every required capability, every selector label.
pub fn can_run(agent: &Agent, task: &Task) -> bool {
    task.requires.iter().all(|c| agent.capabilities.contains(c))
        && task
            .selector
            .iter()
            .all(|(k, v)| agent.labels.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn agent() -> Agent {
        Agent {
            id: 7,
            capabilities: vec!["rust".into(), "git".into()],
            labels: HashMap::from([("os".into(), "linux".into())]),
            ..Default::default()
        }
    }

    fn task(requires: &[&str], selector: &[(&str, &str)]) -> Task {
        Task {
            requires: requires.iter().map(|s| s.to_string()).collect(),
            selector: selector
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn matching_needs_every_capability_and_label() {
        let me = agent();
        assert!(can_run(&me, &task(&[], &[])));
        assert!(can_run(&me, &task(&["rust"], &[("os", "linux")])));
        assert!(!can_run(&me, &task(&["rust", "python"], &[])));
        assert!(!can_run(&me, &task(&[], &[("os", "macos")])));
        assert!(!can_run(&me, &task(&[], &[("gpu", "yes")])));
    }
}
