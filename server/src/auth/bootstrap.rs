//! The first admin token of a cluster with `--auth`, like `consul acl bootstrap`: the
//! bootstrapping node (the lowest id in `--peers`) writes a new token to
//! `<data-dir>/admin.token` (mode 0600) and proposes its hash with `bootstrap: true`, which the
//! state machine applies only in a cluster that never had a token. It runs on every start of
//! that node, so a crash between writing the file and the commit is finished by the next start
//! (the file is reused); once the cluster has tokens it does nothing.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use percy_statemachine::{Command, ErrorKind, Op, Outcome, Role, TokenSpec};

use super::secret;
use crate::context::NodeContext;
use crate::propose::propose;

/// The file the bootstrap admin token is written to, in the data dir.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// Pause between attempts while the cluster has no leader or quorum yet.
const RETRY_PAUSE: Duration = Duration::from_millis(500);
/// Name of the bootstrap token in listings.
const BOOTSTRAP_TOKEN_NAME: &str = "bootstrap-admin";

/// Where the admin token of this data dir goes.
pub fn admin_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join(ADMIN_TOKEN_FILE)
}

/// Runs until the cluster has tokens (made here or anywhere) or this node stops.
pub async fn run(ctx: Arc<NodeContext>) {
    let path = admin_token_path(&ctx.config.data_dir);
    loop {
        match attempt(&ctx, &path).await {
            Ok(()) => return,
            Err(why) => tracing::debug!(%why, "bootstrap admin token: retrying"),
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

async fn attempt(ctx: &NodeContext, path: &Path) -> Result<(), String> {
    // Decide on the leader's committed state, not on a lagging local log.
    crate::read::linearizable(ctx)
        .await
        .map_err(|s| s.message().to_owned())?;
    if ctx.state.read(|sm| sm.has_ever_had_tokens()) {
        return Ok(());
    }
    let token = read_or_create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let op = Op::CreateToken {
        spec: TokenSpec {
            role: Role::Admin,
            agent: None,
            name: BOOTSTRAP_TOKEN_NAME.to_owned(),
            secret_sha256: secret::hash(&token),
        },
        bootstrap: true,
    };
    let proposed = propose(ctx, Command::new(op))
        .await
        .map_err(|s| s.message().to_owned())?;
    match proposed.result.response {
        Ok(Outcome::TokenCreated(created)) => {
            tracing::warn!(
                token_id = created.id,
                path = %path.display(),
                "--auth: the bootstrap admin token is in {} (keep it secret; \
                 `percyctl --token-file {} token create ...` makes more)",
                path.display(),
                path.display()
            );
            Ok(())
        }
        // Another proposal made the cluster's tokens first: this file is no credential.
        Err(e) if e.kind == ErrorKind::FailedPrecondition => {
            let _ = std::fs::remove_file(path);
            Ok(())
        }
        other => Err(format!("unexpected answer {other:?}")),
    }
}

/// The token in `path`, or a new one written there (mode 0600, synced) first.
fn read_or_create(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(existing) if existing.trim().starts_with(secret::TOKEN_PREFIX) => {
            return Ok(existing.trim().to_owned())
        }
        Ok(_) => {
            return Err(std::io::Error::other(
                "exists but holds no Percy token; move it away",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let token = secret::generate();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()?;
    Ok(token)
}
