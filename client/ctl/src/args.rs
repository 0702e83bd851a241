//! Parsers for argument values shared by several subcommands.

use std::collections::HashMap;
use std::time::Duration;

use percy_client::TaskStatus;

/// `--serializable`, on the commands that only read.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Read {
    /// Read from the answering node's local state (faster, possibly stale) instead of a
    /// linearizable read.
    #[arg(long)]
    serializable: bool,
}

impl Read {
    pub fn consistency(self) -> percy_client::Consistency {
        if self.serializable {
            percy_client::Consistency::Serializable
        } else {
            percy_client::Consistency::Linearizable
        }
    }
}

/// "10s", "500ms", "2m".
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 10s, 500ms, 2m)"))
}

/// A duration that must not be zero: on the wire 0 means "the server's default", so an
/// explicit `0s` would silently become that default.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match duration(text)? {
        zero if zero.is_zero() => Err("must be more than zero (omit it for the default)".into()),
        positive => Ok(positive),
    }
}

/// A count that must not be zero, for the same reason as [`positive_duration`].
pub fn positive_count(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1 (omit it for the default)".into()),
        Ok(count) => Ok(count),
        Err(e) => Err(e.to_string()),
    }
}

/// "key=value".
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.trim().to_owned()))
        }
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

/// A map from repeated `k=v` arguments (the last one wins for a repeated key).
pub fn to_map(pairs: &[(String, String)]) -> HashMap<String, String> {
    pairs.iter().cloned().collect()
}

/// "ready", "working", … (case-insensitive).
pub fn task_status(text: &str) -> Result<TaskStatus, String> {
    let wanted = text.trim().to_ascii_lowercase();
    ALL_TASK_STATUSES
        .into_iter()
        .find(|s| crate::views::task_status_name(*s as i32) == wanted)
        .ok_or_else(|| {
            let names: Vec<String> = ALL_TASK_STATUSES
                .iter()
                .map(|s| crate::views::task_status_name(*s as i32))
                .collect();
            format!("unknown status {text:?}; one of {}", names.join(", "))
        })
}

const ALL_TASK_STATUSES: [TaskStatus; 7] = [
    TaskStatus::Blocked,
    TaskStatus::Ready,
    TaskStatus::Claimed,
    TaskStatus::Working,
    TaskStatus::Completed,
    TaskStatus::Failed,
    TaskStatus::Cancelled,
];

/// Milliseconds for the wire; saturates instead of wrapping.
pub fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Task payload bytes. A newtype, because clap would read `Vec<u8>` as a list of numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload(pub Vec<u8>);

/// A payload given inline, or `@path` to read it from a file.
pub fn payload(text: &str) -> Result<Payload, String> {
    match text.strip_prefix('@') {
        Some(path) => std::fs::read(path)
            .map(Payload)
            .map_err(|e| format!("cannot read {path}: {e}")),
        None => Ok(Payload(text.as_bytes().to_vec())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_refused_where_it_would_mean_the_default() {
        assert!(positive_duration("0s")
            .unwrap_err()
            .contains("more than zero"));
        assert_eq!(positive_duration("2s"), Ok(Duration::from_secs(2)));
        assert!(positive_count("0").unwrap_err().contains("at least 1"));
        assert_eq!(positive_count("3"), Ok(3));
        assert!(positive_count("-1").is_err());
    }

    #[test]
    fn durations_use_humantime() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert!(duration("soon").unwrap_err().contains("10s"));
    }

    #[test]
    fn key_values_split_at_the_first_equals_sign() {
        assert_eq!(key_value("os=linux"), Ok(("os".into(), "linux".into())));
        assert_eq!(key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(key_value("novalue").is_err());
        assert!(key_value("=x").is_err());
    }

    #[test]
    fn statuses_parse_case_insensitively() {
        assert_eq!(task_status("Ready"), Ok(TaskStatus::Ready));
        assert!(task_status("done").unwrap_err().contains("completed"));
    }

    #[test]
    fn payloads_come_inline_or_from_files() {
        assert_eq!(payload("hello"), Ok(Payload(b"hello".to_vec())));
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), b"from file").unwrap();
        let arg = format!("@{}", file.path().display());
        assert_eq!(payload(&arg), Ok(Payload(b"from file".to_vec())));
        assert!(payload("@/nonexistent/x").is_err());
    }
}
