//! Relative program paths in the command lines users give (`--exec ./agent.sh`, `--resolver
//! ./resolve.sh`) mean "relative to where I ran percyctl". The commands run elsewhere — in a
//! task's git worktree, in a resolver's scratch directory — so such a path would not be found
//! there (`sh: ./agent.sh: not found`, exit 127). [`anchor_program`] rewrites it to an
//! absolute path before the command leaves percyctl.
//!
//! Only the program word is touched, and only when it is a plain relative path (it has a `/`,
//! no quotes or shell syntax) naming a file that exists under the base directory: a bare name
//! (`claude`) is still looked up on `PATH`, and a path that exists only inside the repository
//! (`scripts/run.sh` as each worktree has it) is left for the shell to find there.

use std::path::Path;

/// Characters of a program word that need no shell quoting.
fn is_plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._-/+@%:,=".contains(c)
}

/// `command` with its leading relative program path made absolute against `base`; see the
/// module documentation for when it is left alone.
pub fn anchor_program(command: &str, base: &Path) -> String {
    let trimmed = command.trim_start();
    let leading = &command[..command.len() - trimmed.len()];
    let end = trimmed
        .find(|c: char| c.is_whitespace() || c == ';' || c == '&' || c == '|')
        .unwrap_or(trimmed.len());
    let (program, rest) = trimmed.split_at(end);
    let relative = !program.is_empty()
        && program.contains('/')
        && !program.starts_with('/')
        && program.chars().all(is_plain);
    if !relative {
        return command.to_owned();
    }
    let absolute = base.join(program);
    if !absolute.is_file() {
        return command.to_owned();
    }
    format!(
        "{leading}{}{rest}",
        shell_quote(&absolute.to_string_lossy())
    )
}

/// `command` anchored at the current directory (unchanged if that cannot be told).
pub fn anchor_in_current_dir(command: &str) -> String {
    match std::env::current_dir() {
        Ok(dir) => anchor_program(command, &dir),
        Err(_) => command.to_owned(),
    }
}

/// `text` as one shell word.
fn shell_quote(text: &str) -> String {
    if !text.is_empty() && text.chars().all(is_plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relative_program_that_exists_is_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::write(dir.path().join("agent.sh"), "").unwrap();
        std::fs::write(dir.path().join("bin/run"), "").unwrap();
        let base = dir.path().display().to_string();
        assert_eq!(
            anchor_program("./agent.sh --fast", dir.path()),
            format!("{base}/./agent.sh --fast")
        );
        assert_eq!(
            anchor_program("  bin/run;echo done", dir.path()),
            format!("  {base}/bin/run;echo done")
        );
    }

    #[test]
    fn other_commands_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("agent.sh"), "").unwrap();
        for command in [
            "claude -p \"$PERCY_TASK_TITLE\"",
            "/usr/bin/env true",
            "./missing.sh",
            "'./agent.sh'",
            "$HOME/agent.sh",
            "",
        ] {
            assert_eq!(anchor_program(command, dir.path()), command);
        }
    }

    #[test]
    fn a_base_with_spaces_is_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("my dir");
        std::fs::create_dir(&base).unwrap();
        std::fs::write(base.join("it's.sh"), "").unwrap();
        // "it's.sh" is not a plain word: left to the shell as given.
        assert_eq!(anchor_program("./it's.sh", &base), "./it's.sh");
        std::fs::write(base.join("go.sh"), "").unwrap();
        assert_eq!(
            anchor_program("./go.sh x", &base),
            format!("'{}/./go.sh' x", base.display())
        );
    }
}
