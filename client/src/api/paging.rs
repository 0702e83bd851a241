//! Following a paginated listing to its end: read a page, pass its `next_page_token` back,
//! until a page comes without one. Used by every list call, so callers get whole listings
//! and never see a page boundary.

use std::future::Future;

use percy_proto::v1::{ListAgentsResponse, ListConfigResponse, ListLocksResponse};

use crate::error::ClientError;

/// A listing response that can be continued and concatenated.
pub(crate) trait Paged: Default {
    /// Takes the token of the next page out of the response.
    fn take_next_page_token(&mut self) -> String;
    /// Appends a later page's items; the later header (newer revision) wins.
    fn absorb(&mut self, later: Self);
}

/// Reads every page: `read_page(token)` reads the page a token names (empty: the first).
/// A server that hands back the token it was given would page forever, so that is an error.
pub(crate) async fn read_all_pages<R, F, Fut>(mut read_page: F) -> Result<R, ClientError>
where
    R: Paged,
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<R, ClientError>>,
{
    let mut listed = R::default();
    let mut token = String::new();
    loop {
        let mut page = read_page(token.clone()).await?;
        let next = page.take_next_page_token();
        if !next.is_empty() && next == token {
            return Err(ClientError::PageTokenRepeated(token));
        }
        listed.absorb(page);
        if next.is_empty() {
            return Ok(listed);
        }
        token = next;
    }
}

impl Paged for ListAgentsResponse {
    fn take_next_page_token(&mut self) -> String {
        std::mem::take(&mut self.next_page_token)
    }

    fn absorb(&mut self, later: Self) {
        self.agents.extend(later.agents);
        self.header = later.header;
    }
}

impl Paged for ListLocksResponse {
    fn take_next_page_token(&mut self) -> String {
        std::mem::take(&mut self.next_page_token)
    }

    fn absorb(&mut self, later: Self) {
        self.locks.extend(later.locks);
        // The waiters come with the first page.
        self.waiters.extend(later.waiters);
        self.header = later.header;
    }
}

impl Paged for ListConfigResponse {
    fn take_next_page_token(&mut self) -> String {
        std::mem::take(&mut self.next_page_token)
    }

    fn absorb(&mut self, later: Self) {
        self.entries.extend(later.entries);
        self.header = later.header;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use percy_proto::v1::ConfigEntry;

    fn page(keys: &[&str], next: &str) -> ListConfigResponse {
        ListConfigResponse {
            header: None,
            entries: keys
                .iter()
                .map(|k| ConfigEntry {
                    key: k.to_string(),
                    ..Default::default()
                })
                .collect(),
            next_page_token: next.to_string(),
        }
    }

    #[tokio::test]
    async fn pages_are_followed_and_concatenated() {
        let mut asked = Vec::new();
        let all: ListConfigResponse = read_all_pages(|token| {
            asked.push(token.clone());
            async move {
                Ok(match token.as_str() {
                    "" => page(&["a", "b"], "b"),
                    "b" => page(&["c"], "c"),
                    _ => page(&[], ""),
                })
            }
        })
        .await
        .unwrap();
        let keys: Vec<_> = all.entries.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(asked, ["", "b", "c"]);
        assert!(all.next_page_token.is_empty());
    }

    #[tokio::test]
    async fn a_repeated_token_is_refused() {
        let result: Result<ListConfigResponse, _> =
            read_all_pages(|_| async { Ok(page(&["a"], "a")) }).await;
        // First page: token "" → "a"; second: "a" → "a" again.
        assert!(matches!(result, Err(ClientError::PageTokenRepeated(t)) if t == "a"));
    }
}
