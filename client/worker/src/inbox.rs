//! The inbox: messages for the worker's agent (and broadcasts) appended to a file, one line
//! each (`[time] from: body`), whose path running commands get as `PERCY_INBOX`. A command
//! that wants steering reads (or `tail -f`s) it; nothing else is required of it.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;

use percy_client::proto::Message;

/// File name of the inbox inside the inbox directory, after the agent name.
const INBOX_SUFFIX: &str = ".inbox";

/// An inbox file.
#[derive(Debug, Clone)]
pub struct Inbox {
    path: PathBuf,
}

impl Inbox {
    /// Creates `dir` if needed and an empty inbox for agent `name` in it (a worker starts with
    /// an empty inbox: what was said to an earlier run is not addressed to this one).
    pub async fn create(dir: &Path, name: &str) -> std::io::Result<Inbox> {
        tokio::fs::create_dir_all(dir).await?;
        let path = inbox_path(dir, name);
        tokio::fs::write(&path, b"").await?;
        Ok(Inbox { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one message as one line.
    pub async fn append(&self, message: &Message) -> std::io::Result<()> {
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.path)
            .await?;
        file.write_all(format_line(message).as_bytes()).await?;
        file.flush().await
    }
}

/// Where the inbox of agent `name` is kept in `dir`.
pub fn inbox_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}{INBOX_SUFFIX}", file_safe(name)))
}

/// `[2024-05-01T12:00:00Z] alice: body`, with newlines in the sender or body escaped so that
/// one message is always one line.
pub fn format_line(message: &Message) -> String {
    let time = UNIX_EPOCH + Duration::from_millis(message.sent_at_ms);
    format!(
        "[{}] {}: {}\n",
        humantime::format_rfc3339_seconds(time),
        one_line(&message.from),
        one_line(&message.body)
    )
}

fn one_line(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// An agent name as a file name: path separators and NULs replaced.
pub fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(from: &str, body: &str) -> Message {
        Message {
            id: 1,
            from: from.into(),
            to_agent: 7,
            body: body.into(),
            sent_at_ms: 1_714_564_800_000,
        }
    }

    #[test]
    fn one_message_is_one_line() {
        assert_eq!(
            format_line(&message("ops", "stop\nnow")),
            "[2024-05-01T12:00:00Z] ops: stop\\nnow\n"
        );
    }

    #[tokio::test]
    async fn messages_are_appended_to_a_fresh_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w_1.inbox"), "old run\n").unwrap();
        let inbox = Inbox::create(dir.path(), "w/1").await.unwrap();
        assert_eq!(inbox.path(), dir.path().join("w_1.inbox"));
        inbox.append(&message("a", "one")).await.unwrap();
        inbox.append(&message("b", "two")).await.unwrap();
        let text = std::fs::read_to_string(inbox.path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].ends_with("a: one") && lines[1].ends_with("b: two"));
    }
}
