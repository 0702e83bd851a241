//! Merging completed tasks' branches in completion order.
//!
//! The worker merges each task as it completes it; the queue is for merging a
//! backlog (tasks completed while no merge could run, or `percyctl merge` of a whole
//! plan): entries are ordered by the revision at which their task completed, so the
//! target receives the work in the order the cluster accepted it, and a dependent
//! (which completes after its dependencies) is merged after them.

use std::path::Path;

use crate::error::GitError;
use crate::fence::MergeFence;
use crate::merge::{merge_branch, MergeOutcome, MergeRequest};
use crate::resolver::ResolverCommand;

/// A completed task's branch waiting to be merged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMerge {
    pub task_id: String,
    pub branch: String,
    /// The task's revision when it completed (the log index of its completion).
    pub completion_revision: u64,
}

/// What to do with the rest of the queue when a branch does not merge cleanly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictPolicy {
    /// Stop at the first conflicted branch; later ones are not attempted (they may
    /// build on the conflicted work).
    Stop,
    /// Record the conflict and go on with the next branch.
    Continue,
}

/// Where and how the queue merges.
pub struct QueueSettings<'a> {
    pub repo_dir: &'a Path,
    pub into: &'a str,
    pub resolver: Option<&'a ResolverCommand>,
    /// One lock grant covers the whole queue: equal fence tokens pass the fence check.
    pub fence: &'a dyn MergeFence,
    pub allow_fast_forward: bool,
    pub on_conflict: ConflictPolicy,
}

/// What happened to each entry, in merge order.
#[derive(Debug)]
pub struct QueueReport {
    /// Entries that were attempted, with their outcome or error.
    pub attempted: Vec<(QueuedMerge, Result<MergeOutcome, GitError>)>,
    /// Entries left alone because the queue stopped (conflict under
    /// [`ConflictPolicy::Stop`], or an error).
    pub not_attempted: Vec<QueuedMerge>,
}

/// Completed tasks' branches in completion order.
#[derive(Debug, Clone, Default)]
pub struct MergeQueue {
    entries: Vec<QueuedMerge>,
}

impl MergeQueue {
    /// Orders `entries` by completion revision (then task id, for a stable order).
    pub fn new(mut entries: Vec<QueuedMerge>) -> Self {
        entries.sort_by(|a, b| {
            (a.completion_revision, &a.task_id).cmp(&(b.completion_revision, &b.task_id))
        });
        MergeQueue { entries }
    }

    /// The entries in the order they will be merged.
    pub fn entries(&self) -> &[QueuedMerge] {
        &self.entries
    }

    /// Merges every entry in order. An error (fenced, lock lost, repository trouble)
    /// always stops the queue: a merge that may not move the ref now will not be
    /// allowed to for the next entry either.
    pub fn merge_all(&self, settings: &QueueSettings<'_>) -> QueueReport {
        let mut attempted = Vec::new();
        let mut rest = self.entries.iter();
        for entry in rest.by_ref() {
            let result = merge_branch(&MergeRequest {
                repo_dir: settings.repo_dir,
                branch: &entry.branch,
                into: settings.into,
                resolver: settings.resolver,
                fence: settings.fence,
                allow_fast_forward: settings.allow_fast_forward,
                task_id: Some(&entry.task_id),
            });
            let stop = match &result {
                Err(_) => true,
                Ok(MergeOutcome::Conflicted { .. }) => settings.on_conflict == ConflictPolicy::Stop,
                Ok(_) => false,
            };
            attempted.push((entry.clone(), result));
            if stop {
                break;
            }
        }
        QueueReport {
            attempted,
            not_attempted: rest.cloned().collect(),
        }
    }
}
