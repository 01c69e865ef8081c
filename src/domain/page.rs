//! One page of a list, newest first, and the cursor that asks for the next: the position
//! (creation time, id) of the last item shown, so rows added meanwhile (newer) never shift
//! the pages that follow and nothing is shown twice or skipped.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// The most a page holds, and how many when not asked.
pub const MAX_PAGE: u32 = 1000;
pub const DEFAULT_PAGE: u32 = 100;

/// A page of `T`, newest first; `next_cursor` asks for the page after it (None: the last).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` for the next page; absent or null on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// The page from up to `limit + 1` rows (the extra one only says that more follow),
    /// with the position of each item.
    pub fn from_rows(mut items: Vec<T>, limit: u32, position: impl Fn(&T) -> Cursor) -> Self {
        let more = items.len() > limit as usize;
        items.truncate(limit as usize);
        let next_cursor = match items.last() {
            Some(last) if more => Some(position(last).encode()),
            _ => None,
        };
        Self { items, next_cursor }
    }

    /// A page of a whole list already in memory — for lists that stay small (projects,
    /// workers), where reading them all costs less than a query per filter.
    pub fn from_all(
        mut items: Vec<T>,
        page: &PageRequest,
        position: impl Fn(&T) -> Cursor,
    ) -> Self {
        items.sort_by_key(|item| std::cmp::Reverse(position(item)));
        if let Some(after) = &page.after {
            items.retain(|item| position(item) < *after);
        }
        items.truncate(page.limit as usize + 1);
        Self::from_rows(items, page.limit, position)
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

/// How many items and after which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<Cursor>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_PAGE,
            after: None,
        }
    }
}

impl PageRequest {
    /// From a caller's `limit` and `cursor` (empty: none); the error names the one that
    /// is wrong.
    pub fn parse(limit: Option<u32>, cursor: Option<&str>) -> Result<Self, String> {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(format!(
                "limit must be between 1 and {MAX_PAGE}, not {limit}"
            ));
        }
        // An empty cursor (a form's blank field) asks for the first page.
        let after = cursor
            .filter(|c| !c.is_empty())
            .map(Cursor::decode)
            .transpose()?;
        Ok(Self { limit, after })
    }

    /// Every item, in pages of the most a page holds: for callers that need them all.
    pub fn all() -> Self {
        Self {
            limit: MAX_PAGE,
            after: None,
        }
    }
}

/// A position in a list ordered by (creation time, id), both descending.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub id: String,
}

impl Cursor {
    pub fn new(at: DateTime<Utc>, id: impl ToString) -> Self {
        Self {
            at,
            id: id.to_string(),
        }
    }

    /// Opaque to callers: URL-safe base64 of the time and the id.
    pub fn encode(&self) -> String {
        let text = format!(
            "{}|{}",
            self.at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            self.id
        );
        URL_SAFE_NO_PAD.encode(text)
    }

    pub fn decode(cursor: &str) -> Result<Self, String> {
        let bad = || "cursor is not one a list returned".to_string();
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
        let text = String::from_utf8(bytes).map_err(|_| bad())?;
        let (at, id) = text.split_once('|').ok_or_else(bad)?;
        let at = DateTime::parse_from_rfc3339(at).map_err(|_| bad())?;
        if id.is_empty() || id.contains('\0') {
            return Err(bad());
        }
        Ok(Self::new(at.with_timezone(&Utc), id))
    }

    /// The id as a UUID, for lists keyed by one.
    pub fn uuid(&self) -> Result<uuid::Uuid, String> {
        self.id
            .parse()
            .map_err(|_| "cursor is not one a list returned".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_survives_its_round_trip() {
        let at = DateTime::parse_from_rfc3339("2026-12-05T02:11:46.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let cursor = Cursor::new(at, "0193a9c4-1111-7000-8000-000000000001");
        assert_eq!(Cursor::decode(&cursor.encode()).unwrap(), cursor);
    }

    #[test]
    fn bad_cursors_and_limits_are_refused() {
        for bad in ["", "not base64!", "bm9waXBl", "fHw"] {
            assert!(Cursor::decode(bad).is_err(), "{bad}");
        }
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(MAX_PAGE + 1), None).is_err());
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, DEFAULT_PAGE);
    }

    #[test]
    fn a_page_says_whether_more_follow() {
        let at = Utc::now();
        let page = Page::from_rows(vec![3, 2, 1], 2, |n| Cursor::new(at, n));
        assert_eq!(page.items, vec![3, 2]);
        assert_eq!(Cursor::decode(&page.next_cursor.unwrap()).unwrap().id, "2");
        let last = Page::from_rows(vec![1], 2, |n| Cursor::new(at, n));
        assert_eq!(last.next_cursor, None);
    }

    #[test]
    fn pages_of_a_list_in_memory_cover_it_once_newest_first() {
        let at = Utc::now();
        let position = |n: &i64| Cursor::new(at + chrono::Duration::seconds(*n), n);
        let mut page = PageRequest {
            limit: 2,
            after: None,
        };
        let mut seen = Vec::new();
        loop {
            let p = Page::from_all(vec![1, 5, 3, 2, 4], &page, position);
            seen.extend(p.items);
            match p.next_cursor {
                Some(c) => page.after = Some(Cursor::decode(&c).unwrap()),
                None => break,
            }
        }
        assert_eq!(seen, vec![5, 4, 3, 2, 1]);
    }
}
