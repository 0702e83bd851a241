//! The workspace's own binaries for tests and examples: an environment variable naming a
//! prebuilt file wins; otherwise `cargo build` in the profile of the running executable (a
//! test in `<target>/<profile>/deps/`, an example in `<target>/<profile>/examples/`), once per
//! process for each binary.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Context, Result};

/// `percyd`: `$PERCYD_BIN`, or built with cargo once per process.
pub fn percyd_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    cached(&BINARY, || {
        build_binary(
            &["build", "-p", "percy-server", "--bin", "percyd"],
            "percyd",
            "PERCYD_BIN",
        )
    })
}

/// `percyctl`: `$PERCYCTL_BIN`, or built with cargo once per process.
pub fn percyctl_binary() -> Result<PathBuf> {
    static BINARY: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    cached(&BINARY, || {
        build_binary(
            &["build", "-p", "percyctl", "--bin", "percyctl"],
            "percyctl",
            "PERCYCTL_BIN",
        )
    })
}

/// The first outcome of `build` for the whole process (a failed build is not retried: the
/// next caller gets the same error).
fn cached(
    cell: &OnceLock<std::result::Result<PathBuf, String>>,
    build: impl FnOnce() -> Result<PathBuf>,
) -> Result<PathBuf> {
    cell.get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

/// The target profile dir the running executable lives in (`<target>/<profile>`).
pub fn profile_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_owned)
        .ok_or_else(|| anyhow!("cannot find the target dir from {}", exe.display()))
}

/// Runs `cargo <args>` (adding `--release` for a release build of the caller) and returns
/// `<profile dir>/<relative>`, unless `env_override` names the file.
pub fn build_binary(args: &[&str], relative: &str, env_override: &str) -> Result<PathBuf> {
    if let Ok(path) = std::env::var(env_override) {
        return Ok(PathBuf::from(path));
    }
    let profile = profile_dir()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.args(args);
    if profile.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("cargo {} failed: {status}", args.join(" "));
    }
    let binary = profile.join(relative);
    if !binary.exists() {
        bail!("{} missing after the build", binary.display());
    }
    Ok(binary)
}
