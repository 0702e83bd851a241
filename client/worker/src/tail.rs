//! The last bytes of a command's output: what ends up in a task's result or error. A command
//! may print gigabytes; the worker keeps a bounded tail, never the whole stream.

/// Bytes of stdout kept as a completed task's `output_tail`.
pub const STDOUT_TAIL_BYTES: usize = 8 * 1024;
/// Bytes of stderr kept for a failed task's error.
pub const STDERR_TAIL_BYTES: usize = 4 * 1024;
/// Longest summary (the last non-empty line of stdout).
pub const SUMMARY_MAX_BYTES: usize = 512;

/// A ring of the last `capacity` bytes written to it.
#[derive(Debug, Clone)]
pub struct Tail {
    capacity: usize,
    buffer: Vec<u8>,
    /// Whether anything was dropped from the front.
    truncated: bool,
}

impl Tail {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            buffer: Vec::new(),
            truncated: false,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if bytes.len() >= self.capacity {
            self.truncated |= !self.buffer.is_empty() || bytes.len() > self.capacity;
            self.buffer.clear();
            self.buffer
                .extend_from_slice(&bytes[bytes.len() - self.capacity..]);
            return;
        }
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() > self.capacity {
            let excess = self.buffer.len() - self.capacity;
            self.buffer.drain(..excess);
            self.truncated = true;
        }
    }

    /// The tail as text: invalid UTF-8 (a multi-byte character cut at the front) replaced,
    /// and a leading `…` when the beginning was dropped.
    pub fn text(&self) -> String {
        let text = String::from_utf8_lossy(&self.buffer);
        if self.truncated {
            format!("…{text}")
        } else {
            text.into_owned()
        }
    }

    /// The last non-empty line, cut to `max` bytes at a character boundary.
    pub fn last_line(&self, max: usize) -> String {
        last_line(&String::from_utf8_lossy(&self.buffer), max)
    }
}

/// The last non-empty line of `text` (trimmed), cut to `max` bytes at a character boundary.
pub fn last_line(text: &str, max: usize) -> String {
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    truncate_at_char(line, max).to_owned()
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary.
pub fn truncate_at_char(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_bytes() {
        let mut tail = Tail::new(5);
        tail.push(b"abc");
        assert_eq!(tail.text(), "abc");
        tail.push(b"defg");
        assert_eq!(tail.text(), "…cdefg");
        tail.push(b"0123456789");
        assert_eq!(tail.text(), "…56789");
    }

    #[test]
    fn a_chunk_of_exactly_the_capacity_into_an_empty_tail_is_whole() {
        let mut tail = Tail::new(3);
        tail.push(b"abc");
        assert_eq!(tail.text(), "abc");
    }

    #[test]
    fn the_summary_is_the_last_non_empty_line() {
        let mut tail = Tail::new(100);
        tail.push(b"building\nall good: 3 files\n\n");
        assert_eq!(tail.last_line(100), "all good: 3 files");
        assert_eq!(tail.last_line(3), "all");
        assert_eq!(Tail::new(4).last_line(10), "");
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate_at_char("héllo", 2), "h");
        assert_eq!(truncate_at_char("héllo", 3), "hé");
        assert_eq!(truncate_at_char("hi", 10), "hi");
    }
}
