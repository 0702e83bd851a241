//! Lock paths: one canonical spelling per path, and the component-wise conflict relation.
//!
//! Two spellings of the same file (`src//api/./users.rs`, `/src/api/users.rs/`) must map to
//! the same lock, otherwise two agents could "hold" the same file under different keys. Paths
//! are compared component by component, so `src/api` covers `src/api/users.rs` but not
//! `src/apix`.

use crate::error::CommandError;
use crate::limits::{MAX_LOCK_PATH_DEPTH, MAX_LOCK_PATH_LEN};

/// Canonical form of a lock path: components joined by single `/`, no leading or trailing
/// `/`, no empty or `.` components.
///
/// Refuses `..` (a path must not escape or alias another one), control characters (a tab or
/// newline is a typo or an injection, never a file name anyone means), a path with no
/// components, a path longer than [`MAX_LOCK_PATH_LEN`] bytes or deeper than
/// [`MAX_LOCK_PATH_DEPTH`] components.
pub fn normalize_lock_path(raw: &str) -> Result<String, CommandError> {
    if raw.len() > MAX_LOCK_PATH_LEN {
        return Err(CommandError::invalid(format!(
            "lock path is {} bytes long (at most {MAX_LOCK_PATH_LEN})",
            raw.len()
        )));
    }
    if raw.chars().any(char::is_control) {
        return Err(CommandError::invalid(format!(
            "lock path {raw:?} contains a control character"
        )));
    }
    let mut components = Vec::new();
    for component in raw.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                return Err(CommandError::invalid(format!(
                    "lock path {raw:?} contains `..`"
                )))
            }
            _ => components.push(component),
        }
    }
    if components.is_empty() {
        return Err(CommandError::invalid(format!("lock path {raw:?} is empty")));
    }
    if components.len() > MAX_LOCK_PATH_DEPTH {
        return Err(CommandError::invalid(format!(
            "lock path {raw:?} has {} components (at most {MAX_LOCK_PATH_DEPTH})",
            components.len()
        )));
    }
    Ok(components.join("/"))
}

/// Whether two normalised paths name the same file, or one lies under the other.
pub fn lock_paths_conflict(a: &str, b: &str) -> bool {
    is_ancestor_or_self(a, b) || is_ancestor_or_self(b, a)
}

/// `ancestor == path`, or `path` lies under `ancestor` (component-wise).
fn is_ancestor_or_self(ancestor: &str, path: &str) -> bool {
    match path.strip_prefix(ancestor) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The proper ancestors of a normalised path, nearest last: `a/b/c` → `a`, `a/b`.
pub(crate) fn proper_ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(at, _)| &path[..at])
}

/// Bounds of the key range holding exactly the proper descendants of a normalised path in a
/// sorted map: every key starting with `path/` is ≥ `path/` and < `path0` (`'0'` is the byte
/// after `'/'`).
pub(crate) fn descendant_range(path: &str) -> (String, String) {
    (format!("{path}/"), format!("{path}0"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn normalises_component_wise() {
        assert_eq!(normalize_lock_path("a/./b//c").unwrap(), "a/b/c");
        assert_eq!(normalize_lock_path("/src/api/").unwrap(), "src/api");
        assert_eq!(normalize_lock_path("x").unwrap(), "x");
        assert_eq!(normalize_lock_path("./x/.").unwrap(), "x");
    }

    #[test]
    fn refuses_bad_paths() {
        for bad in [
            "", "/", "./.", "a/../b", "..", "a\0b", "src\tapi", "a\nb", "a\u{7f}b",
        ] {
            let err = normalize_lock_path(bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad:?}");
        }
        assert!(normalize_lock_path("a/../b")
            .unwrap_err()
            .message
            .contains(".."));
        let deep = vec!["d"; MAX_LOCK_PATH_DEPTH + 1].join("/");
        assert!(normalize_lock_path(&deep)
            .unwrap_err()
            .message
            .contains("components"));
        let just_deep_enough = vec!["d"; MAX_LOCK_PATH_DEPTH].join("/");
        assert!(normalize_lock_path(&just_deep_enough).is_ok());
        let long = "x".repeat(MAX_LOCK_PATH_LEN + 1);
        assert!(normalize_lock_path(&long).is_err());
    }

    #[test]
    fn conflict_is_component_wise() {
        assert!(lock_paths_conflict("src/api", "src/api"));
        assert!(lock_paths_conflict("src/api", "src/api/users.rs"));
        assert!(lock_paths_conflict("src/api/users.rs", "src"));
        assert!(!lock_paths_conflict("src/api", "src/apix"));
        assert!(!lock_paths_conflict("src/api", "src/ap"));
        assert!(!lock_paths_conflict("src/a", "src/b"));
    }

    #[test]
    fn ancestors_and_descendant_range() {
        let ancestors: Vec<_> = proper_ancestors("a/b/c").collect();
        assert_eq!(ancestors, ["a", "a/b"]);
        assert_eq!(proper_ancestors("a").count(), 0);
        let (low, high) = descendant_range("src/api");
        for inside in ["src/api/x", "src/api/x/y"] {
            assert!(low.as_str() <= inside && inside < high.as_str());
        }
        for outside in ["src/api", "src/apix", "src/api-v2", "src/api0"] {
            assert!(
                !(low.as_str() <= outside && outside < high.as_str()),
                "{outside}"
            );
        }
    }
}
