//! Paginated listings (etcd-Range style): a page size from the request's `limit` (0 is the
//! default, more than the maximum is refused rather than cut, so a client never mistakes a
//! short page for the end) and a continuation token. Tasks continue by position (tasks are
//! never removed); agents, locks and config continue after the last key of the previous page,
//! so an entity removed between two pages shifts nothing.
//!
//! Handlers clone a page under the state lock (which apply waits for) and build protos after;
//! a large page of tasks is cloned in chunks of [`LOCKED_CHUNK`], the lock released between
//! them, so that a full listing does not stall apply.

use percy_proto::paging::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
use tonic::Status;

/// Tasks cloned under one hold of the state lock while building a page. Cloning a task takes
/// on the order of a microsecond, so a hold stays well under a millisecond, about what
/// applying one entry takes; a whole page of 10,000 held it for several milliseconds.
pub const LOCKED_CHUNK: usize = 256;

/// The page size a listing asked for.
pub fn page_size(limit: u32) -> Result<usize, Status> {
    match limit {
        0 => Ok(DEFAULT_PAGE_SIZE as usize),
        n if n > MAX_PAGE_SIZE => Err(Status::invalid_argument(format!(
            "limit {n} is above the largest page ({MAX_PAGE_SIZE}); follow next_page_token"
        ))),
        n => Ok(n as usize),
    }
}

/// A token this server did not give.
fn foreign_token(token: &str) -> Status {
    Status::invalid_argument(format!(
        "page_token {token:?} is not one this server gave (pass next_page_token back as it is)"
    ))
}

/// Where a page of tasks starts: the position a `next_page_token` names (empty: the first).
pub fn position_token(token: &str) -> Result<usize, Status> {
    if token.is_empty() {
        return Ok(0);
    }
    token.parse().map_err(|_| foreign_token(token))
}

/// After which agent id a page of agents starts (empty: from the first).
pub fn id_token(token: &str) -> Result<Option<u64>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    token.parse().map(Some).map_err(|_| foreign_token(token))
}

/// After which key (lock path, config key) a page starts (empty: from the first).
pub fn key_token(token: &str) -> Option<&str> {
    (!token.is_empty()).then_some(token)
}

/// Up to `page_size` items (and, when `weigh` says so, no more than `max_weight` in total,
/// though always at least one) cloned from `items`, with the token of the next page: the key
/// of the last item when the page ended early, nothing when `items` ran out.
pub fn take_page<'a, T: Clone + 'a>(
    items: impl Iterator<Item = &'a T>,
    page_size: usize,
    max_weight: usize,
    weigh: impl Fn(&T) -> usize,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, String) {
    debug_assert!(page_size > 0, "a page holds at least one item");
    let mut page = Vec::new();
    let mut weight = 0;
    for item in items {
        page.push(item.clone());
        weight += weigh(item);
        if page.len() == page_size || weight >= max_weight {
            return (page, key(item));
        }
    }
    (page, String::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_page_names_its_last_key_and_the_last_page_nothing() {
        let items = [1u64, 2, 3, 4, 5];
        let key = |n: &u64| n.to_string();
        let (page, next) = take_page(items.iter(), 2, usize::MAX, |_| 0, key);
        assert_eq!((page, next.as_str()), (vec![1, 2], "2"));
        let (page, next) = take_page(items[2..].iter(), 3, usize::MAX, |_| 0, key);
        assert_eq!(
            (page, next.as_str()),
            (vec![3, 4, 5], "5"),
            "full: one more read"
        );
        let (page, next) = take_page(items[2..].iter(), 10, usize::MAX, |_| 0, key);
        assert_eq!((page, next.as_str()), (vec![3, 4, 5], ""));
    }

    #[test]
    fn a_heavy_page_ends_early_but_holds_at_least_one_item() {
        let items = [10usize, 10, 10];
        let key = |n: &usize| n.to_string();
        let (page, next) = take_page(items.iter(), 100, 15, |n| *n, key);
        assert_eq!((page.len(), next.as_str()), (2, "10"));
        let (page, _) = take_page(items.iter(), 100, 1, |n| *n, key);
        assert_eq!(page.len(), 1);
    }

    #[test]
    fn sizes_and_tokens_are_checked() {
        assert_eq!(page_size(0).unwrap(), DEFAULT_PAGE_SIZE as usize);
        assert_eq!(page_size(7).unwrap(), 7);
        assert!(page_size(MAX_PAGE_SIZE + 1).is_err());
        assert_eq!(id_token("").unwrap(), None);
        assert_eq!(id_token("42").unwrap(), Some(42));
        assert!(id_token("x").is_err());
        assert_eq!(position_token("").unwrap(), 0);
        assert!(position_token("-1").is_err());
        assert_eq!(key_token(""), None);
        assert_eq!(key_token("src/a"), Some("src/a"));
    }
}
