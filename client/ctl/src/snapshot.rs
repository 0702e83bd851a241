//! `percyctl snapshot save FILE` / `snapshot inspect FILE`: backups of the cluster's state,
//! like `etcdctl snapshot save` and `etcdutl snapshot status`. `percyd restore` seeds a new
//! cluster from the file.
//!
//! `save` checks the file it received completely (magic, version, lengths, SHA-256) before it
//! writes anything, writes it to a temporary file next to FILE, fsyncs it, renames it over
//! FILE and fsyncs the directory: FILE is either the old file or the whole new backup, even
//! across a crash.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use percy_client::backup::{self, Backup};
use serde::Serialize;

use crate::output::Output;
use crate::{Ctx, Refused};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Save a consistent, checksummed image of the cluster's state to FILE (admin token
    /// needed with --auth); prints its revision and size.
    Save {
        /// Where to write the backup (replaced atomically if it exists).
        file: PathBuf,
    },
    /// Check a backup file and show what it holds (revision, size, counts, checksum); needs no
    /// cluster.
    Inspect {
        /// The backup file.
        file: PathBuf,
    },
}

#[derive(Debug, Serialize)]
struct SavedView {
    file: String,
    revision: u64,
    size: u64,
    cluster_id: String,
    node_id: u64,
    sha256: String,
}

#[derive(Debug, Serialize)]
struct InspectView {
    file: String,
    format_version: u32,
    cluster_id: String,
    revision: u64,
    size: u64,
    image_size: u64,
    node_id: u64,
    created_ms: u64,
    agents: u64,
    tasks: u64,
    locks: u64,
    lock_waiters: u64,
    config_keys: u64,
    definitions: u64,
    tokens: u64,
    sha256: String,
    checksum_ok: bool,
}

pub async fn run(ctx: &Ctx, cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Save { file } => save(ctx, &file).await,
        Command::Inspect { file } => inspect(ctx.out, &file),
    }
}

async fn save(ctx: &Ctx, file: &Path) -> anyhow::Result<()> {
    let bytes = ctx.client.snapshot().await.context("taking a snapshot")?;
    let checked = decode(&bytes, "the snapshot the server sent")?;
    let view = SavedView {
        file: file.display().to_string(),
        revision: checked.header.revision,
        size: bytes.len() as u64,
        cluster_id: checked.header.cluster_id.clone(),
        node_id: checked.header.node_id,
        sha256: checked.checksum.clone(),
    };
    write_atomically(file, &bytes).with_context(|| format!("writing {}", file.display()))?;
    ctx.out.emit(&view, || {
        format!(
            "saved snapshot at revision {} ({} bytes) to {}",
            view.revision, view.size, view.file
        )
    })
}

/// `inspect` runs without a cluster (main calls it before connecting).
pub fn inspect(out: Output, file: &Path) -> anyhow::Result<()> {
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let checked = decode(&bytes, &file.display().to_string())?;
    let h = &checked.header;
    let c = h.counts.unwrap_or_default();
    let view = InspectView {
        file: file.display().to_string(),
        format_version: backup::FORMAT_VERSION,
        cluster_id: h.cluster_id.clone(),
        revision: h.revision,
        size: bytes.len() as u64,
        image_size: checked.image.len() as u64,
        node_id: h.node_id,
        created_ms: h.created_ms,
        agents: c.agents,
        tasks: c.tasks,
        locks: c.locks,
        lock_waiters: c.lock_waiters,
        config_keys: c.config_keys,
        definitions: c.definitions,
        tokens: c.tokens,
        sha256: checked.checksum.clone(),
        checksum_ok: true,
    };
    out.emit(&view, || {
        let rows = [
            ("file", view.file.clone()),
            ("format version", view.format_version.to_string()),
            ("cluster id", view.cluster_id.clone()),
            ("revision", view.revision.to_string()),
            ("size", format!("{} bytes", view.size)),
            ("image size", format!("{} bytes", view.image_size)),
            ("taken by node", view.node_id.to_string()),
            ("created (unix ms)", view.created_ms.to_string()),
            ("agents", view.agents.to_string()),
            ("tasks", view.tasks.to_string()),
            ("locks", view.locks.to_string()),
            ("lock waiters", view.lock_waiters.to_string()),
            ("config keys", view.config_keys.to_string()),
            ("definitions", view.definitions.to_string()),
            ("tokens", view.tokens.to_string()),
            ("sha256", view.sha256.clone()),
            ("checksum", "ok".to_string()),
        ];
        rows.iter()
            .map(|(k, v)| format!("{k:<18} {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// A damaged file is a negative outcome (exit 1), not a usage error.
fn decode<'a>(bytes: &'a [u8], what: &str) -> anyhow::Result<Backup<'a>> {
    backup::decode(bytes).map_err(|e| anyhow::Error::new(Refused(format!("{what}: {e}"))))
}

/// Temp file in FILE's directory, fsync, rename, fsync the directory.
fn write_atomically(file: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = file
        .file_name()
        .ok_or_else(|| std::io::Error::other("FILE names a directory"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, file)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _best_effort = std::fs::remove_file(&tmp);
    }
    written
}
