//! The filesystem mounted on /dev/fuse and used through the kernel with ordinary file calls:
//! what a power cut keeps, what unmounting leaves in the backing directory, and the calls the
//! log and sled make (preallocation, file locks). Needs root (or fusermount3) and /dev/fuse,
//! as CI has.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;

use percy_lazyfs::Mounted;

struct Fixture {
    _dir: tempfile::TempDir,
    mount: Mounted,
}

fn mounted() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let backing = dir.path().join("backing");
    let point = dir.path().join("mnt");
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&point).unwrap();
    let mount = Mounted::mount(&point, &backing).unwrap_or_else(|e| panic!("{e}"));
    Fixture { _dir: dir, mount }
}

fn sync_dir(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn read(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
    bytes
}

#[test]
fn a_power_cut_keeps_what_was_synced_and_drops_the_rest() {
    let fx = mounted();
    let root = fx.mount.mountpoint().to_path_buf();
    let dir = root.join("data");
    fs::create_dir(&dir).unwrap();
    sync_dir(&root);

    // Synced file, entry synced: survives, up to its last fsync.
    let mut kept = File::create(dir.join("kept")).unwrap();
    kept.write_all(b"synced;").unwrap();
    kept.sync_data().unwrap();
    kept.write_all(b"not synced").unwrap();
    drop(kept);
    sync_dir(&dir);
    // Synced file whose directory was not synced after: its entry is lost.
    let mut orphan = File::create(dir.join("orphan")).unwrap();
    orphan.write_all(b"data").unwrap();
    orphan.sync_all().unwrap();
    drop(orphan);
    // A rename without a directory sync.
    fs::rename(dir.join("kept"), dir.join("renamed")).unwrap();
    assert_eq!(read(&dir.join("renamed")), b"synced;not synced");
    assert!(fx.mount.unsynced_count() > 0);

    let lost = fx.mount.power_cut();
    assert!(lost >= 2, "lost {lost}");
    assert_eq!(fx.mount.unsynced_count(), 0);

    assert_eq!(read(&dir.join("kept")), b"synced;");
    assert!(!dir.join("renamed").exists());
    assert!(!dir.join("orphan").exists());
    let mut names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["kept"]);
}

#[test]
fn a_directory_not_synced_into_its_parent_is_lost_with_its_synced_files() {
    let fx = mounted();
    let root = fx.mount.mountpoint().to_path_buf();
    let wal = root.join("wal");
    fs::create_dir(&wal).unwrap();
    let mut segment = File::create(wal.join("0.wal")).unwrap();
    segment.write_all(b"entries").unwrap();
    segment.sync_all().unwrap();
    sync_dir(&wal);
    fx.mount.power_cut();
    assert!(!wal.exists());
}

#[test]
fn preallocated_space_reads_zeros_and_unsynced_records_in_it_are_lost() {
    let fx = mounted();
    let root = fx.mount.mountpoint().to_path_buf();
    let path = root.join("segment");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .unwrap();
    sync_dir(&root);
    // SAFETY: fallocate only reads its integer arguments; `file` owns the descriptor.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, 1 << 20) };
    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    assert_eq!(file.metadata().unwrap().len(), 1 << 20);
    file.write_all_at(b"record-1", 0).unwrap();
    file.sync_data().unwrap();
    file.write_all_at(b"record-2", 8).unwrap();
    drop(file);
    fx.mount.power_cut();
    let bytes = read(&path);
    assert_eq!(bytes.len(), 1 << 20);
    assert_eq!(&bytes[..8], b"record-1");
    assert!(bytes[8..].iter().all(|&b| b == 0));
}

#[test]
fn truncation_is_undone_unless_synced() {
    let fx = mounted();
    let root = fx.mount.mountpoint().to_path_buf();
    let path = root.join("f");
    fs::write(&path, b"0123456789").unwrap();
    File::open(&path).unwrap().sync_all().unwrap();
    sync_dir(&root);
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(3)
        .unwrap();
    assert_eq!(read(&path), b"012");
    fx.mount.power_cut();
    assert_eq!(read(&path), b"0123456789");
}

#[test]
fn file_locks_work_and_are_released_with_the_file() {
    let fx = mounted();
    let path = fx.mount.mountpoint().join("lock");
    let first = File::create(&path).unwrap();
    first.try_lock().unwrap();
    let second = File::open(&path).unwrap();
    assert!(second.try_lock().is_err(), "a second lock was granted");
    drop(first);
    second.try_lock().unwrap();
}

#[test]
fn unmounting_writes_the_durable_tree_to_the_backing_directory_and_mounting_loads_it() {
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    let point = dir.path().join("mnt");
    fs::create_dir_all(backing.join("old")).unwrap();
    fs::write(backing.join("old/file"), b"from before").unwrap();
    fs::create_dir(&point).unwrap();

    let mount = Mounted::mount(&point, &backing).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(read(&point.join("old/file")), b"from before");
    fs::write(point.join("durable"), b"synced").unwrap();
    File::open(point.join("durable"))
        .unwrap()
        .sync_all()
        .unwrap();
    sync_dir(&point);
    fs::write(point.join("volatile"), b"never synced").unwrap();
    mount.unmount().unwrap();

    assert!(
        fs::read_dir(&point).unwrap().next().is_none(),
        "still mounted"
    );
    assert_eq!(fs::read(backing.join("durable")).unwrap(), b"synced");
    assert_eq!(fs::read(backing.join("old/file")).unwrap(), b"from before");
    assert!(!backing.join("volatile").exists());
}

#[test]
fn mounting_on_a_missing_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let Err(e) = Mounted::mount(&dir.path().join("absent"), dir.path()) else {
        panic!("mounted on a missing directory");
    };
    assert!(e.to_string().contains("mounting on"), "{e}");
}
