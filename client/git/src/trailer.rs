//! Commit-message trailers Percy writes and reads (`Percy-Task`, `Percy-Fence`).
//!
//! Trailers are git's standard `Key: value` lines in the last paragraph of a commit
//! message; `git log --format=%(trailers)` and `git interpret-trailers` read them.

/// Trailer naming the task whose work a commit (or merge) carries.
pub const TASK_TRAILER: &str = "Percy-Task";

/// Trailer carrying the fencing token of the merge lock a merge commit was made under.
pub const FENCE_TRAILER: &str = "Percy-Fence";

/// `message` followed by a blank line and one `Key: value` line per trailer.
///
/// Trailing whitespace of `message` is dropped so the trailers always form the last
/// paragraph, which is the only place git looks for them.
pub(crate) fn with_trailers(message: &str, trailers: &[(&str, String)]) -> String {
    let mut out = message.trim_end().to_owned();
    out.push_str("\n\n");
    for (key, value) in trailers {
        out.push_str(key);
        out.push_str(": ");
        out.push_str(value);
        out.push('\n');
    }
    out
}

/// The value of the last `key` trailer of `message`, if any.
pub(crate) fn trailer_value(message: &str, key: &str) -> Option<String> {
    let trailers = git2::message_trailers_strs(message).ok()?;
    trailers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(key))
        .map(|(_, v)| v.trim().to_owned())
        .next_back()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_trailers_are_read_back() {
        let msg = with_trailers(
            "Do the thing\n\nLonger body.\n\n",
            &[(TASK_TRAILER, "t-1".into()), (FENCE_TRAILER, "42".into())],
        );
        assert!(msg.starts_with("Do the thing\n\nLonger body.\n\nPercy-Task: t-1\n"));
        assert_eq!(trailer_value(&msg, TASK_TRAILER).as_deref(), Some("t-1"));
        assert_eq!(trailer_value(&msg, FENCE_TRAILER).as_deref(), Some("42"));
    }

    #[test]
    fn trailers_outside_the_last_paragraph_are_ignored() {
        let msg = "Subject\n\nPercy-Fence: 9\n\nA closing paragraph that is prose.\n";
        assert_eq!(trailer_value(msg, FENCE_TRAILER), None);
    }
}
