//! What can go wrong mounting, loading or saving.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LazyFsError {
    #[error("{action} {}: {source}", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error("{}: only regular files and directories can be loaded", .0.display())]
    Unsupported(PathBuf),
    #[error("{}: refused by the model (errno {errno})", path.display())]
    Model { path: PathBuf, errno: i32 },
    #[error("mounting on {}: {source} (needs /dev/fuse, and root or fusermount3)", path.display())]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
}
