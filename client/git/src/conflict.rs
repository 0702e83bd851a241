//! Conflicted paths of an in-memory merge: reading them out of the merge index,
//! classifying them, and writing a resolution back into the index.
//!
//! libgit2 groups conflict entries by path, so one [`Conflict`] is the stage 1/2/3
//! entries (base/ours/theirs) of one path. "Ours" is always the target branch and
//! "theirs" the branch being merged.
//!
//! Renames do not show up as such in the index: a rename conflict leaves each path
//! involved with only some of its stages (rename/rename: the old path with only its
//! base, each new path with only ours or only theirs; rename+edit against edit: the
//! old path looks like delete/modify). So renames are found the way git finds them,
//! by diffing the merge base against each side with rename detection, and every
//! conflicted path that is the source or destination of a rename is a
//! [`ConflictKind::Rename`] conflict. A path left with a single stage that is not part
//! of a rename is a file/directory clash ([`ConflictKind::DirectoryFile`]).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use git2::{
    Delta, DiffFindOptions, Index, IndexConflict, IndexEntry, IndexTime, Oid, Repository, Tree,
};

use crate::error::GitError;
use crate::resolver::is_binary;

/// Index mode of a submodule (gitlink) entry: it has no blob to hand a resolver.
const GITLINK_MODE: u32 = 0o160_000;

/// Index mode of a regular, non-executable file: the mode of a resolved path when no
/// side has one to inherit.
const REGULAR_FILE_MODE: u32 = 0o100_644;

/// What kind of conflict a path is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConflictKind {
    /// Both sides changed the same lines of a text file.
    Content,
    /// Both sides added the path with different text content.
    AddAdd,
    /// The target modified the path, the branch deleted it.
    ModifyDelete,
    /// The target deleted the path, the branch modified it.
    DeleteModify,
    /// The source or destination of a rename on either side (rename/rename,
    /// rename/delete, rename/add, rename+edit against edit). Each path involved is
    /// handed to the resolver separately: keep it (write content) or delete it.
    Rename,
    /// Both sides have a version and at least one version is binary: never merged
    /// textually, the resolver gets the versions and decides.
    Binary,
    /// A submodule pointer conflict: there is no file content to hand a resolver,
    /// so it is always left to a person.
    Submodule,
    /// One side has a file where the other has a directory: no content of a single
    /// path can resolve it, so it is always left to a person.
    DirectoryFile,
}

impl ConflictKind {
    /// The name used in `PERCY_CONFLICT_KIND` and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ConflictKind::Content => "content",
            ConflictKind::AddAdd => "add/add",
            ConflictKind::ModifyDelete => "modify/delete",
            ConflictKind::DeleteModify => "delete/modify",
            ConflictKind::Rename => "rename",
            ConflictKind::Binary => "binary",
            ConflictKind::Submodule => "submodule",
            ConflictKind::DirectoryFile => "file/directory",
        }
    }
}

impl fmt::Display for ConflictKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A path that was in conflict, with what happened to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictedPath {
    /// Repository path (lossily converted to UTF-8 for reporting).
    pub path: String,
    pub kind: ConflictKind,
    /// How it was resolved, or why it was not.
    pub detail: String,
}

/// One side (stage) of a conflicted path.
#[derive(Debug, Clone)]
pub(crate) struct Side {
    pub id: Oid,
    pub mode: u32,
}

/// The conflict entries of one path in a merge index.
#[derive(Debug, Clone)]
pub(crate) struct Conflict {
    path: Vec<u8>,
    pub ancestor: Option<Side>,
    pub ours: Option<Side>,
    pub theirs: Option<Side>,
}

impl Conflict {
    fn from_index(c: IndexConflict) -> Option<Self> {
        let side = |e: &IndexEntry| Side {
            id: e.id,
            mode: e.mode,
        };
        let path = [&c.our, &c.their, &c.ancestor]
            .into_iter()
            .flatten()
            .map(|e| e.path.clone())
            .next()?;
        Some(Conflict {
            path,
            ancestor: c.ancestor.as_ref().map(side),
            ours: c.our.as_ref().map(side),
            theirs: c.their.as_ref().map(side),
        })
    }

    /// The conflicted path, as reported and as handed to the resolver.
    pub fn result_path(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }

    /// The sides in resolver order: base, ours, theirs.
    pub fn sides(&self) -> [Option<&Side>; 3] {
        [
            self.ancestor.as_ref(),
            self.ours.as_ref(),
            self.theirs.as_ref(),
        ]
    }

    /// Classifies the conflict, given the paths renamed on either side (see
    /// [`renamed_paths`]); reads the blobs to tell binary content apart.
    pub fn classify(
        &self,
        repo: &Repository,
        renamed: &HashSet<Vec<u8>>,
    ) -> Result<ConflictKind, GitError> {
        if self
            .sides()
            .into_iter()
            .flatten()
            .any(|s| s.mode == GITLINK_MODE)
        {
            return Ok(ConflictKind::Submodule);
        }
        if renamed.contains(&self.path) {
            return Ok(ConflictKind::Rename);
        }
        let kind = match (&self.ancestor, &self.ours, &self.theirs) {
            (Some(_), Some(_), Some(_)) => ConflictKind::Content,
            (None, Some(_), Some(_)) => ConflictKind::AddAdd,
            (Some(_), Some(_), None) => ConflictKind::ModifyDelete,
            (Some(_), None, Some(_)) => ConflictKind::DeleteModify,
            _ => ConflictKind::DirectoryFile,
        };
        // Binary matters only where two versions would otherwise be merged as text.
        if matches!(kind, ConflictKind::Content | ConflictKind::AddAdd) {
            for side in self.sides().into_iter().flatten() {
                if is_binary(repo.find_blob(side.id)?.content()) {
                    return Ok(ConflictKind::Binary);
                }
            }
        }
        Ok(kind)
    }

    /// Replaces the conflict entries by one stage-0 entry with `data`, keeping the
    /// file mode of ours (else theirs, else base).
    pub fn resolve_with(
        &self,
        repo: &Repository,
        index: &mut Index,
        data: &[u8],
    ) -> Result<(), GitError> {
        let mode = [&self.ours, &self.theirs, &self.ancestor]
            .into_iter()
            .flatten()
            .map(|s| s.mode)
            .next()
            .unwrap_or(REGULAR_FILE_MODE);
        let id = repo.blob(data)?;
        self.remove_from(index)?;
        index.add(&IndexEntry {
            ctime: IndexTime::new(0, 0),
            mtime: IndexTime::new(0, 0),
            dev: 0,
            ino: 0,
            mode,
            uid: 0,
            gid: 0,
            // The index stores sizes as 32 bits; git truncates the same way.
            file_size: data.len() as u32,
            id,
            flags: 0,
            flags_extended: 0,
            path: self.path.clone(),
        })?;
        Ok(())
    }

    /// Removes the path's conflict entries, leaving it deleted in the merge result.
    pub fn remove_from(&self, index: &mut Index) -> Result<(), GitError> {
        // Index paths are bytes; going through `OsStr` keeps non-UTF-8 names intact.
        index.conflict_remove(Path::new(OsStr::from_bytes(&self.path)))?;
        Ok(())
    }
}

/// Every path that is the source or destination of a rename between `base` and
/// `ours` or between `base` and `theirs` (git's default similarity threshold, as the
/// merge itself uses). Without a merge base (unrelated histories) nothing was renamed.
pub(crate) fn renamed_paths(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    ours: &Tree<'_>,
    theirs: &Tree<'_>,
) -> Result<HashSet<Vec<u8>>, GitError> {
    let mut renamed = HashSet::new();
    let Some(base) = base else {
        return Ok(renamed);
    };
    for side in [ours, theirs] {
        let mut diff = repo.diff_tree_to_tree(Some(base), Some(side), None)?;
        diff.find_similar(Some(DiffFindOptions::new().renames(true)))?;
        for delta in diff.deltas().filter(|d| d.status() == Delta::Renamed) {
            for file in [delta.old_file(), delta.new_file()] {
                if let Some(path) = file.path_bytes() {
                    renamed.insert(path.to_vec());
                }
            }
        }
    }
    Ok(renamed)
}

/// Every conflicted path of `index`, in index (path) order.
pub(crate) fn collect_conflicts(index: &Index) -> Result<Vec<Conflict>, GitError> {
    let mut out = Vec::new();
    for c in index.conflicts()? {
        if let Some(conflict) = Conflict::from_index(c?) {
            out.push(conflict);
        }
    }
    Ok(out)
}
