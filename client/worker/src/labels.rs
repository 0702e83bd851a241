//! The labels a worker advertises without being told: `os`, `arch` and `host`, so that
//! tasks can target them with selectors (`os=linux`, `host=builder-3`). Labels given in the
//! configuration win over detected ones: an operator may want to call a host by another name.

use std::collections::BTreeMap;

/// Label naming the operating system (`linux`, `macos`, …, as Rust names it).
pub const OS_LABEL: &str = "os";
/// Label naming the CPU architecture (`x86_64`, `aarch64`, …).
pub const ARCH_LABEL: &str = "arch";
/// Label naming the host the worker runs on.
pub const HOST_LABEL: &str = "host";

/// The detected labels: `os` and `arch` always, `host` when the host name can be told.
pub fn detected_labels() -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (OS_LABEL.to_owned(), std::env::consts::OS.to_owned()),
        (ARCH_LABEL.to_owned(), std::env::consts::ARCH.to_owned()),
    ]);
    if let Some(host) = host_name() {
        labels.insert(HOST_LABEL.to_owned(), host);
    }
    labels
}

/// Detected labels overlaid with `configured` ones (configured wins).
pub fn merged_labels(configured: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut labels = detected_labels();
    labels.extend(configured.iter().map(|(k, v)| (k.clone(), v.clone())));
    labels
}

/// This machine's host name, from gethostname(2); `None` when it is empty or not UTF-8.
pub fn host_name() -> Option<String> {
    // POSIX caps host names at 255 bytes (HOST_NAME_MAX); one more for the NUL.
    let mut buffer = [0u8; 256];
    // SAFETY: the pointer and length describe `buffer`, which outlives the call; gethostname
    // writes at most `len` bytes into it.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if rc != 0 {
        return None;
    }
    let end = buffer.iter().position(|b| *b == 0).unwrap_or(buffer.len());
    let name = std::str::from_utf8(&buffer[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_and_arch_are_always_detected() {
        let labels = detected_labels();
        assert_eq!(labels[OS_LABEL], std::env::consts::OS);
        assert_eq!(labels[ARCH_LABEL], std::env::consts::ARCH);
    }

    #[test]
    fn configured_labels_override_detected_ones() {
        let configured = BTreeMap::from([
            (HOST_LABEL.to_owned(), "builder".to_owned()),
            ("gpu".to_owned(), "a100".to_owned()),
        ]);
        let labels = merged_labels(&configured);
        assert_eq!(labels[HOST_LABEL], "builder");
        assert_eq!(labels["gpu"], "a100");
        assert_eq!(labels[OS_LABEL], std::env::consts::OS);
    }

    #[test]
    fn the_host_name_matches_the_kernel_s() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").ok();
        if let Some(kernel) = kernel {
            assert_eq!(host_name().as_deref(), Some(kernel.trim()));
        }
    }
}
