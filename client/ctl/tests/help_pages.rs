//! Every help page of `percyctl` and `percyd`, read the way a user reads it: the real binaries'
//! `-h` and `--help` output, every subcommand of every subcommand. Each entry under
//! `Options:` and `Arguments:` must say what it is for.
//!
//! The unit test in `src/main.rs` checks clap's definition; this one checks what is printed,
//! so it also catches what the definition hides (help on an argument clap does not show on
//! that page, an empty or blank description, a page of percyd's, which has no such test).

use std::path::Path;
use std::process::Command;

/// A help page's entries without a description, as `page :: entry`, and the pages it walked.
struct Walk {
    missing: Vec<String>,
    pages: Vec<String>,
}

fn help_page(binary: &Path, path: &[String], flag: &str) -> String {
    let output = Command::new(binary)
        .args(path)
        .arg(flag)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("running {} {path:?} {flag}: {e}", binary.display()));
    assert!(
        output.status.success(),
        "{} {path:?} {flag} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The subcommands a page lists, and its entries that have no description (or show an
/// internal id where the value's name belongs). An entry is a line
/// indented by two spaces under `Options:` or `Arguments:`; its description follows on the same
/// line after a gap of two or more spaces (`-h`, and `--help` of a narrow page), or on the
/// following lines, indented deeper (`--help` of a page with long entries).
fn read_page(text: &str) -> (Vec<String>, Vec<String>) {
    let lines: Vec<&str> = text.lines().collect();
    let (mut section, mut subcommands, mut undescribed) = ("", Vec::new(), Vec::new());
    for (i, line) in lines.iter().enumerate() {
        if let Some(heading) = line.strip_suffix(':').filter(|h| !h.starts_with(' ')) {
            section = heading;
            continue;
        }
        let is_entry = line.starts_with("  ") && !line.starts_with("   ")
            || line.starts_with("      -") && !line.starts_with("       ");
        if !is_entry {
            continue;
        }
        let entry = line.trim();
        match section {
            "Commands" => {
                let name = entry.split_whitespace().next().unwrap_or_default();
                if name != "help" {
                    subcommands.push(name.to_string());
                }
            }
            "Options" | "Arguments" => {
                let same_line = entry
                    .split_once("  ")
                    .is_some_and(|(_, text)| !text.trim().is_empty());
                let next_line = lines
                    .get(i + 1)
                    .is_some_and(|next| next.starts_with("          ") && !next.trim().is_empty());
                if !same_line && !next_line {
                    undescribed.push(entry.to_string());
                }
                // A value placeholder in lower case is clap's internal id showing through
                // (`--cacert <client_cacert>`), not a name written for the reader.
                let head = entry.split("  ").next().unwrap_or_default();
                let internal_id = head
                    .split('<')
                    .skip(1)
                    .filter_map(|rest| rest.split_once('>'))
                    .any(|(name, _)| name.chars().any(|c| c.is_ascii_lowercase()));
                if internal_id {
                    undescribed.push(format!("{head} (an internal id as the value's name)"));
                }
            }
            _ => {}
        }
    }
    (subcommands, undescribed)
}

fn walk(binary: &Path, path: Vec<String>, out: &mut Walk) {
    let name = binary.file_name().unwrap_or_default().to_string_lossy();
    let page = format!("{name} {}", path.join(" "));
    let mut subcommands = Vec::new();
    for flag in ["-h", "--help"] {
        let (subs, undescribed) = read_page(&help_page(binary, &path, flag));
        out.missing
            .extend(undescribed.iter().map(|e| format!("{page} {flag} :: {e}")));
        subcommands = subs;
    }
    out.pages.push(page);
    for sub in subcommands {
        let mut deeper = path.clone();
        deeper.push(sub);
        walk(binary, deeper, out);
    }
}

fn walk_all(binary: &Path) -> Walk {
    let mut out = Walk {
        missing: Vec::new(),
        pages: Vec::new(),
    };
    walk(binary, Vec::new(), &mut out);
    out
}

/// Walks every help page of `binary`, checks it reached the `deep` pages (subcommands of
/// subcommands), and fails naming every entry without a description.
fn assert_every_entry_described(binary: &Path, deep: &[&str]) {
    let walk = walk_all(binary);
    for page in deep {
        assert!(
            walk.pages.iter().any(|p| p == page),
            "{page} not walked: {:?}",
            walk.pages
        );
    }
    assert!(
        walk.missing.is_empty(),
        "{} help entries without a description:\n{}",
        walk.missing.len(),
        walk.missing.join("\n")
    );
}

#[test]
fn every_percyctl_help_entry_has_a_description() {
    assert_every_entry_described(
        Path::new(env!("CARGO_BIN_EXE_percyctl")),
        &[
            "percyctl steer inject",
            "percyctl exec logs",
            "percyctl snapshot save",
        ],
    );
}

#[test]
fn every_percyd_help_entry_has_a_description() {
    let percyd = percy_testkit::binaries::percyd_binary().expect("percyd");
    assert_every_entry_described(&percyd, &["percyd restore"]);
}

/// The page reader itself: an entry without text is found, in both layouts clap prints.
#[test]
fn the_reader_finds_undescribed_entries() {
    let page =
        "About\n\nUsage: x [OPTIONS] <ID>\n\nArguments:\n  <ID>      \n  <NAME>  The name\n\n\
                Options:\n      --agent <AGENT>\n  -t, --ttl <TTL>\n          How long it lives\n  \
                --cacert <client_cacert>  CA (e.g. <data-dir>/ca.crt)\n  -h, --help  Print help\n";
    let (_, undescribed) = read_page(page);
    assert_eq!(
        undescribed,
        vec![
            "<ID>",
            "--agent <AGENT>",
            "--cacert <client_cacert> (an internal id as the value's name)"
        ]
    );
    let commands = "Commands:\n  inject  Queue\n  help    Print\n";
    assert_eq!(read_page(commands).0, vec!["inject"]);
}
