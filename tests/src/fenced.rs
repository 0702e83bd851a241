//! The fenced resource of the lock workload, kept by the harness: it accepts a write only if
//! its fencing token is at least the highest it has accepted, and keeps every accepted write.
//! With a correct lock service and no lock expiry it never has to reject anything.

use std::sync::Mutex;

/// A shared resource guarded by fencing tokens.
#[derive(Debug, Default)]
pub struct FencedResource {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    highest: u64,
    log: Vec<(u64, String)>,
}

impl FencedResource {
    /// Writes `value` under `token`; false (and nothing written) if a higher token was seen.
    pub fn write(&self, token: u64, value: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if token < inner.highest {
            return false;
        }
        inner.highest = token;
        inner.log.push((token, value.to_owned()));
        true
    }

    /// Every accepted write, in order.
    pub fn log(&self) -> Vec<(u64, String)> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_lower_tokens_and_keeps_accepted_writes() {
        let resource = FencedResource::default();
        assert!(resource.write(5, "a"));
        assert!(resource.write(5, "b"));
        assert!(resource.write(9, "c"));
        assert!(!resource.write(7, "stale"));
        assert_eq!(
            resource.log(),
            vec![(5, "a".into()), (5, "b".into()), (9, "c".into())]
        );
    }
}
