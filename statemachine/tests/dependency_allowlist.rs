//! The state machine must stay pure: no async runtime, storage or network crate may become a
//! normal (or build) dependency. This reads our own Cargo.toml and fails on anything outside
//! the allowlist, so adding e.g. tokio here is a deliberate, reviewed change.

use std::collections::BTreeSet;

const ALLOWED: &[&str] = &[
    "serde",
    "serde_json",
    "postcard",
    "sha2",
    "hex",
    "thiserror",
    // The task store's id index (a plain hash table; no I/O, and a fixed hasher).
    "hashbrown",
];

/// Names of the dependencies declared in every section that affects the library build:
/// `[dependencies]`, `[build-dependencies]`, `[target.*.dependencies]` and their
/// `[dependencies.<name>]` table forms. `[dev-dependencies]` are for tests only.
fn declared_dependencies(manifest: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_dependency_table = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let header = header.trim_start_matches('[').trim_end_matches(']').trim();
            let header = header.replace(['"', '\''], "");
            in_dependency_table = false;
            if header.contains("dev-dependencies") {
                continue;
            }
            for kind in ["dependencies", "build-dependencies"] {
                if header == kind || header.ends_with(&format!(".{kind}")) {
                    in_dependency_table = true;
                }
                // `[dependencies.tokio]` or `[target.x.dependencies.tokio]`
                if let Some((_, name)) = header.split_once(&format!("{kind}.")) {
                    if header.starts_with(kind) || header.contains(&format!(".{kind}.")) {
                        names.insert(name.to_string());
                    }
                }
            }
            continue;
        }
        if in_dependency_table {
            if let Some((name, _)) = line.split_once('=') {
                let name = name.trim().trim_matches('"');
                // `serde.workspace = true` declares `serde`.
                let name = name.split('.').next().unwrap_or(name);
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn only_pure_dependencies() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let manifest = std::fs::read_to_string(path).expect("read statemachine/Cargo.toml");
    let declared = declared_dependencies(&manifest);
    assert!(
        declared.contains("serde"),
        "parser found nothing: {declared:?}"
    );
    let forbidden: Vec<&String> = declared
        .iter()
        .filter(|name| !ALLOWED.contains(&name.as_str()))
        .collect();
    assert!(
        forbidden.is_empty(),
        "percy-statemachine must not depend on {forbidden:?}: it is pure (no I/O, no runtime, no storage, no network)"
    );
}

#[test]
fn the_parser_catches_every_form() {
    let manifest = r#"
[package]
name = "x"

[dependencies]
serde.workspace = true
tokio = { version = "1" }

[dependencies.sled]
version = "0.34"

[target.'cfg(unix)'.dependencies]
tonic = "0.14"

[build-dependencies]
openraft = "0.9"

[dev-dependencies]
proptest = "1"
"#;
    let declared = declared_dependencies(manifest);
    let expected: BTreeSet<String> = ["serde", "tokio", "sled", "tonic", "openraft"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(declared, expected);
}
