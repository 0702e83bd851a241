//! Shared fixtures of the git pipeline tests: throwaway repositories built with
//! libgit2 directly (no `git` CLI, no global git config), and fences.
#![allow(dead_code)] // each test binary uses a different subset of the fixtures

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use git2::{Commit, Index, IndexEntry, IndexTime, Oid, Repository, Signature};
use percy_git::{FenceError, MergeFence};

pub const TARGET: &str = "main";

/// A change to one path: `Some(content)` writes it, `None` deletes it.
pub type Change<'a> = (&'a str, Option<&'a [u8]>);

pub fn sig() -> Signature<'static> {
    Signature::now("Test Author", "author@example.com").unwrap()
}

/// A fresh non-bare repository whose `main` holds `files`, checked out in its
/// working tree (the "user's checkout").
pub fn init_repo(dir: &Path, files: &[Change<'_>]) -> Repository {
    let repo = Repository::init(dir).unwrap();
    let tree = build_tree(&repo, None, files);
    let id = {
        let tree = repo.find_tree(tree).unwrap();
        repo.commit(None, &sig(), &sig(), "initial", &tree, &[])
            .unwrap()
    };
    repo.reference("refs/heads/main", id, true, "init").unwrap();
    repo.set_head("refs/heads/main").unwrap();
    repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
        .unwrap();
    repo
}

/// Applies `changes` on top of `base` (a tree id, or empty) and writes the tree.
fn build_tree(repo: &Repository, base: Option<Oid>, changes: &[Change<'_>]) -> Oid {
    let mut index = Index::new().unwrap();
    if let Some(base) = base {
        index.read_tree(&repo.find_tree(base).unwrap()).unwrap();
    }
    for (path, content) in changes {
        match content {
            Some(data) => {
                let id = repo.blob(data).unwrap();
                index
                    .add(&IndexEntry {
                        ctime: IndexTime::new(0, 0),
                        mtime: IndexTime::new(0, 0),
                        dev: 0,
                        ino: 0,
                        mode: 0o100644,
                        uid: 0,
                        gid: 0,
                        file_size: data.len() as u32,
                        id,
                        flags: 0,
                        flags_extended: 0,
                        path: path.as_bytes().to_vec(),
                    })
                    .unwrap();
            }
            None => index.remove_path(Path::new(path)).unwrap(),
        }
    }
    index.write_tree_to(repo).unwrap()
}

/// Commits `changes` on `branch` (created at `from`'s tip if it does not exist)
/// without touching any working tree; returns the new commit.
pub fn commit_on(repo: &Repository, branch: &str, from: &str, changes: &[Change<'_>]) -> Oid {
    let parent = match repo.find_branch(branch, git2::BranchType::Local) {
        Ok(b) => b.get().peel_to_commit().unwrap(),
        Err(_) => tip_commit(repo, from),
    };
    let tree = build_tree(repo, Some(parent.tree_id()), changes);
    let tree = repo.find_tree(tree).unwrap();
    let msg = format!("change on {branch}");
    let id = repo
        .commit(None, &sig(), &sig(), &msg, &tree, &[&parent])
        .unwrap();
    repo.reference(&format!("refs/heads/{branch}"), id, true, "test")
        .unwrap();
    // Like a person committing there: a checkout of the branch stays in step with it.
    let head = repo.find_reference("HEAD").unwrap();
    if !repo.is_bare() && head.symbolic_target().unwrap() == Some(&format!("refs/heads/{branch}")) {
        repo.checkout_head(Some(git2::build::CheckoutBuilder::new().force()))
            .unwrap();
    }
    id
}

pub fn tip(repo: &Repository, branch: &str) -> Oid {
    tip_commit(repo, branch).id()
}

pub fn tip_commit<'r>(repo: &'r Repository, branch: &str) -> Commit<'r> {
    repo.find_branch(branch, git2::BranchType::Local)
        .unwrap()
        .get()
        .peel_to_commit()
        .unwrap()
}

/// Content of `path` in the tree of `commit`, `None` if absent.
pub fn file_at(repo: &Repository, commit: Oid, path: &str) -> Option<Vec<u8>> {
    let tree = repo.find_commit(commit).unwrap().tree().unwrap();
    let entry = tree.get_path(Path::new(path)).ok()?;
    Some(repo.find_blob(entry.id()).unwrap().content().to_vec())
}

/// Whether `ancestor` is reachable from `tip` (or is it).
pub fn reaches(repo: &Repository, tip: Oid, ancestor: Oid) -> bool {
    tip == ancestor || repo.graph_descendant_of(tip, ancestor).unwrap()
}

/// A fence with a fixed token whose lock can be "lost" (expired, taken over).
pub struct TestFence {
    pub token: u64,
    pub held: AtomicBool,
}

impl TestFence {
    pub fn new(token: u64) -> Self {
        TestFence {
            token,
            held: AtomicBool::new(true),
        }
    }

    pub fn lose(&self) {
        self.held.store(false, Ordering::SeqCst);
    }
}

impl MergeFence for TestFence {
    fn token(&self) -> u64 {
        self.token
    }

    fn still_held(&self) -> Result<bool, FenceError> {
        Ok(self.held.load(Ordering::SeqCst))
    }
}

/// An in-memory stand-in for the cluster lock on a target ref: one holder at a time,
/// a strictly increasing fencing token per grant.
#[derive(Default)]
pub struct InMemoryLock {
    state: Mutex<LockState>,
    freed: Condvar,
}

#[derive(Default)]
struct LockState {
    last_token: u64,
    holder: Option<u64>,
}

impl InMemoryLock {
    /// Blocks until the lock is free, then grants it with a new token.
    pub fn acquire(&self) -> LockGuard<'_> {
        let mut state = self.state.lock().unwrap();
        while state.holder.is_some() {
            state = self.freed.wait(state).unwrap();
        }
        state.last_token += 1;
        state.holder = Some(state.last_token);
        LockGuard {
            lock: self,
            token: state.last_token,
        }
    }
}

/// A grant of [`InMemoryLock`]; released on drop.
pub struct LockGuard<'a> {
    lock: &'a InMemoryLock,
    token: u64,
}

impl MergeFence for LockGuard<'_> {
    fn token(&self) -> u64 {
        self.token
    }

    fn still_held(&self) -> Result<bool, FenceError> {
        Ok(self.lock.state.lock().unwrap().holder == Some(self.token))
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.lock.state.lock().unwrap();
        if state.holder == Some(self.token) {
            state.holder = None;
        }
        self.lock.freed.notify_all();
    }
}
