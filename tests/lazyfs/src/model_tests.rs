//! The POSIX durability rules the model stands for, one test each: what survives a power cut
//! and what does not.

use std::ffi::OsStr;

use crate::model::{Errno, Kind, Model, ROOT};

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

const NOT_OPEN: &dyn Fn(u64) -> bool = &|_| false;

/// A model with a durable directory `d` holding a durable file `f` with `bytes`.
fn with_durable_file(bytes: &[u8]) -> (Model, u64, u64) {
    let mut m = Model::new(0o755);
    let dir = m.create(ROOT, name("d"), Kind::Dir, 0o755).unwrap();
    let file = m.create(dir, name("f"), Kind::File, 0o644).unwrap();
    m.write(file, 0, bytes).unwrap();
    m.sync(file).unwrap();
    m.sync(dir).unwrap();
    m.sync(ROOT).unwrap();
    (m, dir, file)
}

#[test]
fn write_then_fsync_survives() {
    let (mut m, dir, file) = with_durable_file(b"hello");
    m.power_cut();
    assert_eq!(m.lookup(dir, name("f")), Ok(file));
    assert_eq!(m.read(file, 0, 100).unwrap(), b"hello");
}

#[test]
fn write_without_fsync_is_lost() {
    let (mut m, dir, file) = with_durable_file(b"hello");
    assert_eq!(m.unsynced_count(), 0);
    m.write(file, 5, b" world").unwrap();
    m.write(file, 0, b"J").unwrap();
    assert_eq!(m.read(file, 0, 100).unwrap(), b"Jello world");
    assert_eq!(m.power_cut(), 1);
    let file = m.lookup(dir, name("f")).unwrap();
    assert_eq!(m.read(file, 0, 100).unwrap(), b"hello");
    assert_eq!(m.attr(file).unwrap().size, 5);
}

#[test]
fn only_the_synced_prefix_of_appends_survives() {
    let (mut m, _dir, file) = with_durable_file(b"");
    m.write(file, 0, b"one,").unwrap();
    m.sync(file).unwrap();
    m.write(file, 4, b"two,").unwrap();
    m.power_cut();
    assert_eq!(m.read(file, 0, 100).unwrap(), b"one,");
}

#[test]
fn create_without_directory_fsync_is_lost_even_if_the_file_was_synced() {
    let (mut m, dir, _) = with_durable_file(b"x");
    let new = m.create(dir, name("new"), Kind::File, 0o644).unwrap();
    m.write(new, 0, b"data").unwrap();
    m.sync(new).unwrap();
    m.power_cut();
    assert_eq!(m.lookup(dir, name("new")), Err(Errno(libc::ENOENT)));
    // The orphaned inode is freed, as a journal replay would.
    assert_eq!(m.attr(new), Err(Errno(libc::ENOENT)));
}

#[test]
fn create_with_directory_fsync_survives_and_its_unsynced_content_comes_back_empty() {
    let (mut m, dir, _) = with_durable_file(b"x");
    let synced = m.create(dir, name("synced"), Kind::File, 0o644).unwrap();
    m.write(synced, 0, b"kept").unwrap();
    m.sync(synced).unwrap();
    let unsynced = m.create(dir, name("unsynced"), Kind::File, 0o644).unwrap();
    m.write(unsynced, 0, b"lost").unwrap();
    m.sync(dir).unwrap();
    m.power_cut();
    let synced = m.lookup(dir, name("synced")).unwrap();
    assert_eq!(m.read(synced, 0, 100).unwrap(), b"kept");
    let unsynced = m.lookup(dir, name("unsynced")).unwrap();
    assert_eq!(m.attr(unsynced).unwrap().size, 0);
}

#[test]
fn a_new_directory_needs_its_parent_synced() {
    let mut m = Model::new(0o755);
    let dir = m.create(ROOT, name("wal"), Kind::Dir, 0o755).unwrap();
    let file = m.create(dir, name("seg"), Kind::File, 0o644).unwrap();
    m.write(file, 0, b"entries").unwrap();
    m.sync(file).unwrap();
    m.sync(dir).unwrap();
    m.power_cut();
    assert_eq!(m.lookup(ROOT, name("wal")), Err(Errno(libc::ENOENT)));
}

#[test]
fn rename_without_directory_fsync_is_undone() {
    let (mut m, dir, file) = with_durable_file(b"old");
    let tmp = m.create(dir, name("f.tmp"), Kind::File, 0o644).unwrap();
    m.write(tmp, 0, b"new").unwrap();
    m.sync(tmp).unwrap();
    m.rename(dir, name("f.tmp"), dir, name("f"), NOT_OPEN)
        .unwrap();
    assert_eq!(
        m.read(m.lookup(dir, name("f")).unwrap(), 0, 10).unwrap(),
        b"new"
    );
    m.power_cut();
    assert_eq!(m.lookup(dir, name("f")), Ok(file));
    assert_eq!(m.read(file, 0, 10).unwrap(), b"old");
    assert_eq!(m.lookup(dir, name("f.tmp")), Err(Errno(libc::ENOENT)));
}

#[test]
fn rename_with_directory_fsync_survives() {
    let (mut m, dir, _) = with_durable_file(b"old");
    let tmp = m.create(dir, name("f.tmp"), Kind::File, 0o644).unwrap();
    m.write(tmp, 0, b"new").unwrap();
    m.sync(tmp).unwrap();
    m.rename(dir, name("f.tmp"), dir, name("f"), NOT_OPEN)
        .unwrap();
    m.sync(dir).unwrap();
    m.power_cut();
    let f = m.lookup(dir, name("f")).unwrap();
    assert_eq!(m.read(f, 0, 10).unwrap(), b"new");
    assert_eq!(m.lookup(dir, name("f.tmp")), Err(Errno(libc::ENOENT)));
}

#[test]
fn unlink_without_directory_fsync_is_undone() {
    let (mut m, dir, file) = with_durable_file(b"still here");
    m.unlink(dir, name("f"), NOT_OPEN).unwrap();
    assert_eq!(m.lookup(dir, name("f")), Err(Errno(libc::ENOENT)));
    m.power_cut();
    assert_eq!(m.lookup(dir, name("f")), Ok(file));
    assert_eq!(m.read(file, 0, 100).unwrap(), b"still here");
}

#[test]
fn unlink_with_directory_fsync_survives_and_frees_the_inode() {
    let (mut m, dir, file) = with_durable_file(b"gone");
    let before = m.inode_count();
    m.unlink(dir, name("f"), NOT_OPEN).unwrap();
    m.sync(dir).unwrap();
    m.power_cut();
    assert_eq!(m.lookup(dir, name("f")), Err(Errno(libc::ENOENT)));
    assert_eq!(m.attr(file), Err(Errno(libc::ENOENT)));
    assert_eq!(m.inode_count(), (before.0 - 1, before.1 - 1));
}

#[test]
fn truncate_without_fsync_is_undone_and_with_fsync_survives() {
    let (mut m, _dir, file) = with_durable_file(b"0123456789");
    m.set_size(file, 4).unwrap();
    m.power_cut();
    assert_eq!(m.read(file, 0, 100).unwrap(), b"0123456789");
    m.set_size(file, 4).unwrap();
    m.sync(file).unwrap();
    m.set_size(file, 2).unwrap();
    m.power_cut();
    assert_eq!(m.read(file, 0, 100).unwrap(), b"0123");
    // Growing by truncate reads zeros.
    m.set_size(file, 6).unwrap();
    assert_eq!(m.read(file, 0, 100).unwrap(), b"0123\0\0");
}

#[test]
fn preallocation_is_lost_without_fsync_and_reads_zeros_with_it() {
    let (mut m, _dir, file) = with_durable_file(b"abc");
    m.fallocate(file, 0, 8, 0).unwrap();
    assert_eq!(m.attr(file).unwrap().size, 8);
    m.power_cut();
    assert_eq!(m.attr(file).unwrap().size, 3);
    m.fallocate(file, 0, 8, 0).unwrap();
    m.sync(file).unwrap();
    // A record written into preallocated space and not synced: the durable bytes are zeros,
    // which is how the log recognises its clean end.
    m.write(file, 3, b"rec").unwrap();
    m.power_cut();
    assert_eq!(m.read(file, 0, 100).unwrap(), b"abc\0\0\0\0\0");
}

#[test]
fn fallocate_keep_size_changes_nothing_visible_and_other_modes_are_refused() {
    let (mut m, _dir, file) = with_durable_file(b"abc");
    m.fallocate(file, 0, 100, libc::FALLOC_FL_KEEP_SIZE)
        .unwrap();
    assert_eq!(m.attr(file).unwrap().size, 3);
    assert_eq!(
        m.fallocate(
            file,
            0,
            2,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE
        ),
        Err(Errno(libc::EOPNOTSUPP))
    );
    assert_eq!(m.read(file, 0, 10).unwrap(), b"abc");
}

#[test]
fn posix_errors_for_bad_requests_leave_the_tree_unchanged() {
    let (mut m, dir, file) = with_durable_file(b"x");
    assert_eq!(
        m.create(dir, name("f"), Kind::File, 0o644),
        Err(Errno(libc::EEXIST))
    );
    assert_eq!(m.rmdir(ROOT, name("d")), Err(Errno(libc::ENOTEMPTY)));
    assert_eq!(
        m.unlink(ROOT, name("d"), NOT_OPEN),
        Err(Errno(libc::EISDIR))
    );
    assert_eq!(m.write(dir, 0, b"x"), Err(Errno(libc::EISDIR)));
    assert_eq!(
        m.rename(ROOT, name("d"), dir, name("inside"), NOT_OPEN),
        Err(Errno(libc::EINVAL))
    );
    assert_eq!(
        m.rename(dir, name("f"), ROOT, name("d"), NOT_OPEN),
        Err(Errno(libc::EISDIR))
    );
    assert_eq!(m.lookup(file, name("x")), Err(Errno(libc::ENOTDIR)));
    assert_eq!(m.lookup(dir, name("f")), Ok(file));
    assert_eq!(m.lookup(ROOT, name("d")), Ok(dir));
}

#[test]
fn an_unlinked_file_stays_readable_while_open_and_goes_on_release() {
    let (mut m, dir, file) = with_durable_file(b"open");
    m.unlink(dir, name("f"), &|ino| ino == file).unwrap();
    assert_eq!(m.read(file, 0, 10).unwrap(), b"open");
    m.sync(dir).unwrap();
    m.release(file);
    assert_eq!(m.attr(file), Err(Errno(libc::ENOENT)));
}

#[test]
fn durable_entries_list_what_a_power_cut_keeps() {
    let (mut m, dir, _) = with_durable_file(b"kept");
    let lost = m.create(dir, name("lost"), Kind::File, 0o600).unwrap();
    m.write(lost, 0, b"x").unwrap();
    m.sync(lost).unwrap();
    let entries = m.durable_entries();
    let names: Vec<String> = entries
        .iter()
        .map(|(path, ..)| {
            path.iter()
                .map(|c| c.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    assert_eq!(names, ["d", "d/f"]);
    assert_eq!(entries[1].3, b"kept");
}

#[test]
fn closing_a_synced_file_before_its_directory_is_synced_keeps_its_content() {
    let mut m = Model::new(0o755);
    let file = m.create(ROOT, name("f"), Kind::File, 0o644).unwrap();
    m.write(file, 0, b"synced").unwrap();
    m.sync(file).unwrap();
    m.release(file);
    m.sync(ROOT).unwrap();
    m.power_cut();
    assert_eq!(m.read(file, 0, 10).unwrap(), b"synced");
}
