//! Writes the seed inputs of every target into `DIR/<target>/` (default `tests/fuzz/corpus`):
//! valid encodings made with the code under test, which the fuzzer mutates from. Run again
//! after a format change.

use std::path::{Path, PathBuf};

use percy_fuzz::seeds;

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    for (target, inputs) in seeds::all() {
        let target_dir = dir.join(target);
        std::fs::create_dir_all(&target_dir)?;
        for (name, bytes) in inputs {
            std::fs::write(target_dir.join(format!("seed-{name}")), bytes)?;
        }
    }
    println!("seeds written under {}", dir.display());
    Ok(())
}
