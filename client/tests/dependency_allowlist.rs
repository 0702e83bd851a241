//! The client library is what every program that talks to Percy links, so it must stay small:
//! the CLI, the worker runtime, the git pipeline and the load generator are crates of their
//! own, and their dependencies (clap, git2, tables, progress bars, histograms, anyhow, a log
//! subscriber) must not creep back in. This asks cargo for the library's normal dependency
//! tree and checks the direct ones against an allowlist and the whole tree against a denylist,
//! so adding one is a deliberate, reviewed change of this file.

use std::collections::BTreeSet;
use std::process::Command;

/// The library's direct normal dependencies.
const ALLOWED_DIRECT: &[&str] = &[
    "percy-proto",
    "tonic",
    "tokio",
    "tokio-stream",
    "futures",
    "thiserror",
    "rand",
    "tracing",
];

/// Crates that belong to the products built on the library, never to the library, even
/// transitively.
const DENIED: &[&str] = &[
    "clap",
    "git2",
    "libgit2-sys",
    "comfy-table",
    "indicatif",
    "hdrhistogram",
    "anyhow",
    "tracing-subscriber",
    "toml",
    "yaml_serde",
];

/// One package of `cargo tree --prefix depth -f '{p}'` output.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    depth: usize,
    name: String,
    proc_macro: bool,
}

/// Parses lines like `2tokio v1.48.0` or `3prost-derive v0.14.1 (proc-macro)`.
fn parse_line(line: &str) -> Option<Node> {
    let digits = line.chars().take_while(char::is_ascii_digit).count();
    let depth = line[..digits].parse().ok()?;
    let name = line[digits..].split_whitespace().next()?.to_owned();
    Some(Node {
        depth,
        name,
        proc_macro: line.ends_with("(proc-macro)") || line.contains("(proc-macro) "),
    })
}

/// What the library links: the direct dependencies (depth 1) and every package in the tree,
/// leaving out what only a proc macro uses (that runs inside the compiler and is never linked:
/// prost's derive macro, for one, uses anyhow).
fn linked(tree: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut direct = BTreeSet::new();
    let mut all = BTreeSet::new();
    // Depth of the proc macro whose subtree we are in, if any.
    let mut inside_proc_macro: Option<usize> = None;
    for node in tree.lines().filter_map(parse_line) {
        if let Some(depth) = inside_proc_macro {
            if node.depth > depth {
                continue;
            }
            inside_proc_macro = None;
        }
        if node.proc_macro {
            inside_proc_macro = Some(node.depth);
        }
        if node.depth == 1 {
            direct.insert(node.name.clone());
        }
        all.insert(node.name);
    }
    (direct, all)
}

fn cargo_tree() -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree",
            "--offline",
            "--manifest-path",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
            "-p",
            "percy-client",
            "-e",
            "normal",
            "--prefix",
            "depth",
            "-f",
            "{p}",
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("cargo tree prints UTF-8")
}

#[test]
fn the_library_links_only_what_it_needs() {
    let (direct, all) = linked(&cargo_tree());
    assert!(
        direct.contains("percy-proto"),
        "found no dependencies at all: {direct:?}"
    );
    let unexpected: Vec<&String> = direct
        .iter()
        .filter(|name| !ALLOWED_DIRECT.contains(&name.as_str()))
        .collect();
    assert!(
        unexpected.is_empty(),
        "percy-client must not depend on {unexpected:?}: the library is only the gRPC client; \
         put product code in percyctl, percy-worker, percy-git or percy-bench"
    );
    let denied: Vec<&String> = all
        .iter()
        .filter(|name| DENIED.contains(&name.as_str()))
        .collect();
    assert!(
        denied.is_empty(),
        "percy-client pulls in {denied:?} (see `cargo tree -p percy-client -e normal -i NAME`)"
    );
}

#[test]
fn proc_macro_subtrees_are_not_linked_but_everything_else_is() {
    let tree = "\
0percy-client v0.1.0 (/work/client)
1percy-proto v0.1.0 (/work/proto)
2prost v0.14.1
3prost-derive v0.14.1 (proc-macro)
4anyhow v1.0.100
4itertools v0.14.0
3bytes v1.10.1
1tokio v1.48.0
2tokio-macros v2.6.0 (proc-macro)
3syn v2.0.108
2mio v1.1.0
";
    let (direct, all) = linked(tree);
    let names = |items: &[&str]| items.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(direct, names(&["percy-proto", "tokio"]));
    assert_eq!(
        all,
        names(&[
            "percy-client",
            "percy-proto",
            "prost",
            "prost-derive",
            "bytes",
            "tokio",
            "tokio-macros",
            "mio",
        ])
    );
}
