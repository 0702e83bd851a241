//! The backing directory: what the filesystem starts from when mounted (all of it durable)
//! and where its durable tree is written when unmounted, so a failed run's data dirs can be
//! read afterwards with ordinary tools.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::LazyFsError;
use crate::model::{Kind, Model, ROOT};

fn io<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(std::io::Error) -> LazyFsError + 'a {
    move |source| LazyFsError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// A model holding everything under `dir` (regular files and directories; anything else is
/// refused), all of it durable.
pub fn load(dir: &Path) -> Result<Model, LazyFsError> {
    let root_mode = std::fs::metadata(dir)
        .map_err(io(dir, "reading the backing directory"))?
        .permissions()
        .mode()
        & 0o7777;
    let mut model = Model::new(root_mode);
    let mut stack: Vec<(PathBuf, u64)> = vec![(dir.to_path_buf(), ROOT)];
    while let Some((path, ino)) = stack.pop() {
        for entry in std::fs::read_dir(&path).map_err(io(&path, "listing"))? {
            let entry = entry.map_err(io(&path, "listing"))?;
            let child = entry.path();
            let meta = std::fs::symlink_metadata(&child).map_err(io(&child, "reading"))?;
            let mode = meta.permissions().mode() & 0o7777;
            let name = entry.file_name();
            let loaded = if meta.is_dir() {
                let child_ino = model.load_dir(ino, &name, mode);
                if let Ok(child_ino) = child_ino {
                    stack.push((child.clone(), child_ino));
                }
                child_ino
            } else if meta.is_file() {
                let bytes = std::fs::read(&child).map_err(io(&child, "reading"))?;
                model.load_file(ino, &name, mode, &bytes)
            } else {
                return Err(LazyFsError::Unsupported(child));
            };
            loaded.map_err(|e| LazyFsError::Model {
                path: child.clone(),
                errno: e.0,
            })?;
        }
    }
    Ok(model)
}

/// Replaces what `dir` holds with the model's durable tree.
pub fn save(model: &Model, dir: &Path) -> Result<(), LazyFsError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir, "listing"))? {
        let path = entry.map_err(io(dir, "listing"))?.path();
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(io(&path, "clearing the backing directory"))?;
    }
    for (components, kind, mode, bytes) in model.durable_entries() {
        let path = components
            .iter()
            .fold(dir.to_path_buf(), |path, c: &OsString| path.join(c));
        match kind {
            Kind::Dir => std::fs::create_dir(&path).map_err(io(&path, "creating"))?,
            Kind::File => std::fs::write(&path, &bytes).map_err(io(&path, "writing"))?,
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(io(&path, "setting permissions on"))?;
    }
    Ok(())
}
