//! A mounted lazy filesystem and its power switch.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use fuser::{BackgroundSession, MountOption};

use crate::backing;
use crate::error::LazyFsError;
use crate::fs::{LazyFs, Shared, State};

/// A mounted filesystem: unmounted (and its durable tree saved to the backing directory) by
/// [`Mounted::unmount`] or on drop.
pub struct Mounted {
    mountpoint: PathBuf,
    backing: PathBuf,
    state: Shared,
    session: Option<BackgroundSession>,
}

impl Mounted {
    /// Mounts at `mountpoint` (an existing directory) a filesystem holding what `backing`
    /// holds, all of it durable.
    pub fn mount(mountpoint: &Path, backing: &Path) -> Result<Mounted, LazyFsError> {
        let model = backing::load(backing)?;
        let state: Shared = Arc::new(Mutex::new(State::new(model)));
        let options = [
            MountOption::FSName("percy-lazyfs".into()),
            MountOption::Subtype("percy-lazyfs".into()),
            MountOption::RW,
            MountOption::NoAtime,
        ];
        let session = fuser::spawn_mount2(LazyFs::new(state.clone()), mountpoint, &options)
            .map_err(|source| LazyFsError::Mount {
                path: mountpoint.to_path_buf(),
                source,
            })?;
        Ok(Mounted {
            mountpoint: mountpoint.to_path_buf(),
            backing: backing.to_path_buf(),
            state,
            session: Some(session),
        })
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Drops every write not made durable, as a power cut would; returns how many files and
    /// directories lost something. Processes using the filesystem must be dead first: a
    /// handle opened before the cut refers to a file that may no longer exist.
    pub fn power_cut(&self) -> usize {
        let mut state = self.lock();
        state.forget_open();
        state.model.power_cut()
    }

    /// How many files and directories have changes a power cut would lose.
    pub fn unsynced_count(&self) -> usize {
        self.lock().model.unsynced_count()
    }

    /// Unmounts (lazily: a process still using it keeps it until it lets go) and writes the
    /// durable tree to the backing directory.
    pub fn unmount(mut self) -> Result<(), LazyFsError> {
        self.detach();
        let state = self.lock();
        backing::save(&state.model, &self.backing)
    }

    fn detach(&mut self) {
        let Some(session) = self.session.take() else {
            return;
        };
        if let Ok(path) = CString::new(self.mountpoint.as_os_str().as_bytes()) {
            // SAFETY: `path` is a valid NUL-terminated string that outlives the call.
            // MNT_DETACH: the mount goes now even if a straggler still has a file open; the
            // session's thread ends once the kernel lets go. Failure (not mounted any more)
            // leaves nothing to do.
            unsafe {
                libc::umount2(path.as_ptr(), libc::MNT_DETACH);
            }
        }
        // Dropping the session unmounts if the detach did not, and does not wait for the
        // thread.
        drop(session);
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.detach();
    }
}
