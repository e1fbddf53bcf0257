//! A page of the cached list, and the mark a page fill leaves: when it was filled and how far
//! its range reaches (see "Pages" in the module docs).

use crate::book::Book;

/// Books of one page, ordered by id.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BookPage {
    /// The books, ordered by id.
    pub books: Vec<Book>,
    /// Every book in the page's range is here: storagesvc's answer, or a cached page a page
    /// fill covered (and events have kept since). An incomplete cached page holds the books
    /// the cache knows in the range, served only as a stale fallback.
    pub complete: bool,
}

/// What a page fill recorded at `<prefix>page:<after>`: `"<filled_ms>:<upto>"`, `upto` empty
/// when the filled page was the catalogue's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PageMark {
    /// Redis time of the fill, in ms.
    pub(super) filled_ms: u64,
    /// The last id the fill covered; `None`: every id above `after` (the page was short).
    pub(super) upto: Option<i64>,
}

impl PageMark {
    /// The mark in a read's reply; `None` when absent (`""`) or not one we wrote.
    pub(super) fn decode(raw: &str) -> Option<PageMark> {
        let (filled, upto) = raw.split_once(':')?;
        let upto = match upto {
            "" => None,
            digits => Some(digits.parse().ok()?),
        };
        Some(PageMark {
            filled_ms: filled.parse().ok()?,
            upto,
        })
    }

    /// Whether a page read of `ids` (decimal, increasing) is whole under this mark: every id
    /// within the covered range, and either the page `full` or the range open-ended. A short
    /// page under a bounded mark may be missing books past `upto` that no one cached.
    pub(super) fn covers(&self, ids: &[String], full: bool) -> bool {
        let Some(upto) = self.upto else {
            return true;
        };
        let last = ids.last().map(|id| id.parse::<i64>().unwrap_or(i64::MAX));
        full && last.is_some_and(|last| last <= upto)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[i64]) -> Vec<String> {
        ids.iter().map(i64::to_string).collect()
    }

    #[test]
    fn marks_decode_what_the_fill_script_writes() {
        assert_eq!(
            PageMark::decode("1700000000123:42"),
            Some(PageMark {
                filled_ms: 1_700_000_000_123,
                upto: Some(42)
            })
        );
        assert_eq!(
            PageMark::decode("5:"),
            Some(PageMark {
                filled_ms: 5,
                upto: None
            })
        );
        for raw in ["", "5", "x:1", "5:y", ":1"] {
            assert_eq!(PageMark::decode(raw), None, "{raw:?}");
        }
    }

    #[test]
    fn a_bounded_mark_covers_only_a_full_page_within_its_range() {
        let mark = PageMark {
            filled_ms: 0,
            upto: Some(10),
        };
        assert!(mark.covers(&ids(&[3, 7, 10]), true));
        assert!(!mark.covers(&ids(&[3, 7, 11]), true), "11 is past the fill");
        assert!(
            !mark.covers(&ids(&[3, 7]), false),
            "books past 10 may exist"
        );
        assert!(!mark.covers(&[], false));
        let end = PageMark {
            filled_ms: 0,
            upto: None,
        };
        assert!(
            end.covers(&ids(&[3, 70]), false),
            "the fill reached the end"
        );
        assert!(end.covers(&[], false), "an empty last page");
    }
}
