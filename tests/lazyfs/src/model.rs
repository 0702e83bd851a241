//! What a power cut keeps: a pure model of a filesystem as two trees of inodes, the *current*
//! one every operation changes and the *durable* one the disk would come back with.
//!
//! The POSIX rules it models (stricter than ext4's journal, which often persists more):
//! - `write`, `truncate` and `fallocate` change only the current tree; `fsync`/`fdatasync` of a
//!   file copies its content and size to the durable tree (as an unlinked inode if no durable
//!   directory names it yet).
//! - Creating, removing and renaming an entry changes only the current tree; `fsync` of the
//!   directory copies its entries to the durable tree. A file created and synced but whose
//!   directory was not is lost; a rename whose directory was not synced is undone.
//! - An entry made durable for an inode whose content never was comes back empty (a file of
//!   size 0, an empty directory), as on a filesystem that orders metadata before data.
//! - [`Model::power_cut`] makes the current tree the durable one.
//!
//! Inode numbers are the FUSE node ids: the root is [`ROOT`]. No I/O here: the FUSE adapter
//! (`fs.rs`) and the backing directory (`backing.rs`) drive it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{OsStr, OsString};

use crate::content::Content;

/// The root directory's inode (FUSE's `FUSE_ROOT_ID`).
pub const ROOT: u64 = 1;

/// A refused operation, as the errno the kernel should see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("errno {0}")]
pub struct Errno(pub i32);

pub type Result<T> = std::result::Result<T, Errno>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

#[derive(Debug, Clone)]
enum Body {
    File(Content),
    Dir(BTreeMap<OsString, u64>),
}

#[derive(Debug, Clone)]
struct Node {
    body: Body,
    /// Permission bits.
    mode: u32,
    /// Directory entries naming this inode in the same tree (the root counts one).
    links: u32,
}

impl Node {
    fn new(kind: Kind, mode: u32) -> Node {
        let body = match kind {
            Kind::File => Body::File(Content::default()),
            Kind::Dir => Body::Dir(BTreeMap::new()),
        };
        Node {
            body,
            mode,
            links: 0,
        }
    }

    fn kind(&self) -> Kind {
        match self.body {
            Body::File(_) => Kind::File,
            Body::Dir(_) => Kind::Dir,
        }
    }
}

/// What `getattr` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: Kind,
    pub size: u64,
    pub allocated: u64,
    pub mode: u32,
    pub links: u32,
}

#[derive(Debug, Clone, Default)]
struct Tree {
    nodes: HashMap<u64, Node>,
}

impl Tree {
    fn with_root(mode: u32) -> Tree {
        let mut root = Node::new(Kind::Dir, mode);
        root.links = 1;
        Tree {
            nodes: HashMap::from([(ROOT, root)]),
        }
    }

    fn node(&self, ino: u64) -> Result<&Node> {
        self.nodes.get(&ino).ok_or(Errno(libc::ENOENT))
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(Errno(libc::ENOENT))
    }

    fn entries(&self, ino: u64) -> Result<&BTreeMap<OsString, u64>> {
        match &self.node(ino)?.body {
            Body::Dir(entries) => Ok(entries),
            Body::File(_) => Err(Errno(libc::ENOTDIR)),
        }
    }

    fn entries_mut(&mut self, ino: u64) -> Result<&mut BTreeMap<OsString, u64>> {
        match &mut self.node_mut(ino)?.body {
            Body::Dir(entries) => Ok(entries),
            Body::File(_) => Err(Errno(libc::ENOTDIR)),
        }
    }

    fn content_mut(&mut self, ino: u64) -> Result<&mut Content> {
        match &mut self.node_mut(ino)?.body {
            Body::File(content) => Ok(content),
            Body::Dir(_) => Err(Errno(libc::EISDIR)),
        }
    }

    fn add_link(&mut self, ino: u64) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.links += 1;
        }
    }

    /// Drops one link; an inode left with none goes unless `keep` says something still uses it
    /// (an open file, or in the durable tree an inode the current tree still has).
    fn remove_link(&mut self, ino: u64, keep: &dyn Fn(u64) -> bool) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.links = node.links.saturating_sub(1);
        if node.links == 0 && !keep(ino) {
            self.forget(ino, keep);
        }
    }

    /// Removes an unlinked inode (and, for a directory, drops its entries' links).
    fn forget(&mut self, ino: u64, keep: &dyn Fn(u64) -> bool) {
        if let Some(node) = self.nodes.remove(&ino) {
            if let Body::Dir(entries) = node.body {
                for child in entries.into_values() {
                    self.remove_link(child, keep);
                }
            }
        }
    }
}

/// The filesystem's state: current and durable trees.
#[derive(Debug, Clone)]
pub struct Model {
    current: Tree,
    durable: Tree,
    next_ino: u64,
    /// Inodes changed since they (or, for entries, their directory) were last synced: what a
    /// power cut would lose something of.
    unsynced: HashSet<u64>,
}

impl Model {
    /// An empty filesystem whose root has permission bits `root_mode`; the empty root is
    /// durable.
    pub fn new(root_mode: u32) -> Model {
        let tree = Tree::with_root(root_mode);
        Model {
            current: tree.clone(),
            durable: tree,
            next_ino: ROOT + 1,
            unsynced: HashSet::new(),
        }
    }

    pub fn attr(&self, ino: u64) -> Result<Attr> {
        let node = self.current.node(ino)?;
        let (size, allocated) = match &node.body {
            Body::File(content) => (content.size(), content.allocated_bytes()),
            Body::Dir(entries) => (entries.len() as u64, 0),
        };
        Ok(Attr {
            ino,
            kind: node.kind(),
            size,
            allocated,
            mode: node.mode,
            links: node.links,
        })
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64> {
        self.current
            .entries(parent)?
            .get(name)
            .copied()
            .ok_or(Errno(libc::ENOENT))
    }

    /// The entries of a directory, in name order.
    pub fn list(&self, dir: u64) -> Result<Vec<(OsString, u64, Kind)>> {
        let entries = self.current.entries(dir)?;
        entries
            .iter()
            .map(|(name, &ino)| Ok((name.clone(), ino, self.current.node(ino)?.kind())))
            .collect()
    }

    /// Creates an entry for a new inode: `EEXIST` if the name is taken.
    pub fn create(&mut self, parent: u64, name: &OsStr, kind: Kind, mode: u32) -> Result<u64> {
        check_name(name)?;
        if self.current.entries(parent)?.contains_key(name) {
            return Err(Errno(libc::EEXIST));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let mut node = Node::new(kind, mode);
        node.links = 1;
        self.current.nodes.insert(ino, node);
        self.current
            .entries_mut(parent)?
            .insert(name.to_owned(), ino);
        self.unsynced.extend([parent, ino]);
        Ok(ino)
    }

    /// Removes a file's entry (`unlink`); `open` says whether a handle still uses the inode.
    pub fn unlink(&mut self, parent: u64, name: &OsStr, open: &dyn Fn(u64) -> bool) -> Result<()> {
        let ino = self.lookup(parent, name)?;
        if self.current.node(ino)?.kind() == Kind::Dir {
            return Err(Errno(libc::EISDIR));
        }
        self.current.entries_mut(parent)?.remove(name);
        self.current.remove_link(ino, open);
        self.unsynced.insert(parent);
        Ok(())
    }

    /// Removes an empty directory's entry.
    pub fn rmdir(&mut self, parent: u64, name: &OsStr) -> Result<()> {
        let ino = self.lookup(parent, name)?;
        if !self.current.entries(ino)?.is_empty() {
            return Err(Errno(libc::ENOTEMPTY));
        }
        self.current.entries_mut(parent)?.remove(name);
        self.current.remove_link(ino, &|_| false);
        self.unsynced.insert(parent);
        Ok(())
    }

    /// Moves an entry, replacing what the new name named (a file, or an empty directory of a
    /// directory), as `rename(2)` without flags.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        open: &dyn Fn(u64) -> bool,
    ) -> Result<()> {
        check_name(new_name)?;
        let ino = self.lookup(parent, name)?;
        let kind = self.current.node(ino)?.kind();
        self.current.entries(new_parent)?;
        if kind == Kind::Dir && self.is_within(new_parent, ino)? {
            return Err(Errno(libc::EINVAL));
        }
        let replaced = self.current.entries(new_parent)?.get(new_name).copied();
        if let Some(old) = replaced {
            if old == ino {
                return Ok(());
            }
            match (kind, self.current.node(old)?.kind()) {
                (Kind::File, Kind::Dir) => return Err(Errno(libc::EISDIR)),
                (Kind::Dir, Kind::File) => return Err(Errno(libc::ENOTDIR)),
                (Kind::Dir, Kind::Dir) if !self.current.entries(old)?.is_empty() => {
                    return Err(Errno(libc::ENOTEMPTY))
                }
                _ => {}
            }
        }
        self.current.entries_mut(parent)?.remove(name);
        self.current
            .entries_mut(new_parent)?
            .insert(new_name.to_owned(), ino);
        if let Some(old) = replaced {
            self.current.remove_link(old, open);
        }
        self.unsynced.extend([parent, new_parent]);
        Ok(())
    }

    /// Whether `dir` is `ancestor` or below it.
    fn is_within(&self, dir: u64, ancestor: u64) -> Result<bool> {
        if dir == ancestor {
            return Ok(true);
        }
        // Directories have one parent; search from the ancestor down (trees here are small).
        let mut stack = vec![ancestor];
        while let Some(at) = stack.pop() {
            for &child in self.current.entries(at)?.values() {
                if child == dir {
                    return Ok(true);
                }
                if self.current.node(child)?.kind() == Kind::Dir {
                    stack.push(child);
                }
            }
        }
        Ok(false)
    }

    pub fn read(&self, ino: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        match &self.current.node(ino)?.body {
            Body::File(content) => Ok(content.read(offset, len)),
            Body::Dir(_) => Err(Errno(libc::EISDIR)),
        }
    }

    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<usize> {
        self.current.content_mut(ino)?.write(offset, data);
        self.unsynced.insert(ino);
        Ok(data.len())
    }

    /// `truncate`/`ftruncate`: shrinks or grows (with zeros) to `size`.
    pub fn set_size(&mut self, ino: u64, size: u64) -> Result<()> {
        self.current.content_mut(ino)?.set_size(size);
        self.unsynced.insert(ino);
        Ok(())
    }

    pub fn set_mode(&mut self, ino: u64, mode: u32) -> Result<()> {
        self.current.node_mut(ino)?.mode = mode;
        Ok(())
    }

    /// `fallocate(2)` with mode 0 (grow the file to cover the range, reading zeros) or
    /// `FALLOC_FL_KEEP_SIZE` (reserve only: nothing visible changes). Other modes (punching
    /// holes, zeroing, collapsing) are refused with `EOPNOTSUPP`, as by filesystems without them.
    pub fn fallocate(&mut self, ino: u64, offset: u64, len: u64, mode: i32) -> Result<()> {
        let content = self.current.content_mut(ino)?;
        let end = offset.checked_add(len).ok_or(Errno(libc::EFBIG))?;
        match mode {
            0 => {
                if end > content.size() {
                    content.set_size(end);
                    self.unsynced.insert(ino);
                }
                Ok(())
            }
            libc::FALLOC_FL_KEEP_SIZE => Ok(()),
            _ => Err(Errno(libc::EOPNOTSUPP)),
        }
    }

    /// `fsync`/`fdatasync` of a file: its content and size become durable. Of a directory: its
    /// entries become durable (inodes the durable tree lacks come back empty).
    pub fn sync(&mut self, ino: u64) -> Result<()> {
        let node = self.current.node(ino)?.clone();
        self.unsynced.remove(&ino);
        match node.body {
            Body::File(content) => {
                let durable = self.durable.nodes.entry(ino).or_insert_with(|| Node {
                    body: Body::File(Content::default()),
                    mode: node.mode,
                    links: 0,
                });
                durable.body = Body::File(content);
                durable.mode = node.mode;
                Ok(())
            }
            Body::Dir(entries) => {
                let durable_node = self.durable.nodes.entry(ino).or_insert_with(|| Node {
                    body: Body::Dir(BTreeMap::new()),
                    mode: node.mode,
                    links: 0,
                });
                durable_node.mode = node.mode;
                let old = match &mut durable_node.body {
                    Body::Dir(old) => std::mem::replace(old, entries.clone()),
                    // The inode cannot change kind; a durable file here is a bug upstream.
                    Body::File(_) => return Err(Errno(libc::EIO)),
                };
                for &child in entries.values() {
                    if !self.durable.nodes.contains_key(&child) {
                        let kind = self.current.node(child)?.kind();
                        let mode = self.current.node(child)?.mode;
                        self.durable.nodes.insert(child, Node::new(kind, mode));
                    }
                    self.durable.add_link(child);
                }
                let current = &self.current;
                let still_current = |ino: u64| current.nodes.contains_key(&ino);
                for child in old.into_values() {
                    self.durable.remove_link(child, &still_current);
                }
                Ok(())
            }
        }
    }

    /// A power cut: everything not made durable is gone. Durable inodes no directory names
    /// (synced files whose entry never was) go too, as a journal replay frees them.
    /// Returns how many inodes lost something.
    pub fn power_cut(&mut self) -> usize {
        let lost = self.unsynced.len();
        self.unsynced.clear();
        let unlinked: Vec<u64> = self
            .durable
            .nodes
            .iter()
            .filter(|(_, node)| node.links == 0)
            .map(|(&ino, _)| ino)
            .collect();
        for ino in unlinked {
            self.durable.forget(ino, &|_| false);
        }
        self.current = self.durable.clone();
        lost
    }

    /// How many inodes have changes a power cut would lose.
    pub fn unsynced_count(&self) -> usize {
        self.unsynced.len()
    }

    /// An inode no longer named and no longer open goes from the current tree (and from the
    /// durable one if no durable directory names it either).
    pub fn release(&mut self, ino: u64) {
        if self.current.nodes.get(&ino).is_some_and(|n| n.links == 0) {
            self.current.forget(ino, &|_| false);
            self.unsynced.remove(&ino);
        }
        let unlinked_durable = self.durable.nodes.get(&ino).is_some_and(|n| n.links == 0);
        if unlinked_durable && !self.current.nodes.contains_key(&ino) {
            let current = &self.current;
            self.durable
                .forget(ino, &|ino| current.nodes.contains_key(&ino));
        }
    }

    /// Loads a durable file or directory (what a backing directory holds when mounting).
    pub fn load_file(&mut self, parent: u64, name: &OsStr, mode: u32, bytes: &[u8]) -> Result<u64> {
        let ino = self.create(parent, name, Kind::File, mode)?;
        self.write(ino, 0, bytes)?;
        self.sync(ino)?;
        self.sync(parent)?;
        Ok(ino)
    }

    pub fn load_dir(&mut self, parent: u64, name: &OsStr, mode: u32) -> Result<u64> {
        let ino = self.create(parent, name, Kind::Dir, mode)?;
        self.sync(ino)?;
        self.sync(parent)?;
        Ok(ino)
    }

    /// The durable tree, walked depth-first: `(path components, kind, mode, bytes)` for every
    /// entry reachable from the root (what a backing directory gets when unmounting).
    pub fn durable_entries(&self) -> Vec<(Vec<OsString>, Kind, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![(Vec::new(), ROOT)];
        while let Some((path, ino)) = stack.pop() {
            let Ok(Body::Dir(entries)) = self.durable.node(ino).map(|n| &n.body) else {
                continue;
            };
            for (name, &child) in entries {
                let Ok(node) = self.durable.node(child) else {
                    continue;
                };
                let mut child_path = path.clone();
                child_path.push(name.clone());
                match &node.body {
                    Body::File(content) => out.push((
                        child_path,
                        Kind::File,
                        node.mode,
                        content.read(0, content.size() as usize),
                    )),
                    Body::Dir(_) => {
                        out.push((child_path.clone(), Kind::Dir, node.mode, Vec::new()));
                        stack.push((child_path, child));
                    }
                }
            }
        }
        out
    }

    /// Inodes held in either tree (for tests of what is kept).
    pub fn inode_count(&self) -> (usize, usize) {
        (self.current.nodes.len(), self.durable.nodes.len())
    }
}

fn check_name(name: &OsStr) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(Errno(libc::EINVAL));
    }
    if name.len() > 255 {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    Ok(())
}
