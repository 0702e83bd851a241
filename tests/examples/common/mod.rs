//! What every example needs: a cluster of in-process `percyd` nodes (the workspace test kit's,
//! on loopback ports of their own, data in a temp dir that goes away with it), and a way to
//! print steps.

#![allow(dead_code)] // each example uses a different part of this module

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use percy_client::{Client, Consistency};
use percy_testkit::TestCluster;

/// How long a new cluster may take to elect a leader (generous: a loaded CI box).
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the examples wait for something the cluster does on its own (an expiry, a
/// worker finishing a task).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// TTL of agents the examples register by hand and never heartbeat: long enough that they
/// cannot expire during an example, however slow the machine.
pub const LONG_TTL_MS: u64 = 300_000;
/// Pause between two looks at the cluster while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// In-process nodes (the workspace test kit's cluster); [`LocalCluster::shutdown`] or
/// dropping it stops them.
pub struct LocalCluster {
    nodes: TestCluster,
}

impl LocalCluster {
    /// Starts `size` nodes (ids 1..=size) and waits until they have a leader.
    pub async fn start(size: u64) -> Result<LocalCluster> {
        let size = usize::try_from(size).context("cluster size")?;
        Ok(LocalCluster {
            nodes: TestCluster::start(size),
        })
    }

    /// Waits until a node leads; returns its id.
    pub async fn wait_for_leader(&self) -> Result<u64> {
        let deadline = tokio::time::Instant::now() + LEADER_TIMEOUT;
        loop {
            if let Some(index) = self.nodes.leader_index() {
                return Ok(index as u64 + 1);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("no leader within {LEADER_TIMEOUT:?}");
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Every node's `host:port`, in id order.
    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.endpoints()
    }

    /// A client of the whole cluster.
    pub async fn client(&self) -> Result<Client> {
        Ok(Client::connect(&self.endpoints()).await?)
    }

    /// A client that talks to node `id` only (to show that any node answers).
    pub async fn client_of(&self, id: u64) -> Result<Client> {
        let endpoint = usize::try_from(id)
            .ok()
            .and_then(|id| self.endpoints().get(id.checked_sub(1)?).cloned())
            .ok_or_else(|| anyhow!("no node {id}"))?;
        Ok(Client::connect(&[endpoint]).await?)
    }

    pub async fn shutdown(self) {
        drop(self.nodes);
    }
}

/// Prints a numbered step.
pub fn step(text: impl std::fmt::Display) {
    println!("\n==> {text}");
}

/// Prints a detail of the current step.
pub fn say(text: impl std::fmt::Display) {
    println!("    {text}");
}

/// How an attempt that should be refused went: the refusal, or "(accepted!)".
pub fn refusal_text<T, E: std::fmt::Display>(attempt: &std::result::Result<T, E>) -> String {
    attempt
        .as_ref()
        .err()
        .map_or("(accepted!)".into(), |e| e.to_string())
}

/// `git init --bare` whose `branch` holds `files` in one commit (made with git2, so no git
/// identity or CLI is needed).
pub fn init_bare_repository(
    dir: &std::path::Path,
    branch: &str,
    files: &[(&str, &[u8])],
    message: &str,
) -> Result<git2::Repository> {
    let mut options = git2::RepositoryInitOptions::new();
    options.bare(true).initial_head(branch);
    let repo = git2::Repository::init_opts(dir, &options).context("git init")?;
    {
        let mut tree = repo.treebuilder(None)?;
        for (name, content) in files {
            let blob = repo.blob(content)?;
            tree.insert(name, blob, i32::from(git2::FileMode::Blob))?;
        }
        let tree = repo.find_tree(tree.write()?)?;
        let who = git2::Signature::now("setup", "setup@example.com")?;
        repo.commit(
            Some(&format!("refs/heads/{branch}")),
            &who,
            &who,
            message,
            &tree,
            &[],
        )?;
    }
    Ok(repo)
}

/// Fails the example with `what` unless `condition` holds.
pub fn check(condition: bool, what: &str) -> Result<()> {
    if condition {
        say(format!("ok: {what}"));
        Ok(())
    } else {
        bail!("expected: {what}")
    }
}

/// Polls `probe` until it returns `Some`, up to [`SETTLE_TIMEOUT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
    loop {
        if let Some(value) = probe().await? {
            return Ok(value);
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("timed out after {SETTLE_TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A task's status by id, read linearizably.
pub async fn task_status(client: &Client, task_id: &str) -> Result<percy_client::TaskStatus> {
    let task = client
        .get_task(task_id, Consistency::Linearizable)
        .await?
        .task
        .ok_or_else(|| anyhow!("task {task_id} missing from the answer"))?;
    Ok(task.status())
}
