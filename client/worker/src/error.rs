//! Why a worker stops with an error. Everything that happens to one task (a failing command,
//! a lost claim) is not an error of the worker: it is reported on the task and logged.

use std::path::PathBuf;

use percy_client::ClientError;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid worker configuration: {0}")]
    Config(String),

    /// The cluster refused the registration (bad name, capabilities or labels).
    #[error("registering agent {name:?}: {source}")]
    Register { name: String, source: ClientError },

    #[error("preparing the inbox {}: {source}", path.display())]
    Inbox {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "another worker of this name is running with the state dir {}",
        .0.display()
    )]
    StateDirBusy(PathBuf),

    #[error("preparing the git repository {}: {source}", repo.display())]
    Git {
        repo: PathBuf,
        source: percy_git::GitError,
    },
}
